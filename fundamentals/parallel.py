"""Devices, data-parallel sharding and multi-process launch (appendix A.9).

The book ends with one GPU and then many. In JAX the three steps look like this:

==========================================================  =========================================================
PyTorch                                                     JAX (this module)
==========================================================  =========================================================
``torch.device("cuda" if cuda.is_available() else "cpu")``  ``default_device()``
``tensor.to(device)`` / ``model.to(device)``                ``to_device(tree, device)``
``DistributedDataParallel(model)``                          parameters replicated: ``replicated_sharding(mesh)``
``DistributedSampler`` splits the batch per GPU             batch sharded over devices: ``batch_sharding(mesh)``
the process group (``world_size`` GPUs)                     ``data_mesh()``: a 1-D mesh named ``"data"``
``mp.spawn(main, args=..., nprocs=world_size)``             ``launch(main, num_processes, *args)``
``init_process_group(backend="nccl", ...)``                 ``init_distributed()``, called by ``launch``
``destroy_process_group()``                                 nothing: JAX shuts down at exit
==========================================================  =========================================================

Two differences matter to a reader of the book:

- **One program drives many devices.** PyTorch's DDP runs one process per GPU and averages
  gradients with an all-reduce hook. In JAX one process drives all of its local devices: put
  the batch on `batch_sharding(mesh)`, the model on `replicated_sharding(mesh)`, and the same
  jitted train step becomes data-parallel; XLA inserts the all-reduce of the gradients itself.
- **Processes are only for several machines** (or one process per GPU if you like). After
  `jax.distributed.initialize`, `jax.devices()` lists the devices of *every* process, a mesh
  spans them all, and each process feeds only its own rows of the global batch
  (`shard_batch`, built on `jax.make_array_from_process_local_data`).

Devices in JAX: an array created without a device (`jnp.ones(3)`, a NumPy input) is
*uncommitted* and follows the arrays it meets. An array put on a device with
`jax.device_put(x, device)` (or `to_device`) is *committed*. Combining arrays committed to
two different devices raises `ValueError: Received incompatible devices for jitted
computation. Got argument x of add ... with device ids [0] ... and argument y ... with device
ids [1] ...`, JAX's version of PyTorch's `RuntimeError: Expected all tensors to be on the same
device`. JAX never copies silently between committed devices: move one side with
`to_device`. Arrays on the devices of one mesh are one array with a sharding, not a mix.
"""

from __future__ import annotations

import collections
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec, Sharding

from .checkpoint import atomic_write_bytes
from .distributed import init_distributed
from .tensors import is_int as _is_int

__all__ = [
    "default_device",
    "to_device",
    "data_mesh",
    "batch_sharding",
    "replicated_sharding",
    "check_batch_size",
    "shard_batch",
    "launch",
]

DATA_AXIS = "data"

# ---------------------------------------------------------------------------------------------
# One device
# ---------------------------------------------------------------------------------------------


def default_device() -> jax.Device:
    """The device computations should run on: the first GPU if there is one, else the CPU.

    ```python
    # PyTorch                                                      # JAX
    device = torch.device("cuda" if torch.cuda.is_available()      device = default_device()
                          else "cpu")
    ```

    This is the first *local* device of JAX's default backend, which JAX picks as TPU, then
    GPU, then CPU (set `JAX_PLATFORMS=cpu` to force the CPU). In a multi-process run it is a
    device of this process, never one of another process.

    **Returns:**

    A `jax.Device`, for example `CudaDevice(id=0)` or `CpuDevice(id=0)`.
    """
    return jax.local_devices()[0]


_PLATFORM_ALIASES = {"cuda": "gpu", "rocm": "gpu", "gpu": "gpu", "cpu": "cpu", "tpu": "tpu"}


def _resolve_device(device) -> jax.Device | Sharding:
    if isinstance(device, (jax.Device, Sharding)):
        return device
    if not isinstance(device, str):
        raise TypeError(
            f"to_device: device must be a jax.Device, a jax.sharding.Sharding or a string such as "
            f"'cpu' or 'cuda:0', got {type(device).__name__}"
        )
    name, _, index_text = device.strip().lower().partition(":")
    if name not in _PLATFORM_ALIASES or (index_text and not index_text.isdigit()):
        raise ValueError(
            f"to_device: device {device!r} is not 'cpu', 'gpu', 'cuda', 'rocm' or 'tpu' with an optional ':index'"
        )
    platform = _PLATFORM_ALIASES[name]
    try:
        devices = jax.local_devices(backend=platform)
    except RuntimeError:
        available = sorted({d.platform for d in jax.local_devices()})
        raise ValueError(
            f"to_device: device {device!r} asks for a {platform!r} backend, but JAX has only {available}"
        ) from None
    index = int(index_text) if index_text else 0
    if index >= len(devices):
        raise ValueError(
            f"to_device: device {device!r} does not exist; this process has {len(devices)} {platform} device(s)"
        )
    return devices[index]


def to_device(tree, device):
    """A copy of `tree` whose arrays live on `device`; other leaves are left as they are.

    ```python
    # PyTorch                          # JAX
    X = X.to(device)                   X = to_device(X, device)
    model = model.to(device)           model = to_device(model, device)
    ```

    PyTorch moves a model in place; here, as everywhere in JAX, the result is a new tree and
    the input is unchanged. The arrays of the result are *committed* to `device`: combining
    them with arrays committed to another device raises `ValueError: Received incompatible
    devices for jitted computation`, where PyTorch raises "Expected all tensors to be on the
    same device". Uncommitted inputs (NumPy arrays, `jnp.ones(...)`) follow them without
    complaint, so `model(X_numpy)` on a moved model runs on the model's device.

    **Arguments:**

    - `tree`: an array, an Equinox model, or any pytree of them. NumPy arrays are moved too;
      non-array leaves (Python numbers, strings, activation functions) stay as they are.
    - `device`: a `jax.Device` (`default_device()`, `jax.devices()[1]`), a PyTorch-style string
      (`"cpu"`, `"cuda"`, `"cuda:1"`, `"gpu"`, `"tpu"`: local devices of that platform), or a
      `jax.sharding.Sharding` (`replicated_sharding(mesh)` copies the tree to every device).
      A sharding over the devices of several processes takes `tree` as the *global* value,
      which must then be equal in every process (JAX checks; a `ValueError` here if not).

    **Returns:**

    A pytree of the same structure, its arrays on `device`.
    """
    target = _resolve_device(device)
    arrays, rest = eqx.partition(tree, eqx.is_array)
    try:
        moved = jax.device_put(arrays, target)
    except AssertionError as error:
        # JAX's check that a value put on devices of several processes is the same everywhere.
        raise ValueError(
            "to_device: device is a sharding that spans several processes, so every process must pass "
            "the same values (build the model from the same key on every rank; feed per-process data "
            f"with shard_batch instead): {str(error)[:300]}"
        ) from None
    return eqx.combine(moved, rest)


# ---------------------------------------------------------------------------------------------
# Many devices: a mesh, its shardings, and global batches
# ---------------------------------------------------------------------------------------------



def data_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D device mesh with one axis, `"data"`, for data-parallel training.

    The JAX counterpart of DDP's process group: the devices a global batch is split across.
    After `jax.distributed.initialize` (which `launch` calls), `jax.devices()` and so the mesh
    span the devices of every process.

    ```python
    mesh = data_mesh()                         # all devices, e.g. Mesh('data': 8)
    X = jax.device_put(X, batch_sharding(mesh))               # rows split across devices
    model = to_device(model, replicated_sharding(mesh))       # a full copy on each device
    ```

    The axis is `AxisType.Auto` (what `jax.sharding.Mesh` gives; `jax.make_mesh` defaults to
    `Explicit` in JAX 0.10): XLA then propagates the batch sharding through any model code
    without annotations, which is all data parallelism needs.

    **Arguments:**

    - `num_devices`: use the first `num_devices` of `jax.devices()`; `None` (default) uses all.

    **Returns:**

    A `jax.sharding.Mesh` of shape `{"data": num_devices}`.

    **Raises:**

    `ValueError` naming `num_devices` if it is below 1 or above the number of devices.
    """
    devices = jax.devices()
    if num_devices is None:
        num_devices = len(devices)
    if not _is_int(num_devices):
        raise TypeError(f"data_mesh: num_devices must be an int or None, got {type(num_devices).__name__}")
    if not 1 <= num_devices <= len(devices):
        raise ValueError(
            f"data_mesh: num_devices must be between 1 and the {len(devices)} available device(s) "
            f"({devices[0].platform}), got {num_devices}"
        )
    return jax.make_mesh((int(num_devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices[:num_devices])


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """How a batch is laid out: its first (batch) axis split evenly across the `"data"` axis.

    `NamedSharding(mesh, P("data"))`. With 4 devices and a batch of 8, each device holds 2
    rows, as each GPU gets its slice of the batch from `DistributedSampler` in PyTorch's DDP.
    """
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of `mesh`: how parameters and optimizer state are kept.

    `NamedSharding(mesh, P())`. DDP copies the model to each GPU at construction and keeps the
    copies equal by averaging gradients; a jitted step on replicated parameters and a sharded
    batch does the same, with the all-reduce inserted by XLA.
    """
    return NamedSharding(mesh, PartitionSpec())


def _num_data_devices(mesh) -> int:
    if _is_int(mesh):
        return int(mesh)
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh (see data_mesh), got {type(mesh).__name__}")
    return int(mesh.shape[DATA_AXIS]) if DATA_AXIS in mesh.shape else int(mesh.size)


def check_batch_size(global_batch_size: int, mesh: Mesh) -> int:
    """Check that a global batch splits evenly across the mesh; return the rows per device.

    **Arguments:**

    - `global_batch_size`: the batch size summed over all devices and processes (in
      PyTorch's DDP, the per-GPU `batch_size` times `world_size`).
    - `mesh`: the mesh from `data_mesh` (or the number of devices, an int).

    **Returns:**

    The number of rows each device gets.

    **Raises:**

    `ValueError` naming `global_batch_size` and listing sizes that work (multiples of the
    device count) if the device count does not divide it.
    """
    num_devices = _num_data_devices(mesh)
    if not _is_int(global_batch_size):
        raise TypeError(f"check_batch_size: global_batch_size must be an int, got {type(global_batch_size).__name__}")
    if global_batch_size < 1 or global_batch_size % num_devices:
        below = (global_batch_size // num_devices) * num_devices
        nearest = [str(size) for size in (below, below + num_devices) if size >= num_devices]
        examples = ", ".join(str(num_devices * k) for k in range(1, 5))
        raise ValueError(
            f"global_batch_size={global_batch_size} does not split evenly across {num_devices} devices: "
            f"use a multiple of {num_devices} ({examples}, ...); the nearest "
            + ("is " + nearest[0] if len(nearest) == 1 else "are " + " and ".join(nearest))
        )
    return global_batch_size // num_devices


def shard_batch(batch, mesh: Mesh):
    """Turn this process's rows of a batch into global arrays sharded over `mesh`.

    One process: the batch is the global batch, and this is `jax.device_put(batch,
    batch_sharding(mesh))`. Several processes: each passes its own rows (from a
    `DistributedSampler` with `rank=jax.process_index()`), and the result is one global array
    of `jax.process_count()` times as many rows, each row on a device of the process that
    supplied it (`jax.make_array_from_process_local_data`). Rows are in process order.

    **Arguments:**

    - `batch`: a pytree of host arrays (NumPy or JAX), each with the local rows on axis 0.
    - `mesh`: the mesh from `data_mesh`.

    **Returns:**

    The same pytree of `jax.Array`s with sharding `batch_sharding(mesh)`.

    **Raises:**

    `ValueError` (see `check_batch_size`) if the global batch does not split evenly.
    """
    sharding = batch_sharding(mesh)

    def put(array):
        array = np.asarray(array)
        if array.ndim == 0:
            raise ValueError("shard_batch: every array in batch needs a batch axis, got a scalar")
        try:
            check_batch_size(array.shape[0] * jax.process_count(), mesh)
        except ValueError as error:
            raise ValueError(
                f"shard_batch: {array.shape[0]} rows in this process x {jax.process_count()} process(es): {error}"
            ) from None
        return jax.make_array_from_process_local_data(sharding, array)

    return jax.tree_util.tree_map(put, batch)


# ---------------------------------------------------------------------------------------------
# Many processes: mp.spawn + init_process_group
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launcher_environment(base: dict[str, str], rank: int, num_processes: int, devices_per_process: int,
                          port: int) -> dict[str, str]:
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


def _check_positive_int(value, name: str) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"launch: {name} must be a positive int, got {value!r}")
    return int(value)


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
    except Exception:  # noqa: BLE001
        return True
    return False


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


class _OutputPump(threading.Thread):
    """Copies one child stream to the parent's stream, line by line, with a `[rankN] ` prefix."""

    lock = threading.Lock()

    def __init__(self, stream, rank: int, to_stderr: bool, tail: collections.deque):
        super().__init__(daemon=True)
        self.stream, self.rank, self.to_stderr, self.tail = stream, rank, to_stderr, tail

    def run(self):
        for raw in iter(self.stream.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            self.tail.append(line)
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

    Failure: if a process raises, exits with a non-zero code or is killed, `launch` kills the
    others at once (SIGKILL to each process group, so whatever they started goes too) and
    raises `RuntimeError` naming the rank that failed first and, if it raised, its traceback.
    Where PyTorch's survivors can hang in a collective until NCCL's timeout, here nothing waits
    for a dead peer. A process whose parent dies exits too. Independently, JAX's own heartbeat
    aborts a process whose peers stopped answering for `heartbeat_timeout_seconds`.

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
    `RuntimeError` if a process fails or the timeout passes.
    """
    if not callable(fn):
        raise TypeError(f"launch: fn must be callable, got {type(fn).__name__}")
    num_processes = _check_positive_int(num_processes, "num_processes")
    devices_per_process = _check_positive_int(devices_per_process, "devices_per_process")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ValueError(f"launch: timeout must be a positive number of seconds or None, got {timeout!r}")
    if port is not None and (not _is_int(port) or not 0 < port < 65536):
        raise ValueError(f"launch: port must be an int in 1..65535 or None, got {port!r}")
    heartbeat_timeout_seconds = _check_positive_int(heartbeat_timeout_seconds, "heartbeat_timeout_seconds")
    initialization_timeout = _check_positive_int(initialization_timeout, "initialization_timeout")
    if env is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in dict(env).items()):
        raise TypeError(f"launch: env must map str to str, got {env!r}")
    payload = _pickle_payload(fn, args)
    port = _free_port() if port is None else int(port)

    from multiprocessing import spawn  # how mp.spawn lets children import the parent's __main__

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env["PYTHONUNBUFFERED"] = "1"  # pipes are block-buffered otherwise: lines would come late
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, child_env.get("PYTHONPATH")]))

    preparation = spawn.get_preparation_data("launch")
    preparation["authkey"] = bytes(preparation["authkey"])  # AuthenticationString refuses to pickle

    processes: list[subprocess.Popen] = []
    pumps: list[_OutputPump] = []
    tails = [collections.deque(maxlen=20) for _ in range(num_processes)]
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
                    [sys.executable, "-c", "from fundamentals.parallel import _child_main; _child_main()"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=_launcher_environment(child_env, rank, num_processes, devices_per_process, port),
                    start_new_session=True,  # its own process group: stopping it stops what it started
                )
                processes.append(process)
                for stream, to_stderr in ((process.stdout, False), (process.stderr, True)):
                    pump = _OutputPump(stream, rank, to_stderr, tails[rank])
                    pump.start()
                    pumps.append(pump)
                # stdin stays open: a child reads EOF there when this process dies, and exits.
                try:
                    process.stdin.write(_frame(pickle.dumps(setup)) + _frame(payload))
                    process.stdin.flush()
                except BrokenPipeError:
                    pass  # it died on start; _wait_for reports how
            _wait_for(processes, workdir, tails, timeout)
            for pump in pumps:
                pump.join(timeout=5)
            return [_read_result(workdir, rank) for rank in range(num_processes)]
        finally:
            _stop(processes)
            for process in processes:
                if process.stdin:
                    try:
                        process.stdin.close()
                    except OSError:
                        pass
            for pump in pumps:
                pump.join(timeout=1)


def _wait_for(processes: Sequence[subprocess.Popen], workdir: str, tails, timeout: float | None) -> None:
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
        if returncode != 0:
            survivors = [r for r, process in enumerate(processes) if process.poll() is None]
            _stop(processes)
            raise RuntimeError(_failure_message(rank, returncode, workdir, tails[rank], survivors))


def _failure_message(rank: int, returncode: int, workdir: str, tail, survivors: list[int]) -> str:
    error_path = os.path.join(workdir, f"rank{rank}.error")
    stopped = f" (stopped rank(s) {survivors})" if survivors else ""
    if os.path.exists(error_path):
        with open(error_path, encoding="utf-8") as file:
            return f"launch: rank {rank} raised an exception{stopped}:\n{file.read()}"
    message = f"launch: rank {rank} {_describe_exit(returncode)}{stopped}"
    if tail:
        message += "; its last output:\n" + "\n".join(tail)
    return message


def _stop(processes: Sequence[subprocess.Popen]) -> None:
    # SIGKILL straight away: JAX's preemption service catches SIGTERM (it treats it as a notice to
    # checkpoint, not to exit), and a survivor's peers are gone, so it has nothing left to finish.
    for process in processes:
        if process.poll() is None:
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
        from multiprocessing import spawn

        spawn.prepare(setup["preparation"])  # sys.path, cwd, and the parent's script as __mp_main__
        fn, args = pickle.loads(payload)
        result = fn(rank, *args)
        try:
            data = pickle.dumps(result)
        except Exception as error:  # noqa: BLE001
            raise TypeError(f"the value fn returned on rank {rank} cannot be pickled: {error}") from None
        atomic_write_bytes(os.path.join(setup["workdir"], f"rank{rank}.result"), data)
    except BaseException:  # noqa: BLE001 - KeyboardInterrupt and SystemExit are failures of this rank too
        atomic_write_bytes(error_path, traceback.format_exc().encode("utf-8"))
        sys.stdout.flush()
        sys.stderr.flush()
        # Skip atexit: jax.distributed's shutdown barrier would wait for the other ranks.
        os._exit(1)
    sys.stdout.flush()
    # A normal exit runs jax.distributed.shutdown, which waits until every rank has finished.
