"""Samplers: which indices a `DataLoader` reads, and in what order (appendix A.6 and A.9).

PyTorch's sampler classes under PyTorch's names, seeded like the loader (an int seed or a
`numpy.random.Generator` in place of a `torch.Generator`):

=============================================================  ==============================================
PyTorch                                                        `fundamentals`
=============================================================  ==============================================
``SequentialSampler(ds)``, ``RandomSampler(ds)``               ``SequentialSampler(ds)``, ``RandomSampler(ds, generator=seed)``
``SubsetRandomSampler(indices)``                               ``SubsetRandomSampler(indices, generator=seed)``
``WeightedRandomSampler(weights, num_samples)``                ``WeightedRandomSampler(weights, num_samples, generator=seed)``
``BatchSampler(sampler, batch_size, drop_last)``               ``BatchSampler(sampler, batch_size, drop_last)``
``torch.utils.data.distributed.DistributedSampler(ds)``        ``DistributedSampler(ds)``
``sampler.set_epoch(epoch)``                                   ``sampler.set_epoch(epoch)``
``DataLoader(ds, sampler=[3, 1, 2])`` (any iterable of ints)   the same
=============================================================  ==============================================

Samplers are pulled lazily, as PyTorch pulls them: a loader reads a batch's worth of indices
when it needs that batch, so an endless sampler works. `index_blocks` is the fast path: the
samplers defined here hand their indices over as NumPy arrays instead of one int at a time.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence, Sized
from typing import Any, Protocol

import jax
import numpy as np

from ._checks import check_int
from ._checks import is_int as _is_int

__all__ = [
    "Sampler",
    "SequentialSampler",
    "RandomSampler",
    "SubsetRandomSampler",
    "WeightedRandomSampler",
    "BatchSampler",
    "DistributedSampler",
    "SamplerIndexError",
    "make_rng",
    "index_blocks",
]


class Sampler(Protocol):
    """What `DataLoader(sampler=...)` takes: an iterable of dataset indices (a length is optional)."""

    def __iter__(self) -> Iterator[Any]: ...


class SamplerIndexError(IndexError, ValueError):
    """A sampler gave an index outside `[0, len(dataset))`.

    Both an `IndexError` (what PyTorch raises when the dataset is indexed) and a `ValueError`
    (this library's convention for bad arguments), so either `except` catches it.
    """


def make_rng(owner: str, generator: int | np.random.Generator | None) -> np.random.Generator:
    """The `numpy.random.Generator` behind a `generator=` argument: shared if one is given.

    An int seeds a new generator; a `Generator` is used as it is, and advanced, as PyTorch
    advances a `torch.Generator` passed to it; None draws a random seed (PyTorch's behaviour
    without `torch.manual_seed`).
    """
    if isinstance(generator, np.random.Generator):
        return generator
    if generator is None:
        return np.random.default_rng()
    if type(generator).__module__.split(".")[0] == "torch":
        raise TypeError(
            f"{owner}: generator must be an int seed or a numpy.random.Generator; a torch.Generator cannot "
            "drive NumPy's shuffle (pass its seed instead: generator=g.initial_seed())"
        )
    if not _is_int(generator):
        raise TypeError(
            f"{owner}: generator must be an int seed, a numpy.random.Generator or None, got {type(generator).__name__}"
        )
    if generator < 0:
        raise ValueError(f"{owner}: seed must be a non-negative int, got {generator!r}")
    return np.random.default_rng(int(generator))


def _positive_int(owner: str, name: str, value: object) -> int:
    # PyTorch's message and type (a ValueError, also for a wrong type)
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{owner}: {name} should be a positive integer value, but got {name}={value!r}")
    return int(value)


def _as_ints(blocks: Iterable[np.ndarray]) -> Iterator[int]:
    return itertools.chain.from_iterable(block.tolist() for block in blocks)


class _BlockSampler:
    """A sampler whose indices come as NumPy blocks; `__iter__` lists them one int at a time."""

    def blocks(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[int]:
        return _as_ints(self.blocks())


def _started(blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """`blocks` with its first block drawn now: an epoch's order is drawn when the epoch starts."""
    first = next(blocks, None)
    return blocks if first is None else itertools.chain([first], blocks)


class SequentialSampler(_BlockSampler):
    """`0, 1, ..., len(data_source) - 1`, every epoch: `torch.utils.data.SequentialSampler`."""

    def __init__(self, data_source: Sized):
        self.data_source = data_source

    def blocks(self) -> Iterator[np.ndarray]:
        return iter([np.arange(len(self.data_source), dtype=np.int64)])

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(_BlockSampler):
    """Random indices of `data_source`: `torch.utils.data.RandomSampler`.

    Without replacement each pass is a permutation (`num_samples` beyond `len(data_source)`
    chains further permutations); with replacement, `num_samples` uniform draws. Each
    `iter()` draws anew from `generator`, so epochs differ and the sequence of epochs is
    fixed by the seed.

    **Arguments:**

    - `data_source`: anything with `__len__`.
    - `replacement`: draw with replacement.
    - `num_samples`: indices per pass; `len(data_source)` by default.
    - `generator`: an int seed, a `numpy.random.Generator` (shared and advanced), or None.

    **Raises:**

    `TypeError` if `replacement` is not a bool, `ValueError` if `num_samples` is not a
    positive int (PyTorch's messages).
    """

    def __init__(
        self,
        data_source: Sized,
        replacement: bool = False,
        num_samples: int | None = None,
        generator: int | np.random.Generator | None = None,
    ):
        if not isinstance(replacement, bool):
            raise TypeError(f"replacement should be a boolean value, but got replacement={replacement}")
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        if num_samples is not None:
            _positive_int("RandomSampler", "num_samples", num_samples)
        self.generator = generator
        self._rng = make_rng("RandomSampler", generator)

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else int(self._num_samples)

    def blocks(self) -> Iterator[np.ndarray]:
        return _started(self._draws(len(self.data_source), self.num_samples, self._rng))

    def _draws(self, n: int, count: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
        if self.replacement:
            for start in range(0, count, 32):  # in blocks of 32, as PyTorch draws them
                yield rng.integers(0, n, size=min(32, count - start), dtype=np.int64)
            return
        whole, rest = divmod(count, n) if n else (0, 0)
        for _ in range(whole):
            yield rng.permutation(n).astype(np.int64, copy=False)
        if rest:
            yield rng.permutation(n)[:rest].astype(np.int64, copy=False)

    def __len__(self) -> int:
        return self.num_samples


class SubsetRandomSampler(_BlockSampler):
    """`indices` in a random order each pass: `torch.utils.data.SubsetRandomSampler`.

    **Arguments:**

    - `indices`: a sequence of dataset indices.
    - `generator`: an int seed, a `numpy.random.Generator` (shared and advanced), or None.
    """

    def __init__(self, indices: Sequence[int], generator: int | np.random.Generator | None = None):
        self.indices = indices
        self.generator = generator
        self._rng = make_rng("SubsetRandomSampler", generator)

    def blocks(self) -> Iterator[np.ndarray]:
        order = self._rng.permutation(len(self.indices))
        return iter([np.asarray(self.indices, dtype=np.int64).reshape(-1)[order]])

    def __iter__(self) -> Iterator[int]:
        order = self._rng.permutation(len(self.indices))
        return (self.indices[i] for i in order.tolist())

    def __len__(self) -> int:
        return len(self.indices)


class WeightedRandomSampler(_BlockSampler):
    """Indices `0 .. len(weights) - 1` drawn with probabilities proportional to `weights`.

    `torch.utils.data.WeightedRandomSampler`: `num_samples` draws per pass, with or without
    replacement (`numpy.random.Generator.choice` in place of `torch.multinomial`: the same
    distribution, other numbers).

    **Arguments:**

    - `weights`: a 1-D sequence of non-negative weights, not necessarily summing to one.
    - `num_samples`: draws per pass, a positive int.
    - `replacement`: draw with replacement (the default, as in PyTorch).
    - `generator`: an int seed, a `numpy.random.Generator` (shared and advanced), or None.

    **Raises:**

    `ValueError` (PyTorch's messages) for a bad `num_samples` or `replacement`, weights that
    are not 1-D, negative or not finite, or more draws without replacement than non-zero weights.
    """

    def __init__(
        self,
        weights: Sequence[float],
        num_samples: int,
        replacement: bool = True,
        generator: int | np.random.Generator | None = None,
    ):
        num_samples = _positive_int("WeightedRandomSampler", "num_samples", num_samples)
        if not isinstance(replacement, bool):
            raise ValueError(f"replacement should be a boolean value, but got replacement={replacement}")
        weights_array = np.asarray(weights, dtype=np.float64)
        if weights_array.ndim != 1:
            raise ValueError(
                f"weights should be a 1d sequence but given weights have shape {tuple(weights_array.shape)}"
            )
        if not np.all(np.isfinite(weights_array)) or np.any(weights_array < 0) or weights_array.sum() <= 0:
            raise ValueError("WeightedRandomSampler: weights must be finite, non-negative and not all zero")
        if not replacement and num_samples > np.count_nonzero(weights_array):
            raise ValueError(
                f"WeightedRandomSampler: cannot draw {num_samples} samples without replacement from "
                f"{np.count_nonzero(weights_array)} non-zero weights"
            )
        self.weights = weights_array
        self.num_samples = num_samples
        self.replacement = replacement
        self.generator = generator
        self._rng = make_rng("WeightedRandomSampler", generator)

    def blocks(self) -> Iterator[np.ndarray]:
        p = self.weights / self.weights.sum()
        drawn = self._rng.choice(len(p), size=self.num_samples, replace=self.replacement, p=p)
        return iter([drawn.astype(np.int64, copy=False)])

    def __len__(self) -> int:
        return self.num_samples


class BatchSampler:
    """Batches (lists) of `batch_size` indices from `sampler`: `torch.utils.data.BatchSampler`.

    ```python
    list(BatchSampler(SequentialSampler(range(10)), batch_size=3, drop_last=False))
    # [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    ```

    **Raises:**

    `ValueError` (PyTorch's messages) if `batch_size` is not a positive int or `drop_last` not a bool.
    """

    def __init__(self, sampler: Iterable, batch_size: int, drop_last: bool):
        self.batch_size = _positive_int("BatchSampler", "batch_size", batch_size)
        if not isinstance(drop_last, bool):
            raise ValueError(f"drop_last should be a boolean value, but got drop_last={drop_last}")
        self.sampler = sampler
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[list]:
        indices = iter(self.sampler)
        while batch := list(itertools.islice(indices, self.batch_size)):
            if self.drop_last and len(batch) < self.batch_size:
                return
            yield batch

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.sampler) // self.batch_size  # type: ignore[arg-type]
        return -(-len(self.sampler) // self.batch_size)  # type: ignore[arg-type]


def index_blocks(sampler: Iterable[Any], block_size: int = 1024) -> Iterator[np.ndarray]:
    """One pass over `sampler` as 1-D `int64` blocks, pulled lazily.

    The samplers defined here, NumPy arrays, ranges and lists give their indices in whole
    arrays; any other iterable is read `block_size` indices at a time (a `DataLoader` reads
    one batch's worth, as PyTorch's `BatchSampler` does), so an endless sampler costs no more
    memory than a finite one.

    **Raises:**

    `TypeError` if the sampler yields something other than integer indices.
    """
    if isinstance(sampler, _BlockSampler) and type(sampler).__iter__ is _BlockSampler.__iter__:
        return sampler.blocks()
    if isinstance(sampler, DistributedSampler) and type(sampler).__iter__ is DistributedSampler.__iter__:
        return iter([sampler.indices()])
    if isinstance(sampler, (np.ndarray, range)):
        return iter([_checked_block(np.asarray(sampler))])
    if isinstance(sampler, list):
        return iter([_checked_block(_as_index_array(sampler))])
    return _pulled_blocks(iter(sampler), block_size)


def _pulled_blocks(indices: Iterator, block_size: int) -> Iterator[np.ndarray]:
    while items := list(itertools.islice(indices, block_size)):
        yield _checked_block(_as_index_array(items))


def _as_index_array(items: list) -> np.ndarray:
    try:
        return np.asarray([int(i) if hasattr(i, "__index__") else i for i in items])
    except ValueError:  # ragged items, e.g. a batch sampler's lists
        raise TypeError("DataLoader: sampler must yield integer indices, one at a time") from None


def _checked_block(block: np.ndarray) -> np.ndarray:
    if block.size == 0:
        return np.zeros(0, dtype=np.int64)
    if block.ndim != 1 or block.dtype.kind not in "iu":
        raise TypeError(
            "DataLoader: sampler must yield integer indices, one at a time; "
            f"got items of dtype {block.dtype} and shape {block.shape[1:]}"
        )
    return block.astype(np.int64, copy=False)


def check_range(indices: np.ndarray, dataset_length: int) -> np.ndarray:
    """`indices`, or a `SamplerIndexError` naming the first one outside `[0, dataset_length)`."""
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= dataset_length):
        bad = int(indices.min()) if int(indices.min()) < 0 else int(indices.max())
        raise SamplerIndexError(
            f"DataLoader: sampler gave index {bad}, out of range for a dataset of length {dataset_length}"
        )
    return indices


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

    - `dataset`: anything with `__len__` (an empty one gives no indices, as in PyTorch).
    - `num_replicas`: the number of processes; defaults to `jax.process_count()`.
    - `rank`: this process's rank in `[0, num_replicas)`; defaults to `jax.process_index()`.
    - `shuffle`: shuffle the order each epoch.
    - `seed`: a non-negative int, the same on every rank.
    - `drop_last`: cut the tail instead of padding so every rank has the same count.

    **Raises:**

    `ValueError` naming the argument for `rank` outside `[0, num_replicas)`, a
    `num_replicas` below 1, a negative `seed`; `TypeError` for a dataset without `__len__`
    or arguments of the wrong type.
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ):
        if not hasattr(dataset, "__len__"):
            raise TypeError(f"DistributedSampler: dataset must have __len__, got {type(dataset).__name__}")
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
