from recipe.cli import main
command = main()
command()  # at module level, so call_parse reads the command's options from sys.argv
