"""The benchmark's worker entry point: `python -m fundamentals.bench --worker NAME JSON`.

This is the one protocol between the benchmark and the processes it starts (`common.run_worker`
is the other end): the parent passes a worker's name and its configuration as JSON, the worker
prints its result, one of the records of `records`, as one line of JSON on stdout, last. Every
framework runs this way, in its own interpreter, so thread pools and allocators never share a
process. To run the benchmark itself: `fundamentals bench`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from . import jax_side, peers, torch_side
from .files import bench_torch_load
from .loader import bench_loader, python_work_torch
from .records import FilesResult

WORKERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "jax-tiny": lambda cfg: jax_side.training(cfg, "tiny"),
    "jax-tiny-sync": lambda cfg: jax_side.training(cfg, "tiny", sync_dispatch=True),
    "jax-wide": lambda cfg: jax_side.training(cfg, "wide"),
    "jax-matmul": jax_side.matmuls,
    "jax-compile": jax_side.compile_first_step,
    "torch-tiny": lambda cfg: torch_side.training(cfg, "tiny"),
    "torch-wide": lambda cfg: torch_side.training(cfg, "wide"),
    "torch-matmul": torch_side.matmuls,
    "equinox-tiny": lambda cfg: peers.equinox_training(cfg, "tiny"),
    "equinox-wide": lambda cfg: peers.equinox_training(cfg, "wide"),
    "flax-tiny": lambda cfg: peers.flax_training(cfg, "tiny"),
    "flax-wide": lambda cfg: peers.flax_training(cfg, "wide"),
    "keras-tiny": lambda cfg: peers.keras_training(cfg, "tiny"),
    "keras-wide": lambda cfg: peers.keras_training(cfg, "wide"),
    "torch-loader": torch_side.loader_epoch,
    "torch-python-work": python_work_torch,
    "loader": lambda cfg: bench_loader(quick=cfg["quick"]),
    "files": lambda cfg: _files(cfg),
}


def _files(cfg: dict[str, Any]) -> FilesResult:
    """Reading a `.pth`: `fm.torch_load` against `torch.load(weights_only=True)`, or why it cannot run."""
    try:
        import torch  # noqa: F401 - only to know whether the comparison can run
    except ImportError:
        return {"missing": "torch"}
    return bench_torch_load(cfg["size_mb"], cfg["repeats"])


def worker_main(argv: list[str]) -> int:
    """Run the worker `argv[1]` on the JSON config `argv[2]` (`argv[0]` is `--worker`) and print its JSON result."""
    if len(argv) != 3 or argv[0] != "--worker" or argv[1] not in WORKERS:
        print(
            f"python -m fundamentals.bench: error: takes --worker, one of {', '.join(WORKERS)}, and a JSON config "
            "(it is how `fundamentals bench` starts its own processes; run the benchmark with `fundamentals bench`)",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(WORKERS[argv[1]](json.loads(argv[2]))))
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
