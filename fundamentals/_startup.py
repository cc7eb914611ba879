"""Ctrl-C while the `fundamentals` command is still importing JAX: a one-line exit, not a traceback.

The package's imports take a second or more. `cli.main` turns a `KeyboardInterrupt` into
`interrupted` and exit code 130, but only once it runs; before that, Python would print the
traceback of whatever import was under way. When this process *is* the command (the
`fundamentals` script or `python -m fundamentals[.cli]`), a handler covers that first second;
`cli.main` puts Python's own handler back. Imported as a library, nothing changes.
"""

from __future__ import annotations

import os
import signal
import sys


def _interrupted(signum, frame) -> None:
    sys.stderr.write("interrupted\n")
    sys.stderr.flush()
    os._exit(130)


def _is_the_command() -> bool:
    argv = getattr(sys, "orig_argv", [])
    if "-m" in argv[:-1] and argv[argv.index("-m") + 1] in ("fundamentals", "fundamentals.cli"):
        return True
    return os.path.basename(sys.argv[0] if sys.argv else "") in ("fundamentals", "fundamentals.exe")


def restore_default_handler() -> None:
    """Give SIGINT back to Python (a `KeyboardInterrupt`) if the start-up handler has it."""
    if signal.getsignal(signal.SIGINT) is _interrupted:
        signal.signal(signal.SIGINT, signal.default_int_handler)


if _is_the_command() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _interrupted)
