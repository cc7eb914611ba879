"""How fast `DataLoader` serves shuffled in-memory batches, against PyTorch's `DataLoader`.

One epoch of a 60,000 × 784 `float32` dataset (MNIST-sized) with `batch_size=256` and
`shuffle=True`, three ways, each timed as the median epoch over `repeats` epochs after one
warm-up epoch:

- `fundamentals.DataLoader(ArrayDataset(X, y), ...)`: one fancy-indexing gather per array
  per batch;
- the floor: the same gathers written out by hand (`np.take` on a permutation), with no
  loader around them, so the gap between the two is the loader's own overhead (on this
  2-core machine the gather is memory-bound: neither chunking the gathers nor splitting
  them across threads made it faster);
- `torch.utils.data.DataLoader(TensorDataset(X, y), num_workers=0)`, which indexes item by
  item and stacks. It runs in a separate Python process (same data, same sizes), so its
  intra-op thread pool and allocator never share a process with the NumPy measurements.

```
python -m fundamentals.bench_loader            # prints a Markdown table
```
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

import numpy as np

from .data import ArrayDataset, DataLoader

__all__ = ["bench_loader", "format_table"]


def _make_data(num_samples: int, num_features: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((num_samples, num_features), dtype=np.float32)
    y = rng.integers(0, 10, size=num_samples, dtype=np.int64)
    return X, y


def _median_epoch_seconds(run_epoch, repeats: int) -> float:
    run_epoch()  # warm-up: page in the data, fill allocator caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_epoch()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _ours(X, y, batch_size: int, repeats: int, num_workers: int) -> float:
    loader = DataLoader(ArrayDataset(X, y), batch_size=batch_size, shuffle=True, seed=0, num_workers=num_workers)

    def run_epoch():
        for _batch in loader:
            pass

    return _median_epoch_seconds(run_epoch, repeats)


def _floor(X, y, batch_size: int, repeats: int) -> float:
    rng = np.random.default_rng(0)

    def run_epoch():
        order = rng.permutation(len(X))
        for start in range(0, len(X), batch_size):
            indices = order[start : start + batch_size]
            # Held until the next batch, as a loop body holds its batch: freeing each batch
            # at once lets the allocator hand the same pages back, a few ms an epoch faster
            # than any real training loop sees.
            batch = (np.take(X, indices, axis=0), np.take(y, indices, axis=0))  # noqa: F841

    return _median_epoch_seconds(run_epoch, repeats)


# Run by a fresh interpreter: rebuilds the same arrays, times torch's loader, prints JSON.
_TORCH_SCRIPT = """
import json, sys, torch
from torch.utils.data import DataLoader, TensorDataset
from fundamentals.bench_loader import _make_data, _median_epoch_seconds
num_samples, num_features, batch_size, repeats = map(int, sys.argv[1:5])
X, y = _make_data(num_samples, num_features)
torch.manual_seed(0)
loader = DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(y)), batch_size=batch_size,
                    shuffle=True, num_workers=0)
def run_epoch():
    for _batch in loader:
        pass
print(json.dumps({"seconds": _median_epoch_seconds(run_epoch, repeats), "torch": torch.__version__,
                  "threads": torch.get_num_threads()}))
"""


def _torch(num_samples: int, num_features: int, batch_size: int, repeats: int) -> dict | None:
    """Torch's median epoch in a subprocess, or None if torch cannot be imported there."""
    completed = subprocess.run(
        [sys.executable, "-c", _TORCH_SCRIPT, str(num_samples), str(num_features), str(batch_size), str(repeats)],
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        if "No module named 'torch'" in completed.stderr:
            return None
        raise RuntimeError(f"bench_loader: the PyTorch run failed:\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


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
      `int64`).
    - `batch_size`: examples per batch.
    - `repeats`: timed epochs per loader; the median is reported (after one warm-up epoch).
    - `quick`: a tiny run (2,000 × 32, batch 64, 2 repeats) for tests.
    - `compare_torch`: also time PyTorch (in a subprocess). Its figures are None when torch
      is not installed.

    **Returns:**

    A dict with the configuration and, for `ours`, `ours_2_workers` (with `num_workers=2`),
    `floor` and `torch`: `<name>_epoch_ms` and `<name>_batches_per_s`; `speedup_vs_torch`
    (torch's epoch time over ours), `ours_over_floor` (ours over the floor, 1.0 is the
    floor itself) and `torch_version`.
    """
    if quick:
        num_samples, num_features, batch_size, repeats = 2000, 32, 64, 2
    for name, value in (
        ("num_samples", num_samples),
        ("num_features", num_features),
        ("batch_size", batch_size),
        ("repeats", repeats),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"bench_loader: {name} must be a positive int, got {value!r}")
    X, y = _make_data(num_samples, num_features)
    num_batches = -(-num_samples // batch_size)
    seconds = {
        "ours": _ours(X, y, batch_size, repeats, num_workers=0),
        "ours_2_workers": _ours(X, y, batch_size, repeats, num_workers=2),
        "floor": _floor(X, y, batch_size, repeats),
    }
    del X, y  # free the host copy before the torch process builds its own
    torch_result = _torch(num_samples, num_features, batch_size, repeats) if compare_torch else None
    seconds["torch"] = torch_result["seconds"] if torch_result else None

    result: dict = {
        "num_samples": num_samples,
        "num_features": num_features,
        "batch_size": batch_size,
        "repeats": repeats,
        "num_batches": num_batches,
    }
    for name, value in seconds.items():
        result[f"{name}_epoch_ms"] = None if value is None else value * 1e3
        result[f"{name}_batches_per_s"] = None if value is None else num_batches / value
    result["speedup_vs_torch"] = None if seconds["torch"] is None else seconds["torch"] / seconds["ours"]
    result["ours_over_floor"] = seconds["ours"] / seconds["floor"]
    result["torch_version"] = torch_result["torch"] if torch_result else None
    result["torch_threads"] = torch_result["threads"] if torch_result else None
    return result


def format_table(result: dict) -> str:
    """The figures of `bench_loader` as a Markdown table."""
    rows = [
        ("fundamentals.DataLoader", "ours"),
        ("fundamentals.DataLoader, num_workers=2", "ours_2_workers"),
        ("floor: bare np.take gathers", "floor"),
        (f"torch.utils.data.DataLoader ({result.get('torch_version') or 'not installed'})", "torch"),
    ]
    lines = [
        f"One shuffled epoch of {result['num_samples']:,} × {result['num_features']} float32, "
        f"batch {result['batch_size']} ({result['num_batches']} batches), median of {result['repeats']} epochs:",
        "",
        "| loader | epoch (ms) | batches/s |",
        "|---|---:|---:|",
    ]
    for label, key in rows:
        ms, rate = result[f"{key}_epoch_ms"], result[f"{key}_batches_per_s"]
        lines.append(f"| {label} | {'n/a' if ms is None else f'{ms:.1f}'} | {'n/a' if rate is None else f'{rate:,.0f}'} |")
    lines.append("")
    if result["speedup_vs_torch"] is not None:
        lines.append(f"Speed-up over PyTorch: {result['speedup_vs_torch']:.1f}×. ")
    lines.append(f"Ours / floor: {result['ours_over_floor']:.2f}.")
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_table(bench_loader(quick="--quick" in sys.argv)))
