"""PyTorch's `.pth` files without PyTorch: read and write them as `torch.load(weights_only=True)` does.

```python
# PyTorch                                              # fundamentals (no torch needed)
state = torch.load("model.pth", weights_only=True)     state = fm.torch_load("model.pth")
torch.save(state, "model.pth")                         fm.torch_save(state, "model.pth")
```

A `.pth` file is a zip archive: `data.pkl`, a pickle of the saved object in which each
tensor refers by key to a storage, and `data/<key>`, the storages' raw bytes. Unpickling runs
code, so the pickle is read by a restricted unpickler that allows only the globals PyTorch's
own weights-only unpickler allows (`torch/_weights_only_unpickler.py`): its tensor rebuild
functions, storage types and dtypes, `torch.Size`, `torch.device`, `collections.OrderedDict`
and `Counter`, and `set`, `bytearray`, `complex` and `_codecs.encode` for bytes. Any other
global (`os.system`, `builtins.eval`, ...) is refused by name before anything is called, and
nothing the file names is ever imported.

The pickle is read by this module's own loop over the instructions torch's weights-only
unpickler reads (a file that uses others is refused by both). Every function the pickle may
call is this module's own stand-in, never a torch or NumPy object, and what they build stays
private until the pickle is done, so the pickle's `BUILD` instruction cannot reach into NumPy
or this module. Memory is bounded before it is allocated: a storage must be as long as its
record in the zip, a tensor must lie inside its storage, and every storage, string, memo entry
and object the file asks for is counted against a budget (the file's size plus 64 MiB, unless
`max_bytes` says otherwise). An archive with two records of one name, which two zip readers
would read differently, is refused.

Tensors come back as NumPy arrays (bfloat16 and float8 as `ml_dtypes` types), views of their
storage as in PyTorch: tensors that shared a storage when saved share memory when loaded.
Storages are read to host memory whatever device they were saved from (`map_location="cpu"`).
"""

from __future__ import annotations

import contextvars
import io
import mmap
import os
import pickle
import pickletools
import struct
import zipfile
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from ._checks import cut, one_line
from ._files import atomic_write_bytes, open_regular
from .tensors import to_numpy

__all__ = ["torch_load", "torch_save", "TorchFileError", "UnsafeFileError", "is_torch_file"]


class TorchFileError(ValueError):
    """A `.pth` file that is missing parts, truncated, corrupted, or holds something this reader cannot build."""


class UnsafeFileError(TorchFileError, pickle.UnpicklingError):
    """A `.pth` file whose pickle names a global that `torch.load(weights_only=True)` would refuse."""


# --- dtypes -------------------------------------------------------------------------------------

# torch dtype name -> (NumPy dtype, legacy typed-storage class name or None)
_DTYPES: dict[str, tuple[np.dtype, str | None]] = {
    "float64": (np.dtype(np.float64), "DoubleStorage"),
    "float32": (np.dtype(np.float32), "FloatStorage"),
    "float16": (np.dtype(np.float16), "HalfStorage"),
    "bfloat16": (np.dtype(ml_dtypes.bfloat16), "BFloat16Storage"),
    "int64": (np.dtype(np.int64), "LongStorage"),
    "int32": (np.dtype(np.int32), "IntStorage"),
    "int16": (np.dtype(np.int16), "ShortStorage"),
    "int8": (np.dtype(np.int8), "CharStorage"),
    "uint8": (np.dtype(np.uint8), "ByteStorage"),
    "bool": (np.dtype(np.bool_), "BoolStorage"),
    "complex64": (np.dtype(np.complex64), "ComplexFloatStorage"),
    "complex128": (np.dtype(np.complex128), "ComplexDoubleStorage"),
    "uint16": (np.dtype(np.uint16), None),
    "uint32": (np.dtype(np.uint32), None),
    "uint64": (np.dtype(np.uint64), None),
    "float8_e4m3fn": (np.dtype(ml_dtypes.float8_e4m3fn), None),
    "float8_e5m2": (np.dtype(ml_dtypes.float8_e5m2), None),
    "float8_e4m3fnuz": (np.dtype(ml_dtypes.float8_e4m3fnuz), None),
    "float8_e5m2fnuz": (np.dtype(ml_dtypes.float8_e5m2fnuz), None),
}
_STORAGE_DTYPES = {storage: name for name, (_, storage) in _DTYPES.items() if storage}
_TORCH_DTYPE_NAMES = {dtype: name for name, (dtype, _) in _DTYPES.items()}
# torch's other names for the same dtypes (torch.float is torch.float32, ...), as `str(torch.float)` spells them
_ALIASES = {
    "float": "float32",
    "double": "float64",
    "half": "float16",
    "long": "int64",
    "int": "int32",
    "short": "int16",
    "cfloat": "complex64",
    "cdouble": "complex128",
}


def _numpy_dtype(name: str) -> np.dtype:
    return _DTYPES[_ALIASES.get(name, name)][0]


# --- the memory a file may take -----------------------------------------------------------------

_ALLOWANCE = 64 << 20  # bytes a file may take beyond its own size: the objects its pickle builds


class _Budget:
    """The bytes a file may make this reader allocate; every allocation is counted before it is made."""

    __slots__ = ("limit", "used", "default")

    def __init__(self, limit: int, default: bool):
        self.limit, self.used, self.default = limit, 0, default

    def charge(self, size: int, what: str) -> None:
        self.used += size
        if self.used > self.limit:
            how = (
                "its own size plus 64 MiB; torch_load(path, max_bytes=N) allows more on purpose"
                if self.default
                else "max_bytes"
            )
            raise TorchFileError(
                f"{what} would take the memory this file asks for to {self.used:,} bytes, above the limit of "
                f"{self.limit:,} ({how})"
            )


_BUDGET: contextvars.ContextVar[_Budget] = contextvars.ContextVar("fundamentals_torch_load_budget")


def _charge(size: int, what: str) -> None:
    budget = _BUDGET.get(None)
    if budget is not None:
        budget.charge(size, what)


def _brief(value, limit: int = 80) -> str:
    """`repr(value)`, cut to `limit` characters: what a file controls never fills an error line."""
    return cut(repr(value), limit)


# --- what the pickle may build ------------------------------------------------------------------
# Placeholders live only while the pickle runs; `_finish` swaps them for NumPy arrays, dtypes and
# strings afterwards. None of them can be changed by the pickle (BUILD is refused on them).


class _Private:
    __slots__ = ()

    def __reduce__(self):
        raise TypeError(f"{type(self).__name__} is internal to the .pth reader")


class _DType(_Private):
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self):
        return f"torch.{self.name}"


class _StorageType(_Private):
    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: np.dtype | None):
        self.name, self.dtype = name, dtype  # dtype None: UntypedStorage (bytes)

    def __repr__(self):
        return f"torch.{self.name}"


class _Storage(_Private):
    __slots__ = ("data", "dtype", "key")

    def __init__(self, data: np.ndarray, dtype: np.dtype, key: str):
        self.data, self.dtype, self.key = data, dtype, key  # data: the storage's bytes, uint8

    def __repr__(self):
        return f"storage {_brief(self.key, 40)}"


class _Tensor(_Private):
    __slots__ = ("array",)

    def __init__(self, array: np.ndarray):
        self.array = array

    def __repr__(self):
        return f"tensor of shape {self.array.shape}"


class _Device(_Private):
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self):
        return f"device({_brief(self.name, 40)})"


class _Global(_Private):
    """An allowed global: callable by REDUCE (and NEWOBJ where `new` is given), checked arguments, inert otherwise."""

    __slots__ = ("name", "function", "value", "new")

    def __init__(self, name: str, function, value=None, new=None):
        self.name, self.function, self.value, self.new = name, function, value, new

    def __repr__(self):
        return self.name


class _Unsupported(_Private):
    """A global PyTorch's weights-only loading allows but this reader cannot build: refused where it is used."""

    __slots__ = ("name", "reason")

    def __init__(self, name: str, reason: str):
        self.name, self.reason = name, reason

    def error(self) -> TorchFileError:
        return TorchFileError(f"it holds {self.reason}")

    def __repr__(self):
        return self.name


def _refuse_unsupported(*values) -> None:
    for value in values:
        if isinstance(value, _Unsupported):
            raise value.error()


def _check_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TorchFileError(f"{what} must be a non-negative integer, got {_brief(value)}")
    return value


def _check_ints(values, what: str) -> tuple[int, ...]:
    if not isinstance(values, tuple):
        raise TorchFileError(f"{what} must be a tuple of integers, got {type(values).__name__}")
    return tuple(_check_int(v, what) for v in values)


def _view(storage, storage_offset, size, stride, dtype: np.dtype | None = None) -> _Tensor:
    """The tensor `storage[storage_offset:]` seen with `size` and `stride` (in elements), checked to lie inside.

    Always a view, as in PyTorch: a stride-0 (expanded) tensor takes no memory of its own.
    """
    _refuse_unsupported(storage)
    if not isinstance(storage, _Storage):
        raise TorchFileError(f"a tensor's storage must be a storage from the archive, got {_brief(storage)}")
    dtype = storage.dtype if dtype is None else dtype
    offset = _check_int(storage_offset, "storage_offset")
    size, stride = _check_ints(size, "size"), _check_ints(stride, "stride")
    if len(size) != len(stride):
        raise TorchFileError(f"a tensor's size {_brief(size)} and stride {_brief(stride)} have different lengths")
    _charge(128 + 16 * len(size), "a tensor")
    itemsize = dtype.itemsize
    available = storage.data.size // itemsize
    count = 1
    for n in size:
        count *= n
    if count == 0:
        if len(size) > 64 or any(n >= 2**62 for n in size):
            raise TorchFileError(f"empty tensor of size {_brief(size)} is not a valid shape")
        try:  # no elements: keep torch's strides, point at no memory
            return _Tensor(
                np.ndarray(size, dtype, buffer=np.empty(0, np.uint8), strides=tuple(s * itemsize for s in stride))
            )
        except ValueError:
            return _Tensor(np.empty(size, dtype))
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= available:
        raise TorchFileError(
            f"a tensor of size {_brief(size)}, stride {_brief(stride)} and offset {_brief(offset)} reaches element "
            f"{_brief(last)}, but its {storage!r} holds {available} {dtype} elements"
        )
    array = np.ndarray(
        size, dtype, buffer=storage.data, offset=offset * itemsize, strides=tuple(s * itemsize for s in stride)
    )
    return _Tensor(array)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _view(storage, storage_offset, size, stride)


def _with_metadata(storage, storage_offset, size, stride, dtype, metadata) -> _Tensor:
    """A tensor whose metadata sets torch's negative or conjugate bit: a view of its storage so changed.

    torch keeps the bit and reads the storage through it; here the storage's elements are
    negated (or conjugated) once, counted against the budget, and the tensor stays a view of
    them, so an expanded tensor is never copied out at its expanded size.
    """
    if metadata is None or metadata == {}:
        return _view(storage, storage_offset, size, stride, dtype)
    if not isinstance(metadata, dict):
        raise TorchFileError(f"tensor metadata must be a dict, got {type(metadata).__name__}")
    if not (metadata.get("neg") or metadata.get("conj")):
        return _view(storage, storage_offset, size, stride, dtype)
    _view(storage, storage_offset, size, stride, dtype)  # checked as it is, before anything is copied
    dtype = storage.dtype if dtype is None else dtype
    elements = storage.data[: storage.data.size // dtype.itemsize * dtype.itemsize].view(dtype)
    _charge(elements.nbytes, f"the negated or conjugated copy of {storage!r}")
    if metadata.get("neg"):
        elements = np.negative(elements)
    if metadata.get("conj"):
        elements = np.conj(elements)
    changed = _Storage(np.ascontiguousarray(elements).view(np.uint8).reshape(-1), dtype, storage.key)
    return _view(changed, storage_offset, size, stride, dtype)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    return _with_metadata(storage, storage_offset, size, stride, None, metadata)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    _refuse_unsupported(dtype)
    if not isinstance(dtype, _DType):
        raise TorchFileError(f"_rebuild_tensor_v3 needs a torch dtype, got {_brief(dtype)}")
    return _with_metadata(storage, storage_offset, size, stride, _numpy_dtype(dtype.name), metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    _refuse_unsupported(data)
    if not isinstance(data, _Tensor):
        raise TorchFileError(f"a Parameter must hold a tensor, got {_brief(data)}")
    return data  # a Parameter is its tensor here; requires_grad has no meaning in JAX


def _rebuild_from_cpu_tensor(data, dtype, device, requires_grad):
    return _rebuild_parameter(data, requires_grad, None)


def _new_parameter(data=None, requires_grad=True):
    return _rebuild_parameter(data, requires_grad, None)


def _encode(text, encoding="utf-8"):
    # Protocol 2 spells bytes as _codecs.encode(latin-1 text, "latin1"): allow that one codec only.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise TorchFileError(
            f"_codecs.encode is allowed only as encode(str, 'latin1'), got encoding {_brief(encoding, 40)}"
        )
    _charge(len(text) + 33, "_codecs.encode")
    return text.encode("latin-1")


def _bytearray(source=b"", encoding=None):
    if isinstance(source, str) and encoding in ("latin1", "latin-1"):
        _charge(len(source) + 57, "bytearray()")
        return bytearray(source, "latin-1")
    if isinstance(source, (bytes, bytearray)) and encoding is None:
        _charge(len(source) + 57, "bytearray()")
        return bytearray(source)
    raise TorchFileError("bytearray is allowed only from bytes or latin-1 text")


def _set(items=()):
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise TorchFileError(f"set() is allowed only from a list or tuple, got {type(items).__name__}")
    _charge(64 * len(items) + 216, "set()")
    return set(items)


def _complex(*args):
    # Python's complex(), as torch's weights-only unpickler calls it: from numbers, or from one string.
    if len(args) > 2 or any(not isinstance(x, (int, float, complex, str)) for x in args):
        raise TorchFileError("complex() is allowed only from numbers or a string")
    _charge(sum(len(x) for x in args if isinstance(x, str)), "complex()")
    return complex(*args)


def _ordered_dict(items=None):
    if items is not None:
        raise TorchFileError("OrderedDict() is allowed only without arguments, as torch pickles it")
    return OrderedDict()


def _counter(items=None):
    if items is not None and not isinstance(items, dict):
        raise TorchFileError("Counter() is allowed only from a dict")
    _charge(64 * len(items or {}) + 232, "Counter()")
    return Counter(items or {})


def _size(dims=()):
    if isinstance(dims, list):
        dims = tuple(dims)
    dims = _check_ints(dims, "torch.Size")
    _charge(8 * len(dims) + 56, "torch.Size()")
    return dims


def _device(kind, index=None):
    if not isinstance(kind, str) or not (index is None or isinstance(index, int)):
        raise TorchFileError(
            f"torch.device needs a name and an optional index, got {_brief(kind, 40)}, {_brief(index, 40)}"
        )
    return _Device(kind if index is None else f"{kind}:{index}")


def _not_supported(what: str):
    def refuse(*args):
        raise TorchFileError(f"{what} cannot be read without PyTorch")

    return refuse


_QUANTIZED = (
    "a quantized tensor ({}), which has no NumPy equivalent: this reader does not read quantized tensors. "
    "In PyTorch, save tensor.dequantize() instead"
)


def _allowed_globals() -> dict[tuple[str, str], _Global | _DType | _StorageType | _Unsupported]:
    """torch's weights-only allow-list, each name mapped to this module's stand-in or to a clear refusal.

    Exactly the names `torch.load(weights_only=True)` allows: any other is refused as a global
    that may run code, and these are refused only where this reader cannot build them.
    """
    allowed: dict[tuple[str, str], _Global | _DType | _StorageType | _Unsupported] = {}

    def allow(module: str, name: str, function, value=None, new=None):
        allowed[module, name] = _Global(f"{module}.{name}", function, value, new)

    def unsupported(module: str, name: str, reason: str):
        allowed[module, name] = _Unsupported(f"{module}.{name}", reason)

    allow("collections", "OrderedDict", _ordered_dict, OrderedDict, new=lambda *args: OrderedDict())
    allow("collections", "Counter", _counter, Counter, new=lambda *args: Counter())
    allow("builtins", "set", _set, set, new=lambda *args: set())
    allow("builtins", "bytearray", _bytearray, bytearray, new=lambda *args: bytearray())
    allow("builtins", "complex", _complex, complex, new=_complex)
    allow("_codecs", "encode", _encode)
    allow("torch", "Size", _size, new=_size)
    allow("torch", "device", _device, new=_device)
    allow("torch.nn.parameter", "Parameter", _not_supported("torch.nn.Parameter()"), new=_new_parameter)
    allow("torch._utils", "_rebuild_tensor", _rebuild_tensor)
    allow("torch._utils", "_rebuild_tensor_v2", _rebuild_tensor_v2)
    allow("torch._utils", "_rebuild_tensor_v3", _rebuild_tensor_v3)
    allow("torch._utils", "_rebuild_parameter", _rebuild_parameter)
    allow("torch._utils", "_rebuild_parameter_with_state", _rebuild_parameter)
    allow("torch._utils", "_rebuild_device_tensor_from_cpu_tensor", _rebuild_from_cpu_tensor)
    unsupported("torch._utils", "_rebuild_qtensor", _QUANTIZED.format("torch._utils._rebuild_qtensor"))
    for name, what in (
        ("_rebuild_sparse_tensor", "a sparse tensor"),
        ("_rebuild_meta_tensor_no_storage", "a meta tensor (it has no data)"),
        ("_rebuild_nested_tensor", "a nested tensor"),
        ("_rebuild_wrapper_subclass", "a tensor subclass"),
        ("_rebuild_device_tensor_from_numpy", "a tensor saved from NumPy"),
    ):
        unsupported("torch._utils", name, f"{what}, which cannot be read without PyTorch")
    unsupported(
        "torch._tensor",
        "_rebuild_from_type_v2",
        "a tensor subclass or a tensor with attributes, which cannot be read without PyTorch",
    )
    unsupported("torch.serialization", "_get_layout", "a sparse tensor layout, which cannot be read without PyTorch")
    unsupported("torch", "Tensor", "torch.Tensor(), which cannot be read without PyTorch")
    unsupported("torch.storage", "TypedStorage", "a torch.storage.TypedStorage, which cannot be read without PyTorch")
    for name in _DTYPES:
        allowed["torch", name] = _DType(name)
    for storage, dtype_name in _STORAGE_DTYPES.items():
        for module in ("torch", "torch.cuda"):
            allowed[module, storage] = _StorageType(storage, _DTYPES[dtype_name][0])
    allowed["torch.storage", "UntypedStorage"] = _StorageType("UntypedStorage", None)
    for name in ("quint8", "qint8", "qint32", "quint4x2", "quint2x4"):
        unsupported("torch", name, _QUANTIZED.format(f"torch.{name}"))
    for name in ("QUInt8Storage", "QInt8Storage", "QInt32Storage", "QUInt4x2Storage", "QUInt2x4Storage"):
        unsupported("torch", name, _QUANTIZED.format(f"torch.{name}"))
    for name in (
        "per_tensor_affine",
        "per_tensor_symmetric",
        "per_channel_affine",
        "per_channel_symmetric",
        "per_channel_affine_float_qparams",
    ):
        unsupported("torch", name, _QUANTIZED.format(f"torch.{name}"))
    for name in (
        *(f"bits{kind}" for kind in ("16", "1x8", "2x4", "4x2", "8")),
        *(f"int{bits}" for bits in range(1, 8)),
        *(f"uint{bits}" for bits in range(1, 8)),
        "complex32",
        "float4_e2m1fn_x2",
        "float8_e8m0fnu",
    ):
        unsupported("torch", name, f"a tensor of dtype torch.{name}, which this reader has no NumPy dtype for")
    for kind in ("Double", "Float", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool"):
        for module in ("torch", "torch.cuda"):
            unsupported(module, f"{kind}Tensor", f"a {module}.{kind}Tensor, which cannot be read without PyTorch")
        if kind != "Bool":
            for module in ("torch.sparse", "torch.cuda.sparse"):
                unsupported(
                    module,
                    f"{kind}Tensor",
                    f"a sparse tensor ({module}.{kind}Tensor), which cannot be read without PyTorch",
                )
    return allowed


_ALLOWED = _allowed_globals()
_BLOCKED_MODULES = ("sys", "os", "posix", "nt")
# The Python 2 names a protocol-2 pickle may use, mapped as torch maps them (torch._utils).
_IMPORT_MAPPING = {"__builtin__": "builtins", "copy_reg": "copyreg", "UserDict": "collections"}
_NAME_MAPPING = {("__builtin__", "unicode"): ("builtins", "str"), ("__builtin__", "long"): ("builtins", "int")}


class _Unpickler:
    """A pickle reader of the instructions torch's weights-only unpickler reads, and no others.

    Globals resolve only from the allow-list (`_ALLOWED`) and storages only from the archive.
    The memo is a dict, as in torch, so a memo index costs what it stores, not what it says;
    every object the pickle builds is counted against the file's memory budget first.
    """

    def __init__(self, file, load_storage, budget: _Budget, overrides: dict | None = None) -> None:
        self.read, self.readline = file.read, file.readline
        self.load_storage = load_storage
        self.budget = budget
        self.overrides = overrides or {}

    def _global(self) -> Any:
        module = self.readline()[:-1].decode("utf-8")
        name = self.readline()[:-1].decode("utf-8")
        if (module, name) in _NAME_MAPPING:  # protocol 2 spells Python 3's builtins by their Python 2 names
            module, name = _NAME_MAPPING[module, name]
        else:
            module = _IMPORT_MAPPING.get(module, module)
        found = self.overrides.get((module, name)) or _ALLOWED.get((module, name))
        if found is None or module in _BLOCKED_MODULES:
            raise UnsafeFileError(
                f"refused global {cut(f'{module}.{name}', 80)}: weights-only loading allows only tensors, containers, "
                "numbers and strings (the file may try to run code)"
            )
        return found

    def load(self) -> Any:  # one branch per frequent instruction (the rest: _load_rare), as in pickle.py and torch
        read = self.read
        budget, charge = self.budget, self.budget.charge
        stack: list[Any] = []
        append = stack.append
        marks: list[list[Any]] = []
        memo: dict[int, Any] = {}
        unpack = struct.unpack
        while True:
            key = read(1)
            if not key:
                raise TorchFileError("the pickle ends before its STOP instruction")
            op = key[0]
            budget.used += 64  # every instruction's object, at most; checked on the next charge
            if op == _BINPUT:
                memo[read(1)[0]] = stack[-1]
            elif op == _BINUNICODE:
                (size,) = unpack("<I", read(4))
                charge(size, "a string")
                data = read(size)
                if len(data) != size:
                    raise TorchFileError(f"the pickle is truncated: a string of {size} bytes has {len(data)}")
                append(str(data, "utf-8", "surrogatepass"))
            elif op == _BININT1:
                append(read(1)[0])
            elif op == _MARK:
                marks.append(stack)
                stack = []
                append = stack.append
            elif op == _TUPLE:
                items = stack
                stack = marks.pop()
                append = stack.append
                charge(8 * len(items), "a tuple")
                append(tuple(items))
            elif op == _BINGET:
                index = read(1)[0]
                if index not in memo:
                    raise TorchFileError(f"the pickle refers to memo entry {index}, which it never stored")
                append(memo[index])
            elif op == _REDUCE:
                args = stack.pop()
                function = stack[-1]
                _refuse_unsupported(function)
                if not isinstance(function, _Global) or not isinstance(args, tuple):
                    raise TorchFileError(f"the pickle calls {_brief(function)}, which is not an allowed function")
                stack[-1] = function.function(*args)
            elif op == _GLOBAL:
                append(self._global())
            elif op == _TUPLE1:
                stack[-1] = (stack[-1],)
            elif op == _TUPLE2:
                stack[-2:] = [(stack[-2], stack[-1])]
            elif op == _TUPLE3:
                stack[-3:] = [(stack[-3], stack[-2], stack[-1])]
            elif op == _EMPTY_TUPLE:
                append(())
            elif op == _NEWFALSE:
                append(False)
            elif op == _NEWTRUE:
                append(True)
            elif op == _NONE:
                append(None)
            elif op == _BINPERSID:
                pid = stack.pop()
                if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")):
                    raise UnsafeFileError(f"refused persistent id {_brief(pid)}: only ('storage', ...) ids are allowed")
                append(self.load_storage(*pid[1:]))
            elif op == _SETITEMS:
                items = stack
                stack = marks.pop()
                append = stack.append
                if len(items) % 2:
                    raise TorchFileError("the pickle sets a dict's items from an odd number of values")
                charge(32 * len(items), "a dict")
                target = _dict(stack[-1])
                for i in range(0, len(items), 2):
                    target[items[i]] = items[i + 1]
            elif op == _SETITEM:
                value, item = stack.pop(), stack.pop()
                _dict(stack[-1])[item] = value
            elif op == _EMPTY_DICT:
                append({})
            elif op == _EMPTY_LIST:
                append([])
            elif op == _APPENDS:
                items = stack
                stack = marks.pop()
                append = stack.append
                charge(8 * len(items), "a list")
                _list(stack[-1]).extend(items)
            elif op == _APPEND:
                item = stack.pop()
                _list(stack[-1]).append(item)
            elif op == _STOP:
                charge(0, "the pickle")
                return stack.pop()
            else:
                self._load_rare(op, key, stack, memo)

    def _load_rare(self, op: int, key: bytes, stack: list[Any], memo: dict[int, Any]) -> None:
        """`load`'s less frequent instructions, on the current stack (after a MARK, the new one)."""
        read, unpack = self.read, struct.unpack
        if op == _BININT:
            stack.append(unpack("<i", read(4))[0])
        elif op == _BININT2:
            stack.append(unpack("<H", read(2))[0])
        elif op == _BINFLOAT:
            stack.append(unpack(">d", read(8))[0])
        elif op == _LONG1:
            size = read(1)[0]
            data = read(size)
            if len(data) != size:
                raise TorchFileError(f"the pickle is truncated: an integer of {size} bytes has {len(data)}")
            stack.append(pickle.decode_long(data))
        elif op == _LONG_BINPUT:
            memo[unpack("<I", read(4))[0]] = stack[-1]
        elif op == _LONG_BINGET:
            (index,) = unpack("<I", read(4))
            if index not in memo:
                raise TorchFileError(f"the pickle refers to memo entry {index}, which it never stored")
            stack.append(memo[index])
        elif op == _SHORT_BINSTRING:
            size = read(1)[0]
            data = read(size)
            if len(data) != size:
                raise TorchFileError(f"the pickle is truncated: a string of {size} bytes has {len(data)}")
            stack.append(data.decode("utf-8"))
        elif op == _EMPTY_SET:
            stack.append(set())
        elif op == _NEWOBJ:
            args = stack.pop()
            cls = stack.pop()
            _refuse_unsupported(cls)
            if not isinstance(cls, _Global) or cls.new is None or not isinstance(args, tuple):
                raise UnsafeFileError(
                    f"the pickle creates an object of {_brief(cls)}, which weights-only loading refuses"
                )
            stack.append(cls.new(*args))
        elif op == _BUILD:
            state = stack.pop()
            _build(stack[-1], state)
        elif op == _PROTO:
            read(1)
        else:
            raise TorchFileError(
                f"it uses pickle instruction {key!r} ({_OP_NAMES.get(op, 'unknown')}), which "
                "torch.load(weights_only=True) does not read either"
            )


# The instructions torch's weights-only unpickler reads (torch/_weights_only_unpickler.py), as ints.
_GLOBAL, _REDUCE, _NEWOBJ, _BUILD, _APPEND, _APPENDS, _SETITEM, _SETITEMS, _MARK = (
    op[0] for op in (pickle.GLOBAL, pickle.REDUCE, pickle.NEWOBJ, pickle.BUILD, pickle.APPEND, pickle.APPENDS,
                     pickle.SETITEM, pickle.SETITEMS, pickle.MARK)
)  # fmt: skip
_TUPLE, _TUPLE1, _TUPLE2, _TUPLE3, _NONE, _NEWFALSE, _NEWTRUE, _EMPTY_TUPLE, _EMPTY_LIST, _EMPTY_DICT = (
    op[0] for op in (pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3, pickle.NONE, pickle.NEWFALSE,
                     pickle.NEWTRUE, pickle.EMPTY_TUPLE, pickle.EMPTY_LIST, pickle.EMPTY_DICT)
)  # fmt: skip
_EMPTY_SET, _BININT, _BININT1, _BININT2, _BINFLOAT, _BINUNICODE, _SHORT_BINSTRING, _BINPERSID = (
    op[0] for op in (pickle.EMPTY_SET, pickle.BININT, pickle.BININT1, pickle.BININT2, pickle.BINFLOAT,
                     pickle.BINUNICODE, pickle.SHORT_BINSTRING, pickle.BINPERSID)
)  # fmt: skip
_BINGET, _LONG_BINGET, _BINPUT, _LONG_BINPUT, _LONG1, _PROTO, _STOP = (
    op[0] for op in (pickle.BINGET, pickle.LONG_BINGET, pickle.BINPUT, pickle.LONG_BINPUT, pickle.LONG1,
                     pickle.PROTO, pickle.STOP)
)  # fmt: skip
_OP_NAMES = {opcode.code.encode("latin-1")[0]: opcode.name for opcode in pickletools.opcodes}


def _list(target) -> list:
    if type(target) is not list:
        raise TorchFileError(f"the pickle appends to {_brief(target)}, which is not a list")
    return target


def _dict(target) -> dict:
    if type(target) not in (dict, OrderedDict, Counter):
        raise TorchFileError(f"the pickle sets an item of {_brief(target)}, which is not a dict")
    return target


def _build(target, state) -> None:
    """BUILD, as torch's weights-only unpickler does it: only an OrderedDict's or a Counter's attributes may be
    set (a state_dict's `_metadata`). An OrderedDict takes a dict; a Counter, which has no `__setstate__`,
    also `(state, slot state)`, as pickle spells an object with slots."""
    if type(target) is OrderedDict:
        parts = [state]
    elif type(target) is Counter:
        parts = list(state) if isinstance(state, tuple) and len(state) == 2 else [state]
    else:
        raise UnsafeFileError(
            f"the pickle tries to set the state of {_brief(target)}, which weights-only loading refuses"
        )
    for part in parts:
        if part is None and type(target) is Counter:
            continue
        if not isinstance(part, dict) or not all(isinstance(name, str) for name in part):
            raise TorchFileError(f"the state of an {type(target).__name__} must be a dict of names, got {_brief(part)}")
        target.__dict__.update(part)


def _finish(obj):
    """The unpickled object with placeholders replaced: tensors -> ndarrays, dtypes -> np.dtype, devices -> str."""
    done: dict[int, Any] = {}

    def convert(value):
        if type(value) in (int, float, str, bytes, bool, complex) or value is None:
            return value
        known = done.get(id(value))
        if known is not None:
            return known
        result: Any
        if isinstance(value, _Tensor):
            result = value.array
        elif isinstance(value, _Storage):
            result = value.data.view(value.dtype) if value.data.size % value.dtype.itemsize == 0 else value.data
        elif isinstance(value, _DType):
            result = _numpy_dtype(value.name)
        elif isinstance(value, _Device):
            result = value.name
        elif isinstance(value, _Unsupported):
            raise value.error()
        elif isinstance(value, _Global):
            if value.value is None:
                raise TorchFileError(
                    f"the file holds the function {value.name} itself, which this reader cannot return"
                )
            result = value.value
        elif isinstance(value, _StorageType):
            raise TorchFileError(f"the file holds the class {value!r} itself, which this reader cannot return")
        elif isinstance(value, dict):  # dict, OrderedDict, Counter: in place, so shared and cyclic ones stay so
            done[id(value)] = value
            items = [(convert(k), convert(v)) for k, v in value.items()]
            value.clear()
            for k, v in items:  # not update(): Counter.update would count the pairs
                value[k] = v
            if getattr(value, "__dict__", None):  # OrderedDict's _metadata, as torch returns it
                for k, v in list(value.__dict__.items()):
                    value.__dict__[k] = convert(v)
            return value
        elif isinstance(value, list):
            done[id(value)] = value
            value[:] = [convert(v) for v in value]
            return value
        elif isinstance(value, set):
            done[id(value)] = value
            items = [convert(v) for v in value]
            value.clear()
            value.update(items)
            return value
        elif isinstance(value, tuple):
            result = tuple(convert(v) for v in value)
        elif isinstance(value, bytearray):
            result = value
        else:
            raise TorchFileError(f"unexpected object of type {type(value).__name__} in the pickle")
        done[id(value)] = result
        return result

    return convert(obj)


# --- reading ------------------------------------------------------------------------------------

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_PICKLE_PROTOCOLS = range(2, 6)  # torch.save's pickle_protocol: 2 by default; torch reads a legacy file of any
_SAVE_HINT = "re-save it with a recent PyTorch: torch.save(torch.load(path, weights_only=True), path)"


def _is_legacy(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == pickle.PROTO[0] and head[1] in _PICKLE_PROTOCOLS


def is_torch_file(path: str | os.PathLike) -> bool:
    """True if the file looks like `torch.save`'s output (a zip archive or the legacy pickle format), by content.

    Only a regular file is opened: a FIFO or a device is not `torch.save`'s output.
    """
    try:
        with open_regular(path) as file:
            head = file.read(4)
    except ValueError:
        return False
    return head in _ZIP_MAGIC or _is_legacy(head)


def _allocate(size: int) -> np.ndarray:
    """`size` writable bytes. Large ones are fresh anonymous pages (freed blocks that malloc hands back
    come from its heap, which the kernel backs with small pages: several times slower to fill)."""
    if size < 1 << 20:
        return np.empty(size, np.uint8)
    return np.frombuffer(mmap.mmap(-1, size), np.uint8)


def _read_exactly(file, offset: int, size: int, file_size: int, what: str) -> np.ndarray:
    if offset < 0 or offset + size > file_size:
        raise TorchFileError(
            f"{what} claims {size} bytes at offset {offset}, past the end of the file ({file_size} bytes)"
        )
    _charge(size, what)
    buffer = _allocate(size)
    view = buffer.data
    file.seek(offset)
    done = 0
    while done < size:
        got = file.readinto(view[done:])
        if not got:
            raise TorchFileError(f"{what} is truncated: {done} of {size} bytes")
        done += got
    return buffer


def _names(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(_brief(name, 60) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


class _Archive:
    """The records of a torch zip archive, read straight from the file (torch writes them uncompressed)."""

    def __init__(self, file, file_size: int):
        self.file, self.file_size = file, file_size
        try:  # every central directory entry becomes an object: counted before zipfile builds them
            entries = zipfile._EndRecData(file)[zipfile._ECD_ENTRIES_TOTAL]  # type: ignore[attr-defined]
        except (AttributeError, TypeError, IndexError):
            entries = 0  # zipfile's private layout changed, or no end record: ZipFile says what is wrong
        _charge(600 * entries, "the zip archive's directory")
        zip_file = zipfile.ZipFile(file)
        infos = zip_file.infolist()
        counts = Counter(info.filename for info in infos)
        twice = sorted(name for name, count in counts.items() if count > 1)
        if twice:  # torch's reader takes the first, Python's zipfile the last: one file, two readings
            raise TorchFileError(
                f"it holds two records named {_brief(twice[0], 120)}"
                + (f" (and {len(twice) - 1} more names twice)" if len(twice) > 1 else "")
                + "; which one is meant cannot be told"
            )
        folders = {info.filename.split("/", 1)[0] + "/" for info in infos if "/" in info.filename}
        scripts = sorted(f"{folder}constants.pkl" for folder in folders if f"{folder}constants.pkl" in counts)
        if scripts:
            raise TorchFileError(
                "it is a TorchScript archive (torch.jit.save): a program, not a state dict. Load it in PyTorch "
                "with torch.jit.load, or save its weights with torch.save(model.state_dict(), path)"
            )
        pickles = sorted(
            info.filename for info in infos if info.filename.endswith("/data.pkl") and info.filename.count("/") == 1
        )
        if not pickles:
            raise TorchFileError("it is a zip archive but not one written by torch.save (no <name>/data.pkl record)")
        if len(pickles) > 1:
            raise TorchFileError(
                f"it holds {len(pickles)} data.pkl records ({_names(pickles)}); torch.save writes one archive per file"
            )
        self.prefix = pickles[0][: -len("data.pkl")]
        self.records = {
            info.filename[len(self.prefix) :]: info for info in infos if info.filename.startswith(self.prefix)
        }

    def has(self, name: str) -> bool:
        return name in self.records

    def read(self, name: str) -> np.ndarray:
        info = self.records.get(name)
        if info is None:
            raise TorchFileError(f"the archive has no record {_brief(name)}")
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            raise TorchFileError(f"record {_brief(name)} is compressed; torch.save writes uncompressed records")
        what = f"record {_brief(name)}"
        # The local header and the name it gives the record, in one read: the name must be the directory's.
        expected = info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
        header = _read_exactly(self.file, info.header_offset, 30 + len(expected), self.file_size, what).tobytes()
        signature, _, _, *_, name_length, extra_length = struct.unpack("<4s5H3I2H", header[:30])
        if signature != b"PK\x03\x04":
            raise TorchFileError(f"record {_brief(name)} has no local zip header")
        if name_length != len(expected) or header[30:] != expected:
            raise TorchFileError(
                f"record {_brief(name)}'s own header names another record: the archive's directory points at "
                "another record's bytes"
            )
        start = info.header_offset + 30 + name_length + extra_length
        return _read_exactly(self.file, start, info.file_size, self.file_size, what)


def _load_zip(file, file_size: int, budget: _Budget):
    archive = _Archive(file, file_size)
    byteorder = archive.read("byteorder").tobytes() if archive.has("byteorder") else b"little"
    if byteorder not in (b"little", b"big"):
        raise TorchFileError(f"unknown byte order {byteorder[:20]!r}")
    storages: dict[str, _Storage] = {}

    def load_storage(storage_type, key, location, numel, *rest):
        _refuse_unsupported(storage_type)
        if not isinstance(storage_type, _StorageType):
            raise TorchFileError(f"a storage's type must be a torch storage class, got {_brief(storage_type)}")
        if not isinstance(key, str) or not isinstance(location, str):
            raise TorchFileError(
                f"a storage's key and location must be strings, got {_brief(key, 40)}, {_brief(location, 40)}"
            )
        numel = _check_int(numel, "a storage's size")
        if key in storages:
            return storages[key]
        dtype = storage_type.dtype if storage_type.dtype is not None else np.dtype(np.uint8)
        data = archive.read(f"data/{key}")
        if data.size != numel * dtype.itemsize:
            raise TorchFileError(
                f"storage {_brief(key, 40)} should hold {numel} {dtype} elements ({numel * dtype.itemsize} bytes), "
                f"its record has {data.size} bytes"
            )
        if byteorder == b"big" and dtype.itemsize > 1:
            data.view(dtype).byteswap(inplace=True)
        storages[key] = _Storage(data, dtype, key)
        return storages[key]

    pickled = archive.read("data.pkl")
    return _Unpickler(io.BytesIO(pickled.tobytes()), load_storage, budget).load()


def _load_legacy(file, file_size: int, budget: _Budget):
    """torch.save(..., _use_new_zipfile_serialization=False): pickles, then each storage's length and bytes."""

    def unpickler(load_storage=None, overrides=None):
        return _Unpickler(file, load_storage or _refuse_storage, budget, overrides)

    if unpickler().load() != _LEGACY_MAGIC:
        raise TorchFileError("it is a pickle but not a file written by torch.save")
    protocol = unpickler().load()
    if protocol != 1001:
        raise TorchFileError(f"unknown legacy torch format version {_brief(protocol)}")
    system = unpickler().load()
    if not isinstance(system, dict) or not system.get("little_endian", True):
        raise TorchFileError("legacy big-endian files are not supported; " + _SAVE_HINT)
    pending: dict[str, tuple[np.dtype, int]] = {}
    storages: dict[str, _Storage] = {}

    def load_storage(storage_type, key, location, numel, view_metadata=None, *rest):
        _refuse_unsupported(storage_type)
        if not isinstance(storage_type, _StorageType):
            raise TorchFileError(f"a storage's type must be a torch storage class, got {_brief(storage_type)}")
        if not isinstance(key, str):
            raise TorchFileError(f"a storage key must be a string, got {_brief(key, 40)}")
        numel = _check_int(numel, "a storage's size")
        if key not in storages:
            # The bytes come after the pickle: hand out an empty storage, fill it in below.
            dtype = storage_type.dtype if storage_type.dtype is not None else np.dtype(np.uint8)
            pending[key] = (dtype, numel)
            storages[key] = _Storage(np.empty(0, np.uint8), dtype, key)
        if view_metadata is not None:
            raise TorchFileError("legacy storage views are not supported; " + _SAVE_HINT)
        return storages[key]

    # The main pickle refers to storages before their bytes are read: build its tensors after.
    deferred: list[tuple[_Tensor, Any, tuple]] = []

    def defer(rebuild):
        def deferred_rebuild(*args):
            tensor = _Tensor(np.empty(0))
            deferred.append((tensor, rebuild, args))
            return tensor

        return deferred_rebuild

    overrides = {
        ("torch._utils", rebuild.__name__): _Global(f"torch._utils.{rebuild.__name__}", defer(rebuild))
        for rebuild in (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3)
    }
    result = unpickler(load_storage, overrides).load()
    keys = unpickler().load()
    if not isinstance(keys, list) or any(not isinstance(k, str) for k in keys):
        raise TorchFileError("the legacy storage list is not a list of keys")
    for key in keys:
        if key not in pending:
            raise TorchFileError(f"the legacy file lists storage {_brief(key, 40)} that the pickle never used")
        dtype, numel = pending.pop(key)
        (count,) = struct.unpack("<q", _read_exactly(file, file.tell(), 8, file_size, "a storage's length").tobytes())
        if count != numel:
            raise TorchFileError(f"storage {_brief(key, 40)} should hold {numel} elements, the file says {count}")
        storages[key].data = _read_exactly(file, file.tell(), numel * dtype.itemsize, file_size, "a storage")
    if pending:
        raise TorchFileError(f"the legacy file lacks the bytes of storage(s) {_names(sorted(pending))}")
    for tensor, rebuild, args in deferred:
        tensor.array = rebuild(*args).array
    return result


def _refuse_storage(*args):
    raise TorchFileError("a storage where none may be")


def _open(path: Path):
    try:
        return open_regular(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"torch_load: file not found: {path}") from None
    except IsADirectoryError:
        raise TorchFileError(f"torch_load: {path} is a folder, not a file") from None
    except ValueError as error:  # a FIFO, a device, a socket: never read (a FIFO would block)
        raise TorchFileError(one_line(f"torch_load: {error}; only regular files are read")) from None


def torch_load(path: str | os.PathLike, *, max_bytes: int | None = None) -> Any:
    """Read a file written by `torch.save`, without PyTorch, as `torch.load(path, weights_only=True)` does.

    ```python
    # PyTorch                                            # fundamentals
    state = torch.load("model.pth", weights_only=True)   state = fm.torch_load("model.pth")
    ```

    Tensors come back as NumPy arrays with their dtype (bfloat16 as `ml_dtypes.bfloat16`),
    shape and strides; tensors that shared a storage share memory, and an expanded (stride-0)
    tensor stays a view. Dicts, OrderedDicts (with their `_metadata`), Counters, lists,
    tuples, sets, numbers, strings, bytes and `None` come back as they are; `torch.Size` as a
    tuple, a `torch.dtype` as a NumPy dtype, a `torch.device` as its name (`"cpu"`,
    `"cuda:0"`). Storages are read to host memory wherever they were saved.

    Memory is bounded before it is allocated: every storage, string and object the file asks
    for is counted against `max_bytes`, which by default is the file's own size plus 64 MiB.

    **Arguments:**

    - `path`: a file written by `torch.save` (the zip format of torch >= 1.6, or the legacy
      format, of any pickle protocol torch reads). Only a regular file is opened.
    - `max_bytes`: the most memory the file may make this reader allocate (`None`: its size
      plus 64 MiB).

    **Returns:** the saved object.

    **Raises:**

    `FileNotFoundError` for a missing file. `UnsafeFileError` (a `TorchFileError` and a
    `pickle.UnpicklingError`) naming the global, for a pickle that names anything outside
    PyTorch's weights-only allow-list: nothing in the file is run. `TorchFileError` (a
    `ValueError`) naming the file, for a FIFO, device or folder, a truncated, corrupted or
    non-PyTorch file, two records of one name, a file over `max_bytes`, or one that holds
    what only PyTorch can build (quantized, sparse or meta tensors, a TorchScript program).
    Messages are one line of at most a few hundred characters.
    """
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0):
        raise TypeError(f"torch_load: max_bytes must be a non-negative int or None, got {_brief(max_bytes)}")
    path = Path(path)
    with _open(path) as file:
        file_size = os.fstat(file.fileno()).st_size
        budget = _Budget(file_size + _ALLOWANCE if max_bytes is None else max_bytes, max_bytes is None)
        token = _BUDGET.set(budget)
        try:
            return _read(file, file_size, budget)
        except UnsafeFileError as error:
            raise UnsafeFileError(one_line(f"torch_load: {path}: {error}")) from None
        except TorchFileError as error:
            raise TorchFileError(one_line(f"torch_load: cannot read {path}: {error}")) from None
        except RecursionError:
            raise TorchFileError(f"torch_load: cannot read {path}: its objects are nested too deeply") from None
        except MemoryError:
            raise TorchFileError(f"torch_load: cannot read {path}: it asks for more memory than there is") from None
        except (
            pickle.UnpicklingError,
            zipfile.BadZipFile,
            zipfile.LargeZipFile,
            EOFError,
            ValueError,
            TypeError,
            KeyError,
            IndexError,
            AttributeError,
            OverflowError,
            struct.error,
            NotImplementedError,
            OSError,
        ) as error:
            raise TorchFileError(
                one_line(
                    f"torch_load: cannot read {path}: it is truncated, corrupted or not a PyTorch file "
                    f"({type(error).__name__}: {error})"
                )
            ) from None
        finally:
            _BUDGET.reset(token)


def _read(file, file_size: int, budget: _Budget):
    head = file.read(4)
    file.seek(0)
    if head in _ZIP_MAGIC:
        return _finish(_load_zip(file, file_size, budget))
    if _is_legacy(head):
        return _finish(_load_legacy(file, file_size, budget))
    file.seek(257)
    if file.read(5) == b"ustar":
        raise TorchFileError(f"it is PyTorch's tar format (before 0.4), which this reader does not read; {_SAVE_HINT}")
    raise TorchFileError("it is not a file written by torch.save (neither a zip archive nor a legacy torch pickle)")


# --- writing ------------------------------------------------------------------------------------

_ALIGNMENT = 64  # torch aligns each storage's bytes to 64 in the file (.storage_alignment)


class _PickleWriter:
    """Protocol 2 pickle of containers, numbers, strings and arrays, spelled as torch.save spells them."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")
        self.storages: list[np.ndarray] = []
        self.storage_keys: dict[int, str] = {}
        self.active: set[int] = set()
        self.keep: list = []  # the arrays whose ids key storage_keys, alive until the end

    def global_(self, module: str, name: str):
        self.out += b"c" + f"{module}\n{name}\n".encode()

    def int_(self, value: int):
        if 0 <= value < 256:
            self.out += b"K" + bytes([value])
        elif 0 <= value < 65536:
            self.out += b"M" + struct.pack("<H", value)
        elif -(2**31) <= value < 2**31:
            self.out += b"J" + struct.pack("<i", value)
        else:
            data = pickle.encode_long(value)
            if len(data) > 255:
                raise TypeError(f"integer {value} is too large for torch.save's format")
            self.out += b"\x8a" + bytes([len(data)]) + data

    def str_(self, value: str):
        data = value.encode("utf-8", "surrogatepass")
        self.out += b"X" + struct.pack("<I", len(data)) + data

    def bytes_(self, value: bytes):
        self.global_("_codecs", "encode")  # protocol 2 spells bytes as encode(latin-1 text, "latin1")
        self.str_(value.decode("latin-1"))
        self.str_("latin1")
        self.out += b"\x86R"

    def save(self, value, where: str):
        out = self.out
        if value is None:
            out += b"N"
        elif value is True or value is False:
            out += b"\x88" if value else b"\x89"
        elif type(value) is int:
            self.int_(value)
        elif type(value) is float:
            out += b"G" + struct.pack(">d", value)
        elif type(value) is str:
            self.str_(value)
        elif type(value) is bytes:
            self.bytes_(value)
        elif type(value) is complex:
            self.global_("__builtin__", "complex")
            out += b"G" + struct.pack(">d", value.real) + b"G" + struct.pack(">d", value.imag) + b"\x86R"
        elif type(value) is bytearray:
            self.global_("__builtin__", "bytearray")
            self.bytes_(bytes(value))
            out += b"\x85R"
        elif isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
            self.dtype_(value, where)
        elif isinstance(value, (dict, list, tuple, set)):
            if id(value) in self.active:
                raise ValueError(f"torch_save: {where or 'the object'} contains itself")
            self.active.add(id(value))
            self.container(value, where)
            self.active.discard(id(value))
        else:
            self.tensor(value, where)

    def dtype_(self, value, where: str):
        """A NumPy dtype (or scalar type) as the torch dtype it reads back as: `torch.float32`, ..."""
        try:
            name = _TORCH_DTYPE_NAMES.get(np.dtype(value).newbyteorder("="))
        except TypeError:
            name = None
        if name is None:
            raise TypeError(
                f"torch_save: {where or 'the object'} is the dtype {_brief(value)}, which torch has no dtype for"
            )
        self.global_("torch", name)

    def key_(self, key, where: str):
        if not _is_key(key):
            raise TypeError(
                f"torch_save: dict key {_brief(key)} at {where or 'the top'} must be a str, a number, bytes, None "
                "or a tuple of them"
            )
        self.save(key, where)

    def items_(self, items: list, where: str):
        for start in range(0, len(items), 1000):
            self.out += b"("
            for key, item in items[start : start + 1000]:
                self.key_(key, where)
                self.save(item, f"{where}[{_brief(key, 40)}]")
            self.out += b"u"

    def container(self, value, where: str):
        out = self.out
        if isinstance(value, dict):
            if type(value) is Counter:  # as pickle spells it: Counter(dict)
                self.global_("collections", "Counter")
                out += b"}"
                self.items_(list(value.items()), where)
                out += b"\x85R"
                return
            if type(value) is OrderedDict:
                self.global_("collections", "OrderedDict")
                out += b")R"
            else:
                out += b"}"
            self.items_(list(value.items()), where)
            attributes = getattr(value, "__dict__", None)
            if attributes:  # a state_dict's _metadata: BUILD sets it back, as pickle writes it
                out += b"}"
                self.items_(list(attributes.items()), f"{where}.__dict__")
                out += b"b"
        elif isinstance(value, set):
            self.global_("__builtin__", "set")
            out += b"]"
            members = list(value)
            for start in range(0, len(members), 1000):
                out += b"("
                for item in members[start : start + 1000]:
                    self.key_(item, where)
                out += b"e"
            out += b"\x85R"
        elif isinstance(value, list):
            out += b"]"
            for start in range(0, len(value), 1000):
                out += b"("
                for i, item in enumerate(value[start : start + 1000], start):
                    self.save(item, f"{where}[{i}]")
                out += b"e"
        else:
            out += b"("
            for i, item in enumerate(value):
                self.save(item, f"{where}[{i}]")
            out += b"t"

    def tensor(self, value, where: str):
        if isinstance(value, (np.generic, np.ndarray)) or hasattr(value, "__array__"):
            array = to_numpy(value)
        else:
            raise TypeError(
                f"torch_save: {where or 'the object'} is a {type(value).__name__}; torch.save's weights-only format "
                "holds arrays, dicts, lists, tuples, sets, numbers, strings, bytes, dtypes and None"
            )
        name = _TORCH_DTYPE_NAMES.get(array.dtype.newbyteorder("="))
        if name is None:
            raise TypeError(f"torch_save: {where or 'the array'} has dtype {array.dtype}, which torch has no dtype for")
        key = self.storage_keys.get(id(value))
        if key is None:
            key = str(len(self.storages))
            self.storage_keys[id(value)] = key
            contiguous = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
            self.storages.append(contiguous)
            self.keep.append(value)
        strides, step = [], 1
        for n in reversed(array.shape):
            strides.append(step)
            step *= n
        storage_class = _DTYPES[name][1]
        out = self.out
        self.global_("torch._utils", "_rebuild_tensor_v2" if storage_class else "_rebuild_tensor_v3")
        out += b"(("
        self.str_("storage")
        if storage_class:
            self.global_("torch", storage_class)
        else:
            self.global_("torch.storage", "UntypedStorage")
        self.str_(key)
        self.str_("cpu")
        self.int_(array.size if storage_class else array.nbytes)
        out += b"tQ"
        self.int_(0)
        self.save(tuple(int(n) for n in array.shape), where)
        self.save(tuple(reversed(strides)), where)
        out += b"\x89"  # requires_grad=False
        self.global_("collections", "OrderedDict")
        out += b")R"  # backward_hooks: an empty OrderedDict, as torch writes it
        if not storage_class:
            self.global_("torch", name)
        out += b"tR"


def _is_key(key) -> bool:
    """What a dict key or set member may be in torch's format: hashable values torch.load reads back."""
    if key is None or type(key) in (str, int, float, bool, complex, bytes):
        return True
    return type(key) is tuple and all(_is_key(item) for item in key)


def _zip_records(records: list[tuple[str, bytes | memoryview]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in records:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            size = len(data)
            zip64 = size * 1.05 > zipfile.ZIP64_LIMIT
            header = 30 + len(name.encode()) + 4 + (20 if zip64 else 0)
            padding = -(buffer.tell() + header) % _ALIGNMENT
            info.extra = b"FB" + struct.pack("<H", padding) + b"Z" * padding  # torch's own padding field
            with archive.open(info, "w", force_zip64=zip64) as record:
                record.write(data)
    return buffer.getvalue()


def torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """Write `obj` in `torch.save`'s zip format, atomically, so `torch.load(path, weights_only=True)` reads it.

    ```python
    # PyTorch                          # fundamentals
    torch.save(state, "model.pth")     fm.torch_save(state, "model.pth")
    ```

    **Arguments:**

    - `obj`: NumPy or JAX arrays (and NumPy scalars, as 0-d tensors) inside dicts,
      OrderedDicts (with their `_metadata`), Counters, lists, tuples and sets, with numbers
      (complex too), strings, bytes, bytearrays, `None` and NumPy dtypes (written as the torch
      dtype they are: `np.float32` as `torch.float32`); dict keys and set members may be
      tuples. Everything `torch_load` returns can be written back. Each array becomes a
      contiguous little-endian tensor with its dtype and shape (bfloat16 stays bfloat16); the
      same array object twice becomes one tensor, as in PyTorch.
    - `path`: the file to write.

    **Returns:** the path written.

    **Raises:** `TypeError` naming where in `obj` a value is none of these (an object, a
    frozenset, a dtype torch lacks); `ValueError` for a container that contains itself; the
    `OSError` of `atomic_write_bytes` for a file that cannot be written.
    """
    writer = _PickleWriter()
    writer.save(obj, "")
    writer.out += b"."
    records: list[tuple[str, bytes | memoryview]] = [
        ("archive/data.pkl", bytes(writer.out)),
        ("archive/.format_version", b"1"),
        ("archive/.storage_alignment", str(_ALIGNMENT).encode()),
        ("archive/byteorder", b"little"),
    ]
    records += [
        (f"archive/data/{i}", a.reshape(-1).view(np.uint8).data if a.size else b"")
        for i, a in enumerate(writer.storages)
    ]
    records.append(("archive/version", b"3\n"))
    return atomic_write_bytes(path, _zip_records(records))
