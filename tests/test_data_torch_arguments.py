"""fm.DataLoader takes the rest of torch's DataLoader arguments, with torch's errors and meanings."""

import multiprocessing
import threading
import time

import numpy as np
import pytest

import fundamentals as fm


@pytest.fixture
def dataset():
    X_train, y_train, _, _ = fm.toy_data()
    return fm.ArrayDataset(X_train, y_train)


def torch_error(torch, **kwargs):
    X_train, y_train, _, _ = fm.toy_data()
    ds = torch.utils.data.TensorDataset(torch.from_numpy(X_train), torch.from_numpy(y_train))
    with pytest.raises(Exception) as info:
        loader = torch.utils.data.DataLoader(ds, batch_size=2, **kwargs)
        next(iter(loader))
    return info.value


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(prefetch_factor=2),  # without workers
        dict(persistent_workers=True),  # without workers
        dict(num_workers=1, prefetch_factor=-1),
        dict(timeout=-1.0),
        dict(multiprocessing_context="spawn"),  # without workers
        dict(num_workers=1, multiprocessing_context="no-such-method"),
    ],
)
def test_errors_are_torchs(torch, dataset, kwargs):
    expected = torch_error(torch, **kwargs)
    with pytest.raises(type(expected)) as info:
        fm.DataLoader(dataset, batch_size=2, **kwargs)
    # the same message, behind this library's "DataLoader: " prefix
    assert str(info.value) == "DataLoader: " + str(expected)


def test_books_loader_call_runs_as_written(torch, dataset):
    """Listing A.13's train_loader, pin_memory=True included, gives the torch loader's batches."""
    X_train, y_train, _, _ = fm.toy_data()
    torch_ds = torch.utils.data.TensorDataset(torch.from_numpy(X_train), torch.from_numpy(y_train))
    torch_loader = torch.utils.data.DataLoader(
        torch_ds,
        batch_size=2,
        shuffle=False,
        pin_memory=True,
        drop_last=True,
        sampler=torch.utils.data.distributed.DistributedSampler(torch_ds, num_replicas=1, rank=0, shuffle=False),
    )
    loader = fm.DataLoader(
        dataset,
        batch_size=2,
        shuffle=False,
        pin_memory=True,
        drop_last=True,
        sampler=fm.DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=False),
    )
    ours = [(X.tolist(), y.tolist()) for X, y in loader]
    theirs = [(X.tolist(), y.tolist()) for X, y in torch_loader]
    assert ours == theirs and len(ours) == 2
    assert loader.pin_memory is True


def _wait_for(condition, what: str, seconds: float = 60.0) -> None:
    """Poll `condition` until it holds; the limit only turns a hang into a failure."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.01)


def test_prefetch_factor_bounds_batches_in_flight():
    """Untouched, an iterator loads prefetch_factor * num_workers batches ahead, and no more.

    The count is read from a thread worker, which shares the dataset (and its record) with the test."""
    requested = []

    class Counting:
        def __len__(self):
            return 10

        def __getitem__(self, index):
            requested.append(index)
            return np.float32(index)

    for prefetch_factor, expected in ((None, 2), (3, 3)):  # None: torch's default, 2 per worker
        requested.clear()
        loader = fm.DataLoader(
            Counting(), batch_size=1, num_workers=1, prefetch_factor=prefetch_factor, worker_type="thread"
        )
        iterator = iter(loader)
        _wait_for(lambda: len(requested) >= expected, "the prefetched batches")  # noqa: B023
        time.sleep(0.2)  # a wrong implementation may go on requesting: give it the chance (no false failure)
        assert sorted(requested) == list(range(expected))
        assert [b.tolist() for b in iterator] == [[float(i)] for i in range(10)]


def test_timeout_raises_torchs_runtime_error():
    unblock = threading.Event()

    class Stuck:
        def __len__(self):
            return 2

        def __getitem__(self, index):
            unblock.wait(10)
            return np.float32(index)

    loader = fm.DataLoader(Stuck(), batch_size=1, num_workers=1, timeout=0.2, worker_type="thread")
    try:
        with pytest.raises(RuntimeError, match=r"DataLoader timed out after 0.2 seconds .* worker thread 0"):
            next(iter(loader))
    finally:
        unblock.set()
        for thread in threading.enumerate():
            if thread.name.startswith("fundamentals-DataLoader"):
                thread.join(5)
    with pytest.raises(ValueError, match="timeout=1.0 needs num_workers > 0"):
        fm.DataLoader(Stuck(), batch_size=1, timeout=1.0)


@pytest.mark.parametrize("persistent", [False, True])
def test_worker_init_fn_runs_in_each_worker_thread_before_its_first_batch(dataset, persistent):
    calls = []
    lock = threading.Lock()

    def worker_init_fn(worker_id):
        with lock:
            calls.append((worker_id, threading.get_ident()))

    loader = fm.DataLoader(
        dataset,
        batch_size=1,
        num_workers=2,
        worker_init_fn=worker_init_fn,
        persistent_workers=persistent,
        worker_type="thread",
    )
    for _ in range(2):
        assert [y.tolist() for _, y in loader] == [[0], [0], [0], [1], [1]]
    ids = [worker_id for worker_id, _ in calls]
    threads = {thread for _, thread in calls}
    assert threading.get_ident() not in threads  # never in the loop's own thread
    if persistent:  # one pool for the loader's life: each thread initialised once
        assert sorted(ids) == [0, 1] and len(threads) == 2
    else:  # a fresh pool every epoch, every worker initialised, ids from 0 again
        assert sorted(ids) == [0, 0, 1, 1]


def test_worker_init_fn_error_reaches_the_loop(dataset):
    def fails(worker_id):
        raise KeyError("worker setup failed")

    with pytest.raises(KeyError, match="worker setup failed"):
        list(fm.DataLoader(dataset, batch_size=2, num_workers=1, worker_init_fn=fails))


def test_generator_is_the_seed(dataset):
    def batches(**kwargs):
        return [y.tolist() for _, y in fm.DataLoader(dataset, batch_size=2, shuffle=True, **kwargs)]

    assert batches(generator=7) == batches(seed=7)
    assert batches(generator=np.random.default_rng(7)) == batches(seed=np.random.default_rng(7))
    with pytest.raises(ValueError, match="seed or generator, not both"):
        fm.DataLoader(dataset, seed=1, generator=1)


def test_bad_new_arguments_name_themselves(torch, dataset):
    with pytest.raises(TypeError, match="torch.Generator cannot drive NumPy"):
        fm.DataLoader(dataset, generator=torch.Generator().manual_seed(1))
    with pytest.raises(TypeError, match="generator must be"):
        fm.DataLoader(dataset, generator="7")
    with pytest.raises(TypeError, match="pin_memory must be a bool"):
        fm.DataLoader(dataset, pin_memory="yes")
    with pytest.raises(TypeError, match="worker_init_fn must be callable"):
        fm.DataLoader(dataset, num_workers=1, worker_init_fn=3)
    with pytest.raises(ValueError, match="prefetch_factor must be at least 1"):
        fm.DataLoader(dataset, num_workers=1, prefetch_factor=0)
    with pytest.raises(TypeError, match="multiprocessing_context option should be a valid context"):
        fm.DataLoader(dataset, num_workers=1, multiprocessing_context=3)
    # a context object is accepted, and starts worker processes
    loader = fm.DataLoader(
        dataset, batch_size=5, num_workers=1, multiprocessing_context=multiprocessing.get_context("forkserver")
    )
    assert [y.tolist() for _, y in loader] == [[0, 0, 0, 1, 1]]
