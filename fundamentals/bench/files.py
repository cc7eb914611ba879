"""The .pth benchmark: reading a `.pth` file with `fm.torch_load` against PyTorch's `torch.load(weights_only=True)`.

```
python -m fundamentals.bench.files            # a 100 MB state dict, median of 5 reads each
```

Both readers load the same file, alternating, in this process; each figure is the median of
`repeats` timed reads after one untimed read of each (so the file is in the page cache for
both). Needs torch, imported here only.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from typing import Any

__all__ = ["bench_torch_load", "format_table"]


def bench_torch_load(size_mb: float = 100, repeats: int = 5) -> dict:
    """Time `torch.load(path, weights_only=True)` and `fm.torch_load(path)` on a state dict of about `size_mb` MB.

    The state dict is float32 matrices of 1024 x 1024 (4 MiB each), like a model's layers,
    written by `torch.save`.

    **Returns:** a dict with `size_mb` (the file's size), `tensors`, `repeats`, and per reader
    (`"torch"`, `"fundamentals"`) the median and all timings in seconds, and `ratio`
    (fundamentals' median over torch's).
    """
    import torch

    from ..torchfile import torch_load

    if repeats < 1 or size_mb <= 0:
        raise ValueError(f"bench_torch_load: repeats must be >= 1 and size_mb > 0, got {repeats}, {size_mb}")
    count = max(1, round(size_mb * 2**20 / (4 * 2**20)))
    generator = torch.Generator().manual_seed(0)
    state = {f"layers.{i}.weight": torch.randn(1024, 1024, generator=generator) for i in range(count)}
    readers = {
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
    result: dict[str, Any] = {"size_mb": file_mb, "tensors": count, "repeats": repeats}
    for name, values in times.items():
        result[name] = {"median_s": statistics.median(values), "times_s": values}
    result["ratio"] = result["fundamentals"]["median_s"] / result["torch"]["median_s"]
    return result


def format_table(result: dict) -> str:
    """`bench_torch_load`'s result as a Markdown table."""
    lines = [
        f"Reading a {result['size_mb']:.0f} MB state dict ({result['tensors']} float32 tensors), "
        f"median of {result['repeats']}:",
        "",
        "| reader | median (ms) | MB/s |",
        "|---|---:|---:|",
    ]
    for name, label in (("torch", "torch.load(path, weights_only=True)"), ("fundamentals", "fm.torch_load(path)")):
        median = result[name]["median_s"]
        lines.append(f"| `{label}` | {median * 1e3:.1f} | {result['size_mb'] / median:.0f} |")
    lines += ["", f"fm.torch_load / torch.load: {result['ratio']:.2f}x"]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    size = float(sys.argv[1]) if len(sys.argv) > 1 else 100
    print(format_table(bench_torch_load(size)))
