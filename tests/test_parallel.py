"""A.9: devices, the data-parallel mesh, and multi-process launch.

Anything that needs more than one device runs in a child process: the number of simulated CPU
devices must be set before JAX starts, and this pytest process has already started it with one.
"""

import json
import os
import signal
import subprocess
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import fundamentals as fm

from .workers import parallel_workers as workers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HANG_GUARD = 180  # seconds; only so a broken build cannot hang the suite, never an assertion


def run_devices_script(case: str, num_devices: int) -> dict:
    completed = subprocess.run(
        [sys.executable, os.path.join(HERE, "workers", "parallel_devices.py"), case, str(num_devices)],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def least_squares_gradient(X, y, w):
    """d/dw mean((Xw - y)^2) = 2/n X^T (Xw - y), in float64 NumPy."""
    X, y, w = (np.asarray(a, np.float64) for a in (X, y, w))
    return 2.0 / len(y) * X.T @ (X @ w - y)


# --- one device ------------------------------------------------------------------------------


def test_default_device_is_the_cpu_here():
    if jax.default_backend() != "cpu":
        pytest.skip("an accelerator is present")
    device = fm.default_device()
    assert device.platform == "cpu"
    assert device == jax.devices("cpu")[0]


def test_to_device_moves_arrays_and_models_and_leaves_the_rest():
    device = fm.default_device()
    model = fm.NeuralNetwork(2, 2, key=jax.random.key(0))
    moved = fm.to_device(model, device)
    for leaf in jax.tree_util.tree_leaves(eqx.filter(moved, eqx.is_array)):
        assert leaf.devices() == {device}
        assert leaf.committed
    # a new model with the same numbers; the old one is unchanged
    for old, new in zip(jax.tree_util.tree_leaves(model), jax.tree_util.tree_leaves(moved)):
        np.testing.assert_array_equal(np.asarray(old), np.asarray(new))

    tree = {"X": np.ones((2, 3), np.float32), "lr": 0.5, "name": "toy", "act": jax.nn.relu}
    moved_tree = fm.to_device(tree, "cpu")
    assert isinstance(moved_tree["X"], jax.Array) and moved_tree["X"].devices() == {jax.devices("cpu")[0]}
    assert moved_tree["lr"] == 0.5 and type(moved_tree["lr"]) is float
    assert moved_tree["name"] == "toy" and moved_tree["act"] is jax.nn.relu


def test_to_device_bad_device():
    with pytest.raises(TypeError, match="device"):
        fm.to_device(jnp.ones(2), 0)
    with pytest.raises(ValueError, match="device 'npu'"):
        fm.to_device(jnp.ones(2), "npu")
    with pytest.raises(ValueError, match="device 'cpu:5'"):
        fm.to_device(jnp.ones(2), "cpu:5")
    if jax.default_backend() == "cpu":
        with pytest.raises(ValueError, match="device 'cuda'"):
            fm.to_device(jnp.ones(2), "cuda")


def test_arrays_on_different_devices():
    """Where PyTorch raises "Expected all tensors to be on the same device", JAX raises ValueError."""
    seen = run_devices_script("different_devices", 2)
    assert seen["committed"] == [True, True, False]
    for case in ("eager_add", "jit_add", "model_input_elsewhere"):
        assert seen[case]["type"] == "ValueError", seen[case]
        assert "incompatible devices" in seen[case]["message"]
        assert "device ids [0]" in seen[case]["message"] and "device ids [1]" in seen[case]["message"]
    # uncommitted arrays follow committed ones; nothing else moves silently
    assert seen["uncommitted_follows"] == [1]
    assert seen["numpy_input_follows_model"] == [1]
    assert seen["moved_then_added"] == [1]
    assert seen["string_device"] == [1]
    assert seen["missing_string_device"]["type"] == "ValueError"
    assert "cpu:7" in seen["missing_string_device"]["message"]


# --- many devices ------------------------------------------------------------------------------


def test_shardings_and_single_device_mesh():
    mesh = fm.data_mesh()
    assert dict(mesh.shape) == {"data": len(jax.devices())}
    assert fm.batch_sharding(mesh).spec == P("data")
    assert fm.replicated_sharding(mesh).spec == P()
    assert fm.batch_sharding(mesh).mesh is mesh


@pytest.mark.parametrize("num_devices", [0, -1, len(jax.devices()) + 1])
def test_data_mesh_rejects_bad_counts(num_devices):
    with pytest.raises(ValueError, match="num_devices"):
        fm.data_mesh(num_devices)


def test_data_mesh_rejects_non_int():
    with pytest.raises(TypeError, match="num_devices"):
        fm.data_mesh(2.0)


def test_check_batch_size_lists_working_sizes():
    assert fm.check_batch_size(12, 4) == 3
    with pytest.raises(ValueError) as info:
        fm.check_batch_size(10, 4)
    message = str(info.value)
    assert "global_batch_size=10" in message
    assert "4, 8, 12, 16" in message and "8 and 12" in message
    with pytest.raises(ValueError, match="global_batch_size=0"):
        fm.check_batch_size(0, 4)
    with pytest.raises(TypeError, match="global_batch_size"):
        fm.check_batch_size(8.0, 4)


def test_mesh_over_eight_devices():
    seen = run_devices_script("mesh", 8)
    assert seen["num_devices"] == 8
    assert seen["shape"] == {"data": 8} and seen["axis_names"] == ["data"]
    assert seen["axis_types"] == ["AxisType.Auto"]
    assert sorted(seen["device_ids"]) == list(range(8))
    assert seen["three_device_ids"] == [0, 1, 2]
    for case in ("too_many", "zero"):
        assert seen[case]["type"] == "ValueError" and "num_devices" in seen[case]["message"]
    # 16 rows of arange(32).reshape(16, 2): device k holds rows 2k and 2k + 1
    assert seen["batch_spec"] == str(P("data"))
    rows = np.arange(32, dtype=np.float32).reshape(16, 2)
    assert seen["shards"] == [[k, rows[2 * k : 2 * k + 2].tolist()] for k in range(8)]
    assert seen["total"] == 31 * 32 / 2
    assert seen["rows_per_device"] == 2
    assert seen["bad_batch"]["type"] == "ValueError" and "8, 16, 24, 32" in seen["bad_batch"]["message"]
    assert seen["bad_shard_batch"]["type"] == "ValueError" and "shard_batch" in seen["bad_shard_batch"]["message"]
    # the data-parallel gradient is the full-batch gradient, replicated on every device
    expected_grad = least_squares_gradient(seen["X"], seen["y"], seen["w"])
    np.testing.assert_allclose(seen["grad"], expected_grad, rtol=1e-5, atol=1e-6)
    assert seen["grad_replicated"]
    assert seen["w_shard_devices"] == list(range(8))


# --- many processes ------------------------------------------------------------------------------


def test_importing_fundamentals_does_not_start_jax():
    """launch() configures JAX in each child after importing fundamentals: the import must not start it."""
    code = "import fundamentals, jax._src.xla_bridge as xb; print(xb.backends_are_initialized())"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "False"


@pytest.mark.slow
def test_launch_two_processes_two_devices_each(capsys):
    big = np.ones(1_000_000, np.float32)  # 4 MB of arguments: far more than a pipe buffer holds
    results = fm.launch(workers.global_sum_and_gradient, 2, 10.0, big, devices_per_process=2, timeout=HANG_GUARD)
    num_rows = 2 * workers.ROWS_PER_PROCESS
    # row i is filled with i: the sum over all rows and features is features * (0 + ... + 7)
    expected_total = 10.0 * workers.NUM_FEATURES * num_rows * (num_rows - 1) / 2
    X, y, w = workers.regression_data(num_rows)
    expected_grad = least_squares_gradient(X, y, w)
    assert [r["rank"] for r in results] == [0, 1]
    for rank, result in enumerate(results):
        assert result["big_sum"] == 1_000_000
        assert result["process_index"] == rank
        assert result["process_count"] == 2
        assert result["num_devices"] == 4 and result["num_local_devices"] == 2
        assert result["mesh_shape"] == {"data": 4}
        assert result["batch_shape"] == (num_rows, workers.NUM_FEATURES)
        assert result["total"] == expected_total
        np.testing.assert_allclose(result["grad"], expected_grad, rtol=1e-5, atol=1e-6)
        # the same model on both ranks replicates to all 4 devices; different ones are refused
        expected_weight = float(fm.NeuralNetwork(2, 2, key=jax.random.key(7)).layers[0].weight[0, 0])
        assert result["replicated_weight_00"] == expected_weight
        assert result["replicated_devices"] == 4
        assert "same values" in result["differing_models"]
    out = capsys.readouterr().out
    assert "[rank0] hello from process 0" in out
    assert "[rank1] hello from process 1" in out


@pytest.mark.slow
def test_launch_reports_the_rank_that_raised():
    with pytest.raises(RuntimeError) as info:
        fm.launch(workers.rank1_raises, 2, timeout=HANG_GUARD)
    message = str(info.value)
    assert "rank 1 raised" in message
    assert "ValueError: boom from rank 1" in message


@pytest.mark.slow
def test_launch_reports_a_rank_that_exited():
    with pytest.raises(RuntimeError, match=r"rank 1 exited with code 3"):
        fm.launch(workers.rank1_exits, 2, timeout=HANG_GUARD)


@pytest.mark.slow
def test_launch_reports_a_rank_that_was_killed():
    with pytest.raises(RuntimeError, match=r"rank 1 was killed by SIGKILL \(stopped rank\(s\) \[0\]\)"):
        fm.launch(workers.rank1_killed, 2, timeout=HANG_GUARD)


@pytest.mark.slow
def test_launch_timeout_stops_the_processes():
    with pytest.raises(RuntimeError, match=r"timed out after 3 s; rank\(s\) \[0\]"):
        fm.launch(workers.sleep_forever, 1, timeout=3)


@pytest.mark.slow
def test_launch_unpicklable_result_names_the_rank():
    with pytest.raises(RuntimeError, match=r"rank 0 raised(.|\n)*cannot be pickled"):
        fm.launch(workers.unpicklable_result, 1, timeout=HANG_GUARD)


@pytest.mark.parametrize("value", [0, -2, 1.5, True, "2"])
def test_launch_rejects_bad_num_processes(value):
    with pytest.raises(ValueError, match="num_processes"):
        fm.launch(workers.sleep_forever, value)


@pytest.mark.parametrize("value", [0, -1, 2.0])
def test_launch_rejects_bad_devices_per_process(value):
    with pytest.raises(ValueError, match="devices_per_process"):
        fm.launch(workers.sleep_forever, 2, devices_per_process=value)


def test_launch_rejects_bad_fn_and_timeout():
    with pytest.raises(TypeError, match="fn must be callable"):
        fm.launch("main", 2)
    with pytest.raises(TypeError, match="fn must be picklable"):
        fm.launch(lambda rank: rank, 2)
    with pytest.raises(TypeError, match="args must be picklable"):
        fm.launch(workers.sleep_forever, 2, lambda: None)
    with pytest.raises(ValueError, match="timeout"):
        fm.launch(workers.sleep_forever, 2, timeout=0)
    with pytest.raises(ValueError, match="port"):
        fm.launch(workers.sleep_forever, 2, port=70000)


def _is_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_launched_processes_exit_when_the_parent_dies(tmp_path):
    code = (
        f"import sys; sys.path.insert(0, {ROOT!r}); import fundamentals as fm; from tests.workers import parallel_workers as w; "
        f"fm.launch(w.write_pid_and_sleep, 2, {str(tmp_path)!r})"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid_files = [tmp_path / f"rank{rank}.pid" for rank in range(2)]
    guard = time.monotonic() + HANG_GUARD
    pids = []
    try:
        while not all(path.exists() for path in pid_files) and time.monotonic() < guard and parent.poll() is None:
            time.sleep(0.1)
        assert all(path.exists() for path in pid_files), "the launched processes did not start"
        pids = [int(path.read_text()) for path in pid_files]
        parent.kill()
        parent.wait()
        while any(_is_alive(pid) for pid in pids) and time.monotonic() < guard:
            time.sleep(0.1)
        assert not any(_is_alive(pid) for pid in pids)
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in pids:
            if _is_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("bad", [0, [], "01", [0, -1]])
def test_init_distributed_names_bad_local_device_ids(bad):
    with pytest.raises(TypeError, match="local_device_ids must be a sequence of device numbers"):
        fm.init_distributed(local_device_ids=bad)


@pytest.mark.parametrize("bad", ["x", [("A", "1")], {"A": 1}])
def test_launch_names_a_bad_env(bad):
    with pytest.raises(TypeError, match="env must map str to str"):
        fm.launch(workers.sleep_forever, 1, env=bad)
