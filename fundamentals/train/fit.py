"""The training loop (appendix A.7): `fit`, from epochs and batches to compiled chunks and back to log lines.

The book's loop, line by line, and where each line went:

```python
# PyTorch                                           # fundamentals.fit, inside one compiled step
for epoch in range(num_epochs):                     for epoch ...:  (host)
    model.train()                                   (no mode: dropout gets a key instead)
    for batch_idx, (features, labels) in enumerate(train_loader):
        logits = model(features)                        logits = model(X)
        loss = F.cross_entropy(logits, labels)          loss = cross_entropy(logits, y)
        optimizer.zero_grad()                           (nothing accumulates: no zero_grad)
        loss.backward()                                 grads = jax.grad(loss_fn)(params)
        optimizer.step()                                updates, opt_state = optimizer.update(grads, opt_state, params)
                                                        params = optax.apply_updates(params, updates)
```

How `fit` runs it, for every kind of loader:

- **One training state, one compiled step.** `TrainProgram` compiles the step (loss,
  gradient, optimizer update, apply) as a function of a `TrainState` (parameters, optimizer
  state, step count) and a batch, and the same step scanned over a chunk of batches.
- **Chunks.** Batches are stacked into chunks of equal-shape batches, bounded in bytes, and each
  chunk runs as one call (`chunks.py`). A loader whose `device_plan()` says its batches are
  row gathers (an `ArrayDataset`) has its arrays put on the device once; then only each
  chunk's indices travel.
- **The host runs ahead.** JAX dispatches asynchronously: while the device computes one chunk,
  the host already pulls the next from the loader, and only then waits for the finished
  chunk's losses to report them.
- **Bit for bit.** Every path computes the same step on the same batches, so losses and
  parameters equal those of one compiled call a step (`fused=False`, the reference path).
- **Compiled once per process.** Each program is traced anew and compiled only if the process
  compiled the same traced program before (`cache.py`).
"""

from __future__ import annotations

import collections
import math
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
import optax
from jax.experimental import multihost_utils
from tqdm import TqdmWarning

with (
    warnings.catch_warnings()
):  # in Jupyter without ipywidgets tqdm.auto warns (naming its path), then uses the text bar
    warnings.simplefilter("ignore", TqdmWarning)
    from tqdm.auto import tqdm

from .._checks import check_int
from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..losses import cross_entropy
from ..sharding import host_copy
from .chunks import chunk_source
from .evaluate import compute_accuracy
from .preemption import StopOnSigterm
from .program import TrainProgram, TrainState

__all__ = ["fit", "TrainingDivergedError", "format_step_log"]

# The per-step reference path lets this many steps queue before it waits for their losses.
_STEP_LAG = 32


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch and the step."""


def format_step_log(epoch: int, num_epochs: int, batch: int, num_batches: int | None, loss: float) -> str:
    """The book's log line: `Epoch: 001/003 | Batch 001/002 | Train Loss: 0.75` (1-based)."""
    return f"Epoch: {epoch:03d}/{num_epochs:03d} | Batch {batch:03d}/{num_batches:03d} | Train Loss: {loss:.2f}"


def _check_fit_arguments(num_epochs, optimizer, train_loader, checkpoint, resume, seed, device_data_bytes, fused):
    """Check what `fit` was given; return the number of batches an epoch."""
    check_int("fit: num_epochs", num_epochs, 0)
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"optimizer must be an optax.GradientTransformation (e.g. optax.sgd(0.5)), got {type(optimizer).__name__}"
        )
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=PATH to resume from")
    check_int("fit: seed", seed)
    if device_data_bytes is not None:
        check_int("fit: device_data_bytes", device_data_bytes, 0)
    if fused is not None and not isinstance(fused, (bool, np.bool_)):
        raise TypeError(f"fit: fused must be True or False, got {type(fused).__name__}")
    try:
        num_batches = len(train_loader)
    except TypeError:
        raise TypeError(f"train_loader must have a length (a DataLoader), got {type(train_loader).__name__}") from None
    if num_batches == 0:
        raise ValueError("train_loader yields no batches: the dataset is smaller than batch_size with drop_last=True")
    return num_batches


def _restore(checkpoint: str, program: TrainProgram, state: TrainState, seed: int, train_loader):
    """The training state and metadata from `checkpoint`, with the loader put back where it was."""
    model, opt_state = program.trees(state)
    model, opt_state, saved = load_checkpoint(checkpoint, params=model, opt_state=opt_state)
    if saved.get("seed", seed) != seed:
        raise ValueError(
            f"seed={seed} differs from the seed {saved['seed']} the checkpoint {checkpoint} was trained "
            "with; resume with the same seed to continue the same run"
        )
    done = saved.setdefault("batches_done", 0)
    if isinstance(done, bool) or not isinstance(done, int) or not 0 <= done <= len(saved["history"]["loss"]):
        raise CheckpointError(f"checkpoint {checkpoint}: field 'batches_done' must be a step count, got {done!r}")
    if "loader" in saved and hasattr(train_loader, "load_state_dict"):
        train_loader.load_state_dict(saved["loader"])
    return program.with_trees(state, model, opt_state, saved["global_step"]), saved


def _loader_state(loader) -> dict | None:
    return loader.state_dict() if hasattr(loader, "state_dict") else None


def _save(checkpoint, program: TrainProgram, state: TrainState, position: dict, history, seed, loader_state) -> None:
    """Write the checkpoint: `position` holds the epochs done, the global step and the batches done of the next epoch."""
    metadata = {**position, "history": history, "seed": seed}
    if loader_state is not None:
        metadata["loader"] = loader_state
    model, opt_state = program.trees(state)
    save_checkpoint(checkpoint, params=model, opt_state=opt_state, metadata=metadata)


class _Runner:
    """Dispatches chunks as the host makes them and hands back their losses a few chunks later.

    Waiting for a chunk's losses waits for the chunk. Waiting only after the next chunks have
    been pulled from the loader and dispatched keeps the host and the device busy together.
    """

    def __init__(self, program: TrainProgram, state: TrainState, step: int, lag: int, stop: StopOnSigterm):
        self.program, self.state, self.step, self.lag, self.stop = program, state, step, lag, stop
        self.stopped = False  # SIGTERM: the run stopped after the last chunk it dispatched

    def epoch(self, chunks: Iterator[Any]) -> Iterator[list[tuple[Any, int, np.ndarray]]]:
        """Run `chunks`; yield groups of `(chunk, first global step, losses)`, in order."""
        pending: collections.deque = collections.deque()
        for chunk in chunks:
            first = self.step
            self.state, losses = chunk.run(self.program, self.state)
            if self.program.placement.block_each_call:
                losses.block_until_ready()
            self.step += chunk.num_steps
            pending.append((chunk, first, losses))
            if self.stop.requested():
                self.stopped = True
                break
            if len(pending) > self.lag:  # all but the newest, which keeps the device busy meanwhile
                yield self._collect(pending, len(pending) - 1)
        if pending:
            yield self._collect(pending, len(pending))

    @staticmethod
    def _collect(pending: collections.deque, count: int) -> list[tuple[Any, int, np.ndarray]]:
        done = [pending.popleft() for _ in range(count)]
        return [(chunk, first, host_copy(losses).reshape(-1)) for chunk, first, losses in done]


def _diverged(value: float, epoch: int, batch: int, step: int, chunk, offset: int, checkpoint) -> TrainingDivergedError:
    """The error for a NaN or infinite loss, with what caused it when the batch shows it."""
    features, rows = chunk.features(offset)
    features = np.asarray(features)
    reason = "Try a smaller learning rate."
    if features.dtype.kind == "f" and not np.isfinite(features).all():
        bad = ~np.isfinite(features)
        where = np.argwhere(bad)[0]
        row, of = (int(where[0]), "this batch") if rows is None else (int(rows[where[0]]), "the dataset")
        column = f", column {int(where[1])}" if features.ndim > 1 else ""
        reason = (
            f"The training data is not finite: its features hold {features[tuple(where)]} at row {row}{column} "
            f"of {of} ({int(bad.sum())} such value(s) in the batch); remove or replace them."
        )
    kept = f"The last checkpoint {os.fspath(checkpoint)!r} is intact. " if checkpoint else ""
    return TrainingDivergedError(
        f"loss became {value} at epoch {epoch + 1}, step {batch} (global step {step + 1}); stopping. {kept}{reason}"
    )


class _Reporter:
    """The book's log lines, the progress bar, and the NaN check, for each chunk's losses."""

    def __init__(self, log, progress: bool, num_epochs: int, num_batches: int, start_epoch: int, checkpoint, skip=0):
        self.log, self.num_epochs, self.num_batches, self.checkpoint = log, num_epochs, num_batches, checkpoint
        self.bar = (
            tqdm(total=num_epochs * num_batches, initial=start_epoch * num_batches + skip, desc="train", unit="step")
            if progress
            else None
        )

    def losses(self, epoch: int, epoch_start: int, group: list[tuple[Any, int, np.ndarray]]) -> list[float]:
        values: list[float] = []
        for chunk, first, losses in group:
            chunk_values = losses.tolist()
            for offset, value in enumerate(chunk_values):
                step = first + offset
                batch = step - epoch_start + 1
                if not math.isfinite(value):
                    raise _diverged(value, epoch, batch, step, chunk, offset, self.checkpoint)
                if self.log is not None:
                    self.log(format_step_log(epoch + 1, self.num_epochs, batch, self.num_batches, value))
            values += chunk_values
        if self.bar is not None and values:
            self.bar.update(len(values))
            self.bar.set_postfix(loss=f"{values[-1]:.4f}")
        return values

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def fit(
    model,
    optimizer: optax.GradientTransformation,
    train_loader,
    *,
    num_epochs: int,
    val_loader=None,
    log: Callable[[str], Any] | None = print,
    progress: bool = False,
    checkpoint: str | None = None,
    resume: bool = False,
    mesh=None,
    seed: int = 0,
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array] = cross_entropy,
    fused: bool = True,
    device_data_bytes: int | None = None,
):
    """Train `model` with `optimizer` over `train_loader` for `num_epochs` epochs.

    Replaces the book's training loop (listing A.9): `model.train()`, the loop over epochs and
    batches, `F.cross_entropy`, `optimizer.zero_grad()`, `loss.backward()`, `optimizer.step()`
    and its log line `Epoch: 001/003 | Batch 001/002 | Train Loss: 0.75`.

    **Arguments:**

    - `model`: an Equinox model returning logits (for example `NeuralNetwork`).
    - `optimizer`: any Optax `GradientTransformation` (`optax.sgd(0.5)` as in the book,
      `optax.sgd(0.1, momentum=0.9)`, `optax.adam(1e-3)`). Its state covers the model's
      floating-point arrays only.
    - `train_loader`: a `DataLoader` over any dataset (the book's own `Dataset` class with a
      per-item `__getitem__`, an `ArrayDataset`, a `collate_fn`, worker threads), or any
      iterable of `(features, labels, ...)` batches with a `len`. If its sampler has
      `set_epoch`, it is called before every epoch, as PyTorch's `DistributedSampler` needs.
      Batches may change shape (a ragged last batch, variable lengths): each distinct shape
      is compiled once, in the first epoch, and none after.
    - `num_epochs`: how many epochs in total (also when resuming).
    - `val_loader`: if given, `compute_accuracy` on it after every epoch.
    - `log`: receives one line per step in the book's format, and per-epoch validation lines;
      None is silent. The lines of a chunk of steps arrive when the chunk finishes.
    - `progress`: show a tqdm bar over all steps, with the latest loss.
    - `checkpoint`: a path; after every epoch the model, optimizer state, epoch, step, loader
      RNG state and history are written there atomically (process 0 only).
    - `resume`: continue from `checkpoint` if it exists. The result is bit-identical to a run
      that was never interrupted.
    - `mesh`: a `jax.sharding.Mesh` with a `"data"` axis (see `fundamentals.data_mesh`): each
      batch is sharded along it, parameters and optimizer state are replicated, and XLA
      averages the gradients inside the compiled step (PyTorch's DistributedDataParallel).
    - `seed`: the seed of the per-step keys handed to models that take a `key` (dropout).
    - `loss_fn`: `loss_fn(logits, labels) -> scalar`, `cross_entropy` by default.
    - `fused`: True (the default): chunks of batches run as one compiled `lax.scan` each.
      False: one compiled call a step, the reference the fused path equals bit for bit.
    - `device_data_bytes`: the budget for keeping an `ArrayDataset`'s arrays on the device
      (default: a quarter of the device's memory where JAX reports it, else 1 GiB). Larger
      data sets, and every other dataset, stream from the host in chunks.

    **Returns:**

    `(model, history)`: the trained model (the one passed in is unchanged) and a dict with
    `"loss"` (every step's loss, in order), `"epoch_loss"` (mean per epoch),
    `"val_accuracy"` (per epoch, if `val_loader`), `"programs_run"` (how many distinct
    compiled programs the run called: one per batch shape and chunk length),
    `"programs_compiled"` (how many of those were compiled now, not found compiled by an
    earlier `fit` in this process) and `"data_on_device"` (whether the data set was put on the
    device once). `"compilations"` and `"compiled"` are the old names of the two counts.

    **Raises:** `TrainingDivergedError` (a `FloatingPointError`) naming the epoch and step if
    the loss becomes NaN or infinite (and the cause, if the batch's features are not finite),
    the last checkpoint staying as it was; `ValueError` for labels outside the model's
    classes or an empty batch, before training on them; `TypeError` for a batch that is not a
    `(features, labels, ...)` tuple, non-numeric features or labels, or a model that does not
    return one array of logits.
    """
    num_batches = _check_fit_arguments(
        num_epochs, optimizer, train_loader, checkpoint, resume, seed, device_data_bytes, fused
    )
    fused = True if fused is None else bool(fused)  # None: the old spelling of the default
    program = TrainProgram.create(model, optimizer, loss_fn=loss_fn, mesh=mesh)
    state = program.init(model, seed=seed)
    history: dict[str, Any] = {"loss": [], "epoch_loss": []}
    start_epoch = skip = 0
    if resume and checkpoint is not None and os.path.exists(checkpoint):  # resume without one was refused above
        state, saved = _restore(checkpoint, program, state, seed, train_loader)
        start_epoch, history, skip = saved["epoch"], saved["history"], saved["batches_done"]
        if log is not None:
            where = f", batch {skip:03d} of the next" if skip else ""
            log(f"Resumed from {checkpoint} after epoch {start_epoch:03d}/{num_epochs:03d}{where}")
    if val_loader is not None:
        history.setdefault("val_accuracy", [])

    placement = program.placement
    stop = StopOnSigterm()
    runner = _Runner(program, placement.replicate(state), int(state.step), 1 if fused else _STEP_LAG, stop)
    epoch_chunks, on_device = chunk_source(
        train_loader, model, placement, fused, device_data_bytes, loss_fn is cross_entropy
    )
    reporter = _Reporter(log, progress, num_epochs, num_batches, start_epoch, checkpoint, skip)
    with stop:
        try:
            for epoch in range(start_epoch, num_epochs):
                sampler = getattr(train_loader, "sampler", None)
                if sampler is not None and hasattr(sampler, "set_epoch"):
                    sampler.set_epoch(epoch)
                loader_state = _loader_state(train_loader)  # before this epoch draws its order
                done = skip if epoch == start_epoch else 0  # batches of this epoch trained before a resume
                epoch_start = runner.step - done
                for group in runner.epoch(epoch_chunks(epoch, done)):
                    history["loss"] += reporter.losses(epoch, epoch_start, group)
                steps = runner.step - epoch_start
                if runner.stopped:
                    _count(history, program, on_device)
                    _stop(log, checkpoint, program, runner, epoch, steps, history, seed, loader_state, stop)
                history["epoch_loss"].append(float(np.mean(history["loss"][-steps:])) if steps else float("nan"))

                if val_loader is not None:
                    accuracy = compute_accuracy(program.model(runner.state), val_loader, mesh=mesh)
                    history["val_accuracy"].append(accuracy)
                    if log is not None:
                        log(f"Epoch: {epoch + 1:03d}/{num_epochs:03d} | Val accuracy: {accuracy:.2f}")
                _count(history, program, on_device)
                if checkpoint is not None and jax.process_index() == 0:
                    position = {"epoch": epoch + 1, "global_step": runner.step, "batches_done": 0}
                    _save(checkpoint, program, runner.state, position, history, seed, _loader_state(train_loader))
        finally:
            reporter.close()
    _count(history, program, on_device)
    return program.model(runner.state), history


def _stop(log, checkpoint, program, runner: _Runner, epoch: int, steps: int, history, seed, loader_state, stop) -> None:
    """SIGTERM: write the checkpoint of the run so far (mid-epoch), say so, and end the process."""
    saved = ""
    if checkpoint is not None:
        if jax.process_index() == 0:
            position = {"epoch": epoch, "global_step": runner.step, "batches_done": steps}
            _save(checkpoint, program, runner.state, position, history, seed, loader_state)
        saved = f"; the checkpoint {checkpoint} holds the run so far (resume=True continues it)"
    if jax.process_count() > 1:  # no process ends (and so makes its launcher end the others) before the save
        multihost_utils.sync_global_devices("fundamentals.fit: checkpoint written before SIGTERM")
    if log is not None:
        log(f"Stopped by SIGTERM at epoch {epoch + 1:03d}, batch {steps:03d}{saved}")
    stop.exit()


def _count(history: dict, program: TrainProgram, on_device: bool) -> None:
    history["programs_run"] = program.programs_run
    history["programs_compiled"] = program.programs_compiled
    history["data_on_device"] = on_device
    # The names before 0.2, kept for one release.
    history["compilations"] = program.programs_run
    history["compiled"] = program.programs_compiled
