"""The process supervisor: what reaches `jax.distributed.initialize`, a coordinator port another program holds,
and every way a rank can end (early, by a signal, silent, leaving a background process), each named."""

import errno
import importlib
import os
import signal
import socket
import sys

import jax
import pytest

import fundamentals as fm

from .workers import launch_workers as workers

launch_module = importlib.import_module("fundamentals.launch")  # the module: fm.launch is the function
distributed_module = importlib.import_module("fundamentals.distributed")

HANG_GUARD = 180  # seconds; only so a broken build cannot hang the suite, never an assertion


@pytest.fixture
def recorded_initialize(monkeypatch):
    """`init_distributed` up to the call of `jax.distributed.initialize`, which records its arguments instead."""
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed_module, "_backend_started", lambda: False)  # this process's JAX runs already
    monkeypatch.setattr(distributed_module, "_use_gloo_on_cpu", lambda: None)  # leave this process's config alone
    monkeypatch.setattr(distributed_module, "_wait_for_coordinator", lambda *args: None)  # no rank 0 to wait for
    for name in (
        "JAX_LOCAL_DEVICE_IDS",
        "JAX_COORDINATOR_ADDRESS",
        "JAX_COORDINATOR_PORT",
        "JAX_COORDINATOR_BIND_ADDRESS",
    ):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_the_local_rank_picks_the_gpu_not_the_global_rank(recorded_initialize, monkeypatch):
    # The fourth process of a two-machine job, the second on its machine (torchrun --nnodes 2 --nproc_per_node 2):
    # as torch.cuda.set_device(LOCAL_RANK), it must take GPU 1 of its machine, not GPU 3.
    for name, value in dict(
        RANK="3", WORLD_SIZE="4", LOCAL_RANK="1", LOCAL_WORLD_SIZE="2", MASTER_ADDR="10.0.0.1", MASTER_PORT="29500"
    ).items():
        monkeypatch.setenv(name, value)
    fm.init_distributed(initialization_timeout=60, heartbeat_timeout_seconds=10)
    (call,) = recorded_initialize
    assert call["local_device_ids"] == [1]
    assert call["process_id"] == 3 and call["num_processes"] == 4
    assert call["coordinator_address"] == "10.0.0.1:29501"  # torchrun's store holds MASTER_PORT itself
    assert call["heartbeat_timeout_seconds"] == 10


def _listening() -> socket.socket:
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    return squatter


def test_rank_0_names_a_coordinator_port_another_program_holds(recorded_initialize, monkeypatch):
    with _listening() as squatter:
        port = squatter.getsockname()[1]
        for name, value in dict(
            RANK="0", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", JAX_COORDINATOR_PORT=str(port)
        ).items():
            monkeypatch.setenv(name, value)
        with pytest.raises(RuntimeError, match=f"port {port}: another program is using it.*MASTER_PORT"):
            fm.init_distributed()
    assert recorded_initialize == []  # refused before JAX tried (it fails opaquely, or crashes)


def test_launch_names_a_port_another_program_holds():
    with _listening() as squatter:
        port = squatter.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"port {port} on 127.0.0.1 is in use by another program"):
            fm.launch(workers.starts_a_background_process, 2, "/nonexistent", port=port, timeout=HANG_GUARD)


# --- how ranks end ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_rank_that_exits_0_before_returning_is_named_at_once():
    with pytest.raises(RuntimeError) as info:
        fm.launch(workers.rank1_exits_0_early, 2, timeout=HANG_GUARD)
    assert str(info.value).startswith("launch: rank 1 exited with code 0 before fn returned")
    assert "SIGABRT" not in str(info.value)  # not rank 0, ended later by JAX's heartbeat


@pytest.mark.slow
@pytest.mark.parametrize(
    "worker, args, expected",
    [
        (workers.rank1_killed_by_sigterm, (), "launch: rank 1 was killed by SIGTERM"),
        (workers.rank1_calls_sys_exit, (143,), "launch: rank 1 exited with code 143 (128 + SIGTERM"),
        (workers.rank1_calls_sys_exit, (3,), "launch: rank 1 exited with code 3"),
    ],
)
def test_a_rank_ended_by_sigterm_is_named_with_the_signal(worker, args, expected):
    with pytest.raises(RuntimeError) as info:
        fm.launch(worker, 2, *args, timeout=HANG_GUARD)
    assert str(info.value).startswith(expected), str(info.value)


@pytest.mark.slow
def test_after_the_heartbeat_timeout_the_silent_rank_is_blamed():
    with pytest.raises(RuntimeError) as info:
        fm.launch(workers.rank1_stops_answering, 2, heartbeat_timeout_seconds=3, timeout=HANG_GUARD)
    message = str(info.value)
    assert message.startswith("launch: rank 1 stopped sending heartbeats"), message


def _is_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_background_process_a_rank_started_does_not_outlive_launch(tmp_path, capsys):
    pids = fm.launch(workers.starts_a_background_process, 2, str(tmp_path), timeout=HANG_GUARD)
    try:
        assert pids == [int((tmp_path / f"rank{rank}.grandchild").read_text()) for rank in range(2)]
        assert not any(_is_alive(pid) for pid in pids)  # stopped when launch returned, not 600 s later
        out = capsys.readouterr().out
        assert all(f"[rank{rank}] rank {rank} started a background process" in out for rank in range(2))
    finally:
        for pid in pids:
            if _is_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_command_names_the_rank_and_the_signal():
    from fundamentals.cli import _rank_reason

    for message in (
        "launch: rank 1 was killed by SIGTERM (stopped rank(s) [0])",
        "launch: rank 1 exited with code 143 (128 + SIGTERM: it stopped on that signal) (stopped rank(s) [0])",
    ):
        assert _rank_reason(message + "; its last output:\n[rank1] Epoch 1") == message


def test_one_process_needs_no_coordinator(recorded_initialize, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert fm.init_distributed() == (0, 1)
    assert recorded_initialize == []


def test_the_coordinator_is_reached_around_any_proxy(recorded_initialize, monkeypatch):
    # gRPC honours http_proxy: the coordinator's host goes into no_proxy (both spellings), after what was there.
    for name, value in dict(RANK="1", WORLD_SIZE="2", MASTER_ADDR="10.0.0.7", MASTER_PORT="29500").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    monkeypatch.setenv("no_proxy", "example.com")
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert fm.init_distributed() == (jax.process_index(), jax.process_count())
    assert os.environ["no_proxy"] == "example.com,10.0.0.7" and os.environ["NO_PROXY"] == "10.0.0.7"
    fm.init_distributed()  # a second call adds nothing twice
    assert os.environ["no_proxy"] == "example.com,10.0.0.7"


def test_waiting_for_the_coordinator_polls_without_spinning(monkeypatch):
    clock, attempts, sleeps = [0.0], [], []

    def connect(*args, **kwargs):
        attempts.append(args[0])
        clock[0] += 0.001
        raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")

    def sleep(seconds):
        sleeps.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(distributed_module.socket, "create_connection", connect)
    monkeypatch.setattr(distributed_module.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(distributed_module.time, "sleep", sleep)
    with pytest.raises(RuntimeError, match=r"rank 1 of 2 could not reach JAX's coordinator at 127\.0\.0\.1:5 "):
        distributed_module._wait_for_coordinator("127.0.0.1:5", 1.0, 1, 2)
    assert attempts[0] == ("127.0.0.1", 5)
    assert 5 <= len(attempts) <= 11 and set(sleeps) == {0.1}  # about every 0.1 s, not in a tight loop


def test_rank_0_listens_on_loopback_only_when_all_ranks_are_local(recorded_initialize, monkeypatch):
    for name, value in dict(RANK="0", WORLD_SIZE="2", MASTER_ADDR="localhost", JAX_COORDINATOR_PORT="29400").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(distributed_module, "_check_coordinator_port", lambda bind, address: None)
    fm.init_distributed()
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    fm.init_distributed()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    fm.init_distributed()
    binds = [call["coordinator_bind_address"] for call in recorded_initialize]
    assert binds == ["127.0.0.1:29400", None, None]  # rank 0 on one machine: loopback; elsewhere JAX's default


def test_without_a_launcher_jax_detects_the_cluster_or_one_process_runs(recorded_initialize, monkeypatch):
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert fm.init_distributed(initialization_timeout=1, heartbeat_timeout_seconds=1) == (
        jax.process_index(),
        jax.process_count(),
    )
    assert recorded_initialize == [dict(local_device_ids=None, initialization_timeout=1, heartbeat_timeout_seconds=1)]

    def nothing_detected(**kwargs):
        raise ValueError("coordinator_address should be defined.")

    monkeypatch.setattr(jax.distributed, "initialize", nothing_detected)
    assert fm.init_distributed() == (0, 1)
    with pytest.raises(ValueError, match="initialization_timeout"):
        fm.init_distributed(initialization_timeout=0)


def test_the_coordinator_port_stays_a_port_at_the_top_of_the_range():
    environment = distributed_module.torchrun_environment(
        {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "65535"}
    )
    assert environment.coordinator_address == "h:65534"  # torchrun's store has 65535; 65536 is no port
    environment = distributed_module.torchrun_environment(
        {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "65534"}
    )
    assert environment.coordinator_address == "h:65535"


@pytest.mark.parametrize("port", [0, 65536])
def test_launch_refuses_a_port_outside_the_range(port):
    with pytest.raises(ValueError, match="port must be an int in 1..65535"):
        fm.launch(workers.starts_a_background_process, 1, "/nonexistent", port=port)


@pytest.mark.parametrize(
    "returncode, expected",
    [
        (1, "exited with code 1"),
        (128, "exited with code 128"),
        (129, "exited with code 129 (128 + SIGHUP"),
        (143, "exited with code 143 (128 + SIGTERM"),
        (128 + signal.NSIG - 1, f"exited with code {128 + signal.NSIG - 1} (128 + "),
        (128 + signal.NSIG, f"exited with code {128 + signal.NSIG}"),
        (-9, "was killed by SIGKILL"),
        (-15, "was killed by SIGTERM"),
    ],
)
def test_an_exit_is_described_with_its_signal(returncode, expected):
    description = launch_module._describe_exit(returncode)
    assert description.startswith(expected)
    if expected.endswith(f"code {returncode}"):
        assert description == expected  # no signal where there is none


@pytest.mark.slow
def test_a_launched_function_reads_an_empty_stdin():
    # as under mp.spawn: reading stdin ends at once, and never takes the parent's pipe
    assert fm.launch(workers.reads_stdin, 1, timeout=HANG_GUARD) == [""]
