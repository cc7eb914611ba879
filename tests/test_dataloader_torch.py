"""PyTorch's own DataLoader tests (test/test_dataloader.py), ported to NumPy and run on fm.DataLoader.

Each test keeps the name and the meaning of the PyTorch test it ports (the class it came from is
in the section heading). Tensors become NumPy arrays; `torch.manual_seed` and `torch.Generator`
become the loader's `seed`/`generator`; `torch.initial_seed()` in a worker becomes
`fm.get_worker_info().seed`. Tests that exercise only PyTorch internals (nested and sparse
tensors, pinned CUDA memory, DataPipes, `_generate_state`) are not ported. Where a test compares
against PyTorch itself it runs PyTorch in the same test.
"""

from __future__ import annotations

import collections
import ctypes
import functools
import math
import multiprocessing
import operator
import os
import sys
import tempfile
import time
from collections import Counter, namedtuple

import numpy as np
import pytest

import fundamentals as fm

JOIN_TIMEOUT = 60.0  # a hang guard only, never a timing assertion


# --- datasets (module level: worker processes import them) -------------------------------------


class CountingDataset:
    def __init__(self, n):
        self.n = n

    def __getitem__(self, i):
        return i

    def __len__(self):
        return self.n


class CountingIterableDataset(fm.IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter(range(self.n))

    def __len__(self):
        return self.n


class ErrorDataset:
    def __init__(self, size):
        self.size = size

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        raise NotImplementedError  # PyTorch's Dataset.__getitem__ without an override


class SegfaultDataset:
    def __init__(self, size):
        self.size = size

    def __getitem__(self, idx):
        return ctypes.string_at(0)

    def __len__(self):
        return self.size


class SleepDataset:
    def __init__(self, size, sleep_sec):
        self.size = size
        self.sleep_sec = sleep_sec
        self.sleeped = False

    def __getitem__(self, idx):
        if not self.sleeped:
            time.sleep(self.sleep_sec)
            self.sleeped = True
        return idx

    def __len__(self):
        return self.size


class SeedDataset:
    def __init__(self, size):
        self.size = size

    def __getitem__(self, idx):
        return fm.get_worker_info().seed

    def __len__(self):
        return self.size


class WorkerSpecificIterableDataset(fm.IterableDataset):
    def __init__(self, sizes_for_all_workers):
        self.sizes_for_all_workers = sizes_for_all_workers

    def __iter__(self):
        worker_info = fm.get_worker_info()
        assert worker_info is not None
        return iter(range(self.sizes_for_all_workers[worker_info.id]))

    def __len__(self):
        return sum(self.sizes_for_all_workers)


class SynchronizedDataset:
    """All workers meet at a barrier once, so each of them loads at least one batch."""

    def __init__(self, size, batch_size, num_workers):
        assert size >= num_workers * batch_size
        context = multiprocessing.get_context("forkserver")
        self.count = context.Value("i", 0, lock=True)
        self.barrier = context.Semaphore(0)
        self.num_workers = num_workers
        self.size = size

    def sync_once(self):
        with self.count.get_lock():
            self.count.value += 1
            if self.count.value == self.num_workers:
                self.barrier.release()
        self.barrier.acquire()
        self.barrier.release()

    def __getitem__(self, idx):
        raise NotImplementedError

    def __len__(self):
        return self.size


class SynchronizedSeedDataset(SynchronizedDataset):
    def __getitem__(self, idx):
        self.sync_once()
        return fm.get_worker_info().seed


class TestWorkerInfoDataset(SynchronizedDataset):
    __test__ = False  # a dataset, not a pytest class

    def __getitem__(self, idx):
        self.sync_once()
        return np.array(self.value)


def _test_worker_info_init_fn(worker_id):
    worker_info = fm.get_worker_info()
    assert worker_id == worker_info.id, "worker_init_fn and worker_info should have consistent id"
    assert worker_id < worker_info.num_workers, "worker_init_fn and worker_info should have valid id"
    dataset = worker_info.dataset
    assert isinstance(dataset, TestWorkerInfoDataset), "worker_info should have correct dataset copy"
    assert not hasattr(dataset, "value"), "worker_info should have correct dataset copy"
    try:
        worker_info.id = 3999
    except RuntimeError as e:
        assert str(e) == "Cannot assign attributes to WorkerInfo objects"
    for k in ["id", "num_workers", "seed", "dataset"]:
        assert f"{k}=" in repr(worker_info)
    dataset.value = [worker_id, os.getpid()]


def init_fn(worker_id):
    np.random.seed(12345)


class NumpySeedDataset:
    def __init__(self, size):
        self.size = size

    def __getitem__(self, idx):
        return int(np.random.get_state()[1][0])  # the legacy generator's key starts with its seed

    def __len__(self):
        return self.size


class ErrorIterableDataset(fm.IterableDataset):
    def __iter__(self):
        raise RuntimeError("Error in __iter__")


def error_worker_init_fn(_):
    raise RuntimeError("Error in worker_init_fn")


class BulkLoadingDataset:
    def __init__(self, length):
        self.length = length

    def __getitem__(self, indices):
        assert isinstance(indices, (list, tuple))
        return np.asarray(indices)

    def __len__(self):
        return self.length


class BulkLoadingSampler:
    def __init__(self, dataset, batch_size):
        self.dataset = dataset
        self.batch_size = batch_size

    def __iter__(self):
        for x in np.array_split(np.random.permutation(len(self.dataset)), len(self)):
            yield x.tolist()

    def __len__(self):
        return int(math.ceil(len(self.dataset) / float(self.batch_size)))


class TestMultiEpochDataset(fm.IterableDataset):
    __test__ = False

    def __init__(self, length):
        self.length = length

    def __iter__(self):
        worker_info = fm.get_worker_info()
        assert worker_info is not None
        worker_id = worker_info.id
        for _ in range(self.length // worker_info.num_workers):
            yield worker_id

    def __len__(self):
        return self.length


class CustomList(list):
    pass


class CustomDict(dict):
    pass


class StringDataset:
    def __init__(self):
        self.s = "12345"

    def __len__(self):
        return len(self.s)

    def __getitem__(self, ndx):
        return (self.s[ndx], ndx)


class DictDataset:
    def __len__(self):
        return 4

    def __getitem__(self, ndx):
        return {"a_tensor": np.full((4, 2), ndx, dtype=np.float32), "another_dict": {"a_number": ndx}}


class DummyDataset:
    def __init__(self):
        self.data = list(range(10))

    def __len__(self):
        return len(self.data)

    def __getitem__(self, idx):
        # persistent workers keep the dataset they started with for the loader's lifetime
        assert self.start == 0
        return self.data[idx]


class NamedTupleDataset:
    Batch = namedtuple("Batch", ["data", "label", "random_tensor"])
    Data = namedtuple("Data", ["positive", "negative"])

    def __len__(self):
        return 4

    def __getitem__(self, ndx):
        return self.Batch(data=self.Data(positive=ndx, negative=-ndx), label=str(ndx), random_tensor=np.zeros(3))


class TestWorkerQueueDataset:
    __test__ = False

    def __init__(self, data):
        self.data = data
        self.worker_id = None

    def worker_init_fn(self, worker_id):
        self.worker_id = worker_id

    def __getitem__(self, item):
        return self.worker_id, self.data[item]

    def __len__(self):
        return len(self.data)


class SetAffinityDataset(fm.IterableDataset):
    def __iter__(self):
        return iter(sorted(os.sched_getaffinity(0)))


def disable_stderr(worker_id):
    sys.stderr.flush()
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), sys.stderr.fileno())


# --- fixtures ----------------------------------------------------------------------------------


class Data:
    """TestDataLoader.setUp: 100 examples of shape (2, 3, 5), labels a permutation of 50 twice."""

    def __init__(self):
        rng = np.random.default_rng(0)
        self.data = rng.standard_normal((100, 2, 3, 5)).astype(np.float32)
        self.labels = np.tile(rng.permutation(50), 2)
        self.dataset = fm.ArrayDataset(self.data, self.labels)


@pytest.fixture(scope="module")
def d():
    return Data()


def _test_sequential(d, loader):
    batch_size = loader.batch_size
    if batch_size is None:
        for idx, (sample, target) in enumerate(loader):
            np.testing.assert_array_equal(sample, d.data[idx])
            assert target == d.labels[idx]
        assert idx == len(d.dataset) - 1
    else:
        for i, (sample, target) in enumerate(loader):
            idx = i * batch_size
            np.testing.assert_array_equal(sample, d.data[idx : idx + batch_size])
            np.testing.assert_array_equal(target, d.labels[idx : idx + batch_size])
        assert i == math.floor((len(d.dataset) - 1) / batch_size)


def _test_shuffle(d, loader):
    found = dict.fromkeys(range(len(d.data)), 0)
    batch_size = loader.batch_size or 1
    flat = d.data.reshape(len(d.data), -1)
    for i, (batch_samples, batch_targets) in enumerate(loader):
        if loader.batch_size is None:
            batch_samples, batch_targets = batch_samples[None], np.asarray(batch_targets)[None]
        for sample, target in zip(batch_samples, batch_targets):
            (matches,) = np.nonzero((flat == sample.reshape(-1)).all(axis=1))
            assert len(matches) == 1
            assert not found[int(matches[0])]
            found[int(matches[0])] += 1
            assert target == d.labels[int(matches[0])]
        assert sum(found.values()) == (i + 1) * batch_size
    assert i == math.floor((len(d.dataset) - 1) / batch_size)


def _test_error(loader):
    it = iter(loader)
    errors = 0
    while True:
        try:
            next(it)
        except NotImplementedError:
            errors += 1
        except StopIteration:
            assert errors == math.ceil(float(len(loader.dataset)) / loader.batch_size)
            return


# --- TestTensorDataset (ArrayDataset is fm's TensorDataset) ------------------------------------


def test_len():
    source = fm.ArrayDataset(np.zeros((15, 10, 2, 3, 4, 5)), np.random.permutation(15))
    assert len(source) == 15


def test_getitem():
    t = np.random.standard_normal((15, 10, 2, 3, 4, 5))
    labels = np.random.standard_normal((15, 10))
    source = fm.ArrayDataset(t, labels)
    for i in range(15):
        np.testing.assert_array_equal(t[i], source[i][0])
        np.testing.assert_array_equal(labels[i], source[i][1])


def test_getitem_1d():
    t, labels = np.random.standard_normal(15), np.random.standard_normal(15)
    source = fm.ArrayDataset(t, labels)
    for i in range(15):
        assert t[i] == source[i][0] and labels[i] == source[i][1]


def test_single_tensor():
    t = np.random.standard_normal((5, 10))
    source = fm.ArrayDataset(t)
    assert len(source) == 5
    for i in range(5):
        np.testing.assert_array_equal(t[i], source[i][0])


def test_many_tensors():
    arrays = [
        np.random.standard_normal(shape) for shape in ((5, 10, 2, 3, 4, 5), (5, 10), (5, 10, 2, 5), (5, 10, 3, 7))
    ]
    source = fm.ArrayDataset(*arrays)
    assert len(source) == 5
    for i in range(5):
        for k, t in enumerate(arrays):
            np.testing.assert_array_equal(t[i], source[i][k])


# --- TestDataLoader --------------------------------------------------------------------------


def test_sequential_nonbatch(d):
    _test_sequential(d, fm.DataLoader(d.dataset, batch_size=None))


def test_sequential_batch(d):
    _test_sequential(d, fm.DataLoader(d.dataset))
    _test_sequential(d, fm.DataLoader(d.dataset, batch_size=2))


def test_sequential_workers(d):
    _test_sequential(d, fm.DataLoader(d.dataset, num_workers=2, worker_type="process"))


def test_seqential_batch_workers(d):
    _test_sequential(d, fm.DataLoader(d.dataset, batch_size=2, num_workers=2, worker_type="process"))


def test_seqential_batch_workers_prefetch(d):
    _test_sequential(d, fm.DataLoader(d.dataset, batch_size=2, num_workers=2, prefetch_factor=3))


def test_shuffle(d):
    _test_shuffle(d, fm.DataLoader(d.dataset, shuffle=True))


def test_shuffle_batch_none(d):
    _test_shuffle(d, fm.DataLoader(d.dataset, batch_size=None, shuffle=True))


def test_shuffle_batch(d):
    _test_shuffle(d, fm.DataLoader(d.dataset, batch_size=2, shuffle=True))


def test_shuffle_workers(d):
    _test_shuffle(d, fm.DataLoader(d.dataset, shuffle=True, num_workers=2, worker_type="process"))


def test_shuffle_batch_workers(d):
    _test_shuffle(d, fm.DataLoader(d.dataset, batch_size=2, shuffle=True, num_workers=2))


def test_shuffle_batch_workers_prefetch(d):
    _test_shuffle(d, fm.DataLoader(d.dataset, batch_size=2, shuffle=True, num_workers=2, prefetch_factor=3))


def test_shuffle_reproducibility(d):
    for make in (
        lambda: fm.DataLoader(d.dataset, shuffle=True, num_workers=0, generator=42),
        lambda: fm.DataLoader(d.dataset, shuffle=True, num_workers=2, generator=42, worker_type="process"),
    ):
        first, second = list(make()), list(make())
        assert len(first) == len(second) == 100
        for (a, b), (c, e) in zip(first, second):
            np.testing.assert_array_equal(a, c)
            np.testing.assert_array_equal(b, e)


def test_error():
    _test_error(fm.DataLoader(ErrorDataset(100), batch_size=2, shuffle=True))


def test_error_workers():
    _test_error(fm.DataLoader(ErrorDataset(41), batch_size=2, shuffle=True, num_workers=2))


def test_error_in_init(d):
    for num_workers in [0, 2]:
        loader = fm.DataLoader(ErrorIterableDataset(), num_workers=num_workers)
        with pytest.raises(RuntimeError, match="Error in __iter__"):
            list(iter(loader))
    loader = fm.DataLoader(CountingDataset(20), num_workers=2, worker_init_fn=error_worker_init_fn)
    with pytest.raises(RuntimeError, match="Error in worker_init_fn"):
        list(iter(loader))


def test_invalid_assign_after_init(d):
    dl = fm.DataLoader(d.dataset)
    for attr in ("batch_size", "sampler", "batch_sampler", "drop_last", "dataset"):
        with pytest.raises(ValueError):
            setattr(dl, attr, {})


def test_bulk_loading_nobatch():
    n = 35
    ds = BulkLoadingDataset(n)
    sampler = BulkLoadingSampler(ds, batch_size=4)
    for num_workers in [0, 2]:
        dl = fm.DataLoader(ds, num_workers=num_workers, batch_size=None, sampler=sampler)
        assert not dl._auto_collation
        samples = list(dl)
        assert set(np.concatenate(samples).tolist()) == set(range(n))


def test_growing_dataset():
    dataset = [np.ones(4) for _ in range(4)]
    dataloader_seq = fm.DataLoader(dataset, shuffle=False)
    dataloader_shuffle = fm.DataLoader(dataset, shuffle=True)
    dataset.append(np.ones(4))
    assert len(dataloader_seq) == 5
    assert len(dataloader_shuffle) == 5


def test_multiple_dataloaders(d):
    for multiprocessing_context in (None, "forkserver"):
        loader1_it = iter(fm.DataLoader(CountingDataset(20), num_workers=1))
        loader2_it = iter(
            fm.DataLoader(CountingDataset(20), num_workers=2, multiprocessing_context=multiprocessing_context)
        )
        assert [next(loader1_it), next(loader1_it), next(loader2_it), next(loader2_it)] == [0, 1, 0, 1]
        assert next(loader1_it) == 2 and next(loader2_it) == 2
        del loader1_it
        del loader2_it


def test_segfault():
    loader = fm.DataLoader(SegfaultDataset(10), batch_size=2, num_workers=2, worker_init_fn=disable_stderr)
    with pytest.raises(RuntimeError, match=r"DataLoader worker \(pid \d+\) is killed by signal: SIGSEGV"):
        next(iter(loader))


def test_timeout():
    for persistent_workers in (False, True):
        dataset = SleepDataset(10, 3)
        dataloader = fm.DataLoader(
            dataset, batch_size=2, num_workers=2, timeout=1, persistent_workers=persistent_workers
        )
        with pytest.raises(RuntimeError, match=r"DataLoader timed out after \d+ seconds"):
            next(iter(dataloader))


class EmptyArrayDataset:
    def __init__(self, length):
        self.length = length

    def __len__(self):
        return self.length

    def __getitem__(self, any):
        return np.empty(0)


def test_large_sampler_indices():
    """An error in the loop while the workers hold big index batches ends cleanly (torch issue 48666)."""
    for persistent_workers in (False, True):
        dataloader = fm.DataLoader(
            EmptyArrayDataset(10000000), batch_size=40960, persistent_workers=persistent_workers, num_workers=1
        )
        it = iter(dataloader)
        with pytest.raises(RuntimeError, match="My Error"):
            for x in it:
                assert x.size == 0
                raise RuntimeError("My Error")
        del it, dataloader


def test_invalid_ctor_args_combinations(d, torch):
    def check(error_type, pattern, dataset, **kwargs):
        for make in (fm.DataLoader, torch.utils.data.DataLoader):  # PyTorch refuses it with the same words
            with pytest.raises(error_type, match=pattern):
                make(dataset, **kwargs)

    tds = torch.utils.data.TensorDataset(torch.zeros(10))
    check(ValueError, "num_workers option should be non-negative", tds, num_workers=-1)
    with pytest.raises(ValueError, match="num_workers option should be non-negative"):
        fm.DataLoader(d.dataset, num_workers=-1)
    with pytest.raises(ValueError, match="timeout option should be non-negative"):
        fm.DataLoader(d.dataset, timeout=-1)
    with pytest.raises(ValueError, match="batch_size=None option disables auto-batching and is mutually exclusive"):
        fm.DataLoader(d.dataset, batch_size=None, drop_last=True)
    valid_ctx = list(multiprocessing.get_all_start_methods())[-1]
    with pytest.raises(ValueError, match=r"multi-process loading \(num_workers > 0\), but got"):
        fm.DataLoader(d.dataset, num_workers=0, multiprocessing_context=valid_ctx)
    with pytest.raises(ValueError, match="should specify a valid start method in"):
        fm.DataLoader(d.dataset, num_workers=1, multiprocessing_context="bad")
    with pytest.raises(TypeError, match="multiprocessing_context option should be a valid context "):
        fm.DataLoader(d.dataset, num_workers=1, multiprocessing_context=object())
    # map-style
    sampler = fm.SequentialSampler(d.dataset)
    batch_sampler = fm.BatchSampler(sampler, 3, False)
    for kwargs in (
        dict(batch_size=11, sampler=sampler, shuffle=True),
        dict(batch_sampler=batch_sampler, sampler=sampler, shuffle=True),
        dict(batch_sampler=batch_sampler, sampler=sampler, shuffle=3),
    ):
        with pytest.raises(ValueError, match="sampler option is mutually exclusive with shuffle"):
            fm.DataLoader(d.dataset, **kwargs)
    for kwargs in (
        dict(batch_size=11, batch_sampler=batch_sampler),
        dict(shuffle=True, batch_sampler=batch_sampler),
        dict(drop_last=True, batch_sampler=batch_sampler),
        dict(drop_last=3, batch_sampler=batch_sampler),
    ):
        with pytest.raises(ValueError, match="batch_sampler option is mutually exclusive with"):
            fm.DataLoader(d.dataset, **kwargs)
    # iterable-style
    dataset = CountingIterableDataset(20)
    for kwargs, name in (
        (dict(shuffle=True), "shuffle"),
        (dict(shuffle=3), "shuffle"),
        (dict(sampler=fm.SequentialSampler(dataset)), "sampler"),
        (dict(sampler=3), "sampler"),
        (dict(batch_sampler=fm.BatchSampler(fm.SequentialSampler(dataset), 3, False)), "batch_sampler"),
        (dict(batch_sampler=3), "batch_sampler"),
    ):
        with pytest.raises(ValueError, match=f"DataLoader with IterableDataset: expected unspecified {name}"):
            fm.DataLoader(dataset, **kwargs)


def test_builtin_collection_conversion():
    for coll_ty in (list, tuple):
        for num_workers in (0, 1):
            dataset = CountingDataset(20)
            fetched = coll_ty(fm.DataLoader(dataset, batch_size=None, num_workers=num_workers))
            assert fetched == coll_ty(range(20))
            fetched = coll_ty(fm.DataLoader(dataset, batch_size=2, num_workers=num_workers))
            assert [f.tolist() for f in fetched] == [[i, i + 1] for i in range(0, 20, 2)]
            dataset = CountingIterableDataset(20)
            fetched = coll_ty(fm.DataLoader(dataset, batch_size=None, num_workers=num_workers))
            assert fetched == coll_ty(range(20))
            fetched = coll_ty(fm.DataLoader(dataset, batch_size=2, num_workers=num_workers))
            assert [f.tolist() for f in fetched] == [[i, i + 1] for i in range(0, 20, 2)]


def test_iterable_style_dataset():
    # [no auto-batching] single process loading
    dataset = CountingIterableDataset(20)
    dataloader = fm.DataLoader(dataset, batch_size=None)
    fetched = list(dataloader)
    assert len(fetched) == 20
    for i, d in enumerate(fetched):
        assert isinstance(d, int) and d == i  # non-batched: ints stay ints
    assert len(dataloader) == len(dataset)
    # [no auto-batching] multiprocessing loading
    num_workers = 3
    sizes_for_all_workers = [0, 4, 20]
    expected = sorted(functools.reduce(operator.iadd, (list(range(s)) for s in sizes_for_all_workers), []))
    for prefetch_factor in [2, 3]:
        dataset = WorkerSpecificIterableDataset(sizes_for_all_workers)
        dataloader = fm.DataLoader(dataset, num_workers=num_workers, batch_size=None, prefetch_factor=prefetch_factor)
        fetched = sorted(dataloader)
        assert fetched == expected and all(isinstance(a, int) for a in fetched)
        assert len(dataloader) == len(dataset)
    # [auto-batching] single process loading
    fetched = list(fm.DataLoader(CountingIterableDataset(20), batch_size=7))
    assert [f.tolist() for f in fetched] == [list(range(7)), list(range(7, 14)), list(range(14, 20))]
    # [auto-batching] multiprocessing loading: worker 0 gives no batch, worker 1 one, worker 2 three
    for prefetch_factor in [2, 3]:
        dataset = WorkerSpecificIterableDataset(sizes_for_all_workers)
        fetched = list(fm.DataLoader(dataset, num_workers=num_workers, batch_size=7, prefetch_factor=prefetch_factor))
        assert len(fetched) == 4
        assert {tuple(t.tolist()) for t in fetched} == {
            tuple(range(4)),
            tuple(range(7)),
            tuple(range(7, 14)),
            tuple(range(14, 20)),
        }
    # [auto-batching & drop_last]
    fetched = list(fm.DataLoader(CountingIterableDataset(20), batch_size=7, drop_last=True))
    assert [f.tolist() for f in fetched] == [list(range(7)), list(range(7, 14))]
    dataset = WorkerSpecificIterableDataset(sizes_for_all_workers)
    fetched = list(fm.DataLoader(dataset, num_workers=num_workers, batch_size=7, drop_last=True))
    assert {tuple(t.tolist()) for t in fetched} == {tuple(range(7)), tuple(range(7, 14))}


def test_multiprocessing_contexts():
    reference = [np.arange(3), np.arange(3, 6), np.arange(6, 9), np.arange(9, 11)]
    for ctx in [None, *multiprocessing.get_all_start_methods()]:
        # a context object too, except for spawn, whose workers each start Python anew (seconds here)
        objects = [multiprocessing.get_context(ctx)] if ctx in ("fork", "forkserver") else []
        for context in [ctx, *objects]:
            loader = fm.DataLoader(CountingDataset(11), num_workers=2, batch_size=3, multiprocessing_context=context)
            assert [b.tolist() for b in loader] == [r.tolist() for r in reference]


def test_worker_seed():
    num_workers = 4
    dataset = SynchronizedSeedDataset(num_workers, 1, num_workers)
    seeds = {int(batch[0]) for batch in fm.DataLoader(dataset, batch_size=1, num_workers=num_workers)}
    assert len(seeds) == num_workers


def test_worker_seed_reproducibility():
    def get_dataloader():
        return fm.DataLoader(SeedDataset(4), batch_size=1, num_workers=2, generator=42)

    assert {int(b[0]) for b in get_dataloader()} == {int(b[0]) for b in get_dataloader()}


def test_multi_epochs_reproducibility():
    num_workers, batch_size, num_epochs = 2, 10, 3
    dataset = TestMultiEpochDataset(batch_size * num_workers)
    dataloader = fm.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for _ in range(num_epochs):
        for batch_idx, sample in enumerate(dataloader):
            assert sample.tolist() == [batch_idx % num_workers] * batch_size


def test_worker_init_fn():
    dataloader = fm.DataLoader(NumpySeedDataset(4), batch_size=2, num_workers=2, worker_init_fn=init_fn)
    for batch in dataloader:
        assert batch.tolist() == [12345, 12345]


def test_get_worker_info():
    assert fm.get_worker_info() is None  # None in the main process
    num_workers = 2
    dataset = TestWorkerInfoDataset(6, 2, num_workers)
    dataloader = fm.DataLoader(dataset, batch_size=2, num_workers=num_workers, worker_init_fn=_test_worker_info_init_fn)
    it = iter(dataloader)
    worker_pids = [p.pid for p in it._pool._processes]
    data = np.concatenate(list(it), 0)
    for worker_id, pid in data:
        assert pid == worker_pids[worker_id]  # each row is [worker_id, worker_pid], set by the init fn
    assert fm.get_worker_info() is None
    assert not hasattr(dataset, "value")  # the main process's dataset was never given the attribute
    with pytest.raises(AttributeError):
        dataset[0]


def test_random_sampler(d):
    def sample_stat(sampler):
        counts = Counter(sampler)
        return sum(v > 1 for v in counts.values()), min(counts), max(counts), sum(counts.values())

    n = len(d.dataset) + 1
    count_repeated, minval, maxval, count_total = sample_stat(
        fm.RandomSampler(d.dataset, replacement=True, num_samples=n)
    )
    assert count_repeated > 0 and minval >= 0 and maxval < len(d.dataset) and count_total == n
    count_repeated, minval, maxval, count_total = sample_stat(fm.RandomSampler(d.dataset))
    assert (count_repeated, minval, maxval, count_total) == (0, 0, len(d.dataset) - 1, len(d.dataset))
    n = len(d.dataset) * 2
    count_repeated, minval, maxval, count_total = sample_stat(fm.RandomSampler(d.dataset, num_samples=n))
    assert (count_repeated, minval, maxval, count_total) == (len(d.dataset), 0, len(d.dataset) - 1, n)
    n = len(d.dataset) - 1
    count_repeated, minval, maxval, count_total = sample_stat(fm.RandomSampler(d.dataset, num_samples=n))
    assert count_repeated == 0 and minval >= 0 and maxval < len(d.dataset) and count_total == n
    n = len(d.dataset) + 1
    count_repeated, minval, maxval, count_total = sample_stat(fm.RandomSampler(d.dataset, num_samples=n))
    assert (count_repeated, minval, maxval, count_total) == (1, 0, len(d.dataset) - 1, n)
    with pytest.raises(TypeError, match="replacement should be a boolean value, but got replacement=0"):
        fm.RandomSampler(d.dataset, replacement=0)


@pytest.mark.parametrize("replacement", [True, False])
def test_random_sampler_len_with_replacement(d, replacement):
    """Also ports test_random_sampler_len_without_replacement (replacement=False)."""
    num_samples = len(d.dataset) + 5
    sampler = fm.RandomSampler(d.dataset, replacement=replacement, num_samples=num_samples)
    assert num_samples == len(sampler) == sum(1 for _ in sampler)
    assert len(fm.DataLoader(d.dataset, batch_size=1, sampler=sampler)) == num_samples
    assert len(fm.DataLoader(d.dataset, batch_size=6, sampler=sampler)) == math.ceil(num_samples / 6)


def test_distributed_sampler_invalid_rank():
    dataset = list(range(10))
    with pytest.raises(ValueError, match="invalid rank"):
        fm.DistributedSampler(dataset, 3, 3)
    with pytest.raises(ValueError, match="invalid rank"):
        fm.DistributedSampler(dataset, 3, -1)


def test_duplicating_data_with_drop_last():
    num_processes, num_batches = 4, 9
    data_set = list(range(num_batches))
    scanned_data = []
    for i in range(num_processes):
        s = fm.DistributedSampler(data_set, num_processes, i)
        d_loader = fm.DataLoader(data_set, batch_size=int(num_batches / num_processes), drop_last=True, sampler=s)
        for data in d_loader:
            scanned_data.extend(data.tolist())
    assert len(scanned_data) == len(set(scanned_data))


def test_sampler_reproducibility(d):
    weights = [0.1, 0.9, 0.4, 0.7, 3.0, 0.6]
    for make in (
        lambda: fm.RandomSampler(d.dataset, num_samples=5, replacement=True, generator=42),
        lambda: fm.RandomSampler(d.dataset, replacement=False, generator=42),
        lambda: fm.WeightedRandomSampler(weights, num_samples=5, replacement=True, generator=42),
        lambda: fm.WeightedRandomSampler(weights, num_samples=5, replacement=False, generator=42),
        lambda: fm.SubsetRandomSampler(range(10), generator=42),
    ):
        assert list(make()) == list(make())
        first, second = make(), make()
        assert list(first) + list(first) == list(second) + list(second)  # the same sequence of epochs


def _test_sampler(d, **kwargs):
    indices = range(2, 12)  # a regular iterable
    dl = fm.DataLoader(d.dataset, sampler=indices, batch_size=2, **kwargs)
    assert len(dl) == 5
    for i, (input, _target) in enumerate(dl):
        assert len(input) == 2
        np.testing.assert_array_equal(input, d.data[i * 2 + 2 : i * 2 + 4])


def test_sampler(d):
    _test_sampler(d)
    _test_sampler(d, num_workers=2, worker_type="process")


def _test_batch_sampler(d, **kwargs):
    batches = []  # [(0, 1), (2, 3, 4), (5, 6), (7, 8, 9), ...]
    for i in range(0, 20, 5):
        batches.append(tuple(range(i, i + 2)))
        batches.append(tuple(range(i + 2, i + 5)))
    dl = fm.DataLoader(d.dataset, batch_sampler=batches, **kwargs)
    assert len(dl) == 8
    for i, (input, _target) in enumerate(dl):
        offset = i * 5 // 2
        size = 2 if i % 2 == 0 else 3
        assert len(input) == size
        np.testing.assert_array_equal(input, d.data[offset : offset + size])


def test_batch_sampler(d):
    _test_batch_sampler(d)
    _test_batch_sampler(d, num_workers=2, worker_type="process")
    _test_batch_sampler(d, num_workers=2, multiprocessing_context="spawn")


def test_numpy():
    class TestDataset:
        def __getitem__(self, i):
            return np.ones((2, 3, 4)) * i

        def __len__(self):
            return 1000

    batch = next(iter(fm.DataLoader(TestDataset(), batch_size=12)))
    assert isinstance(batch, np.ndarray) and batch.dtype == np.float64 and batch.shape == (12, 2, 3, 4)


def test_partial_workers(d):
    """Workers exit even if the iterator is not exhausted."""
    loader = iter(fm.DataLoader(CountingDataset(100), batch_size=2, num_workers=2))
    workers = list(loader._pool._processes)
    for i, _ in enumerate(loader):
        if i == 10:
            break
    assert i == 10
    del loader
    for w in workers:
        w.join(JOIN_TIMEOUT)
        assert not w.is_alive(), "subprocess not terminated"


def test_iterabledataset_len():
    class IterableDataset(fm.IterableDataset):
        def __len__(self):
            return 10

        def __iter__(self):
            return iter(range(10))

    for batch_size, drop_last, expected in (
        (1, False, 10),
        (1, True, 10),
        (2, False, 5),
        (2, True, 5),
        (3, False, 4),
        (3, True, 3),
    ):
        assert len(fm.DataLoader(IterableDataset(), batch_size=batch_size, drop_last=drop_last)) == expected


def test_numpy_scalars(torch):
    class ScalarDataset:
        def __init__(self, dtype):
            self.dtype = dtype

        def __getitem__(self, i):
            return self.dtype()

        def __len__(self):
            return 4

    for dt in (np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint8):
        batch = next(iter(fm.DataLoader(ScalarDataset(dt), batch_size=2)))
        theirs = next(iter(torch.utils.data.DataLoader(ScalarDataset(dt), batch_size=2)))
        assert batch.dtype == dt and str(theirs.dtype) == f"torch.{np.dtype(dt)}"


def test_default_convert_mapping_keep_type():
    data = CustomDict({"a": 1, "b": 2})
    converted = fm.default_convert(data)
    assert converted == data and type(converted) is CustomDict


def test_default_convert_sequence_keep_type():
    data = CustomList([1, 2, 3])
    converted = fm.default_convert(data)
    assert converted == data and type(converted) is CustomList


def test_default_convert_sequence_dont_keep_type():
    assert fm.default_convert(range(2)) == [0, 1]


def test_default_collate_dtype():
    arr = [1, 2, -1]
    collated = fm.default_collate(arr)
    assert collated.tolist() == arr and collated.dtype == np.int64
    arr = [1.1, 2.3, -0.9]
    collated = fm.default_collate(arr)
    assert collated.tolist() == arr and collated.dtype == np.float64
    arr = [True, False]
    collated = fm.default_collate(arr)
    assert collated.tolist() == arr and collated.dtype == np.bool_
    arr = ["a", "b", "c"]
    assert arr == fm.default_collate(arr)


def test_default_collate_mapping_keep_type():
    batch = [CustomDict({"a": 1, "b": 2}), CustomDict({"a": 3, "b": 4})]
    collated = fm.default_collate(batch)
    assert type(collated) is CustomDict
    assert {k: v.tolist() for k, v in collated.items()} == {"a": [1, 3], "b": [2, 4]}


def test_default_collate_sequence_keep_type():
    batch = [CustomList([1, 2, 3]), CustomList([4, 5, 6])]
    collated = fm.default_collate(batch)
    assert type(collated) is CustomList
    assert [c.tolist() for c in collated] == [[1, 4], [2, 5], [3, 6]]


def test_default_collate_sequence_dont_keep_type():
    collated = fm.default_collate([range(2), range(2)])
    assert isinstance(collated, list) and [c.tolist() for c in collated] == [[0, 0], [1, 1]]


def test_default_collate_bad_numpy_types():
    arr = np.array(["a", "b", "c"])
    assert list(arr) == list(fm.default_collate(list(arr)))  # NumPy strings are strings: a no-op
    with pytest.raises(TypeError):
        fm.default_collate(np.array([[["a", "b", "c"]]]))
    with pytest.raises(TypeError):
        fm.default_collate(list(np.array([[object(), object(), object()]])))
    with pytest.raises(TypeError):
        fm.default_collate(list(np.array([[[object(), object(), object()]]])))


def test_default_collate_numpy_memmap():
    with tempfile.TemporaryFile() as f:
        arr = np.array([[0, 1], [2, 3], [4, 5], [6, 7]])
        arr_memmap = np.memmap(f, dtype=arr.dtype, mode="w+", shape=arr.shape)
        arr_memmap[:] = arr[:]
        arr_new = np.memmap(f, dtype=arr.dtype, mode="r", shape=arr.shape)
        collated = fm.default_collate(list(arr_new))
    assert np.asarray(collated).tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_default_collate_bad_sequence_type():
    batch = [["X"], ["X", "X"]]
    with pytest.raises(RuntimeError):
        fm.default_collate(batch)
    with pytest.raises(RuntimeError):
        fm.default_collate(batch[::-1])


def test_excessive_thread_creation_warning(d):
    with pytest.warns(UserWarning, match=r"excessive worker creation might get DataLoader running slow or even freeze"):
        fm.DataLoader(d.dataset, batch_size=2, num_workers=1000)


# --- TestStringDataLoader, TestDictDataLoader, TestNamedTupleDataLoader ------------------------


def test_shuffle_pin_memory():
    """TestStringDataLoader.test_shuffle_pin_memory: strings stay strings (pin_memory changes nothing here)."""
    loader = fm.DataLoader(StringDataset(), batch_size=2, shuffle=True, num_workers=2, pin_memory=True)
    for s, n in loader:
        assert isinstance(s[0], str) and n.dtype == np.int64


def test_dict_sequential_batch():
    """TestDictDataLoader.test_sequential_batch."""
    for persistent_workers in (False, True):
        loader = fm.DataLoader(
            DictDataset(),
            batch_size=2,
            shuffle=False,
            persistent_workers=persistent_workers,
            num_workers=1 if persistent_workers else 0,
        )
        for i, sample in enumerate(loader):
            idx = i * 2
            assert set(sample.keys()) == {"a_tensor", "another_dict"}
            assert set(sample["another_dict"].keys()) == {"a_number"}
            t = sample["a_tensor"]
            assert t.shape == (2, 4, 2) and (t[0] == idx).all() and (t[1] == idx + 1).all()
            n = sample["another_dict"]["a_number"]
            assert n.shape == (2,) and n.tolist() == [idx, idx + 1]


def test_dataloader_with_namedtuple():
    for batch in fm.DataLoader(NamedTupleDataset(), batch_size=2):
        assert isinstance(batch, NamedTupleDataset.Batch)
        assert isinstance(batch.data, NamedTupleDataset.Data)
        assert isinstance(batch.data.positive, np.ndarray)
    for batch in fm.DataLoader(NamedTupleDataset(), batch_size=None):
        assert isinstance(batch, NamedTupleDataset.Batch)
        assert isinstance(batch.data, NamedTupleDataset.Data)
        assert not isinstance(batch.data.positive, np.ndarray)


# --- TestDataLoaderPersistentWorkers, TestIndividualWorkerQueue, TestSetAffinity ----------------


def test_dataset_not_reset():
    dataset = DummyDataset()
    dataloader = fm.DataLoader(dataset, num_workers=2, persistent_workers=True)
    dataset.start = 0
    for i in range(5):
        for _ in dataloader:
            pass
        # the workers keep the copy they started with: changing start here does not reach them
        dataset.start = i


def test_ind_worker_queue():
    dataset = TestWorkerQueueDataset(list(range(64)))
    for batch_size in (8, 16):
        for num_workers in (1, 2, 3):
            loader = fm.DataLoader(
                dataset,
                batch_size=batch_size,
                shuffle=False,
                num_workers=num_workers,
                timeout=JOIN_TIMEOUT,
                worker_init_fn=dataset.worker_init_fn,
            )
            current_worker_idx = 0
            for i, (worker_ids, sample) in enumerate(loader):
                assert worker_ids.tolist() == [current_worker_idx] * batch_size
                assert sample.tolist() == list(range(i * batch_size, (i + 1) * batch_size))
                current_worker_idx = (current_worker_idx + 1) % num_workers


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="os.sched_setaffinity is not available")
def test_set_affinity_in_worker_init():
    expected_affinity = sorted(os.sched_getaffinity(0))[-1]
    pytest.importorskip("cloudpickle")  # the worker_init_fn is a local function, sent by value

    def worker_set_affinity(_):
        os.sched_setaffinity(0, [expected_affinity])

    dataloader = fm.DataLoader(SetAffinityDataset(), num_workers=2, worker_init_fn=worker_set_affinity)
    for sample in dataloader:
        assert sample.tolist() == [expected_affinity]


# --- torch/testing/_internal/distributed: DistributedSampler padding ---------------------------


def test_DistributedSampler_padding(torch):
    """Every rank gets the same count: padded from the head, or cut with drop_last; as PyTorch's."""
    from torch.utils.data.distributed import DistributedSampler

    world_size = 3
    for n in (13, 12, 2):
        dataset = list(range(n))
        for drop_last in (False, True):
            ours = [
                list(fm.DistributedSampler(dataset, world_size, r, shuffle=False, drop_last=drop_last))
                for r in range(world_size)
            ]
            theirs = [
                list(DistributedSampler(dataset, world_size, r, shuffle=False, drop_last=drop_last))
                for r in range(world_size)
            ]
            assert ours == theirs
            assert len({len(rank) for rank in ours}) == 1
            expected = (n // world_size) if drop_last else math.ceil(n / world_size)
            assert all(len(rank) == expected for rank in ours)
    # a dataset smaller than the world: PyTorch repeats it to fill every rank
    tiny = [list(fm.DistributedSampler([0], 3, r, shuffle=False)) for r in range(3)]
    assert tiny == [list(DistributedSampler([0], 3, r, shuffle=False)) for r in range(3)] == [[0], [0], [0]]


def test_ordered_dict_collate(torch):
    """PyTorch keeps an OrderedDict an OrderedDict; so does default_collate here."""
    batch = [collections.OrderedDict(b=1, a=2.0), collections.OrderedDict(b=3, a=4.0)]
    ours, theirs = fm.default_collate(batch), torch.utils.data.default_collate(batch)
    assert type(ours) is type(theirs) is collections.OrderedDict
    assert list(ours) == list(theirs) == ["b", "a"]
    for key in ours:
        assert ours[key].tolist() == theirs[key].tolist() and str(theirs[key].dtype) == f"torch.{ours[key].dtype}"


def test_early_exit():
    """TestDataLoaderPersistentWorkers.test_early_exit: breaking out of a persistent loader's first
    epoch and leaving the script ends the process (its workers do not keep it alive)."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = f"""
import sys; sys.path.insert(0, {root!r})
import numpy as np, fundamentals as fm

class RandomDataset(fm.IterableDataset):
    def __init__(self, len, size):
        self.len, self.size = len, size

    def __iter__(self):
        return self

    def __next__(self):
        if self.len <= 0:
            raise StopIteration
        self.len -= 1
        return np.random.standard_normal(self.size)

if __name__ == "__main__":
    dl = fm.DataLoader(RandomDataset(64, (28, 28)), batch_size=16, num_workers=2, pin_memory=True, persistent_workers=True)
    for _ in dl:
        break
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=JOIN_TIMEOUT)
    assert done.returncode == 0, done.stderr
