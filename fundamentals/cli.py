"""The `fundamentals` command: `fundamentals train | bench | doctor`."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser"]


class CLIError(Exception):
    """A user error: printed as one line, exit code 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fundamentals",
        description="Appendix A of 'Build a Large Language Model (From Scratch)', in JAX.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{train,bench,doctor}")
    commands.required = True
    doctor = commands.add_parser("doctor", help="check the installation and list JAX devices")
    doctor.set_defaults(handler=_run_doctor)
    return parser


def _run_doctor(args: argparse.Namespace) -> int:
    from .doctor import doctor

    return doctor()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except CLIError as error:
        print(f"fundamentals {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
