"""The .pth benchmark: reading a `.pth` file with `fm.torch_load` against PyTorch's `torch.load(weights_only=True)`.

```
fundamentals bench files            # a 100 MB state dict, median of 5 reads each
```

Both readers load the same file, alternating, in this process; each figure is the median of
`repeats` timed reads after one untimed read of each (so the file is in the page cache for
both). Needs torch, imported here only.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from .._checks import check_int, check_number
from .records import FilesResult

__all__ = ["bench_torch_load"]


def bench_torch_load(size_mb: float = 100, repeats: int = 5) -> FilesResult:
    """Time `torch.load(path, weights_only=True)` and `fm.torch_load(path)` on a state dict of about `size_mb` MB.

    The state dict is float32 matrices of 1024 x 1024 (4 MiB each), like a model's layers,
    written by `torch.save`.

    **Returns:** a `FilesResult`: `size_mb` (the file's size), `tensors`, `repeats`, and per
    reader (`"torch"`, `"fundamentals"`) the median and all timings in seconds, and `ratio`
    (fundamentals' median over torch's).
    """
    import torch

    from ..torchfile import torch_load

    size_mb = check_number("bench_torch_load: size_mb", size_mb, above=0)
    repeats = check_int("bench_torch_load: repeats", repeats, 1)
    count = max(1, round(size_mb * 2**20 / (4 * 2**20)))
    generator = torch.Generator().manual_seed(0)
    state = {f"layers.{i}.weight": torch.randn(1024, 1024, generator=generator) for i in range(count)}
    readers: dict[str, Callable[[str], Any]] = {
        "torch": lambda path: torch.load(path, weights_only=True),
        "fundamentals": torch_load,
    }
    with tempfile.TemporaryDirectory(prefix="fundamentals-bench-files-") as folder:
        path = os.path.join(folder, "state.pth")
        torch.save(state, path)
        del state
        file_mb = os.path.getsize(path) / 2**20
        times: dict[str, list[float]] = {name: [] for name in readers}
        for read in readers.values():
            read(path)  # warm the page cache and both readers
        for _ in range(repeats):
            for name, read in readers.items():
                start = time.perf_counter()
                loaded = read(path)
                times[name].append(time.perf_counter() - start)
                del loaded
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "size_mb": file_mb,
        "tensors": count,
        "repeats": repeats,
        "torch": {"median_s": medians["torch"], "times_s": times["torch"]},
        "fundamentals": {"median_s": medians["fundamentals"], "times_s": times["fundamentals"]},
        "ratio": medians["fundamentals"] / medians["torch"],
    }
