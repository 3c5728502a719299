"""The error types that the CLI turns into one clean message instead of a traceback."""


class WeightspaceError(Exception):
    """Base class of every error weightspace raises on purpose."""


class InputError(WeightspaceError, ValueError):
    """Bad input from the user: a file, a field or an option. The message names which and why."""
