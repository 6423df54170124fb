import sys
try:
    from recipe.cli import main
    command = main()
    command()  # at module level, so call_parse reads the command's options from sys.argv
except KeyboardInterrupt: sys.exit('stopped (interrupted): Ctrl-C or SIGTERM')  # a run in its epochs says more (recipe/run.py)
