"""The one exception type for user mistakes (bad files, bad configs, bad checkpoints)."""


class VcdmError(Exception):
    """A user-facing error: one line that names the file or field and what was expected.

    The CLI prints it without a traceback and exits with status 2.
    """


def exit_status(fn, *args, **kwargs) -> int:
    """Run fn(*args, **kwargs) for a script's main: 0 on success; a VcdmError is printed as one line
    ("error: ...") on stderr and gives 2."""
    import sys

    try:
        fn(*args, **kwargs)
    except VcdmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
