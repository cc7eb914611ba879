"""Worker processes (batches back through shared memory) and worker threads for the `DataLoader`.

PyTorch's multi-process loading, kept in its observable behaviour: `num_workers` workers, each
started when an epoch starts (or once, with `persistent_workers`), each running
`worker_init_fn(worker_id)` first; batch `k` goes to the next worker in turn, at most
`prefetch_factor` batches per worker are in flight, and batches come back in order. An
exception raised for a batch is raised for that batch and iteration goes on; a worker that
dies, or a batch that takes longer than `timeout`, ends the iteration with an error naming the
worker.

Processes are started with `forkserver` (`spawn` where there is none), never plain `fork`: a
process that has started JAX's threads cannot fork safely. The fork server imports this module
and the DataLoader's (and so NumPy and JAX, which start no threads on import) once; each worker is then a fork of
it. The dataset, `collate_fn` and `worker_init_fn` travel to each worker pickled (by
`cloudpickle` when it is installed, so lambdas and classes defined in a notebook work), and
large arrays come back through files in `/dev/shm`: the worker writes a batch's arrays once,
the loop maps them without a copy, and the file is unlinked as soon as it is mapped.

Threads run the same loop without any pickling: for NumPy gathers that release the GIL, and
for free-threaded Python builds.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import mmap
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import multiprocessing.process
import os
import pickle
import queue
import random
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["WorkerInfo", "get_worker_info", "Fetcher", "WorkerPool", "WorkerIterator", "default_context"]

# Arrays at least this large come back through shared memory; smaller ones travel in the pickle.
SHM_MIN_BYTES = 64 * 1024
SHM_DIR = "/dev/shm"
# How often an idle worker process checks that the loop's process is still alive.
PARENT_CHECK_SECONDS = 1.0
# How long a worker process may take to stop before it is terminated, then killed.
STOP_GRACE_SECONDS = 2.0
# How long the end of an epoch waits for workers that got no batch to finish starting, without a timeout.
START_WAIT_SECONDS = 30.0


# --- which worker this is -------------------------------------------------------------------------


class WorkerInfo:
    """The worker a dataset's code is running in, as `torch.utils.data.get_worker_info()` gives it.

    **Fields:**

    - `id`: this worker's id, `0 .. num_workers - 1`.
    - `num_workers`: how many workers the loader runs.
    - `seed`: this worker's seed (`random` and `numpy.random` are seeded with it in a process).
    - `dataset`: this worker's copy of the dataset (in a thread, the dataset itself).
    """

    id: int
    num_workers: int
    seed: int
    dataset: Any

    def __init__(self, id: int, num_workers: int, seed: int, dataset: Any):
        for name, value in (("id", id), ("num_workers", num_workers), ("seed", seed), ("dataset", dataset)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise RuntimeError("Cannot assign attributes to WorkerInfo objects")

    def __repr__(self) -> str:
        return f"WorkerInfo(id={self.id}, num_workers={self.num_workers}, seed={self.seed}, dataset={self.dataset!r})"


_process_info: WorkerInfo | None = None
_thread_info = threading.local()


def get_worker_info() -> WorkerInfo | None:
    """The current `DataLoader` worker's `WorkerInfo`, or None outside a worker.

    Replaces `torch.utils.data.get_worker_info()`. An iterable-style dataset uses it in
    `__iter__` to give each worker its own share of the data:

    ```python
    def __iter__(self):
        info = fm.get_worker_info()
        start = 0 if info is None else info.id
        step = 1 if info is None else info.num_workers
        return iter(self.records[start::step])
    ```
    """
    return getattr(_thread_info, "value", None) or _process_info


# --- what a worker does with a task -------------------------------------------------------------


class _Exhausted(Exception):
    """An iterable-style dataset has no more items for this worker."""


class Fetcher:
    """Turns a task into a batch, in a worker or in the loop itself (PyTorch's fetchers).

    A map-style task is a batch's 1-D index array (or, without automatic batching, one
    sampler item); an iterable-style task is a request for the next batch of this worker's
    iterator over the dataset.
    """

    def __init__(self, dataset, *, iterable: bool, auto_collation: bool, collate_fn, batch_size, drop_last, arrays):
        self.dataset = dataset
        self.iterable = iterable
        self.auto_collation = auto_collation
        self.collate_fn = collate_fn
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.arrays = arrays  # the dataset's arrays when a batch is one gather per array, else None
        self._items: Iterator | None = None

    def start_epoch(self) -> None:
        """Start a new pass over an iterable-style dataset (`iter(dataset)`)."""
        if self.iterable:
            self._items = iter(self.dataset)

    def __call__(self, task):
        if self.iterable:
            return self._next_iterable()
        if self.arrays is not None:
            return tuple(array[task] for array in self.arrays)
        if not self.auto_collation:
            return self.collate_fn(self.dataset[task])
        indices = task.tolist()
        getitems = getattr(self.dataset, "__getitems__", None)
        items = getitems(indices) if callable(getitems) else [self.dataset[i] for i in indices]
        return self.collate_fn(items)

    def _next_iterable(self):
        if self._items is None:
            raise _Exhausted
        if not self.auto_collation:
            try:
                return self.collate_fn(next(self._items))
            except StopIteration:
                self._items = None
                raise _Exhausted from None
        items = list(itertools.islice(self._items, self.batch_size))
        if not items or (self.drop_last and len(items) < self.batch_size):
            self._items = None
            raise _Exhausted
        return self.collate_fn(items)


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker needs: its fetcher, `worker_init_fn`, and where shared memory goes."""

    fetcher: Fetcher
    worker_init_fn: Callable[[int], Any] | None
    num_workers: int
    main_pid: int
    shm_prefix: str | None  # None: batches travel in the pickle


def _serve(worker_id: int, seed: int, setup: WorkerSetup, get_task, put_result, *, in_process: bool) -> None:
    """One worker's loop: set up (seeds, `worker_init_fn`), then answer tasks until told to stop.

    Replies are `(epoch, task_id, status, data)` with status `"ok"` (data: the batch),
    `"error"` (the exception, raised for that batch), `"end"` (an iterable-style dataset ran
    out in this worker) or `"fatal"` (the worker could not start: the iteration ends).
    """
    global _process_info
    fetcher = setup.fetcher if in_process else copy.copy(setup.fetcher)  # each thread its own pass over the data
    info = WorkerInfo(id=worker_id, num_workers=setup.num_workers, seed=seed, dataset=fetcher.dataset)
    if in_process:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        _process_info = info
    else:
        _thread_info.value = info
    fatal: BaseException | None = None
    try:
        if setup.worker_init_fn is not None:
            setup.worker_init_fn(worker_id)
        fetcher.start_epoch()
    except Exception as error:  # noqa: BLE001 - reported to the loop, which raises it
        fatal = error
    put_result((-1, -1, "started", None))  # the loop ends no epoch before every worker has started
    while (message := get_task()) is not None:
        if message[0] == "epoch":
            try:
                fetcher.start_epoch()
            except Exception as error:  # noqa: BLE001 - reported with the next task
                fatal = error
            continue
        _, epoch, task_id, task = message
        if fatal is not None:
            put_result((epoch, task_id, "fatal", fatal))
            fatal = None
            continue
        try:
            put_result((epoch, task_id, "ok", fetcher(task)))
        except _Exhausted:
            put_result((epoch, task_id, "end", None))
        except Exception as error:  # noqa: BLE001 - raised in the loop for this batch
            put_result((epoch, task_id, "error", error))


# --- shared memory --------------------------------------------------------------------------------


def _shm_available() -> bool:
    return os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK)


class _ShmPickler(pickle.Pickler):
    """Pickles a batch, writing each large NumPy array to its own file in /dev/shm instead."""

    def __init__(self, file, prefix: str | None):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._prefix = prefix
        self._count = itertools.count()

    def persistent_id(self, obj):
        if self._prefix is None or type(obj) is not np.ndarray or obj.nbytes < SHM_MIN_BYTES or obj.dtype.hasobject:
            return None
        path = f"{self._prefix}{os.getpid()}-{next(self._count)}-{uuid.uuid4().hex[:8]}"
        data = np.ascontiguousarray(obj).data.cast("B")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            return None  # no room or no /dev/shm: the array travels in the pickle
        try:
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError:
            os.close(fd)
            os.unlink(path)
            return None
        os.close(fd)
        return (path, obj.dtype.str, obj.shape)


class _ShmUnpickler(pickle.Unpickler):
    """Maps each shared-memory array of a batch (no copy) and unlinks its file at once."""

    def persistent_load(self, pid):
        path, dtype, shape = pid
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            memory = mmap.mmap(fd, size) if size else None
        finally:
            os.close(fd)
            os.unlink(path)
        if memory is None:
            return np.zeros(shape, dtype=np.dtype(dtype))
        return np.frombuffer(memory, dtype=np.dtype(dtype)).reshape(shape)


def _dump_reply(reply, prefix: str | None) -> bytes:
    buffer = io.BytesIO()
    epoch, task_id, status, data = reply
    if status in ("error", "fatal"):
        data = _portable_error(data)
    try:
        _ShmPickler(buffer, prefix).dump((epoch, task_id, status, data))
    except Exception as error:  # noqa: BLE001 - a batch that cannot be pickled is an error for that batch
        buffer = io.BytesIO()
        problem = TypeError(
            f"DataLoader: the batch from worker process {os.getpid()} cannot be sent back to the loop: {error}. "
            "Make collate_fn return arrays, numbers, strings or containers of those, or use worker_type='thread'"
        )
        _ShmPickler(buffer, None).dump((epoch, task_id, "error", _portable_error(problem)))
    return buffer.getvalue()


def _portable_error(error: BaseException) -> tuple[BaseException, str]:
    """`(error, its traceback as text)`, with the error replaced by a RuntimeError if it cannot be pickled."""
    text = "".join(traceback.format_exception(error))
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - exceptions whose arguments do not survive pickling
        error = RuntimeError(f"{type(error).__name__}: {error}")
    return error, text


# --- the worker process ---------------------------------------------------------------------------


def _process_main(worker_id: int, seed: int, setup_bytes: bytes | WorkerSetup, tasks, results, main_pid: int) -> None:
    """The target of a worker process: unpickle the setup, then serve tasks from the loop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the loop's to handle: it stops the workers
    prefix = None
    try:
        setup = pickle.loads(setup_bytes) if isinstance(setup_bytes, bytes) else setup_bytes
        prefix = setup.shm_prefix
    except Exception as error:  # noqa: BLE001 - reported to the loop, which names the worker
        setup = None
        failure = error

    def get_task():
        while True:
            try:
                return tasks.get(timeout=PARENT_CHECK_SECONDS)
            except queue.Empty:
                try:
                    os.kill(main_pid, 0)
                except ProcessLookupError:
                    return None  # the loop's process is gone: stop
            except (EOFError, OSError):
                return None

    def put_result(reply) -> None:
        results.send_bytes(_dump_reply(reply, prefix))

    try:
        if setup is None:
            message = get_task()
            if message is not None and message[0] == "task":
                put_result((message[1], message[2], "fatal", failure))
            return
        _serve(worker_id, seed, setup, get_task, put_result, in_process=True)
    except (BrokenPipeError, EOFError, KeyboardInterrupt):
        pass  # the loop stopped listening


# --- start methods ----------------------------------------------------------------------------------


def default_context() -> multiprocessing.context.BaseContext:
    """`forkserver` where the platform has it (with this module preloaded), else `spawn`.

    Never plain `fork`: once JAX has started its threads, a forked child can deadlock on a lock
    one of them held. The fork server is a fresh process that imports this module and `data`
    (NumPy, JAX, no threads started) and forks each worker from itself, so starting a worker costs a fork,
    not a Python start-up.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    if server is not None and getattr(server, "_forkserver_pid", None) is None:
        # The DataLoader's module, and with it NumPy and JAX: imported once, in the server, not in every worker.
        context.set_forkserver_preload([__name__, "fundamentals.data"])
    return context


def _by_value() -> bool:
    """Whether `pickled_setup` sends what `__main__` defines by value (cloudpickle is installed)."""
    try:
        import cloudpickle  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def _main_not_reimported(active: bool):
    """Start processes without re-running the main script in each of them.

    `spawn` and `forkserver` children import the parent's `__main__` (a script with no
    `if __name__ == "__main__":` guard would run again in every worker). Sent by value, the
    setup needs nothing from it, so the children skip that import: a worker starts in a fork's
    time, and an unguarded script works as it does with PyTorch's `fork`.
    """
    if not active:
        yield
        return
    from multiprocessing import spawn

    original = spawn.get_preparation_data

    def preparation_data(name):
        data = original(name)
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
        return data

    spawn.get_preparation_data = preparation_data
    try:
        yield
    finally:
        spawn.get_preparation_data = original


def _uses_fork(context) -> bool:
    return context.get_start_method() == "fork"


def pickled_setup(setup: WorkerSetup, names: dict[str, Any]) -> bytes | WorkerSetup:
    """`setup` pickled for worker processes, or a `TypeError` naming what cannot be and how to fix it.

    Objects that `multiprocessing` shares only while starting a process (its locks, events,
    values and queues) cannot be pickled ahead of time; a setup holding one is returned as it
    is, for the start of each process to pickle.

    **Arguments:**

    - `setup`: what the workers need.
    - `names`: the user's objects in it by argument name (`dataset`, `collate_fn`, ...), each
      tried alone so that the error names the one that fails.
    """
    try:
        import cloudpickle

        dumps: Callable[[Any], bytes] = cloudpickle.dumps
    except ImportError:
        dumps = pickle.dumps
    try:
        data = dumps(setup)
    except Exception as error:  # noqa: BLE001 - find the argument that cannot be pickled, and say so
        if isinstance(error, RuntimeError) and "through inheritance" in str(error):
            return setup
        for name, obj in names.items():
            try:
                dumps(obj)
            except Exception as inner:  # noqa: BLE001 - any pickling failure gets the same advice
                raise TypeError(_unpicklable_message(name, obj, inner)) from None
        raise TypeError(f"DataLoader: what the worker processes need cannot be pickled: {error}") from None
    if dumps is pickle.dumps and _needs_interactive_main(data):
        for name, obj in names.items():
            if _needs_interactive_main(dumps(obj)):
                raise TypeError(
                    f"DataLoader: the {name} ({_describe(obj)}) is defined in this notebook or interactive session, "
                    "which worker processes cannot import. Install cloudpickle (pip install cloudpickle) so it is "
                    "sent by value, move it into a .py module, or pass worker_type='thread'"
                )
    return data


def _describe(obj) -> str:
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{name}" if callable(obj) and hasattr(obj, "__qualname__") else f"a {type(obj).__qualname__}"


def _unpicklable_message(name: str, obj, error: Exception) -> str:
    hint = (
        "Define it with def at the top level of a module, or install cloudpickle (pip install cloudpickle)"
        if getattr(obj, "__name__", "") == "<lambda>" or "<locals>" in getattr(obj, "__qualname__", "")
        else "Open files, locks and connections in worker_init_fn or on first use in each worker instead of in __init__"
    )
    return (
        f"DataLoader: the {name} ({_describe(obj)}) cannot be sent to worker processes: {error}. {hint}; "
        "or pass worker_type='thread' to load in threads, which need no pickling"
    )


def _needs_interactive_main(data: bytes) -> bool:
    """Whether a plain pickle refers to `__main__` of a session that has no file to re-import."""
    main = sys.modules.get("__main__")
    return b"__main__" in data and getattr(main, "__file__", None) is None


# --- the pools ------------------------------------------------------------------------------------


class WorkerFailed(RuntimeError):
    """A worker died or could not start; the pool is closed."""


class WorkerPool:
    """`num_workers` workers of one kind (processes or threads), started at once.

    **Arguments:**

    - `kind`: `"process"` or `"thread"`.
    - `setup`: what each worker runs (for processes, pickled once for all of them unless the
      start method is `fork`).
    - `base_seed`: worker `i`'s seed is `base_seed + i`.
    - `context`: the `multiprocessing` context for processes.
    - `names`: the user's objects by argument name, for pickling errors.
    """

    def __init__(self, kind: str, setup: WorkerSetup, base_seed: int, context=None, names=None):
        self.kind = kind
        self.num_workers = setup.num_workers
        self.started_ids: set[int] = set()  # workers that have run worker_init_fn
        self.epoch = 0
        self.closed = False
        self._tasks: list = []
        if kind == "thread":
            self._results: queue.SimpleQueue = queue.SimpleQueue()
            self._threads = []
            for worker_id in range(self.num_workers):
                tasks: queue.SimpleQueue = queue.SimpleQueue()
                thread = threading.Thread(
                    target=_serve,
                    args=(worker_id, base_seed + worker_id, setup, tasks.get, _reply_to(self._results, worker_id)),
                    kwargs={"in_process": False},
                    name=f"fundamentals-DataLoader-worker-{worker_id}",
                    daemon=True,  # a stuck worker never keeps the program from exiting
                )
                self._tasks.append(tasks)
                self._threads.append(thread)
            for thread in self._threads:
                thread.start()
            return
        context = context or default_context()
        self._shm_prefix = setup.shm_prefix
        payload = setup if _uses_fork(context) else pickled_setup(setup, names or {})
        self._processes: list[multiprocessing.process.BaseProcess] = []
        self._connections: list[multiprocessing.connection.Connection] = []
        with _main_not_reimported(isinstance(payload, bytes) and _by_value()):
            self._start_processes(context, payload, base_seed, setup.main_pid)

    def _start_processes(self, context, payload, base_seed: int, main_pid: int) -> None:
        for worker_id in range(self.num_workers):
            tasks = context.Queue()
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(
                target=_process_main,
                args=(worker_id, base_seed + worker_id, payload, tasks, sender, main_pid),
                name=f"fundamentals-DataLoader-worker-{worker_id}",
                daemon=True,
            )
            process.start()
            sender.close()  # only the worker writes: its death then reads as end-of-file here
            self._tasks.append(tasks)
            self._processes.append(process)
            self._connections.append(receiver)

    @property
    def started(self) -> int:
        return len(self.started_ids)

    def describe(self, worker_id: int) -> str:
        if self.kind == "thread":
            return f"worker thread {worker_id}"
        return f"worker {worker_id} (pid {self._processes[worker_id].pid})"

    def send(self, worker_id: int, message) -> None:
        self._tasks[worker_id].put(message)

    def start_epoch(self) -> int:
        """A new epoch on persistent workers: iterable-style datasets start over."""
        self.epoch += 1
        for tasks in self._tasks:
            tasks.put(("epoch", self.epoch))
        return self.epoch

    def receive(self, timeout: float | None) -> tuple[int, tuple] | None:
        """The next reply `(worker_id, reply)`, or None after `timeout` seconds.

        **Raises:**

        `WorkerFailed` naming the worker if a worker process died.
        """
        if self.kind == "thread":
            try:
                return self._results.get(timeout=timeout)
            except queue.Empty:
                return None
        ready = multiprocessing.connection.wait(
            self._connections + [p.sentinel for p in self._processes], timeout=timeout
        )
        for worker_id, connection in enumerate(self._connections):
            if connection in ready:
                try:
                    data = connection.recv_bytes()
                except (EOFError, OSError):
                    self._raise_dead(worker_id)
                try:
                    return worker_id, _ShmUnpickler(io.BytesIO(data)).load()
                except Exception as error:  # noqa: BLE001 - a reply that cannot be read ends the iteration
                    where = self.describe(worker_id)
                    self.close(terminate=True)
                    raise WorkerFailed(f"DataLoader: a reply from {where} could not be read back: {error}") from None
        for worker_id, process in enumerate(self._processes):
            if process.sentinel in ready:
                self._raise_dead(worker_id)
        return None

    def _raise_dead(self, worker_id: int):
        process = self._processes[worker_id]
        process.join(STOP_GRACE_SECONDS)
        code = process.exitcode
        if code is not None and code < 0:
            try:
                how = f"is killed by signal: {signal.Signals(-code).name}"
            except ValueError:
                how = f"is killed by signal: {-code}"
        else:
            how = f"exited unexpectedly with exit code {code}"
        if worker_id in self.started_ids:
            hint = "the batches it was loading are lost (if it ran out of memory, use fewer workers or smaller batches)"
        else:
            hint = (
                "it died while starting: see its error above (a script whose workers re-run it needs its top-level "
                'code under if __name__ == "__main__":, or cloudpickle installed, which spares them that)'
            )
        self.close(terminate=True)
        raise WorkerFailed(
            f"DataLoader worker (pid {process.pid}) {how}. It was worker {worker_id} of {self.num_workers}; {hint}"
        )

    def wrap_reply(self, worker_id: int, reply):
        """Give an error from a worker a note that names the worker and shows its traceback."""
        epoch, task_id, status, data = reply
        if status in ("error", "fatal"):
            error, text = data if isinstance(data, tuple) else (data, None)
            if text is not None:
                error.add_note(f"Raised in DataLoader {self.describe(worker_id)}:\n{text.rstrip()}")
            data = error
        return epoch, task_id, status, data

    def close(self, terminate: bool = False) -> None:
        """Stop every worker.

        Without `terminate` (every batch sent was received), each worker is told to stop and
        exits on its own: threads are joined, processes are not waited for. With it (batches
        in flight, a timeout, a dead worker, Ctrl-C), processes are ended at once and the
        shared memory of batches never received is removed; threads, which cannot be stopped,
        are left to finish as daemons, so they never keep the program from exiting.
        """
        if self.closed:
            return
        self.closed = True
        for tasks in self._tasks:
            try:
                while self.kind == "thread":  # batches not started are not loaded
                    tasks.get_nowait()
            except queue.Empty:
                pass
            try:
                tasks.put(None)
            except (OSError, ValueError):
                pass
        if self.kind == "thread":
            if not terminate:
                for thread in self._threads:
                    if thread is not threading.current_thread():
                        thread.join()
            return
        if terminate:
            for process in self._processes:
                if process.is_alive():
                    process.terminate()
            for process in self._processes:
                process.join(STOP_GRACE_SECONDS)
                if process.is_alive():
                    process.kill()
                    process.join()
        for tasks in self._tasks:
            tasks.cancel_join_thread()
            tasks.close()
        for connection in self._connections:
            connection.close()
        if terminate:
            _remove_leftovers(self._shm_prefix)

    def __del__(self):
        try:
            self.close(terminate=True)
        except Exception:  # noqa: BLE001 - at interpreter exit modules may be gone
            pass


def _reply_to(results: queue.SimpleQueue, worker_id: int) -> Callable[[tuple], None]:
    def put_result(reply: tuple) -> None:
        results.put((worker_id, reply))

    return put_result


def _remove_leftovers(prefix: str | None) -> None:
    """Unlink shared-memory files of batches that were never received (a worker stopped mid-batch)."""
    if prefix is None:
        return
    folder, start = os.path.split(prefix)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if name.startswith(start):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


def shm_prefix() -> str | None:
    """A fresh name prefix for one pool's shared-memory files, or None without /dev/shm."""
    if not _shm_available():
        return None
    return os.path.join(SHM_DIR, f"fundamentals-loader-{os.getpid()}-{uuid.uuid4().hex[:12]}-")


# --- the loop's side ------------------------------------------------------------------------------


class WorkerIterator:
    """One epoch of batches from a `WorkerPool`, in order.

    Batch `k` is sent to the next worker in turn that still has data (PyTorch's round robin),
    at most `prefetch_factor * num_workers` batches are in flight, and replies are held until
    their turn. Closing (or dropping) the iterator stops a pool it owns.

    **Arguments:**

    - `pool`: the workers.
    - `tasks`: an iterator of tasks (index arrays, sampler items, or None for iterable-style
      datasets, endlessly).
    - `length`: `len()` of the epoch, if known.
    - `prefetch_factor`: batches in flight per worker.
    - `timeout`: seconds to wait for one batch (0: forever).
    - `owns_pool`: close the pool when the epoch ends (False with persistent workers).
    """

    def __init__(
        self, pool: WorkerPool, tasks: Iterator, length, prefetch_factor: int, timeout: float, owns_pool: bool
    ):
        self._pool = pool
        self._tasks = tasks
        self._length = length
        self._timeout = timeout or None
        self._owns_pool = owns_pool
        self._epoch = pool.epoch
        self._active = [True] * pool.num_workers
        self._turn = itertools.cycle(range(pool.num_workers))
        self._sent = 0  # tasks sent so far: task ids 0 .. _sent - 1
        self._next = 0  # the task whose batch is returned next
        self._owner: dict[int, int] = {}
        self._replies: dict[int, tuple] = {}
        self._done = False
        for _ in range(prefetch_factor * pool.num_workers):
            if not self._send():
                break

    def _send(self) -> bool:
        if not any(self._active):
            return False
        task = next(self._tasks, _END)
        if task is _END:
            return False
        worker_id = next(self._turn)
        while not self._active[worker_id]:
            worker_id = next(self._turn)
        self._pool.send(worker_id, ("task", self._epoch, self._sent, task))
        self._owner[self._sent] = worker_id
        self._sent += 1
        return True

    def __iter__(self):
        return self

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("this DataLoader's dataset has no __len__, so its iterator has none either")
        return self._length

    def __next__(self):
        try:
            while True:
                if self._done or self._pool.closed and self._next not in self._replies:
                    raise StopIteration
                if self._next == self._sent and not self._send():
                    self._finish()
                    raise StopIteration
                status, data = self._reply(self._next)
                worker_id = self._owner.pop(self._next)
                self._next += 1
                self._send()
                if status == "end":
                    self._active[worker_id] = False
                    continue
                if status == "fatal":
                    self.close(terminate=True)
                    raise data
                if status == "error":
                    raise data
                return data
        except Exception:
            raise  # a batch's error: the iteration can go on; the pool's own failures closed it
        except BaseException:
            self.close(terminate=True)  # Ctrl-C: stop every worker now
            raise

    def _reply(self, task_id: int) -> tuple:
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while task_id not in self._replies:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            received = self._pool.receive(remaining)
            if received is None:
                if deadline is not None and time.monotonic() >= deadline:
                    self._raise_timeout(task_id)
                continue
            worker_id, reply = received
            epoch, reply_id, status, data = self._pool.wrap_reply(worker_id, reply)
            if status == "started":
                self._pool.started_ids.add(worker_id)
            elif epoch == self._epoch:
                self._replies[reply_id] = (status, data)
        return self._replies.pop(task_id)

    def _await_start(self) -> None:
        """Wait until every worker has started and run `worker_init_fn` (within `timeout`, or 30 s).

        A worker that got no batch still runs `worker_init_fn` before the epoch ends, as in PyTorch.
        """
        deadline = time.monotonic() + (self._timeout or START_WAIT_SECONDS)
        while self._pool.started < self._pool.num_workers and not self._pool.closed:
            received = self._pool.receive(max(0.0, deadline - time.monotonic()))
            if received is None:
                return  # stuck in worker_init_fn: closing the pool ends it
            if received[1][2] == "started":
                self._pool.started_ids.add(received[0])

    def _raise_timeout(self, task_id: int):
        where = self._pool.describe(self._owner[task_id])
        self.close(terminate=True)
        raise RuntimeError(
            f"DataLoader timed out after {self._timeout:g} seconds waiting for batch {task_id} from {where}; "
            "the workers were stopped"
        )

    def _finish(self) -> None:
        self._done = True
        self._await_start()
        if self._owns_pool:
            self._pool.close(terminate=self._pool.started < self._pool.num_workers)

    def close(self, terminate: bool = False) -> None:
        """End the epoch here; stop the workers if this iterator owns them (or `terminate`).

        Workers still loading batches of this epoch are ended at once.
        """
        self._done = True
        if self._owns_pool or terminate:
            self._pool.close(terminate=terminate or self._in_flight())

    def _in_flight(self) -> bool:
        """Batches sent to worker processes and not received: those workers are ended, not waited for."""
        return self._sent > self._next and self._pool.kind == "process"

    def __del__(self):
        try:
            if self._owns_pool:
                self._pool.close(terminate=self._in_flight())
        except Exception:  # noqa: BLE001 - at interpreter exit modules may be gone
            pass


_END = object()
