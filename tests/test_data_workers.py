"""fm.DataLoader's workers and PyTorch's contract: errors per batch, dead and stuck workers, pickling, order.

The truths: PyTorch run in the same test (collate dtypes), orders derived by hand from
`numpy.random.default_rng(seed).permutation`, the serial loop written out, and the operating
system (which processes are alive). Timing never decides a test: limits below only turn a hang
into a failure.
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import warnings

import jax
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fundamentals as fm

HANG_GUARD = 120.0  # seconds: a limit that only turns a hang into a failure

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")

WORKERS = [
    pytest.param(0, None, id="serial"),
    pytest.param(2, "process", id="2-processes"),
    pytest.param(2, "thread", id="2-threads"),
]


# --- datasets (module level: worker processes import them) ---------------------------------------


class Rows:
    """The book's kind of dataset: one (features, label) example per __getitem__."""

    def __init__(self, X, y):
        self.X, self.y = X, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, index):
        return self.X[index], self.y[index]


class BrokenAt:
    def __init__(self, n, broken):
        self.n, self.broken = n, broken

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        if index == self.broken:
            raise KeyError(f"item {index} is broken")
        return np.float32(index)


class KillsItself:
    def __len__(self):
        return 8

    def __getitem__(self, index):
        if index == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return index


class SleepsOn:
    def __init__(self, index, seconds):
        self.index, self.seconds = index, seconds

    def __len__(self):
        return 4

    def __getitem__(self, index):
        if index == self.index:
            time.sleep(self.seconds)
        return index


class HoldsALock:
    def __init__(self):
        self.lock = threading.Lock()

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return index


class ShardedRange(fm.IterableDataset):
    """The README's pattern: each worker takes every num_workers-th item, starting at its id."""

    def __init__(self, n):
        self.n = n

    def __iter__(self):
        info = fm.get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        return iter(range(start, self.n, step))


def _record_init(folder: str, worker_id: int) -> None:
    with open(os.path.join(folder, f"{worker_id}-{os.getpid()}-{uuid.uuid4().hex}"), "w"):
        pass


def _batches(loader):
    return [tuple(np.asarray(part) for part in batch) for batch in loader]


def _assert_same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert x.dtype == y.dtype and x.shape == y.shape
            np.testing.assert_array_equal(x, y)


# --- default_collate: the silent cases, against PyTorch ------------------------------------------


def test_default_collate_promotes_mixed_numbers_as_pytorch(torch):
    cases = [[1, 2.5], [True, 2], [2.5, True], [np.float32(1), 2.5], [np.uint8(1), np.int8(2)], [1, np.float16(2)]]
    for batch in cases:
        ours, theirs = fm.default_collate(batch), torch.utils.data.default_collate(batch)
        assert str(theirs.dtype) == f"torch.{ours.dtype}", batch
        np.testing.assert_array_equal(ours, theirs.numpy())
    assert fm.default_collate([1, 2.5]).tolist() == [1.0, 2.5]  # not truncated to [1, 2]
    assert fm.default_collate([True, 2]).tolist() == [1, 2]  # not [True, True]


_SCALARS = st.one_of(
    st.booleans(),
    st.integers(-1000, 1000),
    st.floats(-1e3, 1e3, allow_nan=False, width=32),
    st.sampled_from([np.int8(3), np.uint8(200), np.int32(-7), np.float16(0.5), np.float32(1.25), np.float64(2.75)]),
)


@settings(max_examples=60, deadline=None)
@given(batch=st.lists(_SCALARS, min_size=1, max_size=6))
def test_default_collate_numbers_match_pytorch(torch, batch):
    try:
        theirs = torch.utils.data.default_collate(batch)
    except (TypeError, RuntimeError):
        return  # PyTorch refuses some NumPy bool mixes; nothing to compare
    ours = fm.default_collate(batch)
    assert str(theirs.dtype) == f"torch.{ours.dtype}", batch
    np.testing.assert_array_equal(ours, theirs.numpy())


def test_default_collate_mixed_arrays_promote_as_pytorch(torch):
    batch = [np.zeros(2, np.int64), np.ones(2, np.float16)]
    ours, theirs = fm.default_collate(batch), torch.utils.data.default_collate(batch)
    assert ours.dtype == np.float16 and str(theirs.dtype) == "torch.float16"


# --- errors per batch, in order ------------------------------------------------------------------


@pytest.mark.parametrize("num_workers, worker_type", WORKERS)
def test_dataset_error_is_raised_for_its_batch_and_iteration_goes_on(num_workers, worker_type):
    loader = fm.DataLoader(BrokenAt(10, broken=5), batch_size=2, num_workers=num_workers, worker_type=worker_type)
    iterator = iter(loader)
    seen, errors = [], []
    for _ in range(len(loader)):
        try:
            seen.append(next(iterator).tolist())
        except KeyError as error:
            errors.append((len(seen), type(error), str(error)))
    assert seen == [[0.0, 1.0], [2.0, 3.0], [6.0, 7.0], [8.0, 9.0]]  # written out: batch 2 holds index 5
    assert errors == [(2, KeyError, "'item 5 is broken'")]  # the dataset's own exception, for batch 2 only
    with pytest.raises(StopIteration):
        next(iterator)


def test_worker_error_names_the_worker_in_a_note():
    loader = fm.DataLoader(BrokenAt(4, broken=1), batch_size=1, num_workers=2)
    with pytest.raises(KeyError, match="item 1 is broken") as info:
        list(loader)
    assert any("DataLoader worker 1 (pid" in note for note in getattr(info.value, "__notes__", []))


# --- dead, stuck and unpicklable workers ---------------------------------------------------------


def test_killed_worker_ends_the_iteration_naming_it():
    loader = fm.DataLoader(KillsItself(), batch_size=1, num_workers=2)  # batch k goes to worker k % 2
    iterator = iter(loader)
    pids = [process.pid for process in iterator._pool._processes]
    with pytest.raises(
        RuntimeError, match=r"DataLoader worker \(pid \d+\) is killed by signal: SIGKILL\. It was worker 1"
    ):
        list(iterator)
    for pid in pids:  # the other worker was stopped too
        _wait_until_gone(pid)


def test_worker_past_timeout_is_stopped_and_named():
    loader = fm.DataLoader(SleepsOn(index=0, seconds=600), batch_size=1, num_workers=2, timeout=1)
    iterator = iter(loader)
    pids = [process.pid for process in iterator._pool._processes]
    with pytest.raises(RuntimeError, match=r"DataLoader timed out after 1 seconds waiting for batch 0 from worker 0"):
        next(iterator)
    for pid in pids:
        _wait_until_gone(pid)


def test_unpicklable_dataset_is_named_before_any_batch(tmp_path):
    before = set(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else set()
    with pytest.raises(TypeError, match=r"the dataset \(a HoldsALock\) cannot be sent to worker processes.*lock"):
        iter(fm.DataLoader(HoldsALock(), batch_size=2, num_workers=2))
    with open(tmp_path / "data.txt", "w") as handle:
        open_file = Rows(handle, [0, 1])
        with pytest.raises(TypeError, match=r"the dataset \(a Rows\) cannot be sent.*worker_init_fn"):
            iter(fm.DataLoader(open_file, batch_size=2, num_workers=2))
    assert [y.tolist() for y in fm.DataLoader(HoldsALock(), batch_size=2, num_workers=2, worker_type="thread")] == [
        [0, 1],
        [2, 3],
    ]
    del before


def test_lambda_collate_fn_works_or_says_how_to_fix_it(monkeypatch):
    X, y = np.arange(8, dtype=np.float32), np.arange(8)
    pytest.importorskip("cloudpickle")
    loader = fm.DataLoader(Rows(X, y), batch_size=4, num_workers=2, collate_fn=lambda items: len(items))
    assert list(loader) == [4, 4]  # sent by value with cloudpickle, as PyTorch's fork would run it
    monkeypatch.setitem(sys.modules, "cloudpickle", None)  # without cloudpickle: the fix, spelled out
    loader = fm.DataLoader(Rows(X, y), batch_size=4, num_workers=2, collate_fn=lambda items: len(items))
    with pytest.raises(TypeError, match=r"collate_fn \(.*<lambda>\).*Define it with def at the top level.*cloudpickle"):
        iter(loader)


def _wait_until_gone(pid: int) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while True:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split(")")[-1].split()[0] == "Z":
                    return  # a zombie has exited; only its exit status is left to collect
        except FileNotFoundError:
            return
        assert time.monotonic() < deadline, f"worker process {pid} is still running"
        time.sleep(0.05)


# --- worker_init_fn ------------------------------------------------------------------------------


@pytest.mark.parametrize("worker_type", ["process", "thread"])
@pytest.mark.parametrize("persistent", [False, True])
def test_worker_init_fn_runs_in_every_worker_every_epoch(tmp_path, worker_type, persistent):
    """4 workers, 2 batches: PyTorch calls worker_init_fn 4 times an epoch (once for persistent workers)."""
    X, y = np.arange(4, dtype=np.float32), np.arange(4)
    loader = fm.DataLoader(
        Rows(X, y),
        batch_size=2,
        num_workers=4,
        worker_init_fn=functools.partial(_record_init, str(tmp_path)),
        worker_type=worker_type,
        persistent_workers=persistent,
    )
    for _ in range(3):
        assert [b[1].tolist() for b in loader] == [[0, 1], [2, 3]]
    ids = sorted(int(name.split("-")[0]) for name in os.listdir(tmp_path))
    assert ids == ([0, 1, 2, 3] if persistent else [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])


@pytest.mark.parametrize("num_workers, worker_type", WORKERS)
def test_iterable_dataset_shards_itself_across_workers(num_workers, worker_type):
    loaders = [fm.DataLoader(ShardedRange(11), batch_size=None, num_workers=num_workers, worker_type=worker_type)]
    if num_workers:
        loaders.append(
            fm.DataLoader(
                ShardedRange(11),
                batch_size=4,
                num_workers=num_workers,
                worker_type=worker_type,
                persistent_workers=True,
            )
        )
    for loader in loaders:
        for _ in range(2):  # every epoch each worker starts its share again
            items = [int(i) for batch in loader for i in np.atleast_1d(batch)]
            assert sorted(items) == list(range(11))


# --- the order of batches does not depend on the workers ----------------------------------------


def test_same_batches_with_any_workers():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((37, 3)).astype(np.float32)
    y = rng.integers(0, 4, 37)
    # the truth: epochs drawn by hand from the seed's generator
    truth_rng = np.random.default_rng(11)
    expected = []
    for _ in range(2):
        order = truth_rng.permutation(37)
        expected.append([(X[order[i : i + 5]], y[order[i : i + 5]]) for i in range(0, 37, 5)])
    for num_workers, worker_type in itertools.product((0, 1, 2, 4), ("process", "thread")):
        if num_workers == 0 and worker_type == "thread":
            continue
        loader = fm.DataLoader(
            Rows(X, y), batch_size=5, shuffle=True, seed=11, num_workers=num_workers, worker_type=worker_type
        )
        for epoch in range(2):
            _assert_same_batches(_batches(loader), expected[epoch])


def test_fit_with_process_workers_equals_fit_without():
    X, y = fm.toy_data()[:2]
    X = np.tile(X, (8, 1)) + np.float32(0.01) * np.arange(40, dtype=np.float32)[:, None]
    y = np.tile(y, 8)

    def run(num_workers):
        loader = fm.DataLoader(Rows(X, y), batch_size=4, shuffle=True, seed=3, num_workers=num_workers)
        model = fm.NeuralNetwork(2, 2, key=jax.random.key(0))
        return fm.fit(model, optax.sgd(0.5), loader, num_epochs=3, log=None)

    serial_model, serial_history = run(0)
    worker_model, worker_history = run(2)
    assert serial_history["loss"] == worker_history["loss"]
    for a, b in zip(jax.tree_util.tree_leaves(serial_model), jax.tree_util.tree_leaves(worker_model)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_state_dict_resumes_bit_identically_across_worker_counts():
    X, y = np.arange(23, dtype=np.float32), np.arange(23)
    first = fm.DataLoader(Rows(X, y), batch_size=4, shuffle=True, seed=5, num_workers=2)
    list(first)
    saved = first.state_dict()
    after = _batches(first)
    for num_workers, worker_type in ((0, None), (1, "thread")):
        resumed = fm.DataLoader(
            Rows(X, y), batch_size=4, shuffle=True, seed=99, num_workers=num_workers, worker_type=worker_type
        )
        resumed.load_state_dict(saved)
        _assert_same_batches(_batches(resumed), after)


# --- samplers are pulled lazily ------------------------------------------------------------------


class EndlessSampler:
    """Counts the indices pulled; pulling far too many fails instead of eating memory."""

    def __init__(self, n):
        self.n, self.pulled = n, 0

    def __iter__(self):
        for i in itertools.count():
            self.pulled += 1
            assert self.pulled <= 100_000, "the sampler is being read to the end"
            yield i % self.n


@pytest.mark.parametrize("num_workers, worker_type", WORKERS)
def test_endless_sampler_is_pulled_lazily(num_workers, worker_type):
    X, y = np.arange(10, dtype=np.float32), np.arange(10)
    sampler = EndlessSampler(10)
    loader = fm.DataLoader(Rows(X, y), batch_size=4, sampler=sampler, num_workers=num_workers, worker_type=worker_type)
    iterator = iter(loader)
    assert [next(iterator)[1].tolist() for _ in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
    in_flight = 0 if num_workers == 0 else 2 * num_workers  # PyTorch's prefetch: 2 batches per worker
    assert sampler.pulled == 4 * (3 + in_flight)  # one batch's worth of indices per batch, as PyTorch pulls
    with pytest.raises(TypeError, match="len"):
        len(loader)
    del iterator


def test_endless_sampler_through_an_array_dataset_plan():
    X, y = np.arange(10, dtype=np.float32), np.arange(10)
    sampler = EndlessSampler(10)
    plan = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=4, sampler=sampler).device_plan()
    batches = plan.epochs()
    assert [next(batches).tolist() for _ in range(2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert sampler.pulled == 8


# --- a NumPy Generator given by the user is shared and advanced, as PyTorch advances its generator --


def test_users_generator_is_shared_and_advanced():
    X, y = np.arange(12, dtype=np.float32), np.arange(12)
    generator, twin = np.random.default_rng(8), np.random.default_rng(8)
    loader = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=12, shuffle=True, generator=generator)
    (batch,) = list(loader)
    np.testing.assert_array_equal(batch[1], twin.permutation(12))  # the epoch drew from the user's generator
    assert generator.integers(1 << 30) == twin.integers(1 << 30)  # ... and left it advanced by exactly that draw
    sampler_generator, sampler_twin = np.random.default_rng(4), np.random.default_rng(4)
    sampler = fm.RandomSampler(range(6), generator=sampler_generator)
    assert list(sampler) == sampler_twin.permutation(6).tolist()
    assert sampler_generator.integers(1 << 30) == sampler_twin.integers(1 << 30)


# --- leaving: a stuck worker never blocks exit; Ctrl-C stops every worker -------------------------


def _script(body: str) -> list[str]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    prelude = f"import sys; sys.path.insert(0, {root!r})\n"
    return [sys.executable, "-c", prelude + textwrap.dedent(body)]


def test_stuck_thread_worker_does_not_block_exit():
    script = """
        import threading, numpy as np, fundamentals as fm
        class Stuck:
            def __len__(self): return 2
            def __getitem__(self, i):
                threading.Event().wait()  # forever
        loader = fm.DataLoader(Stuck(), batch_size=1, num_workers=1, timeout=0.5, worker_type="thread")
        try:
            next(iter(loader))
        except RuntimeError as error:
            print("timed out" if "timed out" in str(error) else error)
    """
    done = subprocess.run(_script(script), capture_output=True, text=True, timeout=HANG_GUARD)
    assert done.returncode == 0, done.stderr
    assert "timed out" in done.stdout


def test_ctrl_c_stops_every_worker():
    script = """
        import time, numpy as np, fundamentals as fm
        from tests.test_data_workers import SleepsOn
        if __name__ == "__main__":
            loader = fm.DataLoader(SleepsOn(index=-1, seconds=0), batch_size=1, num_workers=2, persistent_workers=True)
            iterator = iter(loader)
            print(*(p.pid for p in iterator._pool._processes), flush=True)
            while True:
                for _ in loader:
                    time.sleep(0.01)
    """
    process = subprocess.Popen(
        _script(script), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        pids = [int(pid) for pid in process.stdout.readline().split()]
        assert len(pids) == 2, process.stderr.read()
        time.sleep(0.5)
        os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
        process.wait(timeout=HANG_GUARD)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert "KeyboardInterrupt" in process.stderr.read()
    for pid in pids:
        _wait_until_gone(pid)


def test_no_shared_memory_left_behind():
    big = [np.full((64, 1024), i, np.float32) for i in range(6)]  # 256 KiB items: shared memory
    loader = fm.DataLoader(big, batch_size=2, num_workers=2)
    for batch, start in zip(loader, (0, 2, 4)):
        np.testing.assert_array_equal(batch[:, 0, 0], [start, start + 1])
        batch[0, 0, 0] = -1  # batches are writable, as PyTorch's tensors are
    iterator = iter(loader)
    next(iterator)
    prefix = f"fundamentals-loader-{os.getpid()}-"
    del iterator  # batches still in flight: their memory is removed with the workers
    deadline = time.monotonic() + HANG_GUARD
    while [name for name in os.listdir("/dev/shm") if name.startswith(prefix)]:
        assert time.monotonic() < deadline, "shared memory files left behind"
        time.sleep(0.05)


def test_warning_free_start_method():
    """The default start method is not plain fork (JAX warns, and can deadlock, after fork)."""
    from fundamentals import _workers

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _workers.default_context().get_start_method() in ("forkserver", "spawn")
