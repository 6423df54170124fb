import sys
try:
    from recipe.cli import main
    command = main()
    command()  # at module level, so call_parse reads the command's options from sys.argv
except KeyboardInterrupt:  # a run stopped in its epochs said more (recipe/run.py), unless a second signal cut it off: again
    sys.exit(getattr(sys.modules.get('recipe.run'), 'last_stop', None) or 'stopped (interrupted): Ctrl-C or SIGTERM')
