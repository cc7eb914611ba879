"""Tensors as immutable `jax.Array`s (appendix A.2).

A PyTorch tensor and a `jax.Array` are both n-dimensional arrays with a dtype, a shape and a
device. Two differences matter to a reader of the book:

- **Immutability.** A `jax.Array` never changes. Where PyTorch writes in place
  (`t[0, 0] = 999`), JAX returns a new array: `t = t.at[0, 0].set(999)`. Inside `jax.jit`
  XLA turns that copy into an in-place update when it can, so nothing is lost in speed.
- **Integer width.** PyTorch makes Python ints `int64`. JAX makes them `int32` unless
  64-bit mode is on (`jax.config.update("jax_enable_x64", True)`). `tensor()` follows
  PyTorch as far as JAX allows: int64 with x64 on, int32 otherwise.

The operations the appendix uses map one to one:

=================================  ==========================================
PyTorch                            JAX (``t`` a `jax.Array`, ``jnp`` = jax.numpy)
=================================  ==========================================
``torch.tensor([1, 2, 3])``        ``fundamentals.tensor([1, 2, 3])``
``torch.from_numpy(a)``            ``fundamentals.from_numpy(a)`` (a copy: see below)
``t.dtype``                        ``t.dtype``
``t.to(torch.float32)``            ``t.astype(jnp.float32)``
``t.shape`` / ``t.size()``         ``t.shape``
``t.reshape(3, 2)``                ``t.reshape(3, 2)``
``t.view(3, 2)``                   ``t.reshape(3, 2)`` (JAX has no views)
``t.T``                            ``t.T``
``t.matmul(u)`` / ``t @ u``        ``jnp.matmul(t, u)`` / ``t @ u``
``t[0, 0] = 999``                  ``t = t.at[0, 0].set(999)``
``t.to("cuda")``                   ``jax.device_put(t, device)``
``t.numpy()``                      ``numpy.asarray(t)``
=================================  ==========================================
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

__all__ = ["tensor", "from_numpy", "to_numpy", "default_int_dtype", "default_float_dtype"]


def default_int_dtype() -> jnp.dtype:
    """The dtype Python ints become: `int64` when `jax_enable_x64` is on, else `int32`.

    PyTorch always uses `int64` (`torch.tensor([1, 2, 3]).dtype` is `torch.int64`). JAX
    cannot hold 64-bit arrays unless 64-bit mode is switched on, so this is the one place
    where `fundamentals` and PyTorch differ by default.
    """
    return jnp.dtype(jnp.int64) if jax.config.read("jax_enable_x64") else jnp.dtype(jnp.int32)


def default_float_dtype() -> jnp.dtype:
    """The dtype Python floats become: always `float32`, as `torch.get_default_dtype()`."""
    return jnp.dtype(jnp.float32)


def _contains(data: object, kind: type) -> bool:
    if isinstance(data, (list, tuple)):
        return any(_contains(item, kind) for item in data)
    return isinstance(data, kind)


def _infer_dtype(data: object) -> jnp.dtype | None:
    """PyTorch's dtype for `data`, or None to keep the dtype an array already has."""
    if isinstance(data, (np.ndarray, np.generic, jax.Array)):
        return None  # arrays keep their dtype, as in torch (float64 needs x64 in JAX)
    if isinstance(data, (bool, int, float, complex, list, tuple)):
        if _contains(data, complex):
            return jnp.dtype(jnp.complex64)
        if _contains(data, float):
            return default_float_dtype()
        if _contains(data, bool) and not _contains_non_bool_int(data):
            return jnp.dtype(jnp.bool_)
        if _contains(data, int):
            return default_int_dtype()
        if isinstance(data, (list, tuple)):  # empty list: torch gives float32
            return default_float_dtype()
    return None


def _contains_non_bool_int(data: object) -> bool:
    if isinstance(data, (list, tuple)):
        return any(_contains_non_bool_int(item) for item in data)
    return isinstance(data, int) and not isinstance(data, bool)


def tensor(data: Any, dtype: DTypeLike | None = None) -> jax.Array:
    """Build a new `jax.Array` from data, with PyTorch's dtype rules.

    Replaces `torch.tensor(data, dtype=dtype)`.

    **Arguments:**

    - `data`: a Python scalar, a (nested) list or tuple, a NumPy array, or a `jax.Array`.
    - `dtype`: the dtype of the result. If given it always wins.

    **Returns:**

    A `jax.Array` that owns a copy of `data`. The dtype follows PyTorch:

    - Python floats become `float32` (even with `jax_enable_x64` on, as in PyTorch);
    - Python ints become `int64` when `jax_enable_x64` is on, otherwise `int32`. PyTorch
      always gives `int64`; JAX needs 64-bit mode for that;
    - Python bools stay `bool`; a list mixing ints and floats becomes `float32`;
    - NumPy and JAX arrays keep their dtype (float64 becomes float32 unless x64 is on).

    The result is a copy: changing a NumPy array afterwards never changes it. That is the
    book's `torch.tensor` (copies) against `torch.from_numpy` (shares memory) lesson. (Plain
    `jax.device_put` may alias a NumPy array's memory on the CPU; this never does.)

    ```python
    t = fundamentals.tensor([[1, 2, 3], [4, 5, 6]])
    t.dtype                  # int32 (int64 with x64 on; torch: int64)
    t.reshape(3, 2)          # torch: t.reshape(3, 2) or t.view(3, 2)
    t @ t.T                  # [[14, 32], [32, 77]]
    t = t.at[0, 0].set(999)  # torch: t[0, 0] = 999
    ```
    """
    if isinstance(data, (str, bytes)) or data is None:
        raise TypeError(f"tensor(): data must be numbers, lists of numbers or arrays, got {type(data).__name__}")
    if dtype is None:
        dtype = _infer_dtype(data)
    if isinstance(data, jax.Array):
        source = np.asarray(data)
    else:
        try:
            source = np.array(data)
        except ValueError as error:  # ragged nested lists
            raise ValueError(f"tensor(): data must be rectangular (every row the same length): {error}") from None
        if source.dtype == object:
            raise TypeError(f"tensor(): data must be numbers, got elements of type object: {data!r}")
    # np.array copied already; jnp.array copies again onto the device, so the result never
    # aliases memory the caller can still write to.
    return jnp.array(source, dtype=dtype, copy=True)


def to_numpy(value: Any) -> np.ndarray:
    """A NumPy view or copy of an array-like: NumPy, JAX, or a PyTorch tensor (`t.detach().cpu().numpy()`).

    PyTorch tensors are recognised without importing torch, so the library never needs it.
    """
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch.Tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def from_numpy(array: np.ndarray) -> jax.Array:
    """A `jax.Array` with the contents and dtype of a NumPy array.

    Replaces `torch.from_numpy(array)`, with one difference the book's readers should know:
    `torch.from_numpy` shares memory, so writing to the NumPy array changes the tensor.
    JAX arrays are immutable and never share writable memory, so this is always a copy.
    (float64 arrays become float32 unless `jax_enable_x64` is on.)
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy(): expected a numpy.ndarray, got {type(array).__name__}")
    return jnp.array(array, copy=True)
