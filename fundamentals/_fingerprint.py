"""A hashable description of what a traced function closes over, so equal programs share a compile.

`jax.jit` caches a compiled program per function object. A notebook cell that builds a new
`optax.sgd(0.5)` and a new model hands `fit` new function objects every time, so JAX's own
cache never hits, although the program is the same. `fingerprint(obj)` describes an object by
value wherever that is possible:

- numbers, strings, containers, arrays (dtype, shape, weak type and a digest of the bytes, up
  to `MAX_ARRAY_BYTES`), PRNG keys (implementation and key data);
- pytree nodes such as Equinox modules and Optax states (their tree structure, which holds the
  class and its static fields, and their leaves);
- the user's own code: functions by their code, defaults, closure cells and the values of the
  globals they read; classes by the functions they define; instances by their attributes.

Code of installed packages (the standard library, JAX, Optax, this package: anything under
`sys.prefix` or this package's folder) is described by identity: it is defined once at import.
So is anything the description cannot reach (a C++ `jax.jit` object, an array over the byte
limit), and `holders` keeps those objects alive so an identity is never reused. A new object of
that kind is a new program, which is always correct, only slower. What stays out of reach is
an in-place change to such an object, or to an attribute of a module the code reads: a program
compiled before the change is reused, as `jax.jit` reuses its own.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import sysconfig
import types
from typing import Any

import jax
import numpy as np

__all__ = ["fingerprint", "MAX_ARRAY_BYTES"]

_MAX_DEPTH = 40
MAX_ARRAY_BYTES = 64 * 2**20
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_LIBRARY_DIRS = tuple(
    {
        os.path.abspath(p)
        for p in (
            sys.prefix,
            sys.base_prefix,
            *(sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib")),
            _PACKAGE_DIR,
        )
        if p
    }
)


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


def _is_library_module(name: str | None) -> bool:
    """A module of an installed package, the standard library or this package (not the user's code)."""
    if name is None or name == "__main__":
        return False
    module = sys.modules.get(name)
    if module is None:
        return False
    path = getattr(module, "__file__", None)
    if path is None:  # built into the interpreter
        return True
    path = os.path.abspath(path)
    return any(path == root or path.startswith(root + os.sep) for root in _LIBRARY_DIRS)


def _describe(obj: Any, holders: list, active: dict, depth: int):
    if depth > _MAX_DEPTH:
        return _identity(obj, holders)
    if obj is None or isinstance(obj, (bool, str, bytes)):
        return (type(obj).__name__, obj)
    if isinstance(obj, (int, float, complex)):
        return (type(obj).__name__, repr(obj))  # repr: nan == nan, 0.0 != -0.0
    if isinstance(obj, jax.Array) and not isinstance(obj, jax.core.Tracer):
        return _describe_jax_array(obj, holders)
    if isinstance(obj, (np.ndarray, np.generic)):
        return _describe_array(obj, type(obj).__name__, False, holders)
    if isinstance(obj, types.ModuleType):
        return ("module", obj.__name__)
    if id(obj) in active:  # a function that reads itself (recursion), or a cyclic container
        return ("cycle", active[id(obj)])
    active[id(obj)] = len(active)
    try:
        return _describe_composite(obj, holders, active, depth + 1)
    finally:
        del active[id(obj)]


def _describe_jax_array(array: jax.Array, holders: list):
    if jax.dtypes.issubdtype(array.dtype, jax.dtypes.prng_key):
        data = np.asarray(jax.random.key_data(array))
        return ("key", str(jax.random.key_impl(array)), data.shape, _digest(data))
    return _describe_array(array, "jax.Array", bool(getattr(array, "weak_type", False)), holders)


def _describe_array(array, kind: str, weak: bool, holders: list):
    if array.nbytes > MAX_ARRAY_BYTES:  # a data set read as a global: compared by identity, not bytes
        return _identity(array, holders)
    values = np.asarray(array)
    if values.dtype == object:
        return _identity(array, holders)
    return ("array", kind, values.dtype.str, values.shape, weak, _digest(values))


def _digest(values: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(values).tobytes(), digest_size=16).digest()


def _describe_composite(obj: Any, holders: list, active: dict, depth: int):
    describe = functools.partial(_describe, holders=holders, active=active, depth=depth)
    if isinstance(obj, types.FunctionType):
        if _is_library_function(obj):
            return _identity(obj, holders)  # defined once at import: its identity is its value
        return _describe_function(obj, describe)
    if isinstance(obj, types.MethodType):
        return ("method", describe(obj.__func__), describe(obj.__self__))
    if isinstance(obj, (staticmethod, classmethod)):
        return (type(obj).__name__, describe(obj.__func__))
    if isinstance(obj, property):
        return ("property", describe(obj.fget), describe(obj.fset), describe(obj.fdel))
    if isinstance(obj, functools.partial):
        return ("partial", describe(obj.func), describe(obj.args), describe(obj.keywords))
    if isinstance(obj, type):
        return _describe_class(obj, holders, describe)
    if type(obj) in (tuple, list):
        return (type(obj).__name__, tuple(describe(item) for item in obj))
    if type(obj) is dict:
        try:
            items = sorted(obj.items(), key=lambda item: repr(item[0]))
        except Exception:  # noqa: BLE001 - keys without a usable repr: fall back to identity
            return _identity(obj, holders)
        return ("dict", tuple((describe(k), describe(v)) for k, v in items))
    # Pytree nodes (Equinox modules, NamedTuples such as Optax's transformations, dataclasses
    # registered with JAX): the tree structure holds the class and its static fields, and the
    # class's own code is described too when it is the user's.
    leaves, treedef = jax.tree_util.tree_flatten(obj)
    if not (len(leaves) == 1 and leaves[0] is obj):
        try:
            hash(treedef)
        except TypeError:
            return _identity(obj, holders)
        return ("tree", treedef, describe(type(obj)), tuple(describe(leaf) for leaf in leaves))
    if not _is_library_module(type(obj).__module__) or isinstance(obj, types.SimpleNamespace):
        # An instance of the user's class (a callable loss with attributes, a config object):
        # its class's code and its attributes, so that changing one is a new program.
        attributes = getattr(obj, "__dict__", None)
        if isinstance(attributes, dict):
            return ("instance", describe(type(obj)), describe(dict(attributes)))
    return _identity(obj, holders)


def _describe_class(cls: type, holders: list, describe):
    """A class by identity, and for the user's own classes also by the functions they define."""
    holders.append(cls)
    own = [
        klass
        for klass in cls.__mro__
        if klass is not object and not _is_library_module(getattr(klass, "__module__", None))
    ]
    code = tuple(
        (
            klass.__qualname__,
            tuple((name, describe(value)) for name, value in sorted(vars(klass).items()) if _is_code(value)),
        )
        for klass in own
    )
    return ("class", id(cls), code)


def _is_code(value) -> bool:
    return isinstance(value, (types.FunctionType, staticmethod, classmethod, property))


def _is_library_function(fn: types.FunctionType) -> bool:
    """A function defined at the top level of an installed module (not the user's code, not a closure)."""
    if not _is_library_module(fn.__module__) or "<" in fn.__qualname__:
        return False
    target: Any = sys.modules.get(fn.__module__)
    for part in fn.__qualname__.split("."):
        target = getattr(target, part, None)
    return target is fn


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


def _cell_contents(cell):
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return None


def _describe_code(code: types.CodeType):
    consts = tuple(
        _describe_code(c) if isinstance(c, types.CodeType) else (type(c).__name__, repr(c)) for c in code.co_consts
    )
    return (
        code.co_code,
        consts,
        code.co_names,
        code.co_varnames,
        code.co_freevars,
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_flags,
    )


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
