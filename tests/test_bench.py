"""`fundamentals bench`: runs in quick mode, writes JSON and a PNG, rejects bad arguments in one line.

Timings are never asserted (the machine is shared); only that every figure is there and positive.
"""

import copy
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fundamentals import cli
from fundamentals.bench import common
from fundamentals.bench.report import format_report

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_FLAX = importlib.util.find_spec("flax") is not None
HAS_KERAS = importlib.util.find_spec("keras") is not None


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    json_path, png_path = folder / "bench.json", folder / "bench.png"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "fundamentals.cli",
            "bench",
            "all",
            "--quick",
            "--json",
            str(json_path),
            "--plot",
            str(png_path),
        ],
        capture_output=True,
        text=True,
    )
    return completed, json_path, png_path


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


def test_all_quick_runs_and_reports_every_section(quick_run):
    completed, json_path, png_path = quick_run
    assert completed.returncode == 0, completed.stderr[-2000:]
    for heading in (
        "## tiny",
        "## wide",
        "## matmul",
        "## loader",
        "## files",
        "## compile",
        "| variant | µs / step |",
    ):
        assert heading in completed.stdout
    assert "bench: tiny" in completed.stderr  # progress goes to stderr

    results = json.loads(json_path.read_text())
    machine = results["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["versions"]["jax"]
    assert machine["jax_devices"][0]["platform"]

    for section in ("tiny", "wide"):
        figures = results[section]["figures"]
        ours = ["fit_per_step", "fit_fused", "jit_step"]
        if section == "tiny":  # (the synchronous-dispatch rows exist on a CPU, as here)
            ours += ["jit_floor", "scan_epoch", "fit_per_step_sync", "jit_step_sync", "fit_book_class"]
        theirs = ["eager_step", "eager_loop"] if HAS_TORCH else []
        # the JAX ecosystem's loops, each in its own process
        theirs += ["filter_jit"] + ["nnx_jit"] * HAS_FLAX + ["keras_fit", "keras_fit_steps"] * HAS_KERAS
        if section == "tiny" and HAS_TORCH:
            theirs.append("eager_loop_book_class")
        for name in ours + theirs:
            assert _positive(figures[name]["seconds_per_step"]), (section, name)
            assert all(_positive(s) for s in figures[name]["samples"]), (section, name)
        assert _positive(figures["fit_fused"]["fixed_seconds"])
        for name in ["nnx_jit"] * (not HAS_FLAX) + ["keras_fit", "keras_fit_steps"] * (not HAS_KERAS):
            assert "is not installed (pip install" in figures[name]["skipped"], (section, name)
        if section == "wide":  # JAX's matmul rate is the peers' reference too
            assert _positive(figures["filter_jit"]["percent_of_matmul_rate"])
    wide = results["wide"]
    assert wide["parameters"] == 64 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
    assert wide["flops_per_step"] == 6 * wide["parameters"] * 32
    assert _positive(wide["figures"]["fit_per_step"]["gflops"])
    assert _positive(wide["figures"]["fit_per_step"]["percent_of_matmul_rate"])
    assert _positive(wide["jax"]["matmul"]["gflops"])

    rows = results["matmul"]["jax"]["platforms"]["cpu"]["rows"]
    assert rows[0]["shape"] == [[100, 200], [200, 300]]  # exercise A.4
    assert all(_positive(row["seconds"]) and _positive(row["gflops"]) for row in rows)

    assert _positive(results["loader"]["ours"]["epoch_ms"]) and _positive(results["loader"]["floor"]["epoch_ms"])

    compiled = results["compile"]
    for which in ("cold", "warm"):
        assert _positive(compiled[which]["first_step_seconds"]) and _positive(compiled[which]["compile_seconds"])
    assert compiled["warm"]["cache_hits"] >= 1 and compiled["cold"]["cache_hits"] == 0

    if HAS_TORCH:
        assert machine["torch_available"] is True
        assert _positive(results["tiny"]["figures"]["fit_fused"]["speedup_vs_torch_eager"])
        assert _positive(results["tiny"]["figures"]["fit_book_class"]["speedup_vs_torch_book_loop"])
        files = results["files"]
        assert _positive(files["torch"]["median_s"]) and _positive(files["fundamentals"]["median_s"])
        assert files["ratio"] == pytest.approx(files["fundamentals"]["median_s"] / files["torch"]["median_s"])
        assert "the book's PyTorch loop over the same class" in completed.stdout
        assert _positive(results["loader"]["torch"]["epoch_ms"])
    cell = results["tiny"]["jax"]["rerun_cell"]
    assert _positive(cell["seconds"]) and _positive(cell["first_seconds"]) and len(cell["samples"]) >= 1
    assert "3-epoch training cell" in completed.stdout and "issue" not in completed.stdout.lower()
    # measurements and ratios only: the project's goals are the README's, not the report's
    assert "goal" not in completed.stdout.lower() and "target" not in completed.stdout.lower()
    assert "targets" not in results

    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_covers_a_gpu_run(quick_run):
    """The GPU paths of the report (no GPU here): device names, the crossover, the share of peak."""
    _, json_path, _ = quick_run
    results = json.loads(json_path.read_text())
    gpu_kind = "NVIDIA H100 80GB HBM3"
    results["machine"]["jax_devices"] = [{"platform": "gpu", "device_kind": gpu_kind, "id": 0}]
    results["wide"]["jax"]["info"]["devices"] = results["machine"]["jax_devices"]
    matmul = results["matmul"]
    cpu = matmul["jax"]["platforms"]["cpu"]
    gpu = copy.deepcopy(cpu)
    gpu["device"] = gpu_kind
    for row in gpu["rows"][1:]:  # the GPU loses on A.4's small product, wins on the squares
        row["seconds"] /= 10
        row["gflops"] *= 10
    matmul["jax"]["platforms"]["gpu"] = gpu
    matmul["has_gpu"] = True
    matmul["gpu_wins_from"]["jax"] = gpu["rows"][1]["shape"]
    report = format_report(results)
    assert f"JAX GPU ({gpu_kind})" in report
    size = gpu["rows"][1]["shape"][0][0]
    assert f"JAX: the GPU beats the CPU from {size}×{size} on" in report
    assert "of its 67 TFLOP/s float32 peak" in report
    assert common.gpu_peak_tflops("NVIDIA H100 PCIe") == 51.2
    assert common.gpu_peak_tflops(None) is None and common.gpu_peak_tflops("cpu") is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "bogus"], "invalid choice: 'bogus'"),
        (["bench", "tiny", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["bench", "tiny", "--plot", "out.jpg"], "--plot must name a .png file"),
        (["bench", "tiny", "--json", "/no/such/folder/out.json"], "--json folder does not exist"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(argv, message, capsys):
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
    assert captured.out == ""


def test_without_torch_reports_jax_figures_only(tmp_path):
    # A `torch` that cannot be imported, ahead of the real one on the workers' path.
    fake = tmp_path / "no_torch" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n")
    env = dict(os.environ, PYTHONPATH=str(fake.parent))
    completed = subprocess.run(
        [sys.executable, "-m", "fundamentals.cli", "bench", "matmul", "--quick", "--json", str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "PyTorch not installed (JAX figures only)" in completed.stdout
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["matmul"]["torch"] is None and results["machine"]["torch_available"] is False
    assert all(_positive(row["seconds"]) for row in results["matmul"]["jax"]["platforms"]["cpu"]["rows"])


def test_bench_takes_a_leading_option_through_the_fundamentals_command(capsys):
    from fundamentals.cli import main as cli_main

    assert cli_main(["bench", "--help"]) == 0
    assert "--quick" in capsys.readouterr().out


def _reference_losses(num_rows: int, lr: float, num_steps: int) -> list[float]:
    """The tiny benchmark's first steps in plain JAX: `fit`'s starting weights, the benchmark's batches, SGD by hand."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import fundamentals as fm

    X, y = common.toy_like_data(num_rows)
    model = fm.NeuralNetwork(2, 2, key=jax.random.key(123))
    params = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))]
    losses = []
    for indices in common.epoch_order(num_rows, 2)[:num_steps]:

        def loss(params, features=X[indices], labels=y[indices]):
            w0, b0, w1, b1, w2, b2 = params
            h = jax.nn.relu(features @ w0.T + b0)
            h = jax.nn.relu(h @ w1.T + b1)
            logits = h @ w2.T + b2
            return jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[jnp.arange(len(labels)), labels])

        value, grads = jax.value_and_grad(loss)(params)
        losses.append(float(value))
        params = [p - lr * g for p, g in zip(params, grads)]
    return losses


def test_the_jax_peers_train_the_same_problem(quick_run):
    """Equinox's and Flax's loops start from fit's weights and train on the same batches: the same losses."""
    _, json_path, _ = quick_run
    results = json.loads(json_path.read_text())
    peers = ["equinox"] + ["flax"] * HAS_FLAX
    rows = results["tiny"]["config"]["rows"]
    want = _reference_losses(rows, 0.5, len(results["tiny"]["equinox"]["first_losses"]))
    assert len(want) == 5 and want[-1] < want[0]
    for peer in peers:
        np.testing.assert_allclose(results["tiny"][peer]["first_losses"], want, rtol=1e-5, atol=1e-6, err_msg=peer)
    if HAS_KERAS:  # model.fit shuffles in its own order: its losses only have to fall
        keras = results["tiny"]["keras"]
        assert all(0 <= loss < want[0] for loss in keras["final_losses"].values())


@pytest.mark.parametrize("package, worker", [("flax", "flax-tiny"), ("keras", "keras-wide")])
def test_a_missing_peer_is_a_skipped_row_naming_its_install_command(package, worker, tmp_path, quick_run):
    fake = tmp_path / "missing" / package
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(f"raise ModuleNotFoundError(\"No module named '{package}'\", name='{package}')\n")
    env = dict(os.environ, PYTHONPATH=str(fake.parent))
    config = {**common.CONFIG["quick"][worker.split("-")[1]], "repeats": 1}
    completed = subprocess.run(
        [sys.executable, "-m", "fundamentals.bench", "--worker", worker, json.dumps(config)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["missing"] == package
    command = {"flax": "pip install 'flax>=0.11'", "keras": "pip install 'keras>=3.6'"}[package]
    assert all(figure["skipped"] == f"{package} is not installed ({command})" for figure in result["figures"].values())

    # the report shows the row, with the command, in place of its figure
    _, json_path, _ = quick_run
    results = json.loads(json_path.read_text())
    section = worker.split("-")[1]
    results[section]["figures"].update({name: {**f, "framework": package} for name, f in result["figures"].items()})
    report = format_report(results)
    for figure in result["figures"].values():
        assert f"| {figure['label']} | skipped: {package} is not installed ({command}) |" in report
