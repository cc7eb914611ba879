"""The loader benchmark: how fast `DataLoader` serves shuffled in-memory batches, against PyTorch's.

One epoch of a 60,000 × 784 `float32` dataset (MNIST-sized) with `batch_size=256` and
`shuffle=True`, three ways, each timed as the median epoch over `repeats` epochs after one
warm-up epoch:

- `fundamentals.DataLoader(ArrayDataset(X, y), ...)`: one fancy-indexing gather per array
  per batch (and again with `num_workers=2`);
- the floor: the same gathers written out by hand (`np.take` on a permutation), with no
  loader around them, so the gap between the two is the loader's own overhead (on a 2-core
  machine the gather is memory-bound: neither chunking the gathers nor splitting them
  across threads made it faster);
- `torch.utils.data.DataLoader(TensorDataset(X, y), num_workers=0)`, which indexes item by
  item and stacks. It runs in its own worker process (`torch_side.loader_epoch`, same data,
  same sizes), so its intra-op thread pool and allocator never share a process with the
  NumPy measurements.

And a dataset that does Python work: `PythonWorkDataset`, whose `__getitem__` spends about
0.3 ms in pure Python (as parsing a record or tokenising a line does), 512 items, batch 32,
shuffled, through `fundamentals.DataLoader` and PyTorch's loader with 0 and 2 workers (worker
processes for both; PyTorch's in its own interpreter, `python -m fundamentals.bench.loader
--torch-python-work`). Each epoch starts its workers, as both loaders do by default.

```
fundamentals bench loader            # prints a Markdown table
```
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from typing import Any

import numpy as np

from .._checks import check_int
from ..data import ArrayDataset, DataLoader
from .common import WORKER_TIMEOUT, run_worker, time_blocks, wide_data

__all__ = ["bench_loader", "PythonWorkDataset", "python_work_table"]

# Iterations of the pure-Python loop in PythonWorkDataset.__getitem__: about 0.3 ms here.
PYTHON_WORK_ITERATIONS = 3000


class PythonWorkDataset:
    """A map-style dataset whose `__getitem__` does pure-Python work, as parsing a record does.

    Item `i` is `(features, label)`: 16 `float32` features and an `int64` label, computed by a
    loop of `iterations` integer steps that holds the GIL throughout.
    """

    def __init__(self, num_items: int, iterations: int = PYTHON_WORK_ITERATIONS):
        self.num_items = num_items
        self.iterations = iterations

    def __len__(self) -> int:
        return self.num_items

    def __getitem__(self, index: int):
        total = int(index)
        for step in range(self.iterations):
            total = (total * 31 + step) % 1000003
        return np.full(16, total % 997, dtype=np.float32), np.int64(total % 10)


def _epoch_seconds(loader, repeats: int) -> float:
    def run_epoch():
        for _batch in loader:
            pass

    return statistics.median(time_blocks(run_epoch, repeats))


def _python_work_ours(num_items: int, batch_size: int, repeats: int) -> dict[str, float]:
    dataset = PythonWorkDataset(num_items)
    return {
        f"ours_{workers}": _epoch_seconds(
            DataLoader(dataset, batch_size=batch_size, shuffle=True, seed=0, num_workers=workers), repeats
        )
        for workers in (0, 2)
    }


def _python_work_torch(config: dict) -> dict:
    """PyTorch's side of the Python-work rows, run in this module's own interpreter (`__main__`)."""
    try:
        import torch
        from torch.utils.data import DataLoader as TorchDataLoader
    except ImportError:
        return {"missing": "torch"}
    torch.manual_seed(0)
    dataset = PythonWorkDataset(config["num_items"])
    result: dict = {"torch": torch.__version__}
    for workers in (0, 2):
        loader: Any = TorchDataLoader(dataset, batch_size=config["batch_size"], shuffle=True, num_workers=workers)  # type: ignore[arg-type]
        result[f"torch_{workers}"] = _epoch_seconds(loader, config["repeats"])
    return result


def _run_torch_python_work(config: dict) -> dict | None:
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    completed = subprocess.run(
        [sys.executable, "-m", "fundamentals.bench.loader", "--torch-python-work", json.dumps(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=WORKER_TIMEOUT,
    )
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        return None
    result = json.loads(lines[-1])
    return None if "missing" in result else result


def bench_python_work(
    num_items: int = 512, batch_size: int = 32, repeats: int = 5, *, compare_torch: bool = True
) -> dict:
    """Epochs of `PythonWorkDataset` through `fundamentals.DataLoader` and PyTorch's, 0 and 2 workers.

    **Returns:**

    A dict with `num_items`, `batch_size`, `repeats`, `<name>_epoch_ms` for `ours_0`, `ours_2`,
    `torch_0`, `torch_2` (None without torch), `speedup_2_workers` (PyTorch's epoch with 2
    workers over ours with 2: above 1.0, ours is faster) and `workers_speedup` (ours with 0
    workers over ours with 2).
    """
    seconds: dict = _python_work_ours(num_items, batch_size, repeats)
    torch_result = None
    if compare_torch:
        torch_result = _run_torch_python_work({"num_items": num_items, "batch_size": batch_size, "repeats": repeats})
    for workers in (0, 2):
        seconds[f"torch_{workers}"] = torch_result[f"torch_{workers}"] if torch_result else None
    result: dict = {"num_items": num_items, "batch_size": batch_size, "repeats": repeats}
    for name, value in seconds.items():
        result[f"{name}_epoch_ms"] = None if value is None else value * 1e3
    result["speedup_2_workers"] = None if seconds["torch_2"] is None else seconds["torch_2"] / seconds["ours_2"]
    result["workers_speedup"] = seconds["ours_0"] / seconds["ours_2"]
    result["torch_version"] = torch_result["torch"] if torch_result else None
    return result


def python_work_table(result: dict) -> list[str]:
    """The Python-work rows of `bench_loader`'s result (`result["python_work"]`) as Markdown."""
    work = result.get("python_work")
    if not work:
        return []

    def ms(key: str) -> str:
        return "n/a" if work[key] is None else f"{work[key]:.1f}"

    lines = [
        f"A dataset doing about 0.3 ms of Python work per item, {work['num_items']} items, batch "
        f"{work['batch_size']}, shuffled, median of {work['repeats']} epochs (each starting its workers):",
        "",
        "| loader | num_workers=0 (ms) | num_workers=2 (ms) |",
        "|---|---:|---:|",
        f"| fundamentals.DataLoader (worker processes) | {ms('ours_0_epoch_ms')} | {ms('ours_2_epoch_ms')} |",
        f"| torch.utils.data.DataLoader ({work.get('torch_version') or 'not installed'}) | "
        f"{ms('torch_0_epoch_ms')} | {ms('torch_2_epoch_ms')} |",
        "",
    ]
    if work["speedup_2_workers"] is not None:
        lines.append(f"With 2 workers, fundamentals takes {1 / work['speedup_2_workers']:.2f}× PyTorch's time.")
        lines.append("")
    return lines


def _ours(X, y, batch_size: int, repeats: int, num_workers: int) -> float:
    loader = DataLoader(ArrayDataset(X, y), batch_size=batch_size, shuffle=True, seed=0, num_workers=num_workers)

    def run_epoch():
        for _batch in loader:
            pass

    return statistics.median(time_blocks(run_epoch, repeats))


def _floor(X, y, batch_size: int, repeats: int) -> float:
    rng = np.random.default_rng(0)

    def run_epoch():
        order = rng.permutation(len(X))
        for start in range(0, len(X), batch_size):
            indices = order[start : start + batch_size]
            # Held until the next batch, as a loop body holds its batch: freeing each batch
            # at once lets the allocator hand the same pages back, a few ms an epoch faster
            # than any real training loop sees.
            batch = (np.take(X, indices, axis=0), np.take(y, indices, axis=0))  # noqa: F841 - held on purpose

    return statistics.median(time_blocks(run_epoch, repeats))


def bench_loader(
    num_samples: int = 60000,
    num_features: int = 784,
    batch_size: int = 256,
    repeats: int = 5,
    quick: bool = False,
    *,
    compare_torch: bool = True,
) -> dict:
    """Time one shuffled epoch of `fundamentals.DataLoader` against PyTorch's.

    Replaces timing `for X, y in torch.utils.data.DataLoader(TensorDataset(X, y),
    batch_size=256, shuffle=True): pass`.

    **Arguments:**

    - `num_samples`, `num_features`: the size of the random `float32` dataset (labels are
      `int64`, 10 classes).
    - `batch_size`: examples per batch.
    - `repeats`: timed epochs per loader; the median is reported (after one warm-up epoch).
    - `quick`: a tiny run (2,000 × 32, batch 64, 2 repeats) for tests.
    - `compare_torch`: also time PyTorch (in a worker process). Its figures are None when
      torch is not installed.

    **Returns:**

    A dict with the configuration and, for `ours`, `ours_2_workers` (with `num_workers=2`),
    `floor` and `torch`: `<name>_epoch_ms` and `<name>_batches_per_s`; `speedup_vs_torch`
    (torch's epoch time over ours), `ours_over_floor` (ours over the floor, 1.0 is the
    floor itself), `torch_version` and `torch_threads`; and `python_work`, the result of
    `bench_python_work` (512 items, or 64 with `quick`).
    """
    if quick:
        num_samples, num_features, batch_size, repeats = 2000, 32, 64, 2
    num_samples = check_int("bench_loader: num_samples", num_samples, 1)
    num_features = check_int("bench_loader: num_features", num_features, 1)
    batch_size = check_int("bench_loader: batch_size", batch_size, 1)
    repeats = check_int("bench_loader: repeats", repeats, 1)
    X, y = wide_data(num_samples, num_features, 10)
    num_batches = -(-num_samples // batch_size)
    ours = _ours(X, y, batch_size, repeats, num_workers=0)
    ours_2_workers = _ours(X, y, batch_size, repeats, num_workers=2)
    floor = _floor(X, y, batch_size, repeats)
    del X, y  # free the host copy before the torch process builds its own
    torch_result = None
    if compare_torch:
        sizes = {"num_samples": num_samples, "num_features": num_features, "batch_size": batch_size, "repeats": repeats}
        torch_result = run_worker("torch-loader", sizes)
        if "missing" in torch_result:
            torch_result = None
    torch_seconds = torch_result["seconds"] if torch_result else None
    seconds = {"ours": ours, "ours_2_workers": ours_2_workers, "floor": floor, "torch": torch_seconds}

    result: dict = {
        "num_samples": num_samples,
        "num_features": num_features,
        "batch_size": batch_size,
        "repeats": repeats,
        "num_batches": num_batches,
    }
    for name, epoch_seconds in seconds.items():
        result[f"{name}_epoch_ms"] = None if epoch_seconds is None else epoch_seconds * 1e3
        result[f"{name}_batches_per_s"] = None if epoch_seconds is None else num_batches / epoch_seconds
    result["speedup_vs_torch"] = None if torch_seconds is None else torch_seconds / ours
    result["ours_over_floor"] = ours / floor
    result["torch_version"] = torch_result["torch"] if torch_result else None
    result["torch_threads"] = torch_result["threads"] if torch_result else None
    result["python_work"] = bench_python_work(
        *((64, 16, 1) if quick else (512, 32, repeats)), compare_torch=compare_torch
    )
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--torch-python-work"]:
        print(json.dumps(_python_work_torch(json.loads(sys.argv[2]))))
