"""The errors a user can act on: the CLI prints their message as one line, never a traceback."""


class PipelineError(Exception):
    """Base of the errors a user can act on: the CLI prints their message, not a traceback."""


class ConfigError(PipelineError, ValueError):
    """A setting or input file is wrong; the message names it and what was expected."""


class Interrupted(PipelineError):
    """Ctrl-C (or SIGTERM) after the step saved what it had; the message says what was kept and how to go on.

    The CLI prints it as one `interrupted: ...` line and exits 130, the shell's code for SIGINT.
    """
