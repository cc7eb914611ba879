"""The benchmark's worker entry point: `python -m fundamentals.bench --worker NAME JSON`.

This is the one protocol between the benchmark and the processes it starts (`common.run_worker`
is the other end): the parent passes a worker's name and its configuration as JSON, the worker
prints its result as one line of JSON on stdout, last. Every framework runs this way, in its own
interpreter, so thread pools and allocators never share a process. Any other arguments are
`fundamentals bench`'s: `python -m fundamentals.bench loader --quick` is `fundamentals bench loader --quick`.
"""

from __future__ import annotations

import json
import sys

from ..cli import main
from . import jax_side, peers, torch_side
from .files import bench_torch_load
from .loader import bench_loader

WORKERS = {
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
    "loader": lambda cfg: bench_loader(quick=cfg["quick"]),
    "files": lambda cfg: _files(cfg),
}


def _files(cfg: dict) -> dict:
    """Reading a `.pth`: `fm.torch_load` against `torch.load(weights_only=True)`, or why it cannot run."""
    try:
        import torch  # noqa: F401 - only to know whether the comparison can run
    except ImportError:
        return {"missing": "torch"}
    return bench_torch_load(cfg["size_mb"], cfg["repeats"])


def worker_main(argv: list[str]) -> int:
    """Run the worker `argv[0]` on the JSON config `argv[1]` and print its JSON result."""
    if len(argv) != 2 or argv[0] not in WORKERS:
        print(
            f"fundamentals bench: error: --worker takes one of {', '.join(WORKERS)} and a JSON config "
            "(it is how the benchmark starts its own processes)",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(WORKERS[argv[0]](json.loads(argv[1]))))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        sys.exit(worker_main(sys.argv[2:]))
    sys.exit(main(["bench", *sys.argv[1:]]))
