"""Callbacks: code of yours that `fit` runs at its evaluation points, with early stopping and best checkpoints built in.

PyTorch has no callbacks: a ported training script checks its validation loss inside its own
loop, and Lightning and Keras name the two things every such script does `EarlyStopping` and
`ModelCheckpoint(monitor=...)`. Here `fit(..., callbacks=[...])` calls each callback between
compiled chunks (never inside one): after every evaluation (every `eval_every` steps and at the
end of each epoch), at each epoch's end, and when training ends.

```python
# Lightning                                               # fundamentals
EarlyStopping(monitor="val_loss", patience=3)             fm.EarlyStopping(monitor="val_loss", patience=3)
ModelCheckpoint(monitor="val_loss", dirpath=...)          fm.BestCheckpoint("best.safetensors", monitor="val_loss")
```

A callback sees the run through a `Run`: the history so far, the epoch and step, the model as
it is now, and `stop(reason)`. Its `state_dict()` goes into `fit`'s checkpoint, so a resumed run
makes the same decisions as one that was never interrupted.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

__all__ = ["Callback", "Run", "EarlyStopping", "BestCheckpoint"]


class Run:
    """What a callback sees of a running `fit`: read the history and the model; ask it to stop.

    **Attributes:**

    - `history`: the dict `fit` returns, as it is now (`"loss"`, `"eval_step"`, `"val_loss"`, ...).
    - `epoch`: the current epoch, from 0.
    - `step`: steps trained so far.
    - `recorded`: the names of the values each evaluation records (for `monitor` checks).
    """

    def __init__(self, history: dict, recorded: set[str], get_model: Callable[[], Any]):
        self.history = history
        self.recorded = recorded
        self.epoch = 0
        self.step = 0
        self.stop_reason: str | None = None
        self.final_model: Any = None  # set by a callback to replace the model fit returns
        self._get_model = get_model

    @property
    def model(self):
        """The model as trained so far (for a stateful model, `(model, state)`), built when asked."""
        return self._get_model()

    def stop(self, reason: str) -> None:
        """End the run after this round of callbacks; `reason` goes to the log and to `history["stopped"]`."""
        if self.stop_reason is None:
            self.stop_reason = reason


class Callback:
    """The base class of `fit`'s callbacks: override the methods you need; each receives the `Run`."""

    def on_train_begin(self, run: Run) -> None:
        """Before the first step: check settings against `run.recorded` here, so a mistake fails early."""

    def on_evaluation(self, run: Run) -> None:
        """After each evaluation; the newest values are the last entries of `run.history`."""

    def on_epoch_end(self, run: Run) -> None:
        """After each epoch (after its evaluation, if there is one)."""

    def on_train_end(self, run: Run) -> None:
        """When the run ends, stopped or not; may set `run.final_model`."""

    def state_dict(self) -> dict:
        """What the callback must remember across a resume: JSON values and NumPy arrays."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""


def _direction(monitor: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    return "max" if any(word in monitor for word in ("accuracy", "acc", "auc", "f1", "precision", "recall")) else "min"


class _Monitor(Callback):
    """A callback that follows one recorded value and knows when it improved."""

    def __init__(self, monitor: str, mode: str, min_delta: float):
        if not isinstance(monitor, str):
            raise TypeError(f"{type(self).__name__}: monitor must be a name such as 'val_loss', got {monitor!r}")
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or min_delta < 0:
            raise ValueError(f"{type(self).__name__}: min_delta must be a number >= 0, got {min_delta!r}")
        self.monitor = monitor
        self.mode = _direction(monitor, mode)
        self.min_delta = float(min_delta)
        self.best: float | None = None
        self.best_step: int | None = None

    def on_train_begin(self, run: Run) -> None:
        if self.monitor not in run.recorded:
            known = ", ".join(sorted(run.recorded)) or "nothing (pass val_loader= to evaluate)"
            raise ValueError(
                f"{type(self).__name__}: monitor={self.monitor!r} is never recorded by this run; it records {known}"
            )

    def improved(self, run: Run) -> bool:
        value = float(run.history[self.monitor][-1])
        if not math.isfinite(value):
            return False
        better = (
            self.best is None
            or (self.mode == "min" and value < self.best - self.min_delta)
            or (self.mode == "max" and value > self.best + self.min_delta)
        )
        if better:
            self.best, self.best_step = value, run.step
        return better

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_step = state.get("best"), state.get("best_step")


class EarlyStopping(_Monitor):
    """Stop when a monitored value has not improved for `patience` evaluations.

    ```python
    # Lightning: EarlyStopping(monitor="val_loss", patience=3, min_delta=0.0)
    model, history = fm.fit(model, optimizer, train_loader, num_epochs=100, val_loader=val_loader,
                            eval_every=50, callbacks=[fm.EarlyStopping("val_loss", patience=3)])
    history["stopped"]   # {"step": ..., "epoch": ..., "reason": "EarlyStopping: val_loss ..."}
    ```

    **Arguments:**

    - `monitor`: a value each evaluation records: `"val_loss"`, `"val_accuracy"`,
      `"train_eval_loss"`, or `"val_" + name` of a metric.
    - `patience`: evaluations without improvement before the run stops.
    - `min_delta`: how much better than the best so far a value must be to count.
    - `mode`: `"min"`, `"max"`, or `"auto"` (max for accuracies, min otherwise).
    - `restore_best`: `fit` then returns the model of the best evaluation, not the last one
      (Keras's `restore_best_weights`).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 3,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best: bool = True,
    ):
        super().__init__(monitor, mode, min_delta)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"EarlyStopping: patience must be an int >= 1, got {patience!r}")
        self.patience = patience
        self.restore_best = bool(restore_best)
        self.wait = 0
        self.best_model: list[np.ndarray] | None = None  # the best model's arrays, in tree order, on the host

    def on_evaluation(self, run: Run) -> None:
        if self.improved(run):
            self.wait = 0
            if self.restore_best:
                self.best_model = [np.array(leaf) for leaf in jax.tree_util.tree_leaves(run.model) if _is_array(leaf)]
            return
        self.wait += 1
        if self.wait >= self.patience:
            run.stop(
                f"EarlyStopping: {self.monitor} did not improve on {self.best:.6g} (step {self.best_step}) "
                f"for {self.wait} evaluations"
            )

    def on_train_end(self, run: Run) -> None:
        if self.restore_best and self.best_model is not None:
            leaves, treedef = jax.tree_util.tree_flatten(run.model)
            best = iter(self.best_model)
            leaves = [jax.numpy.asarray(next(best)) if _is_array(leaf) else leaf for leaf in leaves]
            run.final_model = jax.tree_util.tree_unflatten(treedef, leaves)

    def state_dict(self) -> dict:
        state: dict[str, Any] = {**super().state_dict(), "wait": self.wait}
        if self.best_model is not None:
            state["best_model"] = list(self.best_model)
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.wait = int(state.get("wait", 0))
        self.best_model = list(state["best_model"]) if "best_model" in state else None


def _is_array(leaf) -> bool:
    return isinstance(leaf, (np.ndarray, jax.Array))


class BestCheckpoint(_Monitor):
    """Save the model to `path` whenever a monitored value improves (Lightning's `ModelCheckpoint(monitor=...)`).

    The file is written atomically by `fm.save_model` (safetensors, or PyTorch's format for a
    `.pth` name), so it always holds the best model so far, whatever happens to the run.

    **Arguments:**

    - `path`: the model file.
    - `monitor`, `mode`, `min_delta`: as for `EarlyStopping`.
    """

    def __init__(self, path: str | os.PathLike, monitor: str = "val_loss", mode: str = "auto", min_delta: float = 0.0):
        super().__init__(monitor, mode, min_delta)
        self.path = os.fspath(path)

    def on_evaluation(self, run: Run) -> None:
        if self.improved(run):
            from ..checkpoint import save_model

            model = run.model
            save_model(model[0] if isinstance(model, tuple) else model, self.path)
