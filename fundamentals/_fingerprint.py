"""A hashable description of what a traced function closes over, so equal programs share a compile.

`jax.jit` caches a compiled program per function object. A notebook cell that builds a new
`optax.sgd(0.5)` and a new model hands `fit` new function objects every time, so JAX's own
cache never hits, although the program is the same. `fingerprint(obj)` describes an object by
value where that is safe: numbers, strings, arrays, containers, pytree nodes such as Equinox
modules, and Python functions by their code, defaults, closure cells and the globals they read.
Anything else (a builtin, a C++ `jax.jit` object, an instance of some class) is described by
its identity, and `holders` keeps it alive so the identity cannot be reused: a new object of
that kind is a new program, which is always correct, only slower.
"""

from __future__ import annotations

import functools
import sys
import types
from typing import Any

import jax
import numpy as np

__all__ = ["fingerprint"]

_MAX_DEPTH = 40
_MAX_ARRAY_BYTES = 2**20


class _Cycle(Exception):
    pass


def fingerprint(obj: Any) -> tuple[Any, list[Any]]:
    """`(key, holders)`: a hashable value equal for objects that trace to the same program.

    **Arguments:**

    - `obj`: anything a traced function closes over (a model's static part, an optimizer,
      a loss function).

    **Returns:**

    `key`, a nested tuple, and `holders`, the objects described by identity, which the
    caller keeps referenced as long as it keeps `key`.
    """
    holders: list[Any] = []
    return _describe(obj, holders, {}, 0), holders


def _describe(obj: Any, holders: list, active: dict, depth: int):
    if depth > _MAX_DEPTH:
        return _identity(obj, holders)
    if obj is None or isinstance(obj, (bool, str, bytes)):
        return (type(obj).__name__, obj)
    if isinstance(obj, (int, float, complex)):
        return (type(obj).__name__, repr(obj))  # repr: nan == nan, 0.0 != -0.0
    if isinstance(obj, (np.ndarray, np.generic)) or (
        isinstance(obj, jax.Array) and not isinstance(obj, jax.core.Tracer)
    ):
        if obj.nbytes > _MAX_ARRAY_BYTES:  # a data set read as a global: compare by identity, not bytes
            return _identity(obj, holders)
        array = np.asarray(obj)
        if array.dtype == object:
            return _identity(obj, holders)
        return ("array", array.dtype.str, array.shape, array.tobytes())
    if isinstance(obj, (types.ModuleType,)):
        return ("module", obj.__name__)
    if id(obj) in active:  # a function that reads itself (recursion), or a cyclic container
        return ("cycle", active[id(obj)])
    active[id(obj)] = len(active)
    try:
        return _describe_composite(obj, holders, active, depth + 1)
    finally:
        del active[id(obj)]


def _describe_composite(obj: Any, holders: list, active: dict, depth: int):
    describe = functools.partial(_describe, holders=holders, active=active, depth=depth)
    if isinstance(obj, types.FunctionType):
        if _is_library_function(obj):
            return _identity(obj, holders)  # defined once at import: its identity is its value
        return _describe_function(obj, describe)
    if isinstance(obj, types.MethodType):
        return ("method", describe(obj.__func__), describe(obj.__self__))
    if isinstance(obj, functools.partial):
        return ("partial", describe(obj.func), describe(obj.args), describe(obj.keywords))
    if type(obj) in (tuple, list):
        return (type(obj).__name__, tuple(describe(item) for item in obj))
    if type(obj) is dict:
        try:
            items = sorted(obj.items(), key=lambda item: repr(item[0]))
        except Exception:  # noqa: BLE001 - keys without a usable repr: fall back to identity
            return _identity(obj, holders)
        return ("dict", tuple((describe(k), describe(v)) for k, v in items))
    # Pytree nodes (Equinox modules, NamedTuples such as Optax's transformations, dataclasses
    # registered with JAX): the tree structure holds the class and its static fields.
    leaves, treedef = jax.tree_util.tree_flatten(obj, is_leaf=lambda x: x is not obj and x is None)
    if not (len(leaves) == 1 and leaves[0] is obj):
        try:
            hash(treedef)
        except TypeError:
            return _identity(obj, holders)
        return ("tree", treedef, tuple(describe(leaf) for leaf in leaves))
    return _identity(obj, holders)


def _describe_function(fn: types.FunctionType, describe):
    code = fn.__code__
    return (
        "function",
        fn.__module__,
        fn.__qualname__,
        _describe_code(code),
        describe(fn.__defaults__),
        describe(fn.__kwdefaults__),
        tuple(describe(_cell_contents(cell)) for cell in (fn.__closure__ or ())),
        tuple((name, describe(fn.__globals__[name])) for name in _global_names(code) if name in fn.__globals__),
    )


def _is_library_function(fn: types.FunctionType) -> bool:
    """A function defined at the top level of an imported module (not `__main__`, not a closure)."""
    if fn.__module__ in (None, "__main__") or "<" in fn.__qualname__:
        return False
    module = sys.modules.get(fn.__module__)
    target: Any = module
    for part in fn.__qualname__.split("."):
        target = getattr(target, part, None)
    return target is fn


def _cell_contents(cell):
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return None


def _describe_code(code: types.CodeType):
    consts = tuple(
        _describe_code(c) if isinstance(c, types.CodeType) else (type(c).__name__, repr(c)) for c in code.co_consts
    )
    return (code.co_code, consts, code.co_names, code.co_varnames, code.co_freevars, code.co_argcount)


def _global_names(code: types.CodeType) -> list[str]:
    """Names the function (and the functions nested in it) may read as globals."""
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(_global_names(const))
    return sorted(set(names))


def _identity(obj: Any, holders: list):
    holders.append(obj)
    return ("id", id(obj))
