"""Rewrite the small matrix products of a traced program as fused multiply-and-sum.

On a CPU, XLA compiles every `dot_general` as a call into a matrix library, outside the fused
loops around it, and each call has a fixed cost of its own. For the book's network (batch 2,
layers of 30 and 20) that cost is most of a training step: its 8 products are about 8,000
multiply-adds. Written as a broadcast multiply and a sum, the same product becomes ordinary
elementwise code that XLA fuses with its neighbours (the bias, the ReLU, the update):

```python
# what a layer computes                          # what the rewritten program computes
y = x @ W.T                                      y = (x[:, None, :] * W[None, :, :]).sum(-1)
```

`fuse_small_dots(step)` does this for a whole traced function, whatever built its products
(a model's layers, `jax.grad`'s backward pass, an optimizer), so any model with small layers
benefits without being changed:

- It traces the function to a jaxpr (`jax.make_jaxpr`) and evaluates that jaxpr again,
  primitive by primitive, binding each exactly as traced, except a floating-point
  `dot_general` whose multiply-adds (batch × free × free × contracted elements) are at most
  `max_elements`: that one is computed as a broadcast product and a sum over the contracted
  axes, in the product's own precision (`preferred_element_type`, float32 for 16-bit floats).
- It rewrites inside nested programs too (`jax.jit`, `lax.scan`, `lax.while_loop`,
  `lax.cond`, `jax.checkpoint`, custom derivative rules' primal functions, ...): each nested
  jaxpr is traced again with its products rewritten, and kept as it was unless the new one
  has exactly the old one's input and output types.
- It leaves alone integer and complex products, products with an explicit dot algorithm or
  an axis split in their types (an `Explicit` mesh axis), weakly-typed results, and every
  product larger than `max_elements` (the bound is on the traced, global shapes).
- Only a CPU gains: on a GPU or TPU the function is returned unchanged.

The result equals the original's to float32 rounding (the sums run in another order), not bit
for bit: a training loop that compares paths bit for bit must run the rewritten step on every
path. Why the default bound is `MAX_ELEMENTS`: see that constant.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jex_core
from jax.extend import source_info_util
from jax.extend.core import primitives as jex_primitives

from ._checks import check_int

__all__ = ["MAX_ELEMENTS", "fuse_small_dots", "rewrite_small_dots", "dot_as_multiply_sum"]

# The largest product rewritten by default, in multiply-adds (batch × in × out for a layer).
# Measured on a 2-core AVX-512 machine (AMD EPYC, JAX 0.10.2) with `python benchmarks/small_dots.py`:
# one linear layer's training step (its forward product and both backward ones), scanned, plain
# and rewritten, three runs. Up to 2,048 multiply-adds a product the rewritten step took 0.13 to
# 0.95 of the time (the book's largest layer, 2 × 30 × 20: about half; 2 × 32 × 32: even), with
# one exception (2 × 16 × 16 in the plain `x @ W.T` form: 1.3-1.6 times slower in two runs of
# three, 5 times faster in the third). At 4,096 it was 1.3-1.8 times slower in every shape
# tried, and beyond mostly slower still: the fused loops reduce one output element at a time,
# where a matrix library vectorises and blocks. So the crossover lies between 2,048 and 4,096,
# and the default is its lower end.
MAX_ELEMENTS = 2_048


def fuse_small_dots(fn: Callable, *, max_elements: int = MAX_ELEMENTS, platform: str | None = None) -> Callable:
    """`fn` with each small matrix product computed as a fused broadcast multiply and sum.

    A function transformation, like `jax.grad`: wrap the training step, then `jax.jit` it.

    ```python
    # PyTorch has no counterpart: its eager products are library calls whatever their size.
    step = jax.jit(fuse_small_dots(train_step))           # instead of jax.jit(train_step)
    ```

    **Arguments:**

    - `fn`: a function of arrays (and pytrees of them) returning a pytree of arrays, as
      `jax.jit` takes. Arguments that are not arrays (Python numbers, strings, static fields)
      are passed through unchanged, as constants of the trace.
    - `max_elements`: the largest product rewritten, in multiply-adds (batch × free × free ×
      contracted elements); 0 rewrites nothing.
    - `platform`: the platform the program will run on (`"cpu"`, `"gpu"`, `"tpu"`). None: the
      default backend when `fn` is traced (`jax.default_backend()`), which is where `jax.jit`
      runs a program whose inputs are not placed elsewhere. A caller that places its inputs
      (a mesh, a device) should pass that device's platform.

    **Returns:**

    A function with `fn`'s signature and results. `fn` itself if `platform` is given and is
    not `"cpu"`; on another platform found at trace time, it calls `fn` unchanged.

    **Raises:** `TypeError` if `fn` is not callable; `ValueError` for a negative `max_elements`.
    """
    if not callable(fn):
        raise TypeError(f"fuse_small_dots: fn must be callable, got {type(fn).__name__}")
    max_elements = check_int("fuse_small_dots: max_elements", max_elements, 0)
    if platform is not None and not isinstance(platform, str):
        raise TypeError(f"fuse_small_dots: platform must be a str such as 'cpu', got {type(platform).__name__}")
    if platform is not None and platform != "cpu" or max_elements == 0:
        return fn

    @functools.wraps(fn)
    def rewritten(*args, **kwargs):
        if (platform or jax.default_backend()) != "cpu":
            return fn(*args, **kwargs)
        leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
        dynamic = [i for i, leaf in enumerate(leaves) if _is_array(leaf)]

        def flat_fn(*arrays):
            filled = list(leaves)
            for i, array in zip(dynamic, arrays):
                filled[i] = array
            inner_args, inner_kwargs = jax.tree_util.tree_unflatten(treedef, filled)
            return fn(*inner_args, **inner_kwargs)

        arrays = [leaves[i] for i in dynamic]
        closed, out_shape = jax.make_jaxpr(flat_fn, return_shape=True)(*arrays)
        jaxpr, consts = _parts(closed)
        outs = _Rewriter(max_elements).eval(jaxpr, consts, arrays)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), outs)

    return rewritten


def rewrite_small_dots(closed_jaxpr, *, max_elements: int = MAX_ELEMENTS):
    """A closed jaxpr (as `jax.make_jaxpr` gives) with its small products rewritten, at any depth.

    For a caller that already holds the traced program (to key a compile cache on it, say):
    `jax.extend.core.jaxpr_as_fun(rewrite_small_dots(closed))(*flat_args)` computes what
    `fuse_small_dots` would. This does not look at the platform: call it for CPU programs only.

    **Returns:** a new closed jaxpr with the same input and output types, or `closed_jaxpr`
    itself when it has no product to rewrite.
    """
    max_elements = check_int("rewrite_small_dots: max_elements", max_elements, 0)
    if not isinstance(closed_jaxpr, (jex_core.ClosedJaxpr, jex_core.Jaxpr)):
        raise TypeError(
            f"rewrite_small_dots: expected a closed jaxpr (jax.make_jaxpr(f)(...)), got {type(closed_jaxpr).__name__}"
        )
    return _Rewriter(max_elements).rewrite(closed_jaxpr)


def dot_as_multiply_sum(lhs, rhs, *, dimension_numbers, out_dtype) -> jax.Array:
    """`lax.dot_general(lhs, rhs, dimension_numbers)` as a broadcast multiply and a sum.

    The output's axes are `dot_general`'s: batch axes, then `lhs`'s free axes, then `rhs`'s.
    The products and the sum run in `out_dtype`, or in float32 when that is a 16-bit float
    (as XLA's CPU products accumulate), and the result is `out_dtype`.
    """
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    lhs_contract, rhs_contract, lhs_batch, rhs_batch = (
        tuple(int(d) for d in dims) for dims in (lhs_contract, rhs_contract, lhs_batch, rhs_batch)
    )
    lhs_free = tuple(d for d in range(np.ndim(lhs)) if d not in lhs_contract and d not in lhs_batch)
    rhs_free = tuple(d for d in range(np.ndim(rhs)) if d not in rhs_contract and d not in rhs_batch)
    accumulate = jnp.promote_types(out_dtype, jnp.float32)
    # Both operands as (batch..., free..., contracted...), the contracted axes paired in order.
    lhs = lax.transpose(lax.convert_element_type(lhs, accumulate), lhs_batch + lhs_free + lhs_contract)
    rhs = lax.transpose(lax.convert_element_type(rhs, accumulate), rhs_batch + rhs_free + rhs_contract)
    num_batch, num_lhs, num_rhs, num_contract = len(lhs_batch), len(lhs_free), len(rhs_free), len(lhs_contract)
    batch_shape = lhs.shape[:num_batch]
    lhs_free_shape = lhs.shape[num_batch : num_batch + num_lhs]
    rhs_free_shape = rhs.shape[num_batch : num_batch + num_rhs]
    contract_shape = lhs.shape[num_batch + num_lhs :]
    shape = batch_shape + lhs_free_shape + rhs_free_shape + contract_shape
    first_contract = num_batch + num_lhs + num_rhs
    batch_axes = tuple(range(num_batch))
    contract_axes = tuple(range(first_contract, first_contract + num_contract))
    lhs = lax.broadcast_in_dim(lhs, shape, batch_axes + tuple(range(num_batch, num_batch + num_lhs)) + contract_axes)
    rhs = lax.broadcast_in_dim(
        rhs, shape, batch_axes + tuple(range(num_batch + num_lhs, first_contract)) + contract_axes
    )
    product = lax.mul(lhs, rhs)
    out = jnp.sum(product, axis=contract_axes) if contract_axes else product
    return lax.convert_element_type(out, out_dtype)


# --- the interpreter ------------------------------------------------------------------------------


def _is_array(leaf) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic)) or isinstance(leaf, jax.core.Tracer)


def _parts(closed) -> tuple[Any, list]:
    """`(jaxpr, consts)` of a closed jaxpr: JAX 0.10's `ClosedJaxpr` or 0.12's `Jaxpr` with consts."""
    if jex_core.ClosedJaxpr is not jex_core.Jaxpr and isinstance(closed, jex_core.ClosedJaxpr):
        return closed.jaxpr, list(closed.consts)
    return closed, list(getattr(closed, "consts", None) or [])


def _floating(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.floating)


def _product_size(shapes: Sequence[Sequence[int]], dimension_numbers) -> int | None:
    """Multiply-adds of a product (batch × free × free × contracted), None for symbolic shapes."""
    lhs_shape, rhs_shape = shapes
    if not all(isinstance(d, int) for d in (*lhs_shape, *rhs_shape)):
        return None
    (_, rhs_contract), (_, rhs_batch) = dimension_numbers
    rhs_free = [d for i, d in enumerate(rhs_shape) if i not in rhs_contract and i not in rhs_batch]
    # lhs holds batch × free × contracted; rhs adds its free axes.
    return int(np.prod(lhs_shape, dtype=np.int64)) * int(np.prod(rhs_free, dtype=np.int64))


def _unsharded(sharding) -> bool:
    """True for no sharding, or one that splits no axis (`P(None, None)`, what `jax.grad` writes in Auto meshes)."""
    spec = getattr(sharding, "spec", None)
    return spec is None or all(entry is None for entry in spec)


class _Rewriter:
    """One rewrite: the bound, and the nested programs already rewritten (by identity)."""

    def __init__(self, max_elements: int):
        self.max_elements = max_elements
        self._done: dict[int, tuple[Any, Any]] = {}  # id(jaxpr) -> (jaxpr kept alive, its rewrite)
        self._has_small: dict[int, tuple[Any, bool]] = {}

    # -- which products ------------------------------------------------------------------------

    def is_small_dot(self, eqn) -> bool:
        if eqn.primitive is not jex_primitives.dot_general_p:
            return False
        params = eqn.params
        lhs, rhs = (v.aval for v in eqn.invars)
        out = eqn.outvars[0].aval
        precision = params.get("precision")
        if not (_floating(lhs.dtype) and _floating(rhs.dtype) and _floating(out.dtype)):
            return False  # integer products are exact either way; complex ones are left to the library
        if precision is not None and not (
            isinstance(precision, tuple) and all(isinstance(p, lax.Precision) for p in precision)
        ):
            return False  # an explicit dot algorithm asks for a particular kind of product
        if getattr(out, "weak_type", False):
            return False
        if not all(
            _unsharded(s)
            for s in (params.get("out_sharding"), *(a.sharding for a in (lhs, rhs, out) if hasattr(a, "sharding")))
        ):
            return False  # an Explicit mesh axis in the types: the product says how it is split
        size = _product_size((lhs.shape, rhs.shape), params["dimension_numbers"])
        return size is not None and size <= self.max_elements

    def has_small_dot(self, jaxpr) -> bool:
        key = id(jaxpr)
        if key not in self._has_small:
            found = any(
                self.is_small_dot(eqn) or any(self.has_small_dot(sub) for sub in self._nested(eqn.params))
                for eqn in jaxpr.eqns
            )
            self._has_small[key] = (jaxpr, found)
        return self._has_small[key][1]

    @staticmethod
    def _nested(params) -> list:
        """The jaxprs (open ones) held in an equation's parameters."""
        found = []
        for value in params.values():
            for item in value if isinstance(value, tuple) else (value,):
                if isinstance(item, (jex_core.Jaxpr, jex_core.ClosedJaxpr)):
                    found.append(_parts(item)[0])
        return found

    # -- evaluation ----------------------------------------------------------------------------

    def eval(self, jaxpr, consts: Sequence, args: Sequence) -> list:
        """Evaluate `jaxpr` on `args` (arrays or tracers) as `jax.core.eval_jaxpr` does, small products rewritten."""
        env: dict[Any, Any] = {}

        def read(atom):
            return atom.val if isinstance(atom, jex_core.Literal) else env[atom]

        for var, value in zip(jaxpr.constvars, consts):
            env[var] = value
        for var, value in zip(jaxpr.invars, args):
            env[var] = value
        for eqn in jaxpr.eqns:
            invals = [read(atom) for atom in eqn.invars]
            name_stack = source_info_util.current_name_stack() + eqn.source_info.name_stack
            with source_info_util.user_context(eqn.source_info.traceback, name_stack=name_stack), eqn.ctx.manager:
                if self.is_small_dot(eqn):
                    outs = [
                        dot_as_multiply_sum(
                            *invals,
                            dimension_numbers=eqn.params["dimension_numbers"],
                            out_dtype=eqn.outvars[0].aval.dtype,
                        )
                    ]
                else:
                    params = self._rewrite_params(eqn.params)
                    result = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(params))
                    outs = result if eqn.primitive.multiple_results else [result]
            for var, value in zip(eqn.outvars, outs):
                env[var] = value  # a dropped output (`_`) is a fresh variable no one reads
        return [read(atom) for atom in jaxpr.outvars]

    def _rewrite_params(self, params: dict) -> dict:
        new = dict(params)
        for name, value in params.items():
            if isinstance(value, (jex_core.Jaxpr, jex_core.ClosedJaxpr)):
                new[name] = self.rewrite(value)
            elif isinstance(value, tuple) and any(isinstance(v, (jex_core.Jaxpr, jex_core.ClosedJaxpr)) for v in value):
                new[name] = tuple(
                    self.rewrite(v) if isinstance(v, (jex_core.Jaxpr, jex_core.ClosedJaxpr)) else v for v in value
                )
        return new

    def rewrite(self, program):
        """A nested program (closed or open jaxpr) with its small products rewritten, or itself."""
        key = id(program)
        if key in self._done:
            return self._done[key][1]
        jaxpr, consts = _parts(program)
        result = program
        if self.has_small_dot(jaxpr) and len(consts) == len(jaxpr.constvars):
            result = self._retrace(program, jaxpr, consts)
        self._done[key] = (program, result)
        return result

    def _retrace(self, program, jaxpr, consts):
        specs = [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type) for a in jaxpr.in_avals]
        try:
            new = jax.make_jaxpr(lambda *args: self.eval(jaxpr, consts, args))(*specs)
        except Exception:  # noqa: BLE001 - a program we cannot trace again stays as it was
            return program
        new_jaxpr, new_consts = _parts(new)
        if list(new_jaxpr.in_avals) != list(jaxpr.in_avals) or list(new_jaxpr.out_avals) != list(jaxpr.out_avals):
            return program  # (avals that carry more than shape, dtype and weak type: shard_map's, say)
        if new_jaxpr.effects != jaxpr.effects:
            return program
        if not consts and new_consts:
            return program  # an open jaxpr must stay open; the rewrite adds no constants of its own
        if jex_core.ClosedJaxpr is not jex_core.Jaxpr and not isinstance(program, jex_core.ClosedJaxpr):
            return new_jaxpr  # JAX 0.10's open Jaxpr (jax.checkpoint's, say)
        return new
