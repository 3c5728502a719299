"""The error types that the CLI turns into one clean message instead of a traceback."""


class WeightspaceError(Exception):
    """Base class of every error weightspace raises on purpose."""


class InputError(WeightspaceError, ValueError):
    """Bad input from the user: a file, a field or an option. The message names which and why."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped a command after it had saved what it finished; the message says what
    was saved where and how to resume, and the CLI prints it as the one line before exit status 130."""
