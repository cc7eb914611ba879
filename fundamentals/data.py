"""Datasets and a `torch.utils.data.DataLoader` over host NumPy arrays (appendix A.6).

The book wraps its tensors in a map-style `Dataset` (anything with `__len__` and
`__getitem__`) and lets a `DataLoader` shuffle, batch and collate them. The same objects
exist here, with the same arguments and the same observable behaviour, but the batches are
NumPy arrays that stay on the host until a jitted step takes them as input:

=====================================================  ==============================================
PyTorch                                                `fundamentals`
=====================================================  ==============================================
``class ToyDataset(Dataset)`` / ``TensorDataset(X, y)``  ``ArrayDataset(X, y)`` (also ``ToyDataset``)
``class Stream(IterableDataset)``                      ``class Stream(IterableDataset)`` (or any ``__iter__``)
``torch.manual_seed(123)``                             ``DataLoader(..., seed=123)``
``DataLoader(ds, batch_size=2, shuffle=True)``          ``DataLoader(ds, batch_size=2, shuffle=True, seed=123)``
``DataLoader(ds, batch_size=None)``                    ``DataLoader(ds, batch_size=None)``
``DataLoader(ds, batch_sampler=BatchSampler(...))``     ``DataLoader(ds, batch_sampler=BatchSampler(...))``
``DataLoader(ds, sampler=DistributedSampler(ds))``      ``DataLoader(ds, sampler=DistributedSampler(ds))``
``DataLoader(ds, num_workers=2)`` (processes)          ``DataLoader(ds, num_workers=2)`` (processes)
``torch.utils.data.get_worker_info()``                 ``get_worker_info()``
``for X, y in loader:`` (tensors)                      ``for X, y in loader:`` (NumPy arrays)
=====================================================  ==============================================

Two things differ on purpose:

- **Speed.** `torch.utils.data.DataLoader` fetches a batch one item at a time and stacks the
  items. An `ArrayDataset` batch is one fancy-indexing gather per array, so an epoch costs
  about as much as copying the data once.
- **Randomness.** PyTorch shuffles with the global torch generator. Here the shuffling
  generator is a `numpy.random.Generator` owned by the loader and derived from `seed`, so two
  loaders with the same seed give the same batches whatever else the program draws, and
  `state_dict()` / `load_state_dict()` checkpoint it. The permutations are not PyTorch's
  numbers (the generators differ), only its semantics.
"""

from __future__ import annotations

import collections.abc
import copy
import hashlib
import itertools
import json
import multiprocessing
import multiprocessing.context
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from . import _workers
from ._checks import check_int
from ._checks import is_int as _is_int
from ._workers import Fetcher, WorkerInfo, get_worker_info
from .samplers import (
    BatchSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    check_range,
    index_blocks,
    make_rng,
)
from .tensors import to_numpy

__all__ = [
    "Dataset",
    "IterableDataset",
    "ArrayDataset",
    "ToyDataset",
    "default_collate",
    "default_convert",
    "DataLoader",
    "DevicePlan",
    "WorkerInfo",
    "get_worker_info",
]


@runtime_checkable
class Dataset(Protocol):
    """A map-style dataset: anything with `__len__` and `__getitem__(index)`.

    The protocol behind `torch.utils.data.Dataset`. The book's `ToyDataset` satisfies it as
    written, without subclassing anything; `DataLoader` calls `dataset[i]` for `i` in
    `range(len(dataset))` (in the sampler's order) and collates the items.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: Any) -> Any: ...


class ArrayDataset:
    """A dataset over arrays of equal length: item `i` is `(arrays[0][i], arrays[1][i], ...)`.

    Replaces `torch.utils.data.TensorDataset(X, y)` and the book's `ToyDataset(X, y)`
    (`ToyDataset` is another name for this class). Indexing with an integer array returns the
    whole batch at once, one gather per array; that is the path `DataLoader` takes, so a
    batch never loops over items in Python.

    ```python
    ds = ArrayDataset(X_train, y_train)
    len(ds)                 # 5
    ds[0]                   # (array([-1.2,  3.1], dtype=float32), 0)
    ds[np.array([3, 0])]    # (X_train[[3, 0]], y_train[[3, 0]])
    ```

    **Arguments:**

    - `*arrays`: one or more array-likes (NumPy, JAX or CPU PyTorch arrays, nested lists)
      with the same length along the first axis. NumPy arrays are kept as they are, not
      copied; anything else is converted with `numpy.asarray`.

    **Raises:**

    `ValueError` if no array is given, an array has no first axis, or the lengths differ.
    """

    def __init__(self, *arrays: Any):
        if not arrays:
            raise ValueError("ArrayDataset: arrays must hold at least one array, got none")
        converted = []
        for position, array in enumerate(arrays):
            array = to_numpy(array)
            if array.ndim == 0:
                raise ValueError(f"ArrayDataset: arrays[{position}] must have a first (batch) axis, got a scalar")
            converted.append(array)
        lengths = [array.shape[0] for array in converted]
        if len(set(lengths)) > 1:
            shapes = ", ".join(f"arrays[{i}]: {tuple(a.shape)}" for i, a in enumerate(converted))
            raise ValueError(f"ArrayDataset: arrays must have the same length along the first axis, got {shapes}")
        self.arrays: tuple[np.ndarray, ...] = tuple(converted)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A subclass that defines its own items no longer promises that they are rows of `arrays`
        # (unless it says so with a `batch_arrays` of its own); one that only adds fields keeps it.
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        if ("__getitem__" in own or "__getitems__" in own) and "batch_arrays" not in own:
            setattr(cls, "batch_arrays", _no_batch_arrays)  # noqa: B010 - a method replaced on the class, by design  # a class attribute, set on the subclass

    def batch_arrays(self) -> tuple[np.ndarray, ...] | None:
        """The arrays whose rows are this dataset's items, or None.

        The promise behind `DataLoader`'s one-gather batches and `fit`'s on-device epochs: the
        batch of `indices` is `tuple(a[indices] for a in arrays)`. `ArrayDataset` and any
        subclass that only adds fields or methods return `self.arrays`; a subclass that defines
        its own `__getitem__` (or `__getitems__`) returns None, so its items are fetched one by
        one through its own code, as PyTorch would.
        """
        return self.arrays

    def __len__(self) -> int:
        return int(self.arrays[0].shape[0])

    def __getitem__(self, index: Any) -> Any:
        """Item `index` as a tuple with one entry per array, or a batch for an index array.

        **Arguments:**

        - `index`: an int (negative counts from the end, as in PyTorch), a slice, or an
          integer array / list of indices.

        **Returns:**

        A tuple `(arrays[0][index], arrays[1][index], ...)`. For an index array each entry
        is the gathered batch, `arrays[k][index]`.
        """
        length = len(self)
        if _is_int(index):
            if not -length <= index < length:
                raise IndexError(f"ArrayDataset: index {int(index)} is out of range for a dataset of length {length}")
            return tuple(array[index] for array in self.arrays)
        if isinstance(index, slice):
            return tuple(array[index] for array in self.arrays)
        indices = np.asarray(index)
        if indices.dtype.kind not in "iu":
            raise TypeError(
                f"ArrayDataset: index must be an int, a slice or an integer array, got {type(index).__name__}"
                f" of dtype {indices.dtype}"
            )
        try:
            # Plain fancy indexing: one gather per array, measured as fast as np.take here.
            return tuple(array[indices] for array in self.arrays)
        except IndexError:
            bad = indices[(indices < -length) | (indices >= length)]
            raise IndexError(
                f"ArrayDataset: index {int(bad.flat[0])} is out of range for a dataset of length {length}"
            ) from None

    def __repr__(self) -> str:
        shapes = ", ".join(f"{a.dtype}{list(a.shape)}" for a in self.arrays)
        return f"ArrayDataset({shapes})"


def _no_batch_arrays(self) -> None:
    return None


ToyDataset = ArrayDataset


class IterableDataset:
    """An iterable-style dataset: `__iter__` gives the items of one pass (`__len__` optional).

    The base class behind `torch.utils.data.IterableDataset`, for streams that cannot be
    indexed (lines of a file, records from a service). `DataLoader` iterates it once per epoch
    and batches what it yields; with workers, each worker iterates its own copy, so the
    dataset shards itself with `get_worker_info()` as in PyTorch. Subclassing is optional: an
    object with `__iter__` and without `__getitem__` is iterable-style too.
    """

    def __iter__(self) -> Iterator:
        raise NotImplementedError(f"{type(self).__name__} must define __iter__")


def _is_iterable_style(dataset) -> bool:
    if isinstance(dataset, IterableDataset):
        return True
    if any(
        c.__name__ == "IterableDataset" and c.__module__.startswith("torch.utils.data") for c in type(dataset).__mro__
    ):
        return True
    return hasattr(dataset, "__iter__") and not hasattr(dataset, "__getitem__")


@dataclass(frozen=True)
class DevicePlan:
    """What a loader's epochs are, in terms a compiled program can run on the device.

    Batch `k` of an epoch is `tuple(a[indices_k] for a in arrays)`, with the `indices_k` that
    `epochs()` yields for that epoch in order. `fit` puts `arrays` on the device once and sends
    only the indices of each epoch; `DataLoader` builds its own batches from the same plan, so
    both give the same batches by construction.

    **Fields:**

    - `arrays`: the dataset's arrays, the features first and the labels second.
    - `epochs`: called once per epoch (starting the sampler, and drawing the shuffle, exactly
      as `iter(loader)` does), it returns an iterator over that epoch's batches of indices,
      1-D `int64` arrays, pulled from the sampler as they are needed.
    """

    arrays: tuple[np.ndarray, ...]
    epochs: Callable[[], Iterable[np.ndarray]]


# --- collate -------------------------------------------------------------------------------------

_COLLATE_ERROR = "default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; found {}"
# NumPy dtype kinds PyTorch refuses to stack: strings, bytes, objects (its np_str_obj_array_pattern).
_REFUSED_KINDS = "SaUOV"
_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}


def _torch_result_dtype(dtypes: list[np.dtype]) -> np.dtype:
    """The dtype `torch.tensor` / `torch.stack` gives a mix of dtypes (`torch.promote_types`).

    Unlike NumPy, a higher category wins outright: int64 with float16 is float16, not float64.
    """
    top = max(_CATEGORY[d.kind] for d in dtypes)
    result = dtypes[0] if _CATEGORY[dtypes[0].kind] == top else None
    for dtype in dtypes:
        if _CATEGORY[dtype.kind] == top:
            result = dtype if result is None else np.promote_types(result, dtype)
    if top == 3:  # complex with float64 is complex128, as in NumPy
        result = np.result_type(result, *(d for d in dtypes if d.kind == "f"))
    assert result is not None
    return np.dtype(result)


def _scalar_dtype(value) -> np.dtype:
    """The dtype `torch.tensor` infers for one Python or NumPy scalar (a Python float is float32)."""
    if isinstance(value, np.generic):
        return value.dtype
    if isinstance(value, bool):
        return np.dtype(np.bool_)
    if isinstance(value, int):
        return np.dtype(np.int64)
    if isinstance(value, float):
        return np.dtype(np.float32)  # torch's default dtype
    if isinstance(value, complex):
        return np.dtype(np.complex64)
    raise TypeError(_COLLATE_ERROR.format(type(value)))


def _collate_scalars(batch: list) -> np.ndarray:
    dtypes = {_scalar_dtype(value) for value in batch}
    dtype = next(iter(dtypes)) if len(dtypes) == 1 else _torch_result_dtype(sorted(dtypes, key=str))
    return np.array(batch, dtype=dtype)


def _collate_arrays(batch: list) -> np.ndarray:
    arrays = [item if isinstance(item, np.ndarray) else np.asarray(item) for item in batch]
    first = arrays[0]
    if first.dtype.kind in _REFUSED_KINDS:
        raise TypeError(_COLLATE_ERROR.format(first.dtype))
    for position, array in enumerate(arrays):
        if array.shape != first.shape:
            raise ValueError(
                f"default_collate: stack expects each array to be equal size, but got shape {first.shape} at "
                f"entry 0 and shape {array.shape} at entry {position}"
            )
    dtypes = {array.dtype for array in arrays}
    if len(dtypes) == 1:
        # np.array stacks equal-shape arrays as np.stack does, at a quarter of its cost for small items.
        return np.array(arrays)
    return np.array(arrays, dtype=_torch_result_dtype(sorted(dtypes, key=str)))


def _collate_sequence(elem, batch: list, collate: Callable[[list], Any]):
    size = len(elem)
    if any(len(item) != size for item in batch):
        raise RuntimeError("each element in list of batch should be of equal size")
    fields = [collate(list(samples)) for samples in zip(*batch)]
    if isinstance(elem, tuple):
        return tuple(fields)  # PyTorch gives a list here; a tuple keeps every loader's batches tuples
    try:
        if isinstance(elem, collections.abc.MutableSequence):
            clone = copy.copy(elem)
            for position, field in enumerate(fields):
                clone[position] = field
            return clone
        return type(elem)(fields)
    except TypeError:  # a sequence type that cannot be built from a list, e.g. range
        return fields


def _collate_mapping(elem, batch: list, collate: Callable[[list], Any]):
    collated = {key: collate([item[key] for item in batch]) for key in elem}
    try:
        if isinstance(elem, collections.abc.MutableMapping):
            clone = copy.copy(elem)
            clone.update(collated)
            return clone
        return type(elem)(collated)
    except TypeError:
        return collated


def default_collate(batch: list[Any]) -> Any:
    """Stack a list of dataset items into one batch, as `torch.utils.data.default_collate`.

    **Arguments:**

    - `batch`: a non-empty list of items, all with the same structure.

    **Returns:**

    The items merged along a new first axis, recursively, with PyTorch's rules and dtypes:

    - arrays (NumPy, JAX, PyTorch: anything with `__array__`) are stacked; mixed dtypes
      promote as `torch.stack` promotes them (int64 with float16 is float16);
    - Python and NumPy numbers become one array: a batch that starts with a Python float is
      `float64`; otherwise the dtype is what `torch.tensor` infers (ints `int64`, bools `bool`,
      `[1, 2.5]` float32 `[1.0, 2.5]`, `[True, 2]` int64 `[1, 2]`, NumPy scalars their dtype);
    - strings and bytes stay the list they came in;
    - a mapping gives the same mapping type (an `OrderedDict`, a dict subclass) of collated
      values, a named tuple the same named tuple, a list or sequence subclass the same type;
    - a tuple gives a **tuple** of collated fields (PyTorch gives a list here; a tuple keeps
      the batches of a generic dataset the same type as an `ArrayDataset`'s).

    **Raises:**

    `TypeError` with PyTorch's message for items of another type and for arrays of strings or
    objects; `RuntimeError` (PyTorch's) for sequences of different lengths; `ValueError` for
    arrays of different shapes or an empty batch.
    """
    if not isinstance(batch, (collections.abc.Sequence, np.ndarray)) or len(batch) == 0:
        raise ValueError(f"default_collate: batch must be a non-empty list of items, got {batch!r}")
    elem = batch[0]
    if type(elem) is tuple:  # the usual (features, label) item, first
        return _collate_sequence(elem, batch, default_collate)
    if isinstance(elem, np.ndarray):
        return _collate_arrays(batch)
    if isinstance(elem, (np.bool_, np.number, np.object_)):
        return _collate_scalars(batch)
    if isinstance(elem, float):
        return np.array(batch, dtype=np.float64)
    if isinstance(elem, int):
        return _collate_scalars(batch)
    if isinstance(elem, (str, bytes)):
        return batch
    if hasattr(elem, "__array__"):  # JAX and PyTorch arrays
        return _collate_arrays(batch)
    if isinstance(elem, collections.abc.Mapping):
        return _collate_mapping(elem, batch, default_collate)
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # a named tuple
        return type(elem)(*(default_collate(list(samples)) for samples in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        return _collate_sequence(elem, batch, default_collate)
    raise TypeError(_COLLATE_ERROR.format(type(elem)))


def default_convert(data: Any) -> Any:
    """One item, unbatched, as `torch.utils.data.default_convert` leaves it for `batch_size=None`.

    NumPy scalars become 0-d arrays (PyTorch makes them tensors); arrays, Python numbers and
    strings stay as they are; containers keep their type (a tuple stays a tuple) with their
    contents converted.
    """
    if isinstance(data, np.generic) and not isinstance(data, (np.str_, np.bytes_)):
        return np.asarray(data)
    if isinstance(data, (np.ndarray, str, bytes)) or not isinstance(
        data, (collections.abc.Mapping, collections.abc.Sequence)
    ):
        return data
    if isinstance(data, collections.abc.Mapping):
        return _collate_mapping(data, [data], lambda values: default_convert(values[0]))
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(default_convert(value) for value in data))
    return _collate_sequence(data, [data], lambda values: default_convert(values[0]))


def _json_state(state):
    """numpy's bit_generator.state with arrays (MT19937's key) turned into lists."""
    if isinstance(state, dict):
        return {key: _json_state(value) for key, value in state.items()}
    if isinstance(state, np.ndarray):
        return state.tolist()
    if isinstance(state, np.integer):
        return int(state)
    return state


# --- options -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    """A `DataLoader`'s arguments, checked in PyTorch's order and with PyTorch's messages.

    PyTorch's own checks come first and word their errors as PyTorch does (behind this
    library's `"DataLoader: "` prefix), so code that matches on them keeps working; the type
    checks PyTorch leaves to a later traceback follow, each naming its argument.
    """

    iterable: bool
    batch_size: int | None
    sampler: Any
    batch_sampler: Any
    custom_batch_sampler: bool
    drop_last: bool
    num_workers: int
    collate_fn: Callable | None
    worker_init_fn: Callable | None
    timeout: float
    prefetch_factor: int | None
    context: multiprocessing.context.BaseContext | None
    worker_type: str | None
    rng: np.random.Generator

    @classmethod
    def check(cls, dataset, arguments: dict) -> _Options:
        iterable = _check_dataset(dataset)
        num_workers, prefetch_factor, timeout = _check_worker_counts(arguments)
        sampler, batch_sampler, batch_size, drop_last, rng = _check_sampling(dataset, iterable, arguments)
        context, worker_type = _check_worker_kind(num_workers, arguments)
        for name in ("collate_fn", "worker_init_fn"):
            if arguments[name] is not None and not callable(arguments[name]):
                raise TypeError(f"DataLoader: {name} must be callable, got {type(arguments[name]).__name__}")
        return cls(
            iterable=iterable,
            batch_size=batch_size,
            sampler=sampler,
            batch_sampler=batch_sampler,
            custom_batch_sampler=arguments["batch_sampler"] is not None,
            drop_last=drop_last,
            num_workers=num_workers,
            collate_fn=arguments["collate_fn"],
            worker_init_fn=arguments["worker_init_fn"],
            timeout=timeout,
            prefetch_factor=prefetch_factor,
            context=context,
            worker_type=worker_type,
            rng=rng,
        )


def _check_dataset(dataset) -> bool:
    """True for an iterable-style dataset, False for a map-style one, or a `TypeError`."""
    if _is_iterable_style(dataset):
        if hasattr(dataset, "__next__") and not isinstance(dataset, IterableDataset):
            raise TypeError(
                f"DataLoader: dataset is an iterator ({type(dataset).__name__}), which can be read only once; pass an "
                "object whose __iter__ starts a new pass each epoch (an IterableDataset), or a map-style dataset"
            )
        return True
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise TypeError(
            "DataLoader: dataset must be a map-style dataset with __len__ and __getitem__, or an iterable-style "
            f"dataset with __iter__, got {type(dataset).__name__}"
        )
    return False


def _check_worker_counts(arguments: dict) -> tuple[int, int | None, float]:
    num_workers, prefetch_factor, timeout = arguments["num_workers"], arguments["prefetch_factor"], arguments["timeout"]
    if _is_int(num_workers) and num_workers < 0:
        raise ValueError(
            "DataLoader: num_workers option should be non-negative; use num_workers=0 to disable multiprocessing."
        )
    num_workers = check_int("DataLoader: num_workers", num_workers, 0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float, np.integer, np.floating)):
        raise TypeError(f"DataLoader: timeout must be a number of seconds, got {type(timeout).__name__}")
    if timeout < 0:
        raise ValueError("DataLoader: timeout option should be non-negative")
    if num_workers == 0 and prefetch_factor is not None:
        raise ValueError(
            "DataLoader: prefetch_factor option could only be specified in multiprocessing."
            "let num_workers > 0 to enable multiprocessing, otherwise set prefetch_factor to None."
        )
    if prefetch_factor is not None:
        if not _is_int(prefetch_factor):
            raise TypeError(f"DataLoader: prefetch_factor must be an int or None, got {type(prefetch_factor).__name__}")
        if prefetch_factor < 0:
            raise ValueError("DataLoader: prefetch_factor option should be non-negative")
        if prefetch_factor == 0:
            raise ValueError(
                "DataLoader: prefetch_factor must be at least 1 here: 0 batches in flight would load nothing"
            )
    for name in ("pin_memory", "persistent_workers"):
        if not isinstance(arguments[name], (bool, np.bool_)):
            raise TypeError(f"DataLoader: {name} must be a bool, got {type(arguments[name]).__name__}")
    if arguments["persistent_workers"] and num_workers == 0:
        raise ValueError("DataLoader: persistent_workers option needs num_workers > 0")
    if timeout > 0 and num_workers == 0:
        # torch fails later, on iteration (an AssertionError: timeout == 0 without workers).
        raise ValueError(
            f"DataLoader: timeout={timeout!r} needs num_workers > 0: without workers batches are made in the "
            "loop itself, and there is nothing to wait for"
        )
    if num_workers:
        prefetch_factor = 2 if prefetch_factor is None else int(prefetch_factor)
    return num_workers, prefetch_factor, float(timeout)


def _check_sampling(dataset, iterable: bool, arguments: dict):
    """`(sampler, batch_sampler, batch_size, drop_last, rng)` from the sampling arguments."""
    shuffle, sampler, batch_sampler = arguments["shuffle"], arguments["sampler"], arguments["batch_sampler"]
    batch_size, drop_last = arguments["batch_size"], arguments["drop_last"]
    rng = _check_seed(arguments["seed"], arguments["generator"])
    if iterable:
        for name, value, unset in (("shuffle", shuffle, (False, None)), ("sampler", sampler, (None,))):
            if not any(value is u for u in unset):
                raise ValueError(
                    f"DataLoader: DataLoader with IterableDataset: expected unspecified {name} option, but got "
                    f"{name}={value}"
                )
        if batch_sampler is not None:
            raise ValueError(
                "DataLoader: DataLoader with IterableDataset: expected unspecified batch_sampler option, but got "
                f"batch_sampler={batch_sampler}"
            )
    if sampler is not None and shuffle:
        raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle")
    if batch_sampler is not None:
        if batch_size != 1 or shuffle or sampler is not None or drop_last:
            raise ValueError(
                "DataLoader: batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, and drop_last"
            )
        if not hasattr(batch_sampler, "__iter__"):
            raise TypeError(
                f"DataLoader: batch_sampler must be an iterable of index lists, got {type(batch_sampler).__name__}"
            )
        batch_size, drop_last = None, False
    elif batch_size is None and drop_last:
        raise ValueError(
            "DataLoader: batch_size=None option disables auto-batching and is mutually exclusive with drop_last"
        )
    if batch_size is not None:
        batch_size = check_int("DataLoader: batch_size", batch_size, 1)
    if not isinstance(drop_last, (bool, np.bool_)):
        raise TypeError(f"DataLoader: drop_last must be a bool, got {type(drop_last).__name__}")
    if sampler is not None and not hasattr(sampler, "__iter__"):
        raise TypeError(f"DataLoader: sampler must be an iterable of indices, got {type(sampler).__name__}")
    if sampler is None and not iterable:
        sampler = RandomSampler(dataset, generator=rng) if shuffle else SequentialSampler(dataset)
    if batch_size is not None and batch_sampler is None and not iterable:
        batch_sampler = BatchSampler(sampler, batch_size, bool(drop_last))
    return sampler, batch_sampler, batch_size, bool(drop_last), rng


def _check_seed(seed, generator) -> np.random.Generator:
    name = "seed"
    if generator is not None:
        if seed is not None:
            raise ValueError("DataLoader: pass seed or generator, not both (they are the same thing here)")
        seed, name = generator, "generator"
    if seed is not None and not (_is_int(seed) or isinstance(seed, np.random.Generator)):
        if type(seed).__module__.split(".")[0] != "torch":
            raise TypeError(
                f"DataLoader: {name} must be an int seed, a numpy.random.Generator or None, got {type(seed).__name__}"
            )
    return make_rng("DataLoader", seed)


def _check_worker_kind(num_workers: int, arguments: dict):
    """`(multiprocessing context or None, worker_type or None)`."""
    context, worker_type = arguments["multiprocessing_context"], arguments["worker_type"]
    if worker_type not in (None, "process", "thread"):
        raise ValueError(f"DataLoader: worker_type must be 'process', 'thread' or None, got {worker_type!r}")
    if context is None:
        return None, worker_type
    if num_workers == 0:
        raise ValueError(
            "DataLoader: multiprocessing_context can only be used with multi-process loading "
            f"(num_workers > 0), but got num_workers={num_workers}"
        )
    if isinstance(context, str):
        methods = multiprocessing.get_all_start_methods()
        if context not in methods:
            raise ValueError(
                f"DataLoader: multiprocessing_context option should specify a valid start method in {methods!r}, "
                f"but got multiprocessing_context={context!r}"
            )
        context = multiprocessing.get_context(context)
    if not isinstance(context, multiprocessing.context.BaseContext):
        raise TypeError(
            "DataLoader: multiprocessing_context option should be a valid context object or a string "
            f"specifying the start method, but got multiprocessing_context={context!r}"
        )
    if worker_type == "thread":
        raise ValueError("DataLoader: multiprocessing_context needs worker processes, but worker_type='thread'")
    return context, "process"


_FROZEN = ("batch_size", "batch_sampler", "sampler", "drop_last", "dataset", "persistent_workers")


class DataLoader:
    """Batches of a dataset, shuffled and collated, with `torch.utils.data.DataLoader` semantics.

    Replaces `torch.utils.data.DataLoader(dataset, batch_size, shuffle, sampler, batch_sampler,
    num_workers, collate_fn, pin_memory, drop_last, timeout, worker_init_fn,
    multiprocessing_context, generator, prefetch_factor, persistent_workers)`, with `seed` (or
    `generator`) in place of `torch.manual_seed`. The book's `DataLoader(..., pin_memory=True,
    drop_last=True, sampler=DistributedSampler(train_ds))` runs as written.

    ```python
    X_train, y_train, _, _ = toy_data()
    loader = DataLoader(ArrayDataset(X_train, y_train), batch_size=2, shuffle=True, seed=123)
    len(loader)             # 3, the last batch holds one example
    for X, y in loader:     # NumPy arrays: X float32 (2, 2), y int64 (2,)
        ...
    ```

    What a PyTorch user sees is the same:

    - `len(loader)` is `ceil(n / batch_size)`, or `floor` with `drop_last`, where `n` is
      `len(sampler)` if a sampler is given, else `len(dataset)` (0 for an empty dataset);
      `len(batch_sampler)` with a batch sampler; a `TypeError` if the length is unknown.
    - Every `iter(loader)` with `shuffle=True` draws a new permutation; the sequence of
      epochs is fixed by `seed`. The same seed gives the same batches with or without workers.
    - A `sampler` is any iterable of indices, iterated afresh every epoch and pulled lazily
      (an endless sampler works; `len(loader)` then raises).
    - An `ArrayDataset` gives `(features, labels)` tuples of arrays; another dataset's items
      are merged by `collate_fn`, `default_collate` by default.
    - An exception raised for one batch (by the dataset or `collate_fn`) is raised for that
      batch, in order, and iterating again goes on with the next batch.
    - `batch_size`, `sampler`, `batch_sampler`, `drop_last`, `dataset` and
      `persistent_workers` cannot be reassigned after construction (a `ValueError`).

    **Arguments:**

    - `dataset`: a map-style dataset (`__len__` and `__getitem__`), usually an `ArrayDataset`,
      or an iterable-style one (`__iter__`, see `IterableDataset`).
    - `batch_size`: examples per batch, a positive int, or None for no batching: each item is
      returned as the dataset gives it (through `default_convert`).
    - `shuffle`: draw a new random order every epoch (any truthy value, as in PyTorch). Not
      allowed together with `sampler`, or with an iterable-style dataset.
    - `sampler`: an iterable of indices (a list, a `RandomSampler`, a `DistributedSampler`).
    - `batch_sampler`: an iterable of lists of indices, one list a batch (a `BatchSampler`);
      excludes `batch_size`, `shuffle`, `sampler` and `drop_last`.
    - `num_workers`: if above 0, this many worker processes load the batches (see
      `worker_type`), each with its own copy of the dataset, started at every `iter(loader)`
      (or once with `persistent_workers`). Batches come in the same order as with 0.
    - `collate_fn`: merges a list of items into a batch. Given, it is called exactly as in
      PyTorch, `collate_fn([dataset[i] for i in batch_indices])`, even for an `ArrayDataset`.
    - `pin_memory`: accepted and changes nothing. PyTorch copies batches into page-locked
      memory for a faster `.to("cuda")`; here batches are NumPy arrays, and JAX stages a
      host-to-device copy itself when a jitted step takes them.
    - `drop_last`: drop the last batch if it is smaller than `batch_size`.
    - `timeout`: with workers, seconds to wait for one batch before raising
      `RuntimeError("DataLoader timed out after ... seconds ...")` (naming the worker) and
      stopping the workers; 0 waits forever. Needs `num_workers > 0`.
    - `worker_init_fn`: called as `worker_init_fn(worker_id)` in each worker when it starts,
      whether or not it gets a batch, ids from 0 (every epoch, or once with
      `persistent_workers`). An exception in it ends the iteration with that exception.
    - `multiprocessing_context`: the start method of the worker processes, a name
      (`"forkserver"`, `"spawn"`, `"fork"`) or a `multiprocessing` context. By default
      `forkserver` (`spawn` where there is none): plain `fork` is not safe once JAX runs.
    - `generator`: another name for `seed` (an int or a `numpy.random.Generator`), where
      PyTorch takes a `torch.Generator`; pass one of the two, not both.
    - `prefetch_factor`: with workers, batches each worker loads ahead (default 2, as in
      PyTorch): at most `prefetch_factor * num_workers` batches are in flight.
    - `persistent_workers`: keep the workers (and their copies of the dataset) between epochs.
    - `seed`: an int, a `numpy.random.Generator` (used as it is, and advanced), or None for a
      random seed (PyTorch's behaviour without `manual_seed`).
    - `worker_type`: `"process"` or `"thread"`; None (the default) takes processes, except
      for a dataset whose batches are one NumPy gather per array (an `ArrayDataset` without
      `collate_fn`), which threads load without copying the arrays into every worker, and
      on a free-threaded Python. Threads share the dataset and need no pickling.

    **Raises:**

    PyTorch's `ValueError`s for the argument conflicts it checks (`sampler` with `shuffle`,
    `batch_sampler` with `batch_size` / `shuffle` / `sampler` / `drop_last`, `batch_size=None`
    with `drop_last`, an iterable-style dataset with `shuffle` / `sampler` / `batch_sampler`,
    `prefetch_factor` or `persistent_workers` without workers, negative `num_workers`,
    `timeout` or `prefetch_factor`, a bad `multiprocessing_context`), and `TypeError` /
    `ValueError` naming the argument for wrong types. On iteration: `SamplerIndexError` (an
    `IndexError` and a `ValueError`) when a sampler gives an index out of range; `TypeError`
    naming the dataset, `collate_fn` or `worker_init_fn` if worker processes cannot receive it.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler: Sampler | Iterable | None = None,
        batch_sampler: Iterable | None = None,
        num_workers: int = 0,
        collate_fn: Callable[[list], Any] | None = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn: Callable[[int], Any] | None = None,
        multiprocessing_context: str | multiprocessing.context.BaseContext | None = None,
        generator: int | np.random.Generator | None = None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        seed: int | np.random.Generator | None = None,
        worker_type: str | None = None,
    ):
        arguments = dict(locals())
        options = _Options.check(dataset, arguments)
        self.dataset = dataset
        self.batch_size = options.batch_size
        self.shuffle = bool(shuffle) and not options.iterable
        self.sampler = options.sampler
        self.batch_sampler = options.batch_sampler
        self.drop_last = options.drop_last
        self.seed = seed if generator is None else generator
        self.num_workers = options.num_workers
        self.pin_memory = bool(pin_memory)
        self.timeout = options.timeout
        self.worker_init_fn = options.worker_init_fn
        self.multiprocessing_context = options.context
        self.generator = generator
        self.prefetch_factor = options.prefetch_factor
        self.persistent_workers = bool(persistent_workers)
        self.worker_type = options.worker_type
        self._options = options
        self.collate_fn = options.collate_fn or (default_collate if self._auto_collation else default_convert)
        self._rng = options.rng
        self._pool: _workers.WorkerPool | None = None
        self._initialized = True
        suggested = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if self.num_workers > suggested:
            warnings.warn(
                f"This DataLoader will create {self.num_workers} worker processes in total. The suggested maximum "
                f"on this system is {suggested}; excessive worker creation might get DataLoader running slow or even "
                "freeze, so lower num_workers if that happens.",
                UserWarning,
                stacklevel=2,
            )

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FROZEN and self.__dict__.get("_initialized"):
            raise ValueError(f"{name} attribute should not be set after {type(self).__name__} is initialized")
        super().__setattr__(name, value)

    @property
    def _auto_collation(self) -> bool:
        return self.batch_sampler is not None or (self._options.iterable and self.batch_size is not None)

    def __len__(self) -> int:
        if self._options.iterable:
            length = len(self.dataset)  # a TypeError for a dataset without one, as in PyTorch
            if self.batch_size is None:
                return length
            return length // self.batch_size if self.drop_last else -(-length // self.batch_size)
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        return len(self.sampler)

    def _index_batches(self) -> Iterator[np.ndarray]:
        """One epoch's batches of indices, pulled from the sampler as they are needed.

        The sampler is started (and a shuffle drawn) now, when the epoch starts.
        """
        n = len(self.dataset)
        if self._options.custom_batch_sampler:
            return _checked_batches(iter(self.batch_sampler), n)
        assert self.batch_size is not None
        return _batched(index_blocks(self.sampler, self.batch_size), self.batch_size, self.drop_last, n)

    def epoch_indices(self) -> list[np.ndarray]:
        """The batches of indices of the next epoch, as one `iter(loader)` would draw them.

        Advances the loader's generator (with `shuffle=True`) or iterates the sampler once,
        exactly as `iter(loader)` does: gathering `dataset[idx]` for each returned `idx` gives
        the batches iteration would have given. The whole epoch is read at once, so an endless
        sampler never returns here; iteration pulls it lazily.

        **Returns:**

        A list of 1-D `int64` arrays, one per batch, the last one shorter unless `drop_last`.

        **Raises:**

        `TypeError` for a loader without batches of indices (an iterable-style dataset, or
        `batch_size=None`).
        """
        if self._options.iterable or self.batch_sampler is None:
            raise TypeError(
                "DataLoader.epoch_indices: this loader has no batches of indices (an iterable-style dataset, or "
                "batch_size=None)"
            )
        return list(self._index_batches())

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A loader that makes its own epochs (its own __iter__) has no plan unless it states one.
        super().__init_subclass__(**kwargs)
        if "__iter__" in vars(cls) and "device_plan" not in vars(cls):
            setattr(cls, "device_plan", _no_device_plan)  # noqa: B010 - a method replaced on the class, by design  # a class attribute, set on the subclass

    def _batch_arrays(self) -> tuple[np.ndarray, ...] | None:
        if self._options.iterable or self.batch_sampler is None or self._options.collate_fn is not None:
            return None  # items one by one, or a collate_fn called as given, on the items
        batch_arrays = getattr(self.dataset, "batch_arrays", None)
        return batch_arrays() if callable(batch_arrays) else None

    def device_plan(self) -> DevicePlan | None:
        """This loader's epochs as a `DevicePlan` (arrays and index orders), or None.

        A plan exists when every batch is a gather of the dataset's arrays: an `ArrayDataset`
        (or a subclass that keeps its items) with batches of indices and without a
        `collate_fn`. Iterating the loader then gathers batches from the same plan, so a
        training loop that runs the plan on the device (as `fit` does) sees exactly the
        batches iteration gives.
        """
        arrays = self._batch_arrays()
        return None if arrays is None else DevicePlan(arrays, self._index_batches)

    def _fetcher(self) -> Fetcher:
        return Fetcher(
            self.dataset,
            iterable=self._options.iterable,
            auto_collation=self._auto_collation,
            collate_fn=self.collate_fn,
            batch_size=self.batch_size,
            drop_last=self.drop_last,
            arrays=self._batch_arrays(),
        )

    def _tasks(self) -> Iterator:
        if self._options.iterable:
            return itertools.repeat(None)
        if self.batch_sampler is None:
            return iter(self.sampler)
        return self._index_batches()

    def _length(self) -> int | None:
        try:
            return len(self)
        except TypeError:
            return None

    def __iter__(self) -> Iterator:
        if self.num_workers == 0:
            return _SerialIterator(self._tasks(), self._fetcher(), self._length())
        base_seed = self._base_seed()  # from the generator's state, without advancing it
        tasks = self._tasks()
        pool = self._pool if self.persistent_workers and self._pool is not None and not self._pool.closed else None
        if pool is None:
            pool = self._start_workers(base_seed)
            if self.persistent_workers:
                self._pool = pool
        else:
            pool.start_epoch()
        assert self.prefetch_factor is not None
        return _workers.WorkerIterator(
            pool, tasks, self._length(), self.prefetch_factor, self.timeout, owns_pool=not self.persistent_workers
        )

    def _base_seed(self) -> int:
        state = json.dumps(_json_state(self._rng.bit_generator.state), sort_keys=True).encode()
        return int.from_bytes(hashlib.sha256(state).digest()[:8], "little") >> 1

    def _start_workers(self, base_seed: int) -> _workers.WorkerPool:
        kind = self.worker_type
        if kind is None:
            free_threaded = not getattr(sys, "_is_gil_enabled", lambda: True)()
            kind = "thread" if self._batch_arrays() is not None or free_threaded else "process"
        setup = _workers.WorkerSetup(
            fetcher=self._fetcher(),
            worker_init_fn=self.worker_init_fn,
            num_workers=self.num_workers,
            main_pid=os.getpid(),
            shm_prefix=_workers.shm_prefix() if kind == "process" else None,
        )
        names = {"dataset": self.dataset}
        for name in ("collate_fn", "worker_init_fn"):
            if getattr(self._options, name) is not None:
                names[name] = getattr(self._options, name)
        return _workers.WorkerPool(kind, setup, base_seed, self.multiprocessing_context, names)

    def state_dict(self) -> dict:
        """The loader's position in its sequence of epochs, as a JSON-serialisable dict.

        Holds the shuffling generator's `bit_generator.state`, the generator state of a random
        sampler defined here that has its own (a `RandomSampler(ds, generator=seed)`), and, if
        the sampler has an `epoch` (a `DistributedSampler`), that epoch. `load_state_dict` on a
        loader over the same dataset then continues with exactly the epochs this one would
        produce next, whatever its number or kind of workers.
        """
        state = {"rng": _json_state(self._rng.bit_generator.state)}
        sampler_rng = getattr(self.sampler, "_rng", None)
        if isinstance(sampler_rng, np.random.Generator) and sampler_rng is not self._rng:
            state["sampler_rng"] = _json_state(sampler_rng.bit_generator.state)
        if self.sampler is not None and hasattr(self.sampler, "epoch") and hasattr(self.sampler, "set_epoch"):
            state["sampler_epoch"] = int(self.sampler.epoch)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore the generator states (and the sampler's epoch) saved by `state_dict`.

        **Raises:**

        `TypeError` if `state` is not a dict; `ValueError` naming the key if `rng` is missing
        or belongs to another kind of bit generator than this loader's.
        """
        if not isinstance(state, collections.abc.Mapping):
            raise TypeError(f"DataLoader.load_state_dict: state must be a dict, got {type(state).__name__}")
        if "rng" not in state:
            raise ValueError(f"DataLoader.load_state_dict: state has no key 'rng', got keys {sorted(state)}")
        _restore_rng(self._rng, state["rng"], "rng")
        if "sampler_rng" in state:
            sampler_rng = getattr(self.sampler, "_rng", None)
            if not isinstance(sampler_rng, np.random.Generator):
                raise ValueError(
                    "DataLoader.load_state_dict: state has 'sampler_rng' but this loader's sampler has none"
                )
            _restore_rng(sampler_rng, state["sampler_rng"], "sampler_rng")
        if "sampler_epoch" in state:
            if self.sampler is None or not hasattr(self.sampler, "set_epoch"):
                raise ValueError(
                    "DataLoader.load_state_dict: state has 'sampler_epoch' but this loader's sampler has no set_epoch"
                )
            self.sampler.set_epoch(int(state["sampler_epoch"]))

    def __repr__(self) -> str:
        return (
            f"DataLoader({self.dataset!r}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"drop_last={self.drop_last}, num_workers={self.num_workers})"
        )


def _restore_rng(rng: np.random.Generator, saved, key: str) -> None:
    rng_state = copy.deepcopy(dict(saved))
    expected = type(rng.bit_generator).__name__
    if rng_state.get("bit_generator") != expected:
        raise ValueError(
            f"DataLoader.load_state_dict: state[{key!r}] is for bit generator "
            f"{rng_state.get('bit_generator')!r}, this loader uses {expected!r}"
        )
    if isinstance(rng_state.get("state"), dict) and isinstance(rng_state["state"].get("key"), list):
        rng_state["state"]["key"] = np.asarray(rng_state["state"]["key"], dtype=np.uint32)  # MT19937
    try:
        rng.bit_generator.state = rng_state
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(
            f"DataLoader.load_state_dict: state[{key!r}] is not a valid {expected} state: {error}"
        ) from None


def _no_device_plan(self) -> None:
    return None


def _batched(blocks: Iterator[np.ndarray], size: int, drop_last: bool, n: int) -> Iterator[np.ndarray]:
    """Batches of `size` indices from a stream of index blocks, each checked against `n`."""
    pending = None
    for block in blocks:
        check_range(block, n)
        if pending is not None:
            block = np.concatenate([pending, block])
        stop = len(block) - len(block) % size
        for start in range(0, stop, size):
            yield block[start : start + size]
        pending = block[stop:] if stop < len(block) else None
    if pending is not None and not drop_last:
        yield pending


def _checked_batches(batches: Iterator, n: int) -> Iterator[np.ndarray]:
    """A batch sampler's batches as checked 1-D `int64` arrays."""
    from .samplers import _as_index_array, _checked_block

    for batch in batches:
        yield check_range(_checked_block(_as_index_array(list(batch))), n)


class _SerialIterator:
    """Batches made in the loop itself (`num_workers=0`), one task at a time."""

    def __init__(self, tasks: Iterator, fetcher: Fetcher, length: int | None):
        fetcher.start_epoch()  # an iterable-style dataset starts its pass now, as in PyTorch
        self._tasks = tasks
        arrays = fetcher.arrays
        self._fetch = (lambda indices: tuple(array[indices] for array in arrays)) if arrays is not None else fetcher
        self._length = length

    def __iter__(self) -> Iterator[Any]:
        return self

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("this DataLoader's dataset has no __len__, so its iterator has none either")
        return self._length

    def __next__(self) -> Any:
        task = next(self._tasks)
        try:
            return self._fetch(task)
        except _workers._Exhausted:
            self._tasks = iter(())
            raise StopIteration from None
