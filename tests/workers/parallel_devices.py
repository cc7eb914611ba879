"""Subprocess entry point for tests/test_parallel.py: checks that need several CPU devices.

`python tests/workers/parallel_devices.py CASE NUM_DEVICES` simulates NUM_DEVICES CPU devices (which
must happen before JAX starts, so not in the pytest process), runs CASE, and prints one JSON
object of observations for the test to assert on.
"""

import json
import sys

import jax

jax.config.update("jax_num_cpu_devices", int(sys.argv[2]))

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import fundamentals as fm  # noqa: E402


def error_of(thunk):
    try:
        jax.block_until_ready(thunk())
    except Exception as error:  # noqa: BLE001 - the type and text are what we record
        return {"type": type(error).__name__, "message": str(error)}
    return None


def device_ids(array):
    return sorted(device.id for device in array.devices())


def different_devices():
    d0, d1 = jax.devices()[:2]
    a = fm.to_device(jnp.ones(3), d0)
    b = fm.to_device(jnp.ones(3), d1)
    model = fm.to_device(fm.NeuralNetwork(2, 2, key=jax.random.key(0)), d1)
    X = np.ones((4, 2), np.float32)
    return {
        "committed": [a.committed, b.committed, jnp.ones(3).committed],
        "eager_add": error_of(lambda: a + b),
        "jit_add": error_of(lambda: jax.jit(jnp.add)(a, b)),
        "model_input_elsewhere": error_of(lambda: model(fm.to_device(X, d0))),
        "uncommitted_follows": device_ids(jnp.ones(3) + b),
        "numpy_input_follows_model": device_ids(model(X)),
        "moved_then_added": device_ids(fm.to_device(a, d1) + b),
        "string_device": device_ids(fm.to_device(jnp.ones(3), "cpu:1")),
        "missing_string_device": error_of(lambda: fm.to_device(jnp.ones(3), "cpu:7")),
    }


def mesh():
    n = len(jax.devices())
    full = fm.data_mesh()
    three = fm.data_mesh(3)
    rows = np.arange(2 * n * 2, dtype=np.float32).reshape(2 * n, 2)
    batch = fm.shard_batch(rows, full)
    shards = sorted((shard.device.id, np.asarray(shard.data).tolist()) for shard in batch.addressable_shards)

    # A data-parallel gradient step on the mesh: replicated parameters, sharded batch.
    rng = np.random.default_rng(1)
    X = rng.normal(size=(2 * n, 3)).astype(np.float32)
    y = rng.normal(size=(2 * n,)).astype(np.float32)
    w = np.array([1.0, -2.0, 0.5], np.float32)
    w_replicated = fm.to_device(jnp.asarray(w), fm.replicated_sharding(full))
    X_sharded, y_sharded = fm.shard_batch((X, y), full)
    grad_fn = jax.jit(jax.grad(lambda w, X, y: jnp.mean((X @ w - y) ** 2)))
    grad = jax.block_until_ready(grad_fn(w_replicated, X_sharded, y_sharded))
    return {
        "num_devices": n,
        "shape": dict(full.shape),
        "axis_names": list(full.axis_names),
        "axis_types": [str(t) for t in full.axis_types],
        "device_ids": [d.id for d in full.devices.flat],
        "three_device_ids": [d.id for d in three.devices.flat],
        "too_many": error_of(lambda: fm.data_mesh(n + 1)),
        "zero": error_of(lambda: fm.data_mesh(0)),
        "batch_spec": str(batch.sharding.spec),
        "shards": shards,
        "total": float(jax.jit(jnp.sum)(batch)),
        "rows_per_device": fm.check_batch_size(2 * n, full),
        "bad_batch": error_of(lambda: fm.check_batch_size(2 * n + 2, full)),
        "bad_shard_batch": error_of(lambda: fm.shard_batch(rows[:3], full)),
        "X": X.tolist(),
        "y": y.tolist(),
        "w": w.tolist(),
        "grad": np.asarray(grad).tolist(),
        "grad_replicated": grad.sharding.is_fully_replicated,
        "w_shard_devices": sorted(shard.device.id for shard in w_replicated.addressable_shards),
    }


if __name__ == "__main__":
    print(json.dumps({"different_devices": different_devices, "mesh": mesh}[sys.argv[1]]()))
