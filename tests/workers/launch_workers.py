"""Functions that `fundamentals.launch` runs in child processes during tests/test_launch.py: ranks that end in
the ways a supervisor must tell apart (by pickle reference, so the children import this module, not pytest)."""

import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import fundamentals as fm


def _wait_in_collective():
    """Blocks in an all-reduce that needs every process."""
    mesh = fm.data_mesh()
    batch = fm.shard_batch(np.ones((1, 1), np.float32), mesh)
    jax.block_until_ready(jax.jit(jnp.sum)(batch))


def rank1_exits_0_early(rank: int):
    if rank == 1:
        os._exit(0)  # without returning: rank 0 would wait for it in the collective
    _wait_in_collective()
    time.sleep(600)


def rank1_calls_sys_exit(rank: int, code: int):
    if rank == 1:
        sys.exit(code)  # how a process that obeyed SIGTERM reports it: 128 + 15
    _wait_in_collective()
    time.sleep(600)


def rank1_killed_by_sigterm(rank: int):
    if rank == 1:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # JAX's preemption notifier would catch it otherwise
        os.kill(os.getpid(), signal.SIGTERM)
    _wait_in_collective()
    time.sleep(600)


def rank1_stops_answering(rank: int):
    if rank == 1:
        os.kill(os.getpid(), signal.SIGSTOP)  # alive but silent: no heartbeats
    _wait_in_collective()
    time.sleep(600)


def starts_a_background_process(rank: int, folder: str) -> int:
    """Starts `sleep 600`, which holds this process's stdout and stderr open, and returns its pid."""
    child = subprocess.Popen(["sleep", "600"])
    with open(os.path.join(folder, f"rank{rank}.grandchild"), "w") as file:
        file.write(str(child.pid))
    print(f"rank {rank} started a background process", flush=True)
    return child.pid


def reads_stdin(rank: int) -> str:
    return sys.stdin.read()
