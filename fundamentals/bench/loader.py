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

```
fundamentals bench loader            # prints a Markdown table
```
"""

from __future__ import annotations

import statistics

import numpy as np

from .. import ArrayDataset, DataLoader
from .common import run_worker, time_blocks, wide_data

__all__ = ["bench_loader"]


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
    floor itself), `torch_version` and `torch_threads`.
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
    return result
