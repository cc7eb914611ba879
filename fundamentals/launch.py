"""Processes (appendix A.9): the book's `mp.spawn` as `launch`, a supervisor of the ranks it starts.

==========================================================  =========================================================
PyTorch                                                     JAX (this module)
==========================================================  =========================================================
``mp.spawn(main, args=..., nprocs=world_size)``             ``launch(main, num_processes, *args)``
``init_process_group(backend="nccl", ...)``                 ``init_distributed()`` (`fundamentals.distributed`),
                                                            called by ``launch`` in each child
``destroy_process_group()``                                 ``jax.distributed.shutdown()`` (or nothing: JAX shuts
                                                            it down at exit)
==========================================================  =========================================================

**Processes are only for several machines** (or one process per GPU if you like): one JAX
process drives all of its local devices (see `sharding`). `launch` starts `num_processes`
children on this machine, each with torchrun's variables set, and supervises them: output
prefixed by rank, a failed child stops the others and is named, a dead parent takes the
children with it.

The parent and each child speak over the child's stdin (`launch` writes, `_child_main` reads):
two length-prefixed frames, the pickled set-up (devices, timeouts, the parent's `sys.path` and
script) and the pickled `(fn, args)`; then the pipe stays open, and a child whose pipe closes
(its parent died) exits. A child's return value, or its traceback, comes back as a file in the
run's temporary folder, written atomically.
"""

from __future__ import annotations

import collections
import os
import pickle
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from multiprocessing import (
    spawn,  # how mp.spawn lets children import the parent's __main__
)
from typing import Any

import jax

from ._checks import check_int, check_number
from ._checks import is_int as _is_int
from ._files import atomic_write_bytes
from .distributed import _port_in_use, init_distributed

__all__ = ["launch"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launcher_environment(
    base: dict[str, str], rank: int, num_processes: int, devices_per_process: int, port: int
) -> dict[str, str]:
    """A child's environment: torchrun's variables, read by `init_distributed` in the child."""
    first = rank * devices_per_process
    env = dict(base)
    env.update(
        RANK=str(rank),
        WORLD_SIZE=str(num_processes),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(num_processes),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        # No torchrun store here, so the coordinator takes MASTER_PORT itself (on loopback only).
        JAX_COORDINATOR_PORT=str(port),
        # GPUs: each process sees its own devices_per_process GPUs. Ignored on CPU.
        JAX_LOCAL_DEVICE_IDS=",".join(str(i) for i in range(first, first + devices_per_process)),
    )
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    return env


def _pickle_payload(fn, args) -> bytes:
    module = getattr(fn, "__module__", None)
    main = sys.modules.get("__main__")
    if module == "__main__" and not getattr(main, "__file__", None):
        raise TypeError(
            f"launch: fn={getattr(fn, '__qualname__', fn)!r} is defined in an interactive session "
            "(a notebook or REPL); child processes cannot import it. Define it in a .py module and import it"
        )
    try:
        return pickle.dumps((fn, args))
    except Exception as error:  # noqa: BLE001 - say which argument, not pickle's internals
        what = "fn" if _unpicklable(fn) else "args"
        raise TypeError(
            f"launch: {what} must be picklable (fn a function defined at module top level, not a lambda "
            f"or a nested function): {error}"
        ) from None


def _unpicklable(value) -> bool:
    try:
        pickle.dumps(value)
    except Exception:  # noqa: BLE001 - pickling runs user code (__reduce__): any failure means not picklable
        return True
    return False


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _describe_exit(returncode: int) -> str:
    """How a process ended, naming the signal: killed by it (-15), or exited with its status (143 = 128 + 15)."""
    if returncode < 0:
        return f"was killed by {_signal_name(-returncode)}"
    if 128 < returncode < 128 + signal.NSIG:
        return f"exited with code {returncode} (128 + {_signal_name(returncode - 128)}: it stopped on that signal)"
    return f"exited with code {returncode}"


# JAX's coordination service, when a process stops sending heartbeats, ends the others with
# "The following tasks are unhealthy (stopped sending heartbeats):" and the silent tasks' numbers
# (or names ending in "task:N") on the next line. The process it ends is not the one that failed.
_UNHEALTHY = "stopped sending heartbeats"


def _silent_ranks(line: str) -> list[int]:
    return [int(n) for n in re.findall(r"task:(\d+)", line)] or [int(n) for n in re.findall(r"\b\d+\b", line)]


class _OutputPump(threading.Thread):
    """Copies one child stream to the parent's stream, line by line, with a `[rankN] ` prefix."""

    lock = threading.Lock()

    def __init__(self, stream, rank: int, to_stderr: bool, tail: collections.deque, silent: dict[int, list[int]]):
        super().__init__(daemon=True)
        self.stream, self.rank, self.to_stderr, self.tail, self.silent = stream, rank, to_stderr, tail, silent

    def run(self):
        expect_ranks = False
        for raw in iter(self.stream.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            self.tail.append(line)
            if expect_ranks and self.rank not in self.silent:
                self.silent[self.rank] = _silent_ranks(line)
            expect_ranks = _UNHEALTHY in line
            # sys.stdout is looked up per line so pytest's capture and Jupyter's redirection see it.
            target = sys.stderr if self.to_stderr else sys.stdout
            with self.lock:
                target.write(f"[rank{self.rank}] {line}\n")
                target.flush()
        self.stream.close()


def launch(
    fn: Callable[..., Any],
    num_processes: int,
    *args: Any,
    devices_per_process: int = 1,
    timeout: float | None = None,
    port: int | None = None,
    heartbeat_timeout_seconds: int = 30,
    initialization_timeout: int = 120,
    env: dict[str, str] | None = None,
) -> list[Any]:
    """Run `fn(rank, *args)` in `num_processes` local processes joined by `jax.distributed`.

    ```python
    # PyTorch                                          # JAX
    def main(rank, world_size, num_epochs):            def main(rank, num_epochs):
        ddp_setup(rank, world_size)  # init_process_group   # launch has initialized jax.distributed
        ...                                                ...
        destroy_process_group()
    mp.spawn(main, args=(world_size, num_epochs),      results = launch(main, world_size, num_epochs)
             nprocs=world_size)
    ```

    Each process is a fresh Python interpreter. Before `fn` runs it sets the number of local
    CPU devices to `devices_per_process` (`jax_num_cpu_devices`; on GPU machines it instead sees
    GPUs `rank * devices_per_process` to `(rank + 1) * devices_per_process - 1`) and calls
    `init_distributed()`, the same start-up a script gets under torchrun: each process is
    started with torchrun's variables (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`,
    `MASTER_ADDR=127.0.0.1`, `MASTER_PORT`, with `JAX_COORDINATOR_PORT=MASTER_PORT` since no
    torchrun store holds that port), so the coordinator runs on `127.0.0.1` and CPU devices
    of different processes all-reduce through Gloo. Inside `fn`,
    `jax.process_index() == rank`, `jax.process_count() == num_processes`, and `jax.devices()`
    lists all `num_processes * devices_per_process` devices, so `data_mesh()` spans every process.

    Output: each line a process writes to stdout or stderr (Python's or native code's) is
    read by this process and written to its own `sys.stdout` / `sys.stderr` as `[rank0] ...`,
    `[rank1] ...`, like the book's DDP script prints its rank. Children run unbuffered.

    Failure: if a process raises, exits with a non-zero code, is killed, or exits before `fn`
    returned (`os._exit(0)`, `sys.exit(0)`), `launch` kills the others at once (SIGKILL to each
    process group) and raises `RuntimeError` naming the rank that failed first and how: its
    traceback, its exit code, or the signal (`was killed by SIGTERM`; `exited with code 143
    (128 + SIGTERM ...)` for a process that stopped on it and exited with its status). Where
    PyTorch's survivors can hang in a collective until NCCL's timeout, here nothing waits for a
    dead peer. A process whose parent dies exits too. Independently, JAX's own heartbeat aborts
    the processes whose peers stopped answering for `heartbeat_timeout_seconds`; the rank that
    stopped answering is the one named, not the one JAX ended. When all processes are done,
    whatever they started in the background is stopped too (their process groups), so nothing
    outlives `launch` and it returns as soon as they exit.

    `fn` and `args` travel by pickle, as with `mp.spawn`: `fn` must be a top-level function of
    an importable module, or of the script being run, with the script's work under
    `if __name__ == "__main__":` (the children import it as `__mp_main__`). Functions defined
    in a notebook cannot be launched; put them in a `.py` file. The children import the
    user's modules only after `init_distributed()` has run: `fn` may call `init_distributed()`
    again (it returns `(rank, num_processes)`), but not `jax.distributed.initialize`.

    **Arguments:**

    - `fn`: called as `fn(rank, *args)` in every process; its return value must be picklable.
    - `num_processes`: how many processes to start (PyTorch's `nprocs` / `world_size`).
    - `*args`: passed to `fn` after the rank.
    - `devices_per_process`: local devices each process gets (simulated CPU devices on a CPU).
    - `timeout`: seconds after which all processes are stopped and `RuntimeError` is raised;
      `None` (default) waits as long as they run.
    - `port`: the coordinator's TCP port on 127.0.0.1; `None` picks a free one.
    - `heartbeat_timeout_seconds`, `initialization_timeout`: passed to `init_distributed`.
    - `env`: extra environment variables for the processes (for example `{"JAX_PLATFORMS": "cpu"}`).

    **Returns:**

    The list of the values `fn` returned, in rank order.

    **Raises:**

    `ValueError` for a bad `num_processes`, `devices_per_process`, `timeout`, `port` or timeout
    setting; `TypeError` if `fn` or `args` cannot be pickled or `env` is not str -> str;
    `RuntimeError` if `port` is in use by another program, a process fails, or the timeout
    passes.
    """
    if not callable(fn):
        raise TypeError(f"launch: fn must be callable, got {type(fn).__name__}")
    num_processes = check_int("launch: num_processes", num_processes, 1)
    devices_per_process = check_int("launch: devices_per_process", devices_per_process, 1)
    if timeout is not None:
        check_number("launch: timeout", timeout, above=0, unit="seconds, or None")
    if port is not None and (not _is_int(port) or not 0 < port < 65536):
        raise ValueError(f"launch: port must be an int in 1..65535 or None, got {port!r}")
    heartbeat_timeout_seconds = check_int("launch: heartbeat_timeout_seconds", heartbeat_timeout_seconds, 1)
    initialization_timeout = check_int("launch: initialization_timeout", initialization_timeout, 1)
    if env is not None and (
        not isinstance(env, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    ):
        raise TypeError(f"launch: env must map str to str, got {env!r}")
    payload = _pickle_payload(fn, args)
    if port is not None and _port_in_use("127.0.0.1", int(port)) is not None:
        raise RuntimeError(
            f"launch: port {port} on 127.0.0.1 is in use by another program; pass another port, or port=None to "
            "pick a free one"
        )
    port = _free_port() if port is None else int(port)

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env["PYTHONUNBUFFERED"] = "1"  # pipes are block-buffered otherwise: lines would come late
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, child_env.get("PYTHONPATH")]))

    preparation = spawn.get_preparation_data("launch")
    preparation["authkey"] = bytes(preparation["authkey"])  # AuthenticationString refuses to pickle

    processes: list[subprocess.Popen] = []
    pumps: list[_OutputPump] = []
    tails: list[collections.deque[str]] = [collections.deque(maxlen=20) for _ in range(num_processes)]
    silent: dict[int, list[int]] = {}  # rank -> the ranks JAX's coordination service found silent, in its output
    with tempfile.TemporaryDirectory(prefix="fundamentals-launch-") as workdir:
        try:
            for rank in range(num_processes):
                setup = {
                    "devices_per_process": devices_per_process,
                    "heartbeat_timeout_seconds": heartbeat_timeout_seconds,
                    "initialization_timeout": initialization_timeout,
                    "workdir": workdir,
                    "preparation": preparation,
                }
                process = subprocess.Popen(
                    [sys.executable, "-c", "from fundamentals.launch import _child_main; _child_main()"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=_launcher_environment(child_env, rank, num_processes, devices_per_process, port),
                    start_new_session=True,  # its own process group: stopping it stops what it started
                )
                processes.append(process)
                for stream, to_stderr in ((process.stdout, False), (process.stderr, True)):
                    pump = _OutputPump(stream, rank, to_stderr, tails[rank], silent)
                    pump.start()
                    pumps.append(pump)
                # stdin stays open: a child reads EOF there when this process dies, and exits.
                assert process.stdin is not None  # stdin=subprocess.PIPE
                try:
                    process.stdin.write(_frame(pickle.dumps(setup)) + _frame(payload))
                    process.stdin.flush()
                except BrokenPipeError:
                    pass  # it died on start; _wait_for reports how
            failure = _wait_for(processes, workdir, timeout)
            _stop(processes)  # the others if one failed; and what the processes started goes with them
            _join(pumps)  # their pipes end now: every line they wrote has been read
            if failure is not None:
                rank, returncode, survivors = failure
                raise RuntimeError(_failure_message(rank, returncode, workdir, tails[rank], survivors, silent))
            return [_read_result(workdir, rank) for rank in range(num_processes)]
        finally:
            _stop(processes)
            for process in processes:
                if process.stdin:
                    try:
                        process.stdin.close()
                    except OSError:
                        pass
            _join(pumps)


def _join(pumps: Sequence[_OutputPump], grace: float = 2.0) -> None:
    """Wait for the output still in the pipes, `grace` seconds in all: a process that left its process group
    may hold a pipe open, and its output is not waited for."""
    deadline = time.monotonic() + grace
    for pump in pumps:
        pump.join(timeout=max(deadline - time.monotonic(), 0.0))


def _wait_for(
    processes: Sequence[subprocess.Popen], workdir: str, timeout: float | None
) -> tuple[int, int, list[int]] | None:
    """Wait until every process exited well (None), or one failed: `(its rank, its return code, ranks still running)`."""
    # One waiter thread per process reports exits in the order they happen, so when a dying rank
    # takes its peers down with it (a broken collective), the first to go is named, not the lowest.
    exits: queue.Queue[int] = queue.Queue()

    def wait(rank: int) -> None:
        processes[rank].wait()
        exits.put(rank)

    for rank in range(len(processes)):
        threading.Thread(target=wait, args=(rank,), daemon=True).start()
    deadline = None if timeout is None else time.monotonic() + timeout
    for _ in range(len(processes)):
        try:
            rank = exits.get(timeout=None if deadline is None else max(deadline - time.monotonic(), 0.0))
        except queue.Empty:
            running = [r for r, process in enumerate(processes) if process.poll() is None]
            _stop(processes)
            raise RuntimeError(
                f"launch: timed out after {timeout} s; rank(s) {running} were still running and were stopped"
            ) from None
        returncode = processes[rank].returncode
        # Exit code 0 without a result: the function never returned (os._exit(0) or sys.exit(0) in it),
        # and the others would wait for it in their next collective until the heartbeat timeout.
        if returncode != 0 or not os.path.exists(os.path.join(workdir, f"rank{rank}.result")):
            return rank, returncode, [r for r, process in enumerate(processes) if process.poll() is None]
    return None


def _failure_message(
    rank: int, returncode: int, workdir: str, tail, survivors: list[int], silent: dict[int, list[int]]
) -> str:
    error_path = os.path.join(workdir, f"rank{rank}.error")
    stopped = f" (stopped rank(s) {survivors})" if survivors else ""
    if os.path.exists(error_path):
        with open(error_path, encoding="utf-8") as file:
            return f"launch: rank {rank} raised an exception{stopped}:\n{file.read()}"
    blamed = [r for r in silent.get(rank, []) if r != rank]
    if blamed:  # JAX ended this rank because another stopped answering: name that one
        ranks = ", ".join(str(r) for r in blamed)
        return (
            f"launch: rank {ranks} stopped sending heartbeats (it hung or was stopped), so JAX's coordination "
            f"service ended rank {rank}, which {_describe_exit(returncode)}{stopped}"
        )
    if returncode == 0:
        message = f"launch: rank {rank} exited with code 0 before fn returned (os._exit or sys.exit in fn?){stopped}"
    else:
        message = f"launch: rank {rank} {_describe_exit(returncode)}{stopped}"
    if tail:
        message += "; its last output:\n" + "\n".join(tail)
    return message


def _stop(processes: Sequence[subprocess.Popen]) -> None:
    """SIGKILL to each process's group: the process, and whatever it started that is still running.

    SIGKILL straight away: JAX's preemption service catches SIGTERM (it treats it as a notice to
    checkpoint, not to exit), and a survivor's peers are gone, so it has nothing left to finish.
    A group whose leader has exited is signalled too, so no background process it started
    outlives `launch` (while a member lives, the kernel keeps the group's number for it).
    """
    for process in processes:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for process in processes:
        process.wait()


def _read_result(workdir: str, rank: int):
    path = os.path.join(workdir, f"rank{rank}.result")
    if not os.path.exists(path):
        raise RuntimeError(f"launch: rank {rank} exited with code 0 but left no result")
    with open(path, "rb") as file:
        return pickle.load(file)


def _frame(data: bytes) -> bytes:
    return len(data).to_bytes(8, "little") + data


def _read_exactly(fd: int, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = os.read(fd, remaining)
        if not chunk:
            os._exit(1)  # the parent has gone before sending everything
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int) -> bytes:
    return _read_exactly(fd, int.from_bytes(_read_exactly(fd, 8), "little"))


def _exit_when_parent_dies(fd: int) -> None:
    # The parent writes nothing after the two frames, so end of file here means it has gone.
    # Raw os.read, not sys.stdin: a daemon thread blocked in a buffered reader aborts Python's exit.
    while os.read(fd, 65536):
        pass
    os._exit(1)


def _child_main() -> None:
    """Entry point of a process started by `launch` (not public)."""
    parent_pipe = os.dup(0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # fn gets an empty stdin, as under mp.spawn
    os.close(devnull)
    setup = pickle.loads(_read_frame(parent_pipe))
    # Read fn's bytes now, unpickle them later: the parent's write blocks until they are read,
    # and the next rank is started only after that (initialize below waits for every rank).
    payload = _read_frame(parent_pipe)
    threading.Thread(target=_exit_when_parent_dies, args=(parent_pipe,), daemon=True).start()
    rank = int(os.environ["RANK"])
    error_path = os.path.join(setup["workdir"], f"rank{rank}.error")
    try:
        # All of this must happen before JAX's backend starts, so before the user's code is imported.
        jax.config.update("jax_num_cpu_devices", setup["devices_per_process"])
        # The same start-up as under torchrun, from the variables _launcher_environment set.
        init_distributed(
            initialization_timeout=setup["initialization_timeout"],
            heartbeat_timeout_seconds=setup["heartbeat_timeout_seconds"],
        )
        spawn.prepare(setup["preparation"])  # sys.path, cwd, and the parent's script as __mp_main__
        fn, args = pickle.loads(payload)
        result = fn(rank, *args)
        try:
            data = pickle.dumps(result)
        except Exception as error:  # noqa: BLE001 - pickling runs user code: say which value, not pickle's internals
            raise TypeError(f"the value fn returned on rank {rank} cannot be pickled: {error}") from None
        atomic_write_bytes(os.path.join(setup["workdir"], f"rank{rank}.result"), data)
    except SystemExit as exit:  # sys.exit(code) in fn: this rank ends with that code, as a script would
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        if not isinstance(exit.code, (int, type(None))):
            print(exit.code, file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # skip atexit: jax.distributed's shutdown barrier would wait for the other ranks
    except BaseException:  # noqa: BLE001 - KeyboardInterrupt is a failure of this rank too
        atomic_write_bytes(error_path, traceback.format_exc().encode("utf-8"))
        sys.stdout.flush()
        sys.stderr.flush()
        # Skip atexit: jax.distributed's shutdown barrier would wait for the other ranks.
        os._exit(1)
    sys.stdout.flush()
    # A normal exit runs jax.distributed.shutdown, which waits until every rank has finished.
