"""Datasets and a `torch.utils.data.DataLoader` over host NumPy arrays (appendix A.6).

The book wraps its tensors in a map-style `Dataset` (anything with `__len__` and
`__getitem__`) and lets a `DataLoader` shuffle, batch and collate them. The same objects
exist here, with the same arguments and the same observable behaviour, but the batches are
NumPy arrays that stay on the host until a jitted step takes them as input:

=====================================================  ==============================================
PyTorch                                                `fundamentals`
=====================================================  ==============================================
``class ToyDataset(Dataset)`` / ``TensorDataset(X, y)``  ``ArrayDataset(X, y)`` (also ``ToyDataset``)
``torch.manual_seed(123)``                             ``DataLoader(..., seed=123)``
``DataLoader(ds, batch_size=2, shuffle=True)``          ``DataLoader(ds, batch_size=2, shuffle=True, seed=123)``
``DataLoader(ds, ..., drop_last=True)``                ``DataLoader(ds, ..., drop_last=True)``
``DataLoader(ds, sampler=DistributedSampler(ds))``      ``DataLoader(ds, sampler=DistributedSampler(ds))``
``sampler.set_epoch(epoch)``                           ``sampler.set_epoch(epoch)``
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

import collections
import collections.abc
import concurrent.futures
import copy
import itertools
import multiprocessing
import multiprocessing.context
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ._checks import check_int
from ._checks import is_int as _is_int
from .samplers import Sampler, sampler_order
from .tensors import to_numpy

__all__ = [
    "Dataset",
    "ArrayDataset",
    "ToyDataset",
    "default_collate",
    "DataLoader",
    "DevicePlan",
]


@runtime_checkable
class Dataset(Protocol):
    """A map-style dataset: anything with `__len__` and `__getitem__(index)`.

    The protocol behind `torch.utils.data.Dataset`. The book's `ToyDataset` satisfies it as
    written, without subclassing anything; `DataLoader` calls `dataset[i]` for `i` in
    `range(len(dataset))` (in the sampler's order) and collates the items.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index): ...


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

    def __init__(self, *arrays):
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

    def __init_subclass__(cls, **kwargs):
        # A subclass that defines its own items no longer promises that they are rows of `arrays`
        # (unless it says so with a `batch_arrays` of its own); one that only adds fields keeps it.
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        if ("__getitem__" in own or "__getitems__" in own) and "batch_arrays" not in own:
            cls.batch_arrays = _no_batch_arrays

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

    def __getitem__(self, index):
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


@dataclass(frozen=True)
class DevicePlan:
    """What a loader's epochs are, in terms a compiled program can run on the device.

    Batch `k` of an epoch is `tuple(a[indices_k] for a in arrays)`, with the `indices_k` that
    `epochs()` yields for that epoch in order. `fit` puts `arrays` on the device once and sends
    only the indices of each epoch; `DataLoader` builds its own batches from the same plan, so
    both give the same batches by construction.

    **Fields:**

    - `arrays`: the dataset's arrays, the features first and the labels second.
    - `epochs`: called once per epoch (advancing the loader's shuffle exactly as `iter(loader)`
      does), it returns that epoch's batches of indices: 1-D integer arrays.
    """

    arrays: tuple[np.ndarray, ...]
    epochs: Callable[[], Iterable[np.ndarray]]


def default_collate(batch: list):
    """Stack a list of dataset items into one batch, as `torch.utils.data.default_collate`.

    **Arguments:**

    - `batch`: a non-empty list of items, all with the same structure.

    **Returns:**

    The items merged along a new first axis, recursively:

    - arrays (NumPy, JAX, PyTorch: anything with `__array__`) and NumPy scalars are stacked
      with `numpy.stack`, keeping their dtype;
    - Python ints become `int64` arrays, floats `float64`, bools `bool` (PyTorch's dtypes);
    - strings and bytes stay a list;
    - a dict gives a dict of collated values, a named tuple the same named tuple;
    - a tuple gives a **tuple** of collated fields (PyTorch gives a list here; a tuple keeps
      the batches of a generic dataset the same type as an `ArrayDataset`'s), a list a list.

    **Raises:**

    `TypeError` for an item of another type; `ValueError` if items have different shapes,
    lengths or keys.
    """
    if not isinstance(batch, (list, tuple)) or len(batch) == 0:
        raise ValueError(f"default_collate: batch must be a non-empty list of items, got {batch!r}")
    elem = batch[0]
    if isinstance(elem, (bool, np.bool_)):
        return np.array(batch, dtype=np.bool_)
    if isinstance(elem, int):
        return np.array(batch, dtype=np.int64)
    if isinstance(elem, float):
        return np.array(batch, dtype=np.float64)
    if isinstance(elem, (str, bytes)):
        return list(batch)
    if isinstance(elem, (np.ndarray, np.generic)) or hasattr(elem, "__array__"):
        arrays = [item if isinstance(item, (np.ndarray, np.generic)) else np.asarray(item) for item in batch]
        if arrays[0].dtype.kind in "OUSV":
            raise TypeError(f"default_collate: cannot stack arrays of dtype {arrays[0].dtype}")
        shapes = {item.shape for item in arrays}
        if len(shapes) > 1:
            raise ValueError(
                f"default_collate: items must have the same shape to be stacked, got shapes {sorted(shapes)}"
            )
        # np.array stacks equal-shape arrays as np.stack does, at a quarter of its cost for small items.
        return np.array(arrays)
    if type(elem) is tuple:  # the usual (features, label) item, without the ABC checks below
        if any(len(item) != len(elem) for item in batch):
            raise ValueError("default_collate: each item in the batch must have the same length")
        return tuple(default_collate(list(field)) for field in zip(*batch))
    if isinstance(elem, collections.abc.Mapping):
        keys = list(elem.keys())
        for item in batch:
            if not isinstance(item, collections.abc.Mapping) or set(item.keys()) != set(keys):
                raise ValueError(f"default_collate: every dict item must have the keys {keys}, got {item!r}")
        return {key: default_collate([item[key] for item in batch]) for key in keys}
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # a named tuple
        return type(elem)(*(default_collate(list(field)) for field in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        if any(len(item) != len(elem) for item in batch):
            raise ValueError("default_collate: each item in the batch must have the same length")
        fields = [default_collate(list(field)) for field in zip(*batch)]
        return tuple(fields) if isinstance(elem, tuple) else fields
    raise TypeError(
        "default_collate: items must be arrays, numbers, strings, dicts or sequences of those; "
        f"found {type(elem).__name__}"
    )


def _fetch_items(dataset, indices: np.ndarray, collate_fn):
    # PyTorch's map-style fetcher: one dataset[i] per index, then collate.
    return collate_fn([dataset[int(i)] for i in indices])


def _json_state(state):
    """numpy's bit_generator.state with arrays (MT19937's key) turned into lists."""
    if isinstance(state, dict):
        return {key: _json_state(value) for key, value in state.items()}
    if isinstance(state, np.ndarray):
        return state.tolist()
    if isinstance(state, np.integer):
        return int(state)
    return state


class DataLoader:
    """Batches of a dataset, shuffled and collated, with `torch.utils.data.DataLoader` semantics.

    Replaces `torch.utils.data.DataLoader(dataset, batch_size, shuffle, sampler, num_workers,
    collate_fn, pin_memory, drop_last, timeout, worker_init_fn, multiprocessing_context,
    generator, prefetch_factor, persistent_workers)`, with `seed` (or `generator`) in place of
    `torch.manual_seed`. The book's `DataLoader(..., pin_memory=True, drop_last=True,
    sampler=DistributedSampler(train_ds))` runs as written.

    ```python
    X_train, y_train, _, _ = toy_data()
    loader = DataLoader(ArrayDataset(X_train, y_train), batch_size=2, shuffle=True, seed=123)
    len(loader)             # 3, the last batch holds one example
    for X, y in loader:     # NumPy arrays: X float32 (2, 2), y int64 (2,)
        ...
    ```

    What a PyTorch user sees is the same:

    - `len(loader)` is `ceil(n / batch_size)`, or `floor` with `drop_last`, where `n` is
      `len(sampler)` if a sampler is given, else `len(dataset)`.
    - Every `iter(loader)` with `shuffle=True` draws a new permutation; the sequence of
      epochs is fixed by `seed`.
    - A `sampler` is any iterable of indices with a length (a list, a `DistributedSampler`),
      iterated afresh every epoch.
    - An `ArrayDataset` gives `(features, labels)` tuples of arrays; another dataset's items
      are merged by `collate_fn`, `default_collate` by default.

    **Arguments:**

    - `dataset`: a map-style dataset (`__len__` and `__getitem__`), usually an `ArrayDataset`.
    - `batch_size`: examples per batch, a positive int.
    - `shuffle`: draw a new random order every epoch. Not allowed together with `sampler`.
    - `sampler`: an iterable of indices with `__len__`, giving the order of each epoch.
    - `drop_last`: drop the last batch if it is smaller than `batch_size`.
    - `seed`: an int, a `numpy.random.Generator` (used as it is, and advanced), or None for a
      random seed (PyTorch's behaviour without `manual_seed`).
    - `num_workers`: if above 0, this many background threads prepare the next batches
      (threads, not processes: the gathers release the GIL and nothing is pickled). Batches
      come in the same order as with 0. The dataset must be safe to read from threads.
    - `collate_fn`: merges a list of items into a batch. Given, it is called exactly as in
      PyTorch, `collate_fn([dataset[i] for i in batch_indices])`, even for an `ArrayDataset`.
    - `pin_memory`: accepted and does nothing. PyTorch copies batches into page-locked host
      memory for faster `.to("cuda")`; here batches stay NumPy arrays and JAX places them on
      the device itself when a jitted step takes them (`jax.device_put` does its own staging).
    - `timeout`: with workers, seconds to wait for a batch before raising
      `RuntimeError("DataLoader timed out after ... seconds")`, as PyTorch; 0 waits forever.
      Needs `num_workers > 0` (PyTorch refuses it on iteration without workers).
    - `worker_init_fn`: called as `worker_init_fn(worker_id)` in each worker thread before it
      loads its first batch, ids from 0 (once per epoch, or once per loader with
      `persistent_workers`). Seed per-thread state here; PyTorch calls it in each worker
      process.
    - `multiprocessing_context`: checked as PyTorch checks it (a start method name or a
      `multiprocessing` context, and only with workers) and otherwise a no-op: the workers
      are threads, so no process is started.
    - `generator`: another name for `seed` (an int or a `numpy.random.Generator`), where
      PyTorch takes a `torch.Generator`; pass one of the two, not both.
    - `prefetch_factor`: with workers, batches each worker prepares ahead (default 2, as in
      PyTorch): at most `prefetch_factor * num_workers` batches are in flight. Only with
      `num_workers > 0`, as in PyTorch; 0 is refused (nothing would be loaded).
    - `persistent_workers`: keep the worker threads between epochs instead of starting them
      at every `iter(loader)` (threads start in microseconds, so it matters less than with
      PyTorch's processes). Only with `num_workers > 0`, as in PyTorch.

    **Raises:**

    `TypeError` / `ValueError` naming the argument for a dataset without `__len__` or
    `__getitem__`, an empty dataset, a `batch_size` that is not a positive int, `shuffle`
    with a `sampler`, a sampler without a length, a negative `num_workers`, a bad `seed` or
    `generator`, and PyTorch's `ValueError`s for `prefetch_factor` or `persistent_workers`
    without workers, a negative `timeout` or `prefetch_factor`, or a bad `multiprocessing_context`;
    `SamplerIndexError` (an `IndexError` and a `ValueError`) when a sampler gives an index
    out of range.
    """

    def __init__(
        self,
        dataset,
        batch_size: int = 1,
        shuffle: bool = False,
        sampler: Sampler | None = None,
        drop_last: bool = False,
        seed: int | np.random.Generator | None = None,
        num_workers: int = 0,
        collate_fn: Callable[[list], Any] | None = None,
        *,
        pin_memory: bool = False,
        timeout: float = 0,
        worker_init_fn: Callable[[int], Any] | None = None,
        multiprocessing_context=None,
        generator: int | np.random.Generator | None = None,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
    ):
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(
                f"DataLoader: dataset must be a map-style dataset with __len__ and __getitem__, "
                f"got {type(dataset).__name__}"
            )
        if len(dataset) == 0:
            raise ValueError("DataLoader: dataset is empty (len(dataset) == 0); there is nothing to load")
        if batch_size is None:
            raise TypeError(
                "DataLoader: batch_size must be a positive int; batch_size=None (no batching) is not supported"
            )
        batch_size = check_int("DataLoader: batch_size", batch_size, 1)
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"DataLoader: shuffle must be a bool, got {type(shuffle).__name__}")
        if not isinstance(drop_last, (bool, np.bool_)):
            raise TypeError(f"DataLoader: drop_last must be a bool, got {type(drop_last).__name__}")
        if sampler is not None:
            if shuffle:
                raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle (shuffle=True)")
            if not (hasattr(sampler, "__iter__") and hasattr(sampler, "__len__")):
                raise TypeError(
                    f"DataLoader: sampler must be an iterable of indices with __len__, got {type(sampler).__name__}"
                )
        num_workers = check_int("DataLoader: num_workers", num_workers, 0)
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(f"DataLoader: collate_fn must be callable, got {type(collate_fn).__name__}")
        for name, flag in (("pin_memory", pin_memory), ("persistent_workers", persistent_workers)):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"DataLoader: {name} must be a bool, got {type(flag).__name__}")
        # torch's checks, in torch's order and with torch's messages.
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
                raise TypeError(
                    f"DataLoader: prefetch_factor must be an int or None, got {type(prefetch_factor).__name__}"
                )
            if prefetch_factor < 0:
                raise ValueError("DataLoader: prefetch_factor option should be non-negative")
            if prefetch_factor == 0:
                raise ValueError(
                    "DataLoader: prefetch_factor must be at least 1 here: 0 batches in flight would load nothing"
                )
        if persistent_workers and num_workers == 0:
            raise ValueError("DataLoader: persistent_workers option needs num_workers > 0")
        if timeout > 0 and num_workers == 0:
            # torch fails later, on iteration (an AssertionError: timeout == 0 without workers).
            raise ValueError(
                f"DataLoader: timeout={timeout!r} needs num_workers > 0: without workers batches are made in the "
                "loop itself, and there is nothing to wait for"
            )
        if worker_init_fn is not None and not callable(worker_init_fn):
            raise TypeError(f"DataLoader: worker_init_fn must be callable, got {type(worker_init_fn).__name__}")
        if multiprocessing_context is not None:
            if num_workers == 0:
                raise ValueError(
                    "DataLoader: multiprocessing_context can only be used with multi-process loading "
                    f"(num_workers > 0), but got num_workers={num_workers}"
                )
            if isinstance(multiprocessing_context, str):
                methods = multiprocessing.get_all_start_methods()
                if multiprocessing_context not in methods:
                    raise ValueError(
                        f"DataLoader: multiprocessing_context option should specify a valid start method in {methods!r}, "
                        f"but got multiprocessing_context={multiprocessing_context!r}"
                    )
            elif not isinstance(multiprocessing_context, multiprocessing.context.BaseContext):
                raise TypeError(
                    "DataLoader: multiprocessing_context option should be a valid context object or a string "
                    f"specifying the start method, but got multiprocessing_context={multiprocessing_context!r}"
                )
        if generator is not None:
            if seed is not None:
                raise ValueError("DataLoader: pass seed or generator, not both (they are the same thing here)")
            if type(generator).__module__.split(".")[0] == "torch":
                raise TypeError(
                    "DataLoader: generator must be an int seed or a numpy.random.Generator; a torch.Generator cannot "
                    "drive NumPy's shuffle (pass its seed instead: generator=g.initial_seed())"
                )
            if not (_is_int(generator) or isinstance(generator, np.random.Generator)):
                raise TypeError(
                    f"DataLoader: generator must be an int seed or a numpy.random.Generator, got {type(generator).__name__}"
                )
            seed = generator
        if isinstance(seed, np.random.Generator):
            rng = seed
        elif seed is None:
            rng = np.random.default_rng()
        elif _is_int(seed):
            if seed < 0:
                raise ValueError(f"DataLoader: seed must be a non-negative int, got {seed!r}")
            rng = np.random.default_rng(int(seed))
        else:
            raise TypeError(
                f"DataLoader: seed must be an int, a numpy.random.Generator or None, got {type(seed).__name__}"
            )

        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.sampler = sampler
        self.drop_last = bool(drop_last)
        self.seed = seed
        self.num_workers = num_workers
        self.collate_fn = collate_fn
        self.pin_memory = bool(pin_memory)
        self.timeout = float(timeout)
        self.worker_init_fn = worker_init_fn
        self.multiprocessing_context = multiprocessing_context
        self.generator = generator
        self.prefetch_factor = (2 if prefetch_factor is None else int(prefetch_factor)) if num_workers else None
        self.persistent_workers = bool(persistent_workers)
        # the worker threads, kept between epochs with persistent_workers
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._rng = rng

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.dataset)
        if self.drop_last:
            return n // self.batch_size
        return -(-n // self.batch_size)

    def epoch_indices(self) -> list[np.ndarray]:
        """The batches of indices of the next epoch, as one `iter(loader)` would draw them.

        Advances the loader's generator (with `shuffle=True`) or iterates the sampler once,
        exactly as `iter(loader)` does; `iter(loader)` is built on this method, so gathering
        `dataset[idx]` for each returned `idx` gives the batches iteration would have given.
        A training loop uses it to run a whole epoch inside one compiled `lax.scan`.

        **Returns:**

        A list of 1-D `int64` arrays, one per batch, the last one shorter unless `drop_last`.
        """
        n = len(self.dataset)
        if self.sampler is not None:
            order = sampler_order(self.sampler, n)
        elif self.shuffle:
            order = self._rng.permutation(n)
        else:
            order = np.arange(n, dtype=np.int64)
        order = order.astype(np.int64, copy=False)
        size = self.batch_size
        stop = (len(order) // size) * size if self.drop_last else len(order)
        return [order[start : min(start + size, stop)] for start in range(0, stop, size)]

    def __init_subclass__(cls, **kwargs):
        # A loader that makes its own epochs (its own __iter__) has no plan unless it states one.
        super().__init_subclass__(**kwargs)
        if "__iter__" in vars(cls) and "device_plan" not in vars(cls):
            cls.device_plan = _no_device_plan

    def _batch_arrays(self) -> tuple[np.ndarray, ...] | None:
        if self.collate_fn is not None:  # a collate_fn is called as given, on the items
            return None
        batch_arrays = getattr(self.dataset, "batch_arrays", None)
        return batch_arrays() if callable(batch_arrays) else None

    def device_plan(self) -> DevicePlan | None:
        """This loader's epochs as a `DevicePlan` (arrays and index orders), or None.

        A plan exists when every batch is a gather of the dataset's arrays: an `ArrayDataset`
        (or a subclass that keeps its items) without a `collate_fn`. Iterating the loader then
        gathers batches from the same plan, so a training loop that runs the plan on the device
        (as `fit` does) sees exactly the batches iteration gives.
        """
        arrays = self._batch_arrays()
        return None if arrays is None else DevicePlan(arrays, self.epoch_indices)

    def _fetcher(self) -> Callable[[np.ndarray], Any]:
        arrays = self._batch_arrays()
        if arrays is not None:
            return lambda indices: tuple(array[indices] for array in arrays)
        dataset, collate = self.dataset, self.collate_fn or default_collate
        return lambda indices: _fetch_items(dataset, indices, collate)

    def __iter__(self) -> Iterator:
        batches = self.epoch_indices()  # drawn now, as torch draws its order when iteration starts
        if self.num_workers == 0:
            return _SerialIterator(batches, self._fetcher())
        assert self.prefetch_factor is not None  # None only without workers
        fetch = self._fetcher()
        if self.worker_init_fn is not None:
            fetch = _first_calling(self.worker_init_fn, fetch)
        if not self.persistent_workers:
            return _ThreadedIterator(batches, fetch, self.num_workers, self.prefetch_factor, self.timeout)
        if self._executor is None:
            self._executor = _worker_pool(self.num_workers)
            self._persistent_fetch = fetch  # one worker_init_fn call per thread, for the loader's lifetime
        return _ThreadedIterator(
            batches, self._persistent_fetch, self.num_workers, self.prefetch_factor, self.timeout, self._executor
        )

    def state_dict(self) -> dict:
        """The loader's position in its sequence of epochs, as a JSON-serialisable dict.

        Holds the shuffling generator's `bit_generator.state` and, if the sampler has an
        `epoch` (a `DistributedSampler`), that epoch. `load_state_dict` on a loader over the
        same dataset then continues with exactly the epochs this one would produce next.
        """
        state = {"rng": _json_state(self._rng.bit_generator.state)}
        if self.sampler is not None and hasattr(self.sampler, "epoch") and hasattr(self.sampler, "set_epoch"):
            state["sampler_epoch"] = int(self.sampler.epoch)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore the generator state (and the sampler's epoch) saved by `state_dict`.

        **Raises:**

        `TypeError` if `state` is not a dict; `ValueError` naming the key if `rng` is missing
        or belongs to another kind of bit generator than this loader's.
        """
        if not isinstance(state, collections.abc.Mapping):
            raise TypeError(f"DataLoader.load_state_dict: state must be a dict, got {type(state).__name__}")
        if "rng" not in state:
            raise ValueError(f"DataLoader.load_state_dict: state has no key 'rng', got keys {sorted(state)}")
        rng_state = copy.deepcopy(dict(state["rng"]))
        expected = type(self._rng.bit_generator).__name__
        if rng_state.get("bit_generator") != expected:
            raise ValueError(
                f"DataLoader.load_state_dict: state['rng'] is for bit generator "
                f"{rng_state.get('bit_generator')!r}, this loader uses {expected!r}"
            )
        if isinstance(rng_state.get("state"), dict) and isinstance(rng_state["state"].get("key"), list):
            rng_state["state"]["key"] = np.asarray(rng_state["state"]["key"], dtype=np.uint32)  # MT19937
        try:
            self._rng.bit_generator.state = rng_state
        except (ValueError, TypeError, KeyError) as error:
            raise ValueError(
                f"DataLoader.load_state_dict: state['rng'] is not a valid {expected} state: {error}"
            ) from None
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


def _no_device_plan(self) -> None:
    return None


class _SerialIterator:
    def __init__(self, batches: list[np.ndarray], fetch):
        self._batches = iter(batches)
        self._fetch = fetch
        self._length = len(batches)

    def __iter__(self):
        return self

    def __len__(self) -> int:
        return self._length

    def __next__(self):
        return self._fetch(next(self._batches))


def _worker_pool(num_workers: int) -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="fundamentals-DataLoader")


def _first_calling(worker_init_fn, fetch):
    """`fetch`, calling `worker_init_fn(worker_id)` once in each thread before its first batch."""
    state = threading.local()
    worker_ids = itertools.count()

    def fetch_in_worker(indices):
        if not getattr(state, "started", False):
            state.started = True
            worker_init_fn(next(worker_ids))
        return fetch(indices)

    return fetch_in_worker


class _ThreadedIterator:
    """Batches prepared by a thread pool, handed out in submission order.

    At most `prefetch_factor * num_workers` batches are in flight (PyTorch's default is 2).
    Breaking out of the loop drops the iterator; `__del__` then cancels what is queued and
    joins the threads, so none outlives the loop.
    """

    def __init__(
        self,
        batches: list[np.ndarray],
        fetch,
        num_workers: int,
        prefetch_factor: int = 2,
        timeout: float = 0,
        executor: concurrent.futures.ThreadPoolExecutor | None = None,
    ):
        self._batches = iter(batches)
        self._length = len(batches)
        self._fetch = fetch
        self._timeout = timeout or None
        self._pending: collections.deque = collections.deque()
        self._owns_executor = executor is None  # a persistent pool belongs to the loader
        self._executor = _worker_pool(num_workers) if executor is None else executor
        for _ in range(prefetch_factor * num_workers):
            if not self._submit():
                break

    def _submit(self) -> bool:
        indices = next(self._batches, None)
        if indices is None:
            return False
        # Submit a plain function, not a bound method: a queued task must not keep the
        # iterator alive, or breaking out of a loop would not shut the threads down.
        self._pending.append(self._executor.submit(self._fetch, indices))
        return True

    def __iter__(self):
        return self

    def __len__(self) -> int:
        return self._length

    def __next__(self):
        if not self._pending:
            self.close()
            raise StopIteration
        future = self._pending.popleft()
        try:
            batch = future.result(timeout=self._timeout)
        except concurrent.futures.TimeoutError:
            self.close(wait=False)  # a thread cannot be stopped: leave the stuck one behind
            raise RuntimeError(f"DataLoader timed out after {self._timeout:g} seconds") from None
        except BaseException:
            self.close()
            raise
        self._submit()
        return batch

    def close(self, wait: bool = True) -> None:
        """Cancel the batches not yet started and join the worker threads (unless `wait=False`)."""
        executor = self.__dict__.pop("_executor", None)
        if executor is None:
            return
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._batches = iter(())
        if self._owns_executor:
            executor.shutdown(wait=wait, cancel_futures=True)

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit the threading module may be gone
            pass
