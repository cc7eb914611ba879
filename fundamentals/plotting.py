"""A picture of a training run: `plot_history` draws what `fit` recorded (the book's `plot_losses`).

The book's chapter 5 plots the training and validation losses against the epochs seen, with
the tokens seen on a second axis (`plot_losses`); its appendix D adds the learning rate. Here
one call draws a `fit` history: the loss of every step, the evaluation losses at their steps,
the learning rate when the run recorded it, and the epochs along a second axis.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

from ._files import atomic_write_bytes

__all__ = ["plot_history"]


def _epoch_axis(axis: Any, epoch_steps: list[int]) -> None:
    """A second x-axis above the steps, in epochs (interpolated between epoch ends)."""
    ends = np.asarray([0, *epoch_steps], dtype=float)
    epochs = np.arange(len(ends), dtype=float)
    if len(ends) < 2 or np.any(np.diff(ends) <= 0):
        return
    top = axis.secondary_xaxis(
        "top",
        functions=(lambda s: np.interp(s, ends, epochs), lambda e: np.interp(e, epochs, ends)),
    )
    top.set_xlabel("epoch")


def plot_history(
    history: dict[str, Any], path: str | os.PathLike | None = None, *, title: str | None = None, ax: Any = None
) -> Any:
    """Draw a `fit` history: training loss per step, evaluation losses, learning rate, epochs.

    ```python
    # the book (chapter 5)                                            # fundamentals
    plot_losses(epochs_tensor, tokens_seen, train_losses, val_losses)   fm.plot_history(history, "losses.png")
    ```

    **Arguments:**

    - `history`: what `fit` returned (at least `"loss"`).
    - `path`: if given, the figure is also written there as a PNG (atomically).
    - `title`: the axes' title.
    - `ax`: a matplotlib `Axes` to draw on; a new figure if None.

    **Returns:** the matplotlib `Figure`.

    **Raises:** `ImportError` naming the package if matplotlib is missing; `ValueError` if
    `history` has no per-step `"loss"`.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plot_history needs matplotlib: pip install matplotlib") from None
    losses = history.get("loss") if isinstance(history, dict) else None
    if not losses:
        raise ValueError("plot_history: history must hold the per-step 'loss' list that fit returns")
    if ax is None:
        figure, ax = plt.subplots(figsize=(7, 4))
    else:
        figure = ax.figure
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, lw=0.8, alpha=0.6, label="training loss (each step)")
    eval_steps = history.get("eval_step") or []
    for name, label, style in (
        ("train_eval_loss", "training loss (evaluated)", "s-"),
        ("val_loss", "validation loss", "o-"),
    ):
        values = history.get(name) or []
        if values and len(values) == len(eval_steps):
            ax.plot(eval_steps, values, style, ms=3, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if title:
        ax.set_title(title)
    rates = history.get("learning_rate") or []
    lines, labels = ax.get_legend_handles_labels()
    if rates and len(rates) == len(losses):
        rate_axis = ax.twinx()
        rate_axis.plot(steps, rates, color="tab:gray", lw=1, ls="--", label="learning rate")
        rate_axis.set_ylabel("learning rate")
        more_lines, more_labels = rate_axis.get_legend_handles_labels()
        lines, labels = lines + more_lines, labels + more_labels
    _epoch_axis(ax, list(history.get("epoch_step") or []))
    ax.legend(lines, labels, fontsize="small")
    figure.tight_layout()
    if path is not None:
        buffer = io.BytesIO()  # rendered in memory, then written like every other output: atomically
        figure.savefig(buffer, format="png", dpi=120)
        atomic_write_bytes(path, buffer.getvalue())
    return figure
