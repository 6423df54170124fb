"""The one error a user sees, apart from the rest so that commands which need no torch (`runs`, `show`, `--help`)
start without importing it."""
from fastcore.script import CliError

__all__ = ['RecipeError']


class RecipeError(CliError):
    "Bad input: the message names the path or value. The CLI prints it and exits 1; Python callers get the exception."
