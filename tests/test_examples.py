"""The book's two DDP scripts, as their JAX twins in examples/, run the way a reader runs them.

Their final parameters, printed losses and accuracies are checked against a single-process
`fm.fit` on the same global batches (each step: every rank's batch, in rank order).
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest

import fundamentals as fm

from .helpers import TORCH_MISSING, ReplaySampler

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(os.path.dirname(HERE), "examples")
NUM_EPOCHS = 3
LINE = re.compile(r"\[CPU(\d)\] Epoch: (\d{3})/003 \| Batchsize (\d{3}) \| Train/Val Loss: (\d+\.\d\d)")


def environment(**extra):
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("XLA_FLAGS", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "JAX_COORDINATOR_PORT")
    }
    env.update(JAX_PLATFORMS="cpu", **extra)
    return env


def torchrun(*args):
    pytest.importorskip("torch", reason=TORCH_MISSING)  # torchrun comes with the test extra's torch
    binary = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    return [binary] if binary else [sys.executable, "-m", "torch.distributed.run"]


def single_process_truth(world_size):
    """fit in one process on the global batches the ranks build together, and what the script prints."""
    X_train, y_train, X_test, y_test = fm.toy_data()
    dataset = fm.ArrayDataset(X_train, y_train)

    def sampler(rank, epoch):  # the script's DistributedSampler(train_ds): shuffle=True, seed=0
        s = fm.DistributedSampler(dataset, num_replicas=world_size, rank=rank)
        s.set_epoch(epoch)
        return s

    orders = []
    for epoch in range(NUM_EPOCHS):
        shards = [list(sampler(rank, epoch)) for rank in range(world_size)]
        steps = len(shards[0]) // 2  # batch_size=2, drop_last=True on every rank
        orders.append([i for k in range(steps) for shard in shards for i in shard[2 * k : 2 * k + 2]])
    loader = fm.DataLoader(dataset, batch_size=2 * world_size, sampler=ReplaySampler(orders), drop_last=True)
    model, history = fm.fit(
        fm.NeuralNetwork(2, 2, key=jax.random.key(123)), optax.sgd(0.5), loader, num_epochs=NUM_EPOCHS, log=None
    )
    # the book's accuracies: each rank over its own shard (sampler left at the last epoch), and the test set
    train_accuracy = [
        fm.compute_accuracy(
            model, fm.DataLoader(dataset, batch_size=2, drop_last=True, sampler=sampler(rank, NUM_EPOCHS - 1))
        )
        for rank in range(world_size)
    ]
    test_accuracy = fm.compute_accuracy(model, fm.DataLoader(fm.ArrayDataset(X_test, y_test), batch_size=2))
    return model, history["loss"], train_accuracy, test_accuracy


def check_run(output, saved_path, world_size):
    model, losses, train_accuracy, test_accuracy = single_process_truth(world_size)
    saved = fm.load_model(saved_path, like=fm.NeuralNetwork(2, 2, key=jax.random.key(0)))
    for key, value in fm.state_dict(model).items():
        np.testing.assert_allclose(fm.state_dict(saved)[key], value, atol=1e-5, err_msg=key)
    for rank in range(world_size):
        lines = [m for m in LINE.finditer(output) if int(m.group(1)) == rank]
        steps_per_epoch = len(losses) // NUM_EPOCHS
        tail = output[-3000:]
        assert [int(m.group(2)) for m in lines] == [e + 1 for e in range(NUM_EPOCHS) for _ in range(steps_per_epoch)], (
            tail
        )
        assert all(m.group(3) == "002" for m in lines), tail
        assert [m.group(4) for m in lines] == [f"{loss:.2f}" for loss in losses], tail
        assert f"[CPU{rank}] Training accuracy {train_accuracy[rank]}" in output, tail
        assert f"[CPU{rank}] Test accuracy {test_accuracy}" in output, tail


@pytest.mark.slow
def test_ddp_script_two_processes_through_launch(tmp_path):
    saved = tmp_path / "model.safetensors"
    result = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "ddp_script.py"), "--save", str(saved)],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[rank0] [CPU0] Epoch: 001/003" in result.stdout and "[rank1] [CPU1] Epoch: 001/003" in result.stdout
    check_run(result.stdout, saved, world_size=2)


@pytest.mark.slow
@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_ddp_script_torchrun(tmp_path, world_size):
    saved = tmp_path / "model.safetensors"
    script = os.path.join(EXAMPLES, "ddp_script_torchrun.py")
    if world_size == 1:  # `python script.py` alone: one process
        command = [sys.executable, script]
    else:
        command = torchrun() + ["--standalone", f"--nproc_per_node={world_size}", script]
    result = subprocess.run(
        command + ["--save", str(saved)], capture_output=True, text=True, timeout=300, env=environment()
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert f"Number of devices available: {world_size}" in result.stdout
    check_run(result.stdout, saved, world_size)


@pytest.mark.slow
def test_killing_one_torchrun_rank_ends_the_others_naming_it():
    heartbeat = 5
    start = time.monotonic()
    result = subprocess.run(
        torchrun() + ["--standalone", "--nproc_per_node=2", os.path.join(HERE, "workers", "torchrun_worker.py"), "die"],
        capture_output=True,
        text=True,
        timeout=240,
        env=environment(TEST_HEARTBEAT=str(heartbeat)),
    )
    elapsed = time.monotonic() - start
    output = result.stdout + result.stderr
    assert "rank 0 of 2: sum over ranks 2.0" in output  # both joined and all-reduced first
    assert result.returncode != 0
    # torchrun names the rank that died first; the survivor (which sleeps 300 s) was ended
    assert re.search(r"Root Cause[\s\S]*rank\s*:\s*1 \(local_rank: 1\)[\s\S]*SIGKILL", output), output[-3000:]
    assert elapsed < 120, f"the survivor was ended only after {elapsed:.0f} s"


# --- init_distributed: bad environments, and a coordinator that never comes up -------------------


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"WORLD_SIZE": "2"}, "RANK"),
        ({"RANK": "0"}, "WORLD_SIZE"),
        ({"RANK": "one", "WORLD_SIZE": "2"}, "RANK"),
        ({"RANK": "0", "WORLD_SIZE": "2.5"}, "WORLD_SIZE"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK"),
        ({"RANK": "-1", "WORLD_SIZE": "2"}, "RANK"),
        ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE"),
        ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "x"}, "LOCAL_RANK"),
        ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "1234"}, "MASTER_ADDR"),
        ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}, "MASTER_PORT"),
        ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "70000"}, "MASTER_PORT"),
    ],
)
def test_bad_launcher_environment_names_the_variable(monkeypatch, env, variable):
    for name in (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "JAX_COORDINATOR_ADDRESS",
        "JAX_COORDINATOR_PORT",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=rf"\b{variable}\b"):
        fm.init_distributed()


def test_coordinator_port_is_master_port_plus_one():
    from fundamentals.distributed import torchrun_environment

    base = {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "localhost", "MASTER_PORT": "29500"}
    assert torchrun_environment(base).coordinator_address == "127.0.0.1:29501"  # torchrun's store has 29500
    assert torchrun_environment({**base, "MASTER_PORT": "65535"}).coordinator_address == "127.0.0.1:65534"
    assert torchrun_environment({**base, "JAX_COORDINATOR_PORT": "4000"}).coordinator_address == "127.0.0.1:4000"
    assert torchrun_environment({**base, "MASTER_ADDR": "10.0.0.7"}).coordinator_address == "10.0.0.7:29501"
    one = torchrun_environment({"RANK": "0", "WORLD_SIZE": "1"})
    assert (one.rank, one.world_size, one.coordinator_address) == (0, 1, None)
    assert torchrun_environment({}) is None


def test_one_process_without_a_launcher(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "JAX_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    assert fm.init_distributed() == (0, 1)
    assert fm.init_distributed() == (0, 1)  # safe to call twice
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node=1
    assert fm.init_distributed() == (0, 1)
    with pytest.raises(ValueError, match="initialization_timeout"):
        fm.init_distributed(initialization_timeout=0)


@pytest.mark.slow
def test_a_coordinator_that_never_comes_up_is_an_error_in_bounded_time():
    code = "import fundamentals as fm; fm.init_distributed(initialization_timeout=3)"
    env = environment(RANK="1", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    env.pop("JAX_COORDINATOR_PORT", None)
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    elapsed = time.monotonic() - start
    assert result.returncode == 1
    assert "RuntimeError: init_distributed: rank 1 of 2 could not reach JAX's coordinator" in result.stderr
    assert "initialization_timeout=3 s" in result.stderr
    assert elapsed < 30  # 3 s of waiting plus the interpreter's start
