"""Functions that `fundamentals.launch` runs in child processes during tests/test_parallel.py.

They live in their own module so children import it (by pickle reference) without pytest.
"""

import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np

import fundamentals as fm

ROWS_PER_PROCESS = 4
NUM_FEATURES = 3


def local_rows(rank: int) -> np.ndarray:
    """Process `rank`'s rows: row i of the global batch is filled with the value i."""
    first = rank * ROWS_PER_PROCESS
    values = np.arange(first, first + ROWS_PER_PROCESS, dtype=np.float32)
    return np.repeat(values[:, None], NUM_FEATURES, axis=1)


def regression_data(num_rows: int):
    """A fixed least-squares problem shared by the parent (for the truth) and the children."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(num_rows, NUM_FEATURES)).astype(np.float32)
    y = rng.normal(size=(num_rows,)).astype(np.float32)
    w = np.array([0.5, -1.0, 2.0], dtype=np.float32)
    return X, y, w


def global_sum_and_gradient(rank: int, scale: float, big: np.ndarray):
    """Each process feeds its rows; the mesh spans both processes; jitted reductions see all rows."""
    print(f"hello from process {jax.process_index()}")
    mesh = fm.data_mesh()
    batch = fm.shard_batch(local_rows(rank), mesh)
    total = jax.jit(lambda x: scale * x.sum(), out_shardings=fm.replicated_sharding(mesh))(batch)
    total = float(jax.block_until_ready(total))

    # A data-parallel gradient: parameters replicated, batch sharded, as a DDP step does.
    num_rows = ROWS_PER_PROCESS * jax.process_count()
    X, y, w = regression_data(num_rows)
    mine = slice(rank * ROWS_PER_PROCESS, (rank + 1) * ROWS_PER_PROCESS)
    X_global, y_global = fm.shard_batch((X[mine], y[mine]), mesh)
    w = fm.to_device(jnp.asarray(w), fm.replicated_sharding(mesh))
    loss = lambda w, X, y: jnp.mean((X @ w - y) ** 2)  # noqa: E731
    grad = jax.block_until_ready(jax.jit(jax.grad(loss))(w, X_global, y_global))
    # Replicating across processes takes the value as global: it must be equal on every rank.
    same = fm.to_device(fm.NeuralNetwork(2, 2, key=jax.random.key(7)), fm.replicated_sharding(mesh))
    try:
        fm.to_device(fm.NeuralNetwork(2, 2, key=jax.random.key(rank)), fm.replicated_sharding(mesh))
        differing = None
    except ValueError as error:
        differing = str(error)
    return {
        "rank": rank,
        "big_sum": float(big.sum()),
        "replicated_weight_00": float(same.layers[0].weight.addressable_data(0)[0, 0]),
        "replicated_devices": len(same.layers[0].weight.sharding.device_set),
        "differing_models": differing,
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "num_devices": len(jax.devices()),
        "num_local_devices": len(jax.local_devices()),
        "mesh_shape": dict(mesh.shape),
        "batch_shape": tuple(batch.shape),
        "total": total,
        "grad": np.asarray(grad.addressable_data(0)).tolist(),
    }


def _wait_in_collective():
    """Blocks in an all-reduce that needs every process."""
    mesh = fm.data_mesh()
    batch = fm.shard_batch(np.ones((1, 1), np.float32), mesh)
    jax.block_until_ready(jax.jit(jnp.sum)(batch))


def rank1_raises(rank: int):
    if rank == 1:
        raise ValueError("boom from rank 1")
    _wait_in_collective()
    time.sleep(600)


def rank1_exits(rank: int):
    if rank == 1:
        os._exit(3)
    _wait_in_collective()
    time.sleep(600)


def rank1_killed(rank: int):
    if rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(600)


def sleep_forever(rank: int):
    time.sleep(600)


def unpicklable_result(rank: int):
    return lambda: rank


def write_pid_and_sleep(rank: int, directory: str):
    path = os.path.join(directory, f"rank{rank}.pid")
    with open(path + ".tmp", "w") as file:
        file.write(str(os.getpid()))
    os.replace(path + ".tmp", path)
    time.sleep(600)
