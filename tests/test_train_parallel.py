"""fit(..., mesh=...) on 8 simulated CPU devices equals single-device training."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(__file__)


@pytest.fixture(scope="module")
def report():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "workers", "mesh_fit.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("path", ["fused", "step"])
def test_data_parallel_fit_equals_single_device(report, path):
    assert report["devices"] == 8 and report["mesh"] == 8
    single, parallel = report["runs"][f"single-{path}"], report["runs"][f"mesh-{path}"]
    assert len(parallel["loss"]) == 2 * (203 // 16)
    np.testing.assert_allclose(parallel["loss"], single["loss"], atol=1e-5)
    for key, value in single["params"].items():
        np.testing.assert_allclose(np.array(parallel["params"][key]), np.array(value), atol=1e-5)


@pytest.mark.parametrize("run", ["mesh-fused", "mesh-book-fused"])
def test_data_parallel_chunks_equal_one_jitted_call_a_step_bit_for_bit(report, run):
    # device-resident gathers and host chunks on 8 devices: the same bits as one call a step there
    step = report["runs"]["mesh-step"]
    assert report["runs"][run]["loss"] == step["loss"]
    assert report["runs"][run]["params"] == step["params"]


def test_indivisible_batch_names_the_sizes_that_work(report):
    message = report["error"]
    assert "global_batch_size=12" in message and "8 devices" in message and "8, 16, 24" in message
    assert "drop_last=True" in message


@pytest.mark.parametrize("fused", [True, False])
def test_two_processes_two_devices_equal_one_process_on_the_same_global_batches(fused):
    import jax
    import optax

    import fundamentals as fm

    from .helpers import ReplaySampler
    from .workers import mp_fit

    num_epochs = 2
    results = fm.launch(mp_fit.train, 2, num_epochs, fused, devices_per_process=2, timeout=300)
    assert [r["rank"] for r in results] == [0, 1]
    assert all(r["process_count"] == 2 and r["devices"] == 4 for r in results)

    # The same global batches in one process: step k is rank 0's k-th batch then rank 1's.
    X, y = mp_fit.data()
    dataset = fm.ArrayDataset(X, y)
    orders = []
    for epoch in range(num_epochs):
        shards = []
        for rank in range(2):
            sampler = fm.DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=5)
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
        steps = len(shards[0]) // 4
        orders.append([i for k in range(steps) for shard in shards for i in shard[4 * k : 4 * k + 4]])
    loader = fm.DataLoader(dataset, batch_size=8, sampler=ReplaySampler(orders), drop_last=True)
    model, history = fm.fit(
        fm.NeuralNetwork(3, 2, key=jax.random.key(1)),
        optax.sgd(0.2, momentum=0.9),
        loader,
        num_epochs=num_epochs,
        log=None,
    )
    expected_accuracy = fm.compute_accuracy(model, fm.DataLoader(dataset, batch_size=40))
    for result in results:
        np.testing.assert_allclose(result["loss"], history["loss"], atol=1e-5)
        for key, value in fm.state_dict(model).items():
            np.testing.assert_allclose(np.array(result["params"][key]), value, atol=1e-5)
        # accuracy is reduced across processes: each rank reports the whole data set's
        assert result["val_accuracy"][-1] == pytest.approx(expected_accuracy)
