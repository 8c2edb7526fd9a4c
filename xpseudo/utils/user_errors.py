"""One error path for the tools: a user's mistake is one line naming the file, not a traceback."""
import os
import sys

from .io import InputError


def describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None and not isinstance(error, InputError):
        return f"{error.filename}: {error.strerror or error}"
    return str(error)


def run_reporting_user_errors(main, *args) -> int:
    """``main(*args)``'s exit status; a bad input (InputError) or a file-system failure (OSError:
    disk full, read-only folder, missing file) prints ``error: <file>: <why>`` and gives 2.
    XPSEUDO_DEBUG=1 lets the traceback through instead."""
    try:
        return main(*args) or 0
    except (InputError, OSError) as e:
        if os.environ.get("XPSEUDO_DEBUG", "") not in ("", "0"):
            raise
        print(f"error: {describe(e)}", file=sys.stderr)
        return 2
