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
processes for both; PyTorch's in its own interpreter, the `torch-python-work` worker). Each
epoch starts its workers, as both loaders do by default.

```
fundamentals bench loader            # prints a Markdown table
```
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from .._checks import check_int
from ..data import ArrayDataset, DataLoader
from .common import run_worker, time_blocks, wide_data
from .records import EpochTiming, LoaderResult, PythonWorkResult, TorchLoaderEpoch, TorchPythonWork

__all__ = ["bench_loader", "bench_python_work", "PythonWorkDataset", "python_work_torch"]

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

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.int64]:
        total = int(index)
        for step in range(self.iterations):
            total = (total * 31 + step) % 1000003
        return np.full(16, total % 997, dtype=np.float32), np.int64(total % 10)


def _epoch_seconds(loader: Any, repeats: int) -> float:
    """The median seconds of one pass over `loader`, after a warm-up pass."""

    def run_epoch() -> None:
        for _batch in loader:
            pass

    return statistics.median(time_blocks(run_epoch, repeats))


def python_work_torch(config: dict[str, Any]) -> TorchPythonWork:
    """PyTorch's side of the Python-work rows, run in its own worker process (`torch-python-work`)."""
    try:
        import torch
        from torch.utils.data import DataLoader as TorchDataLoader
    except ImportError:
        return {"missing": "torch"}
    torch.manual_seed(0)
    dataset = PythonWorkDataset(config["num_items"])
    epochs = [
        _epoch_seconds(
            TorchDataLoader(dataset, batch_size=config["batch_size"], shuffle=True, num_workers=workers),  # type: ignore[arg-type]
            config["repeats"],
        )
        for workers in (0, 2)
    ]
    return {"torch": torch.__version__, "torch_0": epochs[0], "torch_2": epochs[1]}


def bench_python_work(
    num_items: int = 512, batch_size: int = 32, repeats: int = 5, *, compare_torch: bool = True
) -> PythonWorkResult:
    """Epochs of `PythonWorkDataset` through `fundamentals.DataLoader` and PyTorch's, 0 and 2 workers.

    **Returns:**

    A `PythonWorkResult`: the sizes, `epoch_ms` for `ours_0`, `ours_2`, `torch_0`, `torch_2`
    (None without torch), `speedup_2_workers` (PyTorch's epoch with 2 workers over ours with
    2: above 1.0, ours is faster) and `workers_speedup` (ours with 0 workers over ours with 2).
    """
    dataset = PythonWorkDataset(num_items)
    seconds: dict[str, float | None] = {
        f"ours_{workers}": _epoch_seconds(
            DataLoader(dataset, batch_size=batch_size, shuffle=True, seed=0, num_workers=workers), repeats
        )
        for workers in (0, 2)
    }
    theirs: TorchPythonWork = {"missing": "torch"}
    if compare_torch:
        theirs = run_worker("torch-python-work", {"num_items": num_items, "batch_size": batch_size, "repeats": repeats})
    seconds["torch_0"], seconds["torch_2"] = theirs.get("torch_0"), theirs.get("torch_2")
    ours_0, ours_2, torch_2 = seconds["ours_0"], seconds["ours_2"], seconds["torch_2"]
    assert ours_0 is not None and ours_2 is not None  # timed above
    return {
        "num_items": num_items,
        "batch_size": batch_size,
        "repeats": repeats,
        "epoch_ms": {name: None if value is None else value * 1e3 for name, value in seconds.items()},
        "speedup_2_workers": None if torch_2 is None else torch_2 / ours_2,
        "workers_speedup": ours_0 / ours_2,
        "torch_version": theirs.get("torch"),
    }


def _ours(X: np.ndarray, y: np.ndarray, batch_size: int, repeats: int, num_workers: int) -> float:
    loader = DataLoader(ArrayDataset(X, y), batch_size=batch_size, shuffle=True, seed=0, num_workers=num_workers)
    return _epoch_seconds(loader, repeats)


def _floor(X: np.ndarray, y: np.ndarray, batch_size: int, repeats: int) -> float:
    rng = np.random.default_rng(0)

    def run_epoch() -> None:
        order = rng.permutation(len(X))
        for start in range(0, len(X), batch_size):
            indices = order[start : start + batch_size]
            # Held until the next batch, as a loop body holds its batch: freeing each batch
            # at once lets the allocator hand the same pages back, a few ms an epoch faster
            # than any real training loop sees.
            batch = (np.take(X, indices, axis=0), np.take(y, indices, axis=0))  # noqa: F841 - held on purpose

    return statistics.median(time_blocks(run_epoch, repeats))


def _timing(seconds: float, num_batches: int) -> EpochTiming:
    return {"epoch_ms": seconds * 1e3, "batches_per_s": num_batches / seconds}


def bench_loader(
    num_samples: int = 60000,
    num_features: int = 784,
    batch_size: int = 256,
    repeats: int = 5,
    quick: bool = False,
    *,
    compare_torch: bool = True,
) -> LoaderResult:
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

    A `LoaderResult`: the configuration; `ours`, `ours_2_workers` (with `num_workers=2`),
    `floor` and `torch` (None without torch), each an epoch's milliseconds and batches a
    second; `speedup_vs_torch` (torch's epoch time over ours), `ours_over_floor` (ours over
    the floor, 1.0 is the floor itself), `torch_version` and `torch_threads`; and
    `python_work`, the result of `bench_python_work` (512 items, or 64 with `quick`).
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
    theirs: TorchLoaderEpoch = {"missing": "torch"}
    if compare_torch:
        sizes = {"num_samples": num_samples, "num_features": num_features, "batch_size": batch_size, "repeats": repeats}
        theirs = run_worker("torch-loader", sizes)
    torch_seconds = theirs.get("seconds")
    return {
        "num_samples": num_samples,
        "num_features": num_features,
        "batch_size": batch_size,
        "repeats": repeats,
        "num_batches": num_batches,
        "ours": _timing(ours, num_batches),
        "ours_2_workers": _timing(ours_2_workers, num_batches),
        "floor": _timing(floor, num_batches),
        "torch": None if torch_seconds is None else _timing(torch_seconds, num_batches),
        "speedup_vs_torch": None if torch_seconds is None else torch_seconds / ours,
        "ours_over_floor": ours / floor,
        "torch_version": theirs.get("torch"),
        "torch_threads": theirs.get("threads"),
        "python_work": bench_python_work(*((64, 16, 1) if quick else (512, 32, repeats)), compare_torch=compare_torch),
    }
