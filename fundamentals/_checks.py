"""Argument checks with one message format: `"DataLoader: batch_size must be a positive int, got 0"`.

Every public function checks what it is given before any JAX work, so a wrong argument is a
one-line error naming the argument, never a traceback from deep inside a trace.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, TypeGuard

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ArgumentTypeError", "is_int", "check_int", "check_number", "cut", "one_line"]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type. A `TypeError`, and also a `ValueError` so that callers who
    catch bad arguments as `ValueError` (as `launch`'s documentation promises) still do."""


def is_int(value: object) -> TypeGuard[int | np.integer[Any]]:
    """True for Python and NumPy integers, False for bools (which Python counts as ints).

    NumPy registers its integer types as `numbers.Integral` (and `numpy.bool_` as no number),
    so this needs no NumPy import: `fundamentals doctor` uses it on an installation without NumPy.
    """
    return isinstance(value, Integral) and not isinstance(value, bool)


def _kind(minimum: int | None) -> str:
    return {None: "an int", 0: "a non-negative int", 1: "a positive int"}.get(minimum, f"an int >= {minimum}")


def check_int(name: str, value: object, minimum: int | None = None, *, unit: str = "") -> int:
    """`value` as an `int`, or an error naming `name` (which carries its prefix, e.g. `"fit: num_epochs"`).

    **Raises:** `ArgumentTypeError` if `value` is not an int (bools are not), `ValueError` if it
    is below `minimum`.
    """
    kind = _kind(minimum) + (f" ({unit})" if unit else "")
    if not is_int(value):
        raise ArgumentTypeError(f"{name} must be {kind}, got {type(value).__name__} ({value!r})")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def check_number(name: str, value: object, *, above: float | None = None, unit: str = "") -> float:
    """`value` as a `float` (an int or a float, not a bool), greater than `above` if given.

    **Raises:** `ArgumentTypeError` for another type, `ValueError` for NaN, infinity or a
    value not above `above`.
    """
    kind = "a number" + (f" above {above:g}" if above is not None else "") + (f" ({unit})" if unit else "")
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ArgumentTypeError(f"{name} must be {kind}, got {type(value).__name__} ({value!r})")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range
        number = math.inf
    if not math.isfinite(number) or (above is not None and not number > above):
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return number


def cut(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters with `...` at the end: what a file controls never fills a message."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


LINE_LIMIT = 400  # characters: an error line never carries a whole file's worth of a value


def one_line(text: str, limit: int = LINE_LIMIT) -> str:
    """`text` on one line of at most `limit` characters, cut in the middle (where a value would be)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    half = (limit - 5) // 2
    return f"{text[:half]} ... {text[-half:]}"
