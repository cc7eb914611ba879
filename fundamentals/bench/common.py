"""What every part of the benchmark shares: its sizes, its data, how it times, and how it starts a worker."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .records import SECTIONS, Figure

__all__ = [
    "SECTIONS",
    "WORKER_TIMEOUT",
    "CONFIG",
    "BenchError",
    "gpu_peak_tflops",
    "progress",
    "toy_like_data",
    "wide_data",
    "training_problem",
    "EVAL_EVERY",
    "EVAL_ROWS",
    "EVAL_BATCH",
    "held_out_data",
    "epoch_order",
    "matmul_shapes",
    "time_blocks",
    "figure",
    "matmul_blocks",
    "run_worker",
]

# A worker that runs longer than this has hung: it is stopped, and the benchmark says which.
WORKER_TIMEOUT = 1800

# Sizes of every section, full and --quick (tiny sizes and few repeats, for tests and CI).
CONFIG: dict[str, dict[str, Any]] = {
    "full": {
        "repeats": 5,
        "tiny": {"rows": 2000, "batch_size": 2, "epochs": {"fused": 40, "per_step": 8}},
        "wide": {
            "inputs": 784,
            "hidden": [1024, 1024],
            "outputs": 10,
            "batch_size": 256,
            "rows": 4096,
            "epochs": {"fused": 5, "per_step": 5},
            "matmul_size": 2048,
            "matmul_block_seconds": 0.2,
        },
        "matmul": {"sizes": [128, 256, 512, 1024, 2048, 4096], "block_seconds": 0.05},
        "files": {"size_mb": 100, "repeats": 5},
        "compile": {"pairs": 3},
    },
    "quick": {
        "repeats": 3,
        "tiny": {"rows": 200, "batch_size": 2, "epochs": {"fused": 3, "per_step": 2}},
        "wide": {
            "inputs": 64,
            "hidden": [128, 128],
            "outputs": 10,
            "batch_size": 32,
            "rows": 128,
            "epochs": {"fused": 2, "per_step": 2},
            "matmul_size": 256,
            "matmul_block_seconds": 0.01,
        },
        "matmul": {"sizes": [64, 128], "block_seconds": 0.002},
        "files": {"size_mb": 4, "repeats": 2},
        "compile": {"pairs": 1},
    },
}

# float32 peak without tensor cores (dense, boost clock), by a substring of the device name;
# the first match wins, so more specific names come first.
GPU_FP32_PEAK_TFLOPS = (
    ("GH200", 67.0),
    ("H200", 67.0),
    ("H100 PCIe", 51.2),
    ("H100 NVL", 60.0),
    ("H100", 67.0),
    ("A100", 19.5),
    ("L40S", 91.6),
    ("L40", 90.5),
    ("L4", 30.3),
    ("A10G", 31.2),
    ("A10", 31.2),
    ("T4", 8.1),
    ("V100", 15.7),
    ("RTX 4090", 82.6),
    ("RTX 3090", 35.6),
)


class BenchError(Exception):
    """A benchmark could not run: printed as one line, no traceback."""


def gpu_peak_tflops(device_kind: str | None) -> float | None:
    """The float32 peak of a GPU model (a JAX `device_kind` or torch device name), or None if unknown."""
    if not device_kind:
        return None
    for name, peak in GPU_FP32_PEAK_TFLOPS:
        if name.lower() in device_kind.lower():
            return peak
    return None


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --- data, the same bytes in every framework's process -------------------------------------------


def toy_like_data(num_rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian blobs in 2-D where the book's toy classes sit, `float32` features, `int64` labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=num_rows)
    centers = np.array([[-1.0, 2.7], [2.5, -1.1]])
    X = centers[y] + 0.3 * rng.standard_normal((num_rows, 2))
    return X.astype(np.float32), y.astype(np.int64)


def wide_data(num_rows: int, num_features: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal `float32` features and uniform `int64` labels, seed 0."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((num_rows, num_features), dtype=np.float32)
    return X, rng.integers(0, num_classes, size=num_rows, dtype=np.int64)


def training_problem(cfg: dict[str, Any], kind: str) -> tuple[np.ndarray, np.ndarray, int, int, tuple[int, ...], float]:
    """`(X, y, inputs, outputs, hidden, lr)` of a training benchmark, the same for both frameworks.

    `tiny` is the book's network (2→30→20→2, SGD lr 0.5) on toy-like data; `wide` the
    configured wide network (SGD lr 0.1) on random data.
    """
    if kind == "tiny":
        X, y = toy_like_data(cfg["rows"])
        return X, y, 2, 2, (30, 20), 0.5
    X, y = wide_data(cfg["rows"], cfg["inputs"], cfg["outputs"])
    return X, y, cfg["inputs"], cfg["outputs"], tuple(cfg["hidden"]), 0.1


# The book's chapter-5 pattern on the tiny problem: the validation loss every EVAL_EVERY steps,
# over a held-out set of EVAL_ROWS rows in batches of EVAL_BATCH.
EVAL_EVERY, EVAL_ROWS, EVAL_BATCH = 100, 500, 50


def held_out_data(cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The tiny problem's validation set: the same distribution, another seed."""
    return toy_like_data(min(EVAL_ROWS, max(EVAL_BATCH, cfg["rows"] // 4)), seed=1)


def epoch_order(num_rows: int, batch_size: int, seed: int = 123) -> list[np.ndarray]:
    """One shuffled epoch's batches of row indices, the last partial batch dropped."""
    order = np.random.default_rng(seed).permutation(num_rows)
    return [order[i : i + batch_size] for i in range(0, num_rows - batch_size + 1, batch_size)]


def matmul_shapes(sizes: list[int]) -> list[list[list[int]]]:
    """Exercise A.4's `(100×200) @ (200×300)`, then square products of each size."""
    return [[[100, 200], [200, 300]]] + [[[n, n], [n, n]] for n in sizes]


# --- timing --------------------------------------------------------------------------------------


def time_blocks(run_block: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of `repeats` calls of `run_block` (which must wait for its work), after a warm-up."""
    run_block()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_block()
        samples.append(time.perf_counter() - start)
    return samples


def figure(label: str, samples: list[float], per: int = 1, fixed_seconds: float | None = None) -> Figure:
    """A timing: its median and every sample, in seconds per step (`per` steps a sample).

    `fixed_seconds`, for a `fit` call: what it took beyond its epochs at the timed pace.
    """
    per_step = [s / per for s in samples]
    result: Figure = {"label": label, "seconds_per_step": statistics.median(per_step), "samples": per_step}
    if fixed_seconds is not None:
        result["fixed_seconds"] = fixed_seconds
    return result


def matmul_blocks(
    matmul: Callable[[], Any], wait: Callable[[Any], object], block_seconds: float, repeats: int
) -> float:
    """Median seconds of one `matmul()`, timed in blocks of calls lasting about `block_seconds`."""
    wait(matmul())
    start = time.perf_counter()
    wait(matmul())
    once = time.perf_counter() - start
    calls = max(1, min(10_000, int(block_seconds / max(once, 1e-7))))

    def block() -> None:
        out = None
        for _ in range(calls):
            out = matmul()
        wait(out)

    return statistics.median(time_blocks(block, repeats)) / calls


# --- the worker processes (their entry point is __main__.py) ---------------------------------------


def run_worker(name: str, config: dict[str, Any]) -> Any:
    """Run one worker (`python -m fundamentals.bench --worker NAME JSON`) in a fresh interpreter
    and return the JSON it prints: the record its function returns (see `records`)."""
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "fundamentals.bench", "--worker", name, json.dumps(config)],
            capture_output=True,
            text=True,
            env=env,
            timeout=WORKER_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"the {name} benchmark process ran past {WORKER_TIMEOUT} s and was stopped") from None
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        detail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"the {name} benchmark process failed (exit {completed.returncode}): {detail}")
    return json.loads(lines[-1])
