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

Every function the pickle may call is this module's own stand-in, never a torch or NumPy
object, and what they build stays private until the pickle is done, so the pickle's `BUILD`
instruction cannot reach into NumPy or this module. Sizes are checked against the archive
before any memory is allocated: a storage must be as long as its record in the zip, and a
tensor must lie inside its storage.

Tensors come back as NumPy arrays (bfloat16 and float8 as `ml_dtypes` types), views of their
storage as in PyTorch: tensors that shared a storage when saved share memory when loaded.
Storages are read to host memory whatever device they were saved from (`map_location="cpu"`).
"""

from __future__ import annotations

import io
import mmap
import os
import pickle
import struct
import zipfile
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from ._files import atomic_write_bytes
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


# --- what the pickle may build ------------------------------------------------------------------
# Placeholders live only while the pickle runs; `_finish` swaps them for NumPy arrays, dtypes and
# strings afterwards. Each refuses BUILD (`__setstate__`) and has no `__dict__` to write to.


class _Private:
    __slots__ = ()

    def __setstate__(self, state):
        raise UnsafeFileError(f"the pickle tries to set the state of {self!r}, which weights-only loading refuses")

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
        return f"storage {self.key!r}"


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
        return f"device({self.name!r})"


class _Global(_Private):
    """An allowed global: callable by REDUCE, checked arguments, and inert otherwise."""

    __slots__ = ("name", "function", "value")

    def __init__(self, name: str, function, value=None):
        self.name, self.function, self.value = name, function, value

    def __call__(self, *args):
        return self.function(*args)

    def __repr__(self):
        return self.name


def _check_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TorchFileError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def _check_ints(values, what: str) -> tuple[int, ...]:
    if not isinstance(values, tuple):
        raise TorchFileError(f"{what} must be a tuple of integers, got {type(values).__name__}")
    return tuple(_check_int(v, what) for v in values)


def _view(storage, storage_offset, size, stride, dtype: np.dtype | None = None) -> _Tensor:
    """The tensor `storage[storage_offset:]` seen with `size` and `stride` (in elements), checked to lie inside."""
    if not isinstance(storage, _Storage):
        raise TorchFileError(f"a tensor's storage must be a storage from the archive, got {storage!r}")
    dtype = storage.dtype if dtype is None else dtype
    offset = _check_int(storage_offset, "storage_offset")
    size, stride = _check_ints(size, "size"), _check_ints(stride, "stride")
    if len(size) != len(stride):
        raise TorchFileError(f"a tensor's size {size} and stride {stride} have different lengths")
    itemsize = dtype.itemsize
    available = storage.data.size // itemsize
    count = 1
    for n in size:
        count *= n
    if count == 0:
        if len(size) > 64 or any(n >= 2**62 for n in size):
            raise TorchFileError(f"empty tensor of size {size} is not a valid shape")
        try:  # no elements: keep torch's strides, point at no memory
            return _Tensor(
                np.ndarray(size, dtype, buffer=np.empty(0, np.uint8), strides=tuple(s * itemsize for s in stride))
            )
        except ValueError:
            return _Tensor(np.empty(size, dtype))
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= available:
        raise TorchFileError(
            f"a tensor of size {size}, stride {stride} and offset {offset} reaches element {last}, "
            f"but its {storage!r} holds {available} {dtype} elements"
        )
    array = np.ndarray(
        size, dtype, buffer=storage.data, offset=offset * itemsize, strides=tuple(s * itemsize for s in stride)
    )
    return _Tensor(array)


def _apply_metadata(tensor: _Tensor, metadata) -> _Tensor:
    if metadata is None or metadata == {}:
        return tensor
    if not isinstance(metadata, dict):
        raise TorchFileError(f"tensor metadata must be a dict, got {type(metadata).__name__}")
    array = tensor.array
    if metadata.get("neg"):
        array = np.negative(array)
    if metadata.get("conj"):
        array = np.conj(array)
    return _Tensor(np.array(array))


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _view(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    return _apply_metadata(_view(storage, storage_offset, size, stride), metadata)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    if not isinstance(dtype, _DType):
        raise TorchFileError(f"_rebuild_tensor_v3 needs a torch dtype, got {dtype!r}")
    return _apply_metadata(_view(storage, storage_offset, size, stride, _numpy_dtype(dtype.name)), metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    if not isinstance(data, _Tensor):
        raise TorchFileError(f"a Parameter must hold a tensor, got {data!r}")
    return data  # a Parameter is its tensor here; requires_grad has no meaning in JAX


def _rebuild_from_cpu_tensor(data, dtype, device, requires_grad):
    return _rebuild_parameter(data, requires_grad, None)


def _encode(text, encoding="utf-8"):
    # Protocol 2 spells bytes as _codecs.encode(latin-1 text, "latin1"): allow that one codec only.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise TorchFileError(f"_codecs.encode is allowed only as encode(str, 'latin1'), got encoding {encoding!r}")
    return text.encode("latin-1")


def _bytearray(source=b"", encoding=None):
    if isinstance(source, str) and encoding in ("latin1", "latin-1"):
        return bytearray(source, "latin-1")
    if isinstance(source, (bytes, bytearray)) and encoding is None:
        return bytearray(source)
    raise TorchFileError("bytearray is allowed only from bytes or latin-1 text")


def _set(items=()):
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise TorchFileError(f"set() is allowed only from a list or tuple, got {type(items).__name__}")
    return set(items)


def _complex(real=0.0, imag=0.0):
    if any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in (real, imag)):
        raise TorchFileError("complex() is allowed only from two numbers")
    return complex(real, imag)


def _ordered_dict(items=None):
    if items is not None:
        raise TorchFileError("OrderedDict() is allowed only without arguments, as torch pickles it")
    return OrderedDict()


def _counter(items=None):
    if items is not None and not isinstance(items, dict):
        raise TorchFileError("Counter() is allowed only from a dict")
    return Counter(items or {})


def _size(dims=()):
    return _check_ints(tuple(dims) if isinstance(dims, list) else dims, "torch.Size")


def _device(kind, index=None):
    if not isinstance(kind, str) or not (index is None or isinstance(index, int)):
        raise TorchFileError(f"torch.device needs a name and an optional index, got {kind!r}, {index!r}")
    return _Device(kind if index is None else f"{kind}:{index}")


def _not_supported(what: str):
    def refuse(*args):
        raise TorchFileError(f"{what} cannot be read without PyTorch")

    return refuse


def _allowed_globals() -> dict[tuple[str, str], _Global | _DType | _StorageType]:
    """torch's weights-only allow-list, mapped to this module's stand-ins (or to clear refusals)."""
    allowed: dict[tuple[str, str], _Global | _DType | _StorageType] = {}

    def allow(module: str, name: str, function, value=None):
        allowed[module, name] = _Global(f"{module}.{name}", function, value)

    allow("collections", "OrderedDict", _ordered_dict, OrderedDict)
    allow("collections", "Counter", _counter, Counter)
    allow("builtins", "set", _set, set)
    allow("builtins", "bytearray", _bytearray, bytearray)
    allow("builtins", "complex", _complex, complex)
    allow("_codecs", "encode", _encode)
    allow("torch", "Size", _size)
    allow("torch", "device", _device)
    allow("torch._utils", "_rebuild_tensor", _rebuild_tensor)
    allow("torch._utils", "_rebuild_tensor_v2", _rebuild_tensor_v2)
    allow("torch._utils", "_rebuild_tensor_v3", _rebuild_tensor_v3)
    allow("torch._utils", "_rebuild_parameter", _rebuild_parameter)
    allow("torch._utils", "_rebuild_parameter_with_state", _rebuild_parameter)
    allow("torch._utils", "_rebuild_device_tensor_from_cpu_tensor", _rebuild_from_cpu_tensor)
    for name, what in (
        ("_rebuild_qtensor", "a quantized tensor"),
        ("_rebuild_sparse_tensor", "a sparse tensor"),
        ("_rebuild_meta_tensor_no_storage", "a meta tensor (it has no data)"),
        ("_rebuild_nested_tensor", "a nested tensor"),
        ("_rebuild_wrapper_subclass", "a tensor subclass"),
        ("_rebuild_device_tensor_from_numpy", "a tensor saved from NumPy"),
    ):
        allow("torch._utils", name, _not_supported(what))
    allow("torch._tensor", "_rebuild_from_type_v2", _not_supported("a tensor subclass or a tensor with attributes"))
    allow("torch.serialization", "_get_layout", _not_supported("a sparse tensor layout"))
    allow("torch", "Tensor", _not_supported("torch.Tensor()"))
    allow("torch.nn.parameter", "Parameter", _not_supported("torch.nn.Parameter()"))
    for name in list(_DTYPES) + list(_ALIASES):
        allowed["torch", name] = _DType(_ALIASES.get(name, name))
    for storage, dtype_name in _STORAGE_DTYPES.items():
        for module in ("torch", "torch.cuda"):
            allowed[module, storage] = _StorageType(storage, _DTYPES[dtype_name][0])
    for module in ("torch", "torch.storage"):
        allowed[module, "UntypedStorage"] = _StorageType("UntypedStorage", None)
    return allowed


_ALLOWED = _allowed_globals()
_BLOCKED_MODULES = ("sys", "os", "posix", "nt")


class _Unpickler(pickle.Unpickler):
    """A pickle reader that resolves globals only from the weights-only allow-list and storages from the archive."""

    def __init__(self, file, load_storage, overrides: dict | None = None):
        super().__init__(file, encoding="utf-8")
        self._load_storage = load_storage
        self._overrides = overrides or {}

    def find_class(self, module: str, name: str):
        if module == "__builtin__":  # protocol 2 spells Python 3's builtins by their Python 2 name
            module = "builtins"
        found = self._overrides.get((module, name)) or _ALLOWED.get((module, name))
        if found is None or module in _BLOCKED_MODULES:
            raise UnsafeFileError(
                f"refused global {module}.{name}: weights-only loading allows only tensors, containers, "
                "numbers and strings (the file may try to run code)"
            )
        return found

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] in ("storage", b"storage")):
            raise UnsafeFileError(f"refused persistent id {pid!r:.80}: only ('storage', ...) ids are allowed")
        return self._load_storage(*pid[1:])


def _finish(obj):
    """The unpickled object with placeholders replaced: tensors -> ndarrays, dtypes -> np.dtype, devices -> str."""
    done: dict[int, Any] = {}

    def convert(value):
        if type(value) in (int, float, str, bytes, bool, complex) or value is None:
            return value
        known = done.get(id(value))
        if known is not None:
            return known
        if isinstance(value, _Tensor):
            result = value.array
        elif isinstance(value, _Storage):
            result = value.data.view(value.dtype) if value.data.size % value.dtype.itemsize == 0 else value.data
        elif isinstance(value, _DType):
            result = _numpy_dtype(value.name)
        elif isinstance(value, _Device):
            result = value.name
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
            value.update(items)
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
        elif isinstance(value, (frozenset, bytearray)):
            result = value if isinstance(value, bytearray) else frozenset(convert(v) for v in value)
        else:
            raise TorchFileError(f"unexpected object of type {type(value).__name__} in the pickle")
        done[id(value)] = result
        return result

    return convert(obj)


# --- reading ------------------------------------------------------------------------------------

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_SAVE_HINT = "re-save it with a recent PyTorch: torch.save(torch.load(path, weights_only=True), path)"


def is_torch_file(path: str | os.PathLike) -> bool:
    """True if the file looks like `torch.save`'s output (a zip archive or the legacy pickle format), by content."""
    with open(path, "rb") as file:
        head = file.read(4)
    return head in _ZIP_MAGIC or head[:2] == b"\x80\x02"


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


class _Archive:
    """The records of a torch zip archive, read straight from the file (torch writes them uncompressed)."""

    def __init__(self, file, file_size: int):
        self.file, self.file_size = file, file_size
        zip_file = zipfile.ZipFile(file)
        pickles = [
            info for info in zip_file.infolist() if info.filename.endswith("data.pkl") and info.filename.count("/") == 1
        ]
        if len(pickles) != 1:
            raise TorchFileError("it is a zip archive but not one written by torch.save (no <name>/data.pkl record)")
        self.prefix = pickles[0].filename[: -len("data.pkl")]
        self.records = {
            info.filename[len(self.prefix) :]: info
            for info in zip_file.infolist()
            if info.filename.startswith(self.prefix)
        }

    def has(self, name: str) -> bool:
        return name in self.records

    def read(self, name: str) -> np.ndarray:
        info = self.records.get(name)
        if info is None:
            raise TorchFileError(f"the archive has no record {name!r}")
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            raise TorchFileError(f"record {name!r} is compressed; torch.save writes uncompressed records")
        header = _read_exactly(self.file, info.header_offset, 30, self.file_size, f"record {name!r}").tobytes()
        signature, *_, name_length, extra_length = struct.unpack("<4s5H3I2H", header)
        if signature != b"PK\x03\x04":
            raise TorchFileError(f"record {name!r} has no local zip header")
        start = info.header_offset + 30 + name_length + extra_length
        return _read_exactly(self.file, start, info.file_size, self.file_size, f"record {name!r}")


def _load_zip(file, file_size: int):
    archive = _Archive(file, file_size)
    byteorder = archive.read("byteorder").tobytes() if archive.has("byteorder") else b"little"
    if byteorder not in (b"little", b"big"):
        raise TorchFileError(f"unknown byte order {byteorder[:20]!r}")
    storages: dict[str, _Storage] = {}

    def load_storage(storage_type, key, location, numel, *rest):
        if not isinstance(storage_type, _StorageType):
            raise TorchFileError(f"a storage's type must be a torch storage class, got {storage_type!r}")
        if not isinstance(key, str) or not isinstance(location, str):
            raise TorchFileError(f"a storage's key and location must be strings, got {key!r:.40}, {location!r:.40}")
        numel = _check_int(numel, "a storage's size")
        if key in storages:
            return storages[key]
        dtype = storage_type.dtype if storage_type.dtype is not None else np.dtype(np.uint8)
        data = archive.read(f"data/{key}")
        if data.size != numel * dtype.itemsize:
            raise TorchFileError(
                f"storage {key!r} should hold {numel} {dtype} elements ({numel * dtype.itemsize} bytes), "
                f"its record has {data.size} bytes"
            )
        if byteorder == b"big" and dtype.itemsize > 1:
            data.view(dtype).byteswap(inplace=True)
        storages[key] = _Storage(data, dtype, key)
        return storages[key]

    pickled = archive.read("data.pkl")
    return _Unpickler(io.BytesIO(pickled.tobytes()), load_storage).load()


def _load_legacy(file, file_size: int):
    """torch.save(..., _use_new_zipfile_serialization=False): pickles, then each storage's length and bytes."""

    def unpickler(load_storage=None, overrides=None):
        return _Unpickler(file, load_storage or _refuse_storage, overrides)

    if unpickler().load() != _LEGACY_MAGIC:
        raise TorchFileError("it is a pickle but not a file written by torch.save")
    protocol = unpickler().load()
    if protocol != 1001:
        raise TorchFileError(f"unknown legacy torch format version {protocol!r}")
    system = unpickler().load()
    if not isinstance(system, dict) or not system.get("little_endian", True):
        raise TorchFileError("legacy big-endian files are not supported; " + _SAVE_HINT)
    pending: dict[str, tuple[np.dtype, int]] = {}
    storages: dict[str, _Storage] = {}

    def load_storage(storage_type, key, location, numel, view_metadata=None, *rest):
        if not isinstance(storage_type, _StorageType):
            raise TorchFileError(f"a storage's type must be a torch storage class, got {storage_type!r}")
        if not isinstance(key, str):
            raise TorchFileError(f"a storage key must be a string, got {key!r:.40}")
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
            raise TorchFileError(f"the legacy file lists storage {key!r} that the pickle never used")
        dtype, numel = pending.pop(key)
        (count,) = struct.unpack("<q", _read_exactly(file, file.tell(), 8, file_size, f"storage {key!r}").tobytes())
        if count != numel:
            raise TorchFileError(f"storage {key!r} should hold {numel} elements, the file says {count}")
        storages[key].data = _read_exactly(file, file.tell(), numel * dtype.itemsize, file_size, f"storage {key!r}")
    if pending:
        raise TorchFileError(f"the legacy file lacks the bytes of storage(s) {sorted(pending)}")
    for tensor, rebuild, args in deferred:
        tensor.array = rebuild(*args).array
    return result


def _refuse_storage(*args):
    raise TorchFileError("a storage where none may be")


def torch_load(path: str | os.PathLike) -> Any:
    """Read a file written by `torch.save`, without PyTorch, as `torch.load(path, weights_only=True)` does.

    ```python
    # PyTorch                                            # fundamentals
    state = torch.load("model.pth", weights_only=True)   state = fm.torch_load("model.pth")
    ```

    Tensors come back as NumPy arrays with their dtype (bfloat16 as `ml_dtypes.bfloat16`),
    shape and strides; tensors that shared a storage share memory. Dicts, OrderedDicts
    (with their `_metadata`), lists, tuples, sets, numbers, strings, bytes and `None` come back
    as they are; `torch.Size` as a tuple, a `torch.dtype` as a NumPy dtype, a `torch.device`
    as its name (`"cpu"`, `"cuda:0"`). Storages are read to host memory wherever they were saved.

    **Arguments:**

    - `path`: a file written by `torch.save` (the zip format of torch >= 1.6, or the legacy format).

    **Returns:** the saved object.

    **Raises:**

    `FileNotFoundError` for a missing file. `UnsafeFileError` (a `TorchFileError` and a
    `pickle.UnpicklingError`) naming the global, for a pickle that names anything outside
    PyTorch's weights-only allow-list: nothing in the file is run. `TorchFileError` (a
    `ValueError`) naming the file, for a truncated, corrupted or non-PyTorch file, or one that
    holds what only PyTorch can build (quantized, sparse or meta tensors).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"torch_load: file not found: {path}")
    if path.is_dir():
        raise TorchFileError(f"torch_load: {path} is a folder, not a file")
    try:
        with open(path, "rb") as file:
            file_size = os.fstat(file.fileno()).st_size
            head = file.read(4)
            file.seek(0)
            if head in _ZIP_MAGIC:
                return _finish(_load_zip(file, file_size))
            if head[:2] == b"\x80\x02":
                return _finish(_load_legacy(file, file_size))
            file.seek(257)
            if file.read(5) == b"ustar":
                raise TorchFileError(
                    f"it is PyTorch's tar format (before 0.4), which this reader does not read; {_SAVE_HINT}"
                )
            raise TorchFileError(
                "it is not a file written by torch.save (neither a zip archive nor a legacy torch pickle)"
            )
    except UnsafeFileError as error:
        raise UnsafeFileError(f"torch_load: {path}: {error}") from None
    except TorchFileError as error:
        raise TorchFileError(f"torch_load: cannot read {path}: {error}") from None
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
    ) as error:
        raise TorchFileError(
            f"torch_load: cannot read {path}: it is truncated, corrupted or not a PyTorch file "
            f"({type(error).__name__}: {error})"[:500]
        ) from None


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
            self.global_("_codecs", "encode")
            self.str_(value.decode("latin-1"))
            self.str_("latin1")
            out += b"\x86R"
        elif isinstance(value, (dict, list, tuple)):
            if id(value) in self.active:
                raise ValueError(f"torch_save: {where or 'the object'} contains itself")
            self.active.add(id(value))
            self.container(value, where)
            self.active.discard(id(value))
        else:
            self.tensor(value, where)

    def container(self, value, where: str):
        out = self.out
        if isinstance(value, dict):
            if type(value) is OrderedDict:
                self.global_("collections", "OrderedDict")
                out += b")R"
            else:
                out += b"}"
            items = list(value.items())
            for start in range(0, len(items), 1000):
                out += b"("
                for key, item in items[start : start + 1000]:
                    if type(key) not in (str, int, float, bool) and key is not None:
                        raise TypeError(
                            f"torch_save: dict key {key!r} at {where or 'the top'} must be a str or a number"
                        )
                    self.save(key, where)
                    self.save(item, f"{where}[{key!r}]")
                out += b"u"
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
                "holds arrays, dicts, lists, tuples, numbers, strings, bytes and None"
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
      OrderedDicts, lists and tuples, with numbers, strings, bytes and `None`. Each array
      becomes a contiguous tensor with its dtype and shape (bfloat16 stays bfloat16); the
      same array object twice becomes one tensor, as in PyTorch.
    - `path`: the file to write.

    **Returns:** the path written.

    **Raises:** `TypeError` naming where in `obj` a value is neither (an object, a set, a
    dtype torch lacks); `ValueError` for a container that contains itself.
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
