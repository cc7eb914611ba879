"""Samplers: which indices a `DataLoader` reads, and in what order (appendix A.6 and A.9).

=============================================================  ==============================================
PyTorch                                                        `fundamentals`
=============================================================  ==============================================
``torch.utils.data.distributed.DistributedSampler(ds)``        ``DistributedSampler(ds)``
``sampler.set_epoch(epoch)``                                   ``sampler.set_epoch(epoch)``
``DataLoader(ds, sampler=[3, 1, 2])`` (any iterable of ints)   the same
=============================================================  ==============================================

`sampler_order` turns one pass over any sampler into the index array a `DataLoader` batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Protocol

import jax
import numpy as np

from ._checks import check_int
from ._checks import is_int as _is_int

__all__ = ["DistributedSampler", "SamplerIndexError", "sampler_order"]


class Sampler(Protocol):
    """What `DataLoader(sampler=...)` takes: an iterable of dataset indices with a length."""

    def __iter__(self) -> Iterator[int]: ...

    def __len__(self) -> int: ...


class SamplerIndexError(IndexError, ValueError):
    """A sampler gave an index outside `[0, len(dataset))`.

    Both an `IndexError` (what PyTorch raises when the dataset is indexed) and a `ValueError`
    (this library's convention for bad arguments), so either `except` catches it.
    """


def sampler_order(sampler, dataset_length: int) -> np.ndarray:
    """One pass over `sampler` as a 1-D int64 array, checked against the dataset length."""
    if isinstance(sampler, DistributedSampler) and type(sampler).__iter__ is DistributedSampler.__iter__:
        order = sampler.indices()  # the array __iter__ would list, without a Python loop
    elif isinstance(sampler, np.ndarray):
        order = sampler
    else:
        try:
            order = np.asarray([int(i) if hasattr(i, "__index__") else i for i in sampler])
        except ValueError:  # ragged items, e.g. a batch sampler's lists
            raise TypeError("DataLoader: sampler must yield integer indices, one at a time") from None
    if order.size == 0:
        return np.zeros(0, dtype=np.int64)
    if order.ndim != 1 or order.dtype.kind not in "iu":
        raise TypeError(
            "DataLoader: sampler must yield integer indices, one at a time; "
            f"got items of dtype {order.dtype} and shape {order.shape[1:]}"
        )
    order = order.astype(np.int64, copy=False)
    low, high = int(order.min()), int(order.max())
    if low < 0 or high >= dataset_length:
        bad = low if low < 0 else high
        raise SamplerIndexError(
            f"DataLoader: sampler gave index {bad}, out of range for a dataset of length {dataset_length}"
        )
    return order


class DistributedSampler:
    """The indices one process (rank) loads, with `torch.utils.data.DistributedSampler` semantics.

    Replaces `torch.utils.data.distributed.DistributedSampler`. Each epoch:

    1. the order is `numpy.random.default_rng(seed + epoch).permutation(n)` with `shuffle`
       (PyTorch uses `torch.randperm` with the same seed: same semantics, other numbers),
       else `0, 1, ..., n - 1`;
    2. the list is padded by repeating its head to `total_size`, a multiple of
       `num_replicas` (or, with `drop_last`, cut to the largest multiple);
    3. rank `r` takes every `num_replicas`-th index starting at `r`.

    Call `set_epoch(epoch)` before each epoch for a new shuffle, as in PyTorch; without it
    every epoch repeats the same order.

    ```python
    sampler = DistributedSampler(ds, num_replicas=2, rank=0, shuffle=True, seed=0)
    loader = DataLoader(ds, batch_size=2, sampler=sampler)
    for epoch in range(num_epochs):
        sampler.set_epoch(epoch)
        for X, y in loader: ...
    ```

    **Arguments:**

    - `dataset`: anything with `__len__`.
    - `num_replicas`: the number of processes; defaults to `jax.process_count()`.
    - `rank`: this process's rank in `[0, num_replicas)`; defaults to `jax.process_index()`.
    - `shuffle`: shuffle the order each epoch.
    - `seed`: a non-negative int, the same on every rank.
    - `drop_last`: cut the tail instead of padding so every rank has the same count.

    **Raises:**

    `ValueError` naming the argument for `rank` outside `[0, num_replicas)`, a
    `num_replicas` below 1, a negative `seed`, an empty dataset; `TypeError` for a dataset
    without `__len__` or arguments of the wrong type.
    """

    def __init__(
        self,
        dataset,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ):
        if not hasattr(dataset, "__len__"):
            raise TypeError(f"DistributedSampler: dataset must have __len__, got {type(dataset).__name__}")
        if len(dataset) == 0:
            raise ValueError("DistributedSampler: dataset is empty (len(dataset) == 0)")
        if num_replicas is None:
            num_replicas = jax.process_count()
        if rank is None:
            rank = jax.process_index()
        num_replicas = check_int("DistributedSampler: num_replicas", num_replicas, 1)
        if not _is_int(rank):
            raise TypeError(f"DistributedSampler: rank must be an int, got {type(rank).__name__}")
        if not 0 <= rank < num_replicas:
            raise ValueError(
                f"DistributedSampler: invalid rank {rank}, rank should be in the interval [0, {num_replicas - 1}] "
                f"(num_replicas={num_replicas})"
            )
        seed = check_int("DistributedSampler: seed", seed, 0)
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = int(rank)
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.drop_last = bool(drop_last)
        self.epoch = 0
        n = len(dataset)
        if self.drop_last and n % num_replicas != 0:
            # PyTorch's formula: the largest multiple of num_replicas that fits, split evenly.
            self.num_samples = math.ceil((n - num_replicas) / num_replicas)
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Use `seed + epoch` for the next shuffle. Call before each epoch, as in PyTorch."""
        self.epoch = check_int("DistributedSampler.set_epoch: epoch", epoch, 0)

    def indices(self) -> np.ndarray:
        """This rank's indices for the current epoch, as a 1-D `int64` array."""
        n = len(self.dataset)
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(n).astype(np.int64)
        else:
            order = np.arange(n, dtype=np.int64)
        if self.drop_last:
            order = order[: self.total_size]
        else:
            padding = self.total_size - n
            order = np.concatenate([order, np.resize(order, padding)]) if padding else order
        return order[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return (
            f"DistributedSampler(num_replicas={self.num_replicas}, rank={self.rank}, shuffle={self.shuffle}, "
            f"seed={self.seed}, drop_last={self.drop_last}, epoch={self.epoch})"
        )
