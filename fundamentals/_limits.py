"""Size limits for what comes from files and options: class counts and network sizes.

A label of 10^7 in a five-row CSV would otherwise build a 210-million-parameter network, and a
typo in `--hidden` would allocate until the machine runs out of memory. The limits are far
above the book's networks; each can be raised on purpose with an environment variable.

| limit | default | raise it with |
|---|---|---|
| classes (largest label + 1) | 100,000 | `FUNDAMENTALS_MAX_CLASSES` |
| one layer's size (`--hidden`) | 1,000,000 | `FUNDAMENTALS_MAX_LAYER_SIZE` |
| parameters of the network | 100,000,000 | `FUNDAMENTALS_MAX_PARAMETERS` |
| an NPZ file's arrays, decompressed | 100 × the file's size, at least 256 MiB | `FUNDAMENTALS_MAX_DATA_BYTES` |

A `.pth` file read by `torch_load` may take at most its own size plus 64 MiB of memory (its
`max_bytes` argument raises that).
"""

from __future__ import annotations

import os

__all__ = ["max_classes", "max_layer_size", "max_parameters", "max_data_bytes", "check_parameter_count"]

_DEFAULTS = {
    "FUNDAMENTALS_MAX_CLASSES": 100_000,
    "FUNDAMENTALS_MAX_LAYER_SIZE": 1_000_000,
    "FUNDAMENTALS_MAX_PARAMETERS": 100_000_000,
}
_DATA_RATIO, _DATA_FLOOR = 100, 256 << 20  # decompressed bytes per byte of file; and at least this


def _limit(variable: str, default: int | None = None) -> int:
    text = os.environ.get(variable)
    if text is None or not text.strip():
        return _DEFAULTS[variable] if default is None else default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"environment variable {variable} must be a positive integer, got {text!r}") from None
    if value < 1:
        raise ValueError(f"environment variable {variable} must be a positive integer, got {text!r}")
    return value


def max_classes() -> int:
    """The largest number of classes (largest label + 1) accepted from data; `FUNDAMENTALS_MAX_CLASSES`."""
    return _limit("FUNDAMENTALS_MAX_CLASSES")


def max_layer_size() -> int:
    """The largest size of one layer accepted from options; `FUNDAMENTALS_MAX_LAYER_SIZE`."""
    return _limit("FUNDAMENTALS_MAX_LAYER_SIZE")


def max_parameters() -> int:
    """The largest parameter count of a network built from data and options; `FUNDAMENTALS_MAX_PARAMETERS`."""
    return _limit("FUNDAMENTALS_MAX_PARAMETERS")


def max_data_bytes(file_size: int) -> int:
    """The most bytes a compressed data file of `file_size` bytes may decompress to; `FUNDAMENTALS_MAX_DATA_BYTES`.

    By default 100 times the file's size, and at least 256 MiB: far above what real data
    compresses by, far below what a file of zeros does (1 GB in 1 MB).
    """
    return _limit("FUNDAMENTALS_MAX_DATA_BYTES", max(_DATA_FLOOR, _DATA_RATIO * file_size))


def over(what: str, value: int, limit: int, variable: str) -> str:
    """The one-line message for a value over a limit, with the way past it."""
    return f"{what} is {value:,}, above the limit of {limit:,} (set {variable}={value} to allow it on purpose)"


def check_parameter_count(count: int, what: str) -> None:
    """**Raises:** `ValueError` if `count` parameters are over `max_parameters()`."""
    limit = max_parameters()
    if count > limit:
        raise ValueError(over(f"{what}'s parameter count", count, limit, "FUNDAMENTALS_MAX_PARAMETERS"))
