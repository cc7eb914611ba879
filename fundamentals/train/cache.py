"""Compiled programs, cached by the program JAX traced: equal keys mean the same computation.

`jax.jit` caches compiled code per Python function object. A notebook that re-runs its
training cell builds a new model, a new `optax.sgd(0.5)` and so new functions every time, and
would compile again each time. Describing those Python objects instead (their code, their
globals, their attributes) can never be complete: a module attribute, a class attribute, an
environment variable read while tracing, a reloaded module all change what is computed without
changing any object the description looks at.

So the key here is the program itself. Each `fit` traces its step (`jax.jit(fn).trace(...)`,
which runs the Python code as it is *now*) and describes what came out:

- every equation of the jaxpr, with its primitive, its parameters, its inputs and outputs
  (variables numbered in order of appearance, so fresh names do not matter), its avals (shape,
  dtype, weak type, sharding) and its context, recursively into sub-jaxprs (`scan`, `cond`,
  `jit`, `custom_jvp_call`, ...);
- literals by type and value, constants (arrays the code closed over) by dtype, shape, weak
  type and a digest of their bytes, PRNG keys by implementation and key data;
- the input and output tree structures, the shardings and devices the program is compiled
  for, and JAX's trace context (the configuration JAX itself keys its caches on: matmul
  precision, x64, default device, ...).

A parameter value of any other type is compared as JAX compares it in its own caches: by its
own equality where its type defines one (avals, tree structures, flat trees, equation contexts,
shardings: whatever a JAX version adds), else (a callback, an opaque object) by its identity,
and the cache entry keeps that object alive, so the identity cannot be reused by another object
while the key exists. Such a program may compile again when it is
re-traced, but it is never confused with another. The only parameters left out are the
differentiation rules carried by `custom_jvp_call` and `custom_vjp_call` (`jvp_jaxpr_fun`,
`fwd_jaxpr_thunk`, `bwd`, `out_trees`): they are read only when JAX differentiates the jaxpr,
which happened before the key was taken, and never when it is compiled.

Anything that changes what is computed changes the traced program, and so the key: a stale
program cannot be found. The price is tracing once per `fit` (tens of milliseconds for the
book's network), where describing Python objects took a few.
"""

from __future__ import annotations

import collections
import enum
import hashlib
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.extend import core as jax_core

__all__ = ["compile_cached", "clear", "program_key", "MAX_PROGRAMS"]

# Compiled programs kept per process, most recently used last.
MAX_PROGRAMS = 64

# Parameters that only differentiation reads (see the module docstring), by primitive name.
_NOT_COMPILED = {
    "custom_jvp_call": frozenset({"jvp_jaxpr_fun", "jvp_jaxpr_thunk", "jvp"}),
    "custom_vjp_call": frozenset({"fwd_jaxpr_thunk", "bwd", "out_trees", "fwd"}),
    "custom_vjp_call_jaxpr": frozenset({"fwd_jaxpr_thunk", "bwd", "out_trees", "fwd"}),
}

_JAXPR_TYPES = (jax_core.Jaxpr, jax_core.ClosedJaxpr)
# Objects JAX compares by value in its own caches (shardings, meshes, avals, equation contexts).
_VALUE_TYPES: tuple[type, ...] = (
    jax.sharding.Sharding,
    jax.sharding.Mesh,
    jax.sharding.PartitionSpec,
    jax.tree_util.PyTreeDef,
)
for _name in ("AbstractMesh",):
    if hasattr(jax.sharding, _name):
        _VALUE_TYPES += (getattr(jax.sharding, _name),)


def _compares_by_value(value: Any) -> bool:
    """Whether `value`'s type defines its own equality and hash, and `value` equals itself.

    JAX's parameter types do (avals, tree structures, flat trees, equation contexts, shardings):
    JAX's own caches compare them so. A type that inherits `object`'s identity equality does not.
    """
    cls = type(value)
    if cls.__eq__ is object.__eq__ or cls.__hash__ is None or cls.__hash__ is object.__hash__:
        return False
    try:
        hash(value)
        return (value == value) is True
    except Exception:  # noqa: BLE001 - an equality that raises or is not a bool: described by identity
        return False


@dataclass
class _Entry:
    compiled: Any  # a jax.stages.Compiled
    keep_alive: list  # the objects the key describes by identity


_CACHE: collections.OrderedDict[tuple, _Entry] = collections.OrderedDict()


def clear() -> None:
    """Forget every compiled program and the objects their keys keep alive."""
    _CACHE.clear()


def _trace_context() -> Any:
    """JAX's configuration as JAX's own caches key it (thread-local contexts included)."""
    try:
        from jax._src.config import trace_context  # the key jax.jit itself uses

        return trace_context()
    except (ImportError, AttributeError):  # a JAX without it: every flag's current value
        return tuple(sorted((name, repr(value)) for name, value in jax.config.values.items()))


class _Describer:
    """Turns a jaxpr into nested tuples of values; collects the objects described by identity."""

    def __init__(self) -> None:
        self.keep_alive: dict[int, Any] = {}

    def identity(self, value: Any) -> tuple:
        self.keep_alive[id(value)] = value
        return ("object", type(value).__module__, type(value).__qualname__, id(value))

    def array(self, value: Any) -> tuple:
        if isinstance(value, jax.Array):
            if not value.is_fully_addressable:
                return self.identity(value)
            if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
                impl = str(jax.random.key_impl(value))
                return ("key", impl, self.array(jax.random.key_data(value)))
            weak = bool(getattr(value, "weak_type", False))
            value = np.asarray(value)
        else:
            weak = False
            value = np.asarray(value)
        if value.dtype.kind == "O":
            return self.identity(value)
        digest = hashlib.blake2b(np.ascontiguousarray(value).tobytes(), digest_size=16).digest()
        return ("array", value.dtype.str, value.shape, weak, digest)

    def value(self, value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
            return (type(value).__name__, repr(value))  # typed: 1, 1.0 and True differ; -0.0 and 0.0 too
        if isinstance(value, _JAXPR_TYPES):
            return self.jaxpr(value)
        if isinstance(value, np.dtype):
            return ("dtype", value.str, str(value))
        if isinstance(value, type) and issubclass(value, np.generic):
            return ("dtype", np.dtype(value).str, str(np.dtype(value)))
        if isinstance(value, enum.Enum):
            return ("enum", type(value).__module__, type(value).__qualname__, value.name)
        if isinstance(value, (np.ndarray, np.generic, jax.Array)) or type(value).__name__ == "TypedNdArray":
            return self.array(value)
        if isinstance(value, (tuple, list)):
            return (type(value).__qualname__, tuple(self.value(item) for item in value))
        if isinstance(value, (frozenset, set)):
            return (type(value).__qualname__, frozenset(self.value(item) for item in value))
        if isinstance(value, dict):
            return ("dict", tuple(sorted((repr(k), self.value(v)) for k, v in value.items())))
        if isinstance(value, _VALUE_TYPES) or _compares_by_value(value):
            # The object itself: its own equality decides, as in JAX's caches; the key keeps it alive.
            return ("value", type(value).__module__, type(value).__qualname__, value)
        return self.identity(value)

    def jaxpr(self, closed: Any) -> tuple:
        jaxpr = closed if hasattr(closed, "eqns") else closed.jaxpr
        consts = getattr(closed, "consts", None) or ()
        numbers: dict[Any, int] = {}

        def var(v: Any) -> Any:
            if isinstance(v, jax_core.Literal):
                return ("literal", self.value(v.aval), self.value(v.val))
            if isinstance(v, jax_core.DropVar):
                return ("drop", self.value(v.aval))
            if v not in numbers:
                numbers[v] = len(numbers)
            return (numbers[v], self.value(v.aval))

        head = (tuple(var(v) for v in jaxpr.constvars), tuple(var(v) for v in jaxpr.invars))
        equations = []
        for eqn in jaxpr.eqns:
            skip = _NOT_COMPILED.get(eqn.primitive.name, frozenset())
            params = tuple(sorted((k, self.value(v)) for k, v in eqn.params.items() if k not in skip))
            equations.append(
                (
                    self.identity(eqn.primitive),
                    params,
                    tuple(var(v) for v in eqn.invars),
                    tuple(var(v) for v in eqn.outvars),
                    self.value(getattr(eqn, "ctx", None)),
                    tuple(sorted(map(repr, eqn.effects))),
                )
            )
        outputs = tuple(var(v) for v in jaxpr.outvars)
        return (
            "jaxpr",
            head,
            tuple(equations),
            outputs,
            tuple(self.value(c) for c in consts),
            tuple(sorted(map(repr, jaxpr.effects))),
        )


def program_key(traced: Any, *context: Any) -> tuple[tuple, list]:
    """`(key, keep_alive)` for a `jax.stages.Traced`: equal keys mean the same compiled program.

    **Arguments:**

    - `traced`: what `jax.jit(fn, ...).trace(*args)` returned.
    - `context`: whatever else the compiled program depends on (its shardings and devices);
      described like the jaxpr's parameters.

    **Returns:** the key, and the objects it describes by identity, which must stay alive as
    long as the key is in use.
    """
    describer = _Describer()
    key = (
        describer.jaxpr(traced.jaxpr),
        describer.value(traced.in_tree),
        describer.value(traced.out_tree),
        describer.value(context),
        describer.value(_trace_context()),
    )
    return key, list(describer.keep_alive.values())


def compile_cached(jitted: Any, *args: Any, context: tuple = ()) -> tuple[Any, bool]:
    """The compiled program `jitted(*args)` runs: from the cache if an equal program was compiled.

    **Arguments:**

    - `jitted`: a `jax.jit`-wrapped function (with its shardings), traced here with `args`.
    - `args`: arguments of the shapes, dtypes and shardings the program will be called with.
    - `context`: the devices (or mesh) and shardings the program is placed on.

    **Returns:** `(compiled, newly_compiled)`: a `jax.stages.Compiled`, called like `jitted`
    with arguments of the same types (anything else raises JAX's `TypeError`, never retraces),
    and whether it had to be compiled now.
    """
    traced = jitted.trace(*args)
    key, keep_alive = program_key(traced, *context)
    entry = _CACHE.get(key)
    if entry is not None:
        _CACHE.move_to_end(key)
        return entry.compiled, False
    compiled = traced.lower().compile()
    _CACHE[key] = _Entry(compiled, keep_alive)
    while len(_CACHE) > MAX_PROGRAMS:
        _CACHE.popitem(last=False)
    return compiled, True
