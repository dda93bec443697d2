"""The one exception type for user mistakes (bad files, bad configs, bad checkpoints)."""


class VcdmError(Exception):
    """A user-facing error: one line that names the file or field and what was expected.

    The CLI prints it without a traceback and exits with status 2.
    """
