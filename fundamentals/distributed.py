"""A launcher's environment as `init_distributed` (appendix A.9.3): torchrun's variables to `jax.distributed`.

The book's second DDP script is started as `torchrun --nproc_per_node=2 DDP-script-torchrun.py`
and reads its rank from the environment torchrun sets. `jax.distributed.initialize()` finds
SLURM, Open MPI, Kubernetes and Cloud TPU jobs by itself, but not torchrun. `init_distributed`
reads torchrun's variables, falls back on JAX's own detection, and else runs one process:

=====================================================  ==============================================
PyTorch                                                JAX (this module)
=====================================================  ==============================================
``torchrun --nproc_per_node=2 script.py``              ``torchrun --nproc_per_node=2 script.py``
``init_process_group(backend="nccl")`` (``env://``)    ``rank, world_size = init_distributed()``
``int(os.environ["RANK"])``, ``["WORLD_SIZE"]``        the ``(rank, world_size)`` it returns
``destroy_process_group()``                            ``jax.distributed.shutdown()`` (or nothing: JAX
                                                       shuts it down at exit)
=====================================================  ==============================================

The variables torchrun sets (and Kubeflow's PyTorchJob, and job scripts written for PyTorch):

- `RANK`, `WORLD_SIZE`: this process's rank and the number of processes;
- `LOCAL_RANK`, `LOCAL_WORLD_SIZE`: the rank and the number of processes on this machine;
- `MASTER_ADDR`, `MASTER_PORT`: the host of rank 0 and the port of torchrun's own store.

torchrun's store already listens on `MASTER_PORT`, so JAX's coordinator (started by rank 0)
listens on the next port, `MASTER_PORT + 1` (`MASTER_PORT - 1` if that is 65535): every
rank derives it the same way, with nothing to agree on. `JAX_COORDINATOR_PORT` overrides the
port and `JAX_COORDINATOR_ADDRESS` the whole `host:port`, as they do for JAX's own detection.
`fundamentals.launch` starts its processes with these variables, so they join the same way.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax

from ._checks import check_int
from ._checks import is_int as _is_int

__all__ = ["LauncherEnvironment", "init_distributed", "torchrun_environment"]


_LOOPBACK = ("localhost", "127.0.0.1", "::1")


class LauncherEnvironment(NamedTuple):
    """What a torchrun-style environment says about this process (see `torchrun_environment`)."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    coordinator_address: str | None  # "host:port" of JAX's coordinator; None for one process


def _integer(environ: Mapping[str, str], name: str, default: int | None = None) -> int:
    text = environ.get(name)
    if text is None:
        if default is None:
            raise ValueError(f"init_distributed: environment variable {name} is not set")
        return default
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(
            f"init_distributed: environment variable {name} must be an integer, got {name}={text!r}"
        ) from None


def torchrun_environment(environ: Mapping[str, str] | None = None) -> LauncherEnvironment | None:
    """Parse torchrun's variables (`RANK`, `WORLD_SIZE`, ...); None if neither `RANK` nor `WORLD_SIZE` is set.

    The environment half of `init_distributed`, without side effects.

    **Arguments:**

    - `environ`: the variables to read; `os.environ` by default.

    **Returns:**

    A `LauncherEnvironment`, or `None` when no torchrun-style launcher started this process.
    Its `coordinator_address` is `JAX_COORDINATOR_ADDRESS` if set, else `MASTER_ADDR` (with
    `localhost` read as `127.0.0.1`) and `JAX_COORDINATOR_PORT`, else `MASTER_PORT + 1`; it is
    `None` when `WORLD_SIZE` is 1.

    **Raises:**

    `ValueError` naming the variable: `WORLD_SIZE` without `RANK` or `RANK` without
    `WORLD_SIZE`, a value that is not an integer, `WORLD_SIZE` below 1, `RANK` outside
    `[0, WORLD_SIZE)`, `LOCAL_RANK` outside `[0, LOCAL_WORLD_SIZE)`, and for more than one
    process a missing `MASTER_ADDR` / `MASTER_PORT` or a port outside 1..65535.
    """
    environ = os.environ if environ is None else environ
    if "RANK" not in environ and "WORLD_SIZE" not in environ:
        return None
    for present, missing in (("WORLD_SIZE", "RANK"), ("RANK", "WORLD_SIZE")):
        if missing not in environ:
            raise ValueError(
                f"init_distributed: {present}={environ[present]!r} is set but {missing} is not; "
                "a launcher such as torchrun sets both (RANK: this process, 0 to WORLD_SIZE - 1)"
            )
    world_size = _integer(environ, "WORLD_SIZE")
    rank = _integer(environ, "RANK")
    if world_size < 1:
        raise ValueError(f"init_distributed: WORLD_SIZE must be at least 1, got WORLD_SIZE={world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(
            f"init_distributed: RANK must be in [0, WORLD_SIZE - 1] = [0, {world_size - 1}], "
            f"got RANK={rank} with WORLD_SIZE={world_size}"
        )
    local_world_size = _integer(environ, "LOCAL_WORLD_SIZE", world_size if "LOCAL_RANK" in environ else 1)
    local_rank = _integer(environ, "LOCAL_RANK", 0)
    if local_world_size < 1 or not 0 <= local_rank < local_world_size:
        raise ValueError(
            f"init_distributed: LOCAL_RANK must be in [0, LOCAL_WORLD_SIZE - 1], "
            f"got LOCAL_RANK={local_rank} with LOCAL_WORLD_SIZE={local_world_size}"
        )
    if world_size == 1:
        return LauncherEnvironment(rank, world_size, local_rank, local_world_size, None)
    address = environ.get("JAX_COORDINATOR_ADDRESS")
    if not address:
        host = environ.get("MASTER_ADDR", "").strip()
        if not host:
            raise ValueError(
                f"init_distributed: WORLD_SIZE={world_size} needs MASTER_ADDR, the host of rank 0 (torchrun sets it)"
            )
        if "MASTER_PORT" not in environ and "JAX_COORDINATOR_PORT" not in environ:
            raise ValueError(
                f"init_distributed: WORLD_SIZE={world_size} needs MASTER_PORT (torchrun sets it) "
                "or JAX_COORDINATOR_PORT, the port of JAX's coordinator"
            )
        name = "JAX_COORDINATOR_PORT" if "JAX_COORDINATOR_PORT" in environ else "MASTER_PORT"
        port = _integer(environ, name)
        if not 0 < port < 65536:
            raise ValueError(f"init_distributed: {name} must be a TCP port in 1..65535, got {name}={environ[name]!r}")
        if name == "MASTER_PORT":
            port = port + 1 if port < 65535 else port - 1  # torchrun's store listens on MASTER_PORT itself
        host = "127.0.0.1" if host == "localhost" else host
        address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    return LauncherEnvironment(rank, world_size, local_rank, local_world_size, address)


def _host_of(address: str) -> str:
    return address.rsplit(":", 1)[0].strip("[]")


def _wait_for_coordinator(address: str, timeout: float, rank: int, world_size: int) -> None:
    """Poll the coordinator's TCP port: JAX aborts the process (SIGABRT) when it never comes up."""
    host, port = _host_of(address), int(address.rsplit(":", 1)[1])
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(1.0, timeout)):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"init_distributed: rank {rank} of {world_size} could not reach JAX's coordinator at {address} "
                    f"within initialization_timeout={timeout:g} s ({error}). Rank 0 starts it on MASTER_ADDR at "
                    "MASTER_PORT + 1 (or JAX_COORDINATOR_PORT): is rank 0 running, and is that port free and reachable?"
                ) from None
            time.sleep(0.1)


def _port_in_use(host: str, port: int) -> OSError | None:
    """The error binding `host:port` gives (None if it can be bound): is another program listening there?

    Bound as JAX's coordinator binds (reusing an address in TIME_WAIT), then released at once.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as error:
        return error if error.errno == errno.EADDRINUSE else None  # another error: JAX reports it itself
    return None


def _check_coordinator_port(bind: str | None, address: str) -> None:
    """Refuse, before JAX tries, a coordinator port another program holds (gRPC would fail opaquely, or crash)."""
    where = bind or address
    host, port = _host_of(where), int(where.rsplit(":", 1)[1])
    error = _port_in_use("" if bind is None else host, port)
    if error is not None:
        raise RuntimeError(
            f"init_distributed: rank 0 cannot start JAX's coordinator on port {port}: another program is using it "
            f"({error.strerror}). Free the port, or choose another with MASTER_PORT (the coordinator takes "
            "MASTER_PORT + 1) or JAX_COORDINATOR_PORT"
        )


def _bypass_proxies(host: str) -> None:
    # gRPC honours http(s)_proxy; the coordinator must be reached directly.
    if any(name.lower() in ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy") for name in os.environ):
        for name in ("no_proxy", "NO_PROXY"):
            entries = [entry for entry in os.environ.get(name, "").split(",") if entry]
            if host not in entries:
                os.environ[name] = ",".join(entries + [host])


def _use_gloo_on_cpu() -> None:
    # CPU devices of different processes all-reduce through Gloo; ignored by GPU and TPU backends.
    # values[...], not read(): read() refuses flags that also have a context manager, as this one does.
    if jax.config.values["jax_cpu_collectives_implementation"] in (None, "none", ""):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")


def _backend_started() -> bool:
    from jax._src import (
        xla_bridge,  # JAX's private API: imported only when asked, so a change breaks only this
    )

    return xla_bridge.backends_are_initialized()


def init_distributed(
    *,
    initialization_timeout: int = 120,
    heartbeat_timeout_seconds: int = 30,
    local_device_ids: Sequence[int] | None = None,
) -> tuple[int, int]:
    """Join this process to the others its launcher started; return `(rank, world_size)`.

    ```python
    # PyTorch (started by torchrun)                     # JAX (started by torchrun, or alone)
    init_process_group(backend="nccl")                  rank, world_size = init_distributed()
    rank = int(os.environ["RANK"])
    ```

    Call it first, before any other JAX code (as `jax.distributed.initialize`). It looks, in
    this order, at:

    1. **torchrun's variables** (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`,
       `MASTER_ADDR`, `MASTER_PORT`; see `torchrun_environment`): rank 0 starts JAX's
       coordinator on `MASTER_ADDR` at `MASTER_PORT + 1` (torchrun's store holds
       `MASTER_PORT`; `JAX_COORDINATOR_PORT` overrides), and every rank connects to it. With
       several processes on one machine each sees one GPU, `LOCAL_RANK` (as
       `torch.cuda.set_device(rank)` does); alone on its machine a process sees all of them.
       `fundamentals.launch` starts its processes with these variables too.
    2. **what JAX detects by itself**: SLURM, Open MPI, Kubernetes, Cloud TPU, or
       `JAX_COORDINATOR_ADDRESS` (plain `jax.distributed.initialize()`).
    3. else **one process**: nothing to join; `(0, 1)`.

    On CPUs, devices of different processes all-reduce through Gloo
    (`jax_cpu_collectives_implementation="gloo"`, unless another implementation was chosen).
    A second call returns the same `(rank, world_size)` and changes nothing.

    Time bounds: a rank other than 0 waits at most `initialization_timeout` seconds for the
    coordinator to come up, then raises `RuntimeError` naming the address. If the coordinator
    is up but a rank never joins, JAX ends every process after `initialization_timeout`
    (`DEADLINE_EXCEEDED` in its log). Once running, a process whose peers stop answering for
    `heartbeat_timeout_seconds` is ended by JAX's coordination service.

    **Arguments:**

    - `initialization_timeout`: seconds to wait for all processes to join (default 120).
    - `heartbeat_timeout_seconds`: seconds without a heartbeat after which a process counts
      as dead and the job ends (default 30).
    - `local_device_ids`: the local GPUs this process uses; `None` decides as above (or from
      `JAX_LOCAL_DEVICE_IDS`). Ignored on CPU.

    **Returns:**

    `(rank, world_size)`: `jax.process_index()` and `jax.process_count()` once joined.

    **Raises:**

    `ValueError` naming the environment variable that is missing or wrong (see
    `torchrun_environment`) or the argument that is; `RuntimeError` if the coordinator
    cannot be reached in time, its port is taken by another program (rank 0, before JAX
    tries), or JAX has already started in this process and several processes are asked for.
    """
    initialization_timeout = check_int(
        "init_distributed: initialization_timeout", initialization_timeout, 1, unit="seconds"
    )
    heartbeat_timeout_seconds = check_int(
        "init_distributed: heartbeat_timeout_seconds", heartbeat_timeout_seconds, 1, unit="seconds"
    )
    if local_device_ids is not None:
        if (
            not isinstance(local_device_ids, Sequence)
            or isinstance(local_device_ids, (str, bytes))
            or not local_device_ids
            or not all(_is_int(i) and i >= 0 for i in local_device_ids)
        ):
            raise TypeError(
                f"init_distributed: local_device_ids must be a sequence of device numbers, got {local_device_ids!r}"
            )
        local_device_ids = [int(i) for i in local_device_ids]
    if jax.distributed.is_initialized():
        return jax.process_index(), jax.process_count()

    launcher = torchrun_environment()
    if launcher is not None and launcher.world_size == 1:
        return 0, 1
    started = _backend_started()
    if launcher is not None:
        if started:
            raise RuntimeError(
                f"init_distributed: WORLD_SIZE={launcher.world_size} asks for several processes, but JAX has already "
                "started in this one; call init_distributed() before any other JAX code"
            )
        if local_device_ids is None and not os.environ.get("JAX_LOCAL_DEVICE_IDS") and launcher.local_world_size > 1:
            local_device_ids = [launcher.local_rank]
        address = launcher.coordinator_address
        assert address is not None  # torchrun_environment leaves it None only for WORLD_SIZE=1, returned above
        host = _host_of(address)
        _bypass_proxies(host)
        _use_gloo_on_cpu()
        start = time.monotonic()
        if launcher.rank != 0:
            _wait_for_coordinator(address, initialization_timeout, launcher.rank, launcher.world_size)
        remaining = max(1, round(initialization_timeout - (time.monotonic() - start)))
        bind = None
        if launcher.rank == 0 and host in _LOOPBACK and not os.environ.get("JAX_COORDINATOR_BIND_ADDRESS"):
            bind = address  # one machine: listen on the loopback address only
        if launcher.rank == 0:
            _check_coordinator_port(bind or os.environ.get("JAX_COORDINATOR_BIND_ADDRESS"), address)
        jax.distributed.initialize(
            coordinator_address=address,
            num_processes=launcher.world_size,
            process_id=launcher.rank,
            local_device_ids=local_device_ids,
            initialization_timeout=remaining,
            heartbeat_timeout_seconds=heartbeat_timeout_seconds,
            coordinator_bind_address=bind,
        )
        return jax.process_index(), jax.process_count()

    if started:
        return jax.process_index(), jax.process_count()  # too late to join anything: JAX runs alone
    _use_gloo_on_cpu()
    try:
        jax.distributed.initialize(
            local_device_ids=local_device_ids,
            initialization_timeout=initialization_timeout,
            heartbeat_timeout_seconds=heartbeat_timeout_seconds,
        )
    except ValueError as error:
        # JAX found no cluster environment (SLURM, Open MPI, Kubernetes, Cloud TPU): one process.
        if jax.distributed.is_initialized() or "coordinator_address" not in str(error):
            raise
        return 0, 1
    return jax.process_index(), jax.process_count()
