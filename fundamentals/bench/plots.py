"""The benchmark's plot: per-step time by variant as horizontal bars on a log scale, to a PNG."""

from __future__ import annotations

import io

import numpy as np

from .._files import atomic_write_bytes
from .common import BenchError
from .records import Results, TrainingSection
from .report import format_number, order_figures

__all__ = ["plot"]


def _bars(section: TrainingSection, scale: float) -> list[tuple[str, float]]:
    """Each variant that has a figure, as `(label, time a step in the panel's unit)`."""
    figures = section["figures"]
    return [
        (figures[name]["label"], figures[name]["seconds_per_step"] * scale)
        for name in order_figures(figures)
        if "seconds_per_step" in figures[name]
    ]


def plot(results: Results, path: str) -> None:
    """Per-step time of every variant of `tiny` and `wide` (or else the JAX CPU matmuls) as bars, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, list[tuple[str, float]]]] = []
    if "tiny" in results:
        panels.append(("tiny: µs per step, shorter is faster (log scale)", _bars(results["tiny"], 1e6)))
    if "wide" in results:
        panels.append(("wide: ms per step, shorter is faster (log scale)", _bars(results["wide"], 1e3)))
    if not panels and "matmul" in results:
        rows = results["matmul"]["jax"]["platforms"]["cpu"]["rows"]
        panels.append(
            (
                "matmul, JAX CPU: ms (log scale)",
                [(f"{r['shape'][0][0]}×{r['shape'][0][1]}·{r['shape'][1][1]}", r["seconds"] * 1e3) for r in rows],
            )
        )
    if not panels:
        raise BenchError("--plot needs the tiny, wide or matmul benchmark")
    figure, axes = plt.subplots(
        len(panels), 1, figsize=(9, 1.2 + 0.45 * sum(len(b) for _, b in panels) + 0.6 * len(panels)), squeeze=False
    )
    for axis, (title, bars) in zip(axes[:, 0], panels):
        labels, values = zip(*bars)
        positions = np.arange(len(bars))
        axis.barh(
            positions,
            values,
            color=["#d95f02" if "PyTorch" in label or "torch" in label else "#1b9e77" for label in labels],
        )
        axis.set_yticks(positions, labels, fontsize=8)
        axis.invert_yaxis()
        axis.set_xscale("log")
        # Bars on a log axis start at its left edge: fix the edges so lengths compare fairly.
        axis.set_xlim(min(values) / 3, max(values) * 4)
        axis.set_title(title, fontsize=10)
        for position, value in zip(positions, values):
            axis.text(value, position, f" {format_number(value, 2)}", va="center", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()  # rendered in memory, then written atomically like every other output
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
