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
import itertools
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from tqdm import TqdmWarning

with (
    warnings.catch_warnings()
):  # in Jupyter without ipywidgets tqdm.auto warns (naming its path), then uses the text bar
    warnings.simplefilter("ignore", TqdmWarning)
    from tqdm.auto import tqdm

from .._checks import check_int
from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..losses import cross_entropy
from ..sharding import host_copy, local_copy
from .callbacks import Callback, Run
from .chunks import chunk_source, split_at
from .preemption import StopOnSigterm
from .program import Model, TrainProgram, TrainState, as_transformation, split_model

__all__ = ["fit", "TrainingDivergedError", "format_step_log"]

# The per-step reference path lets this many steps queue before it waits for their losses.
_STEP_LAG = 32


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch and the step."""


def format_step_log(epoch: int, num_epochs: int | None, batch: int, num_batches: int | None, loss: float) -> str:
    """The book's log line: `Epoch: 001/003 | Batch 001/002 | Train Loss: 0.75` (1-based; unknown totals left out)."""
    epochs = f"{epoch:03d}/{num_epochs:03d}" if num_epochs is not None else f"{epoch:03d}"
    batches = f"{batch:03d}/{num_batches:03d}" if num_batches is not None else f"{batch:03d}"
    return f"Epoch: {epochs} | Batch {batches} | Train Loss: {loss:.2f}"


# --- what fit was asked to do ------------------------------------------------------------------


@dataclass
class _Plan:
    """`fit`'s arguments, checked: how long to train and what to evaluate when."""

    num_epochs: int | None
    max_steps: int | None
    num_batches: int | None  # per epoch, when the loader has a length
    eval_every: int | None
    eval_batches: int | None
    eval_train_loss: bool
    callbacks: list = field(default_factory=list)

    def epochs(self, start: int) -> Iterable[int]:
        return range(start, self.num_epochs) if self.num_epochs is not None else itertools.count(start)


def _check_arguments(
    num_epochs, max_steps, train_loader, val_loader, eval_every, eval_batches, eval_train_loss, metrics, callbacks
) -> _Plan:
    if num_epochs is None and max_steps is None:
        raise ValueError("fit: give num_epochs, max_steps or both (how long to train)")
    if num_epochs is not None:
        check_int("fit: num_epochs", num_epochs, 0)
    if max_steps is not None:
        check_int("fit: max_steps", max_steps, 1)
    if eval_every is not None:
        check_int("fit: eval_every", eval_every, 1, unit="steps")
        if val_loader is None and not eval_train_loss:
            raise ValueError("fit: eval_every needs something to evaluate: val_loader=, or eval_train_loss=True")
    if eval_batches is not None:
        check_int("fit: eval_batches", eval_batches, 1)
    if metrics is not None:
        if not isinstance(metrics, dict) or not all(isinstance(k, str) and callable(f) for k, f in metrics.items()):
            raise TypeError("fit: metrics must be a dict {name: fn(logits, labels) -> scalar}")
        if val_loader is None:
            raise ValueError("fit: metrics are computed over the validation data: pass val_loader= too")
    callbacks = list(callbacks or ())
    for callback in callbacks:
        missing = [
            m for m in ("on_train_begin", "on_evaluation", "on_epoch_end", "on_train_end") if not hasattr(callback, m)
        ]
        if missing:
            raise TypeError(
                f"fit: callbacks must be fm.Callback objects; {type(callback).__name__} has no {', '.join(missing)}"
            )
    try:
        num_batches: int | None = len(train_loader)
    except TypeError:
        num_batches = None
        if not hasattr(train_loader, "__iter__"):
            raise TypeError(
                f"fit: train_loader must be iterable (a DataLoader, a list of batches), got {type(train_loader).__name__}"
            ) from None
    if num_batches == 0:
        raise ValueError("train_loader yields no batches: the dataset is smaller than batch_size with drop_last=True")
    if eval_train_loss and _is_iterator(train_loader):
        raise ValueError(
            "fit: eval_train_loss=True reads training batches again, but train_loader is a one-shot iterator"
        )
    return _Plan(num_epochs, max_steps, num_batches, eval_every, eval_batches, bool(eval_train_loss), callbacks)


def _is_iterator(loader) -> bool:
    try:
        return iter(loader) is loader
    except TypeError:
        return False


def _ordered_twin(loader):
    """The training data in order, for the training loss at evaluation points, without touching the loader's shuffle."""
    from ..data import DataLoader

    if isinstance(loader, DataLoader) and getattr(loader, "batch_size", None):
        return DataLoader(loader.dataset, batch_size=loader.batch_size, collate_fn=loader.collate_fn)
    return loader


# --- checkpoints -------------------------------------------------------------------------------


def _restore(checkpoint: str, program: TrainProgram, state: TrainState, seed: int, train_loader, callbacks):
    """The training state and metadata from `checkpoint`, with the loader and the callbacks put back where they were."""
    model, opt_state = program.trees(state)
    model, model_state = split_model(model)
    model, opt_state, saved = load_checkpoint(checkpoint, params=model, opt_state=opt_state)
    if saved.get("seed", seed) != seed:
        raise ValueError(
            f"seed={seed} differs from the seed {saved['seed']} the checkpoint {checkpoint} was trained "
            "with; resume with the same seed to continue the same run"
        )
    done = saved.setdefault("batches_done", 0)
    if isinstance(done, bool) or not isinstance(done, int) or not 0 <= done <= len(saved["history"]["loss"]):
        raise CheckpointError(f"checkpoint {checkpoint}: field 'batches_done' must be a step count, got {done!r}")
    arrays = saved.pop("arrays", {})
    if model_state is not None:
        leaves, treedef = jax.tree_util.tree_flatten(model_state)
        stored = [arrays.get(f"model_state.{i}") for i in range(len(leaves))]
        if any(a is None or np.shape(a) != np.shape(leaf) for a, leaf in zip(stored, leaves)):
            raise CheckpointError(f"checkpoint {checkpoint} holds no model state of this model's shapes")
        model = (model, jax.tree_util.tree_unflatten(treedef, [np.asarray(a) for a in stored]))
    states = saved.get("callbacks", [])
    if not isinstance(states, list) or (states and len(states) != len(callbacks)):
        raise CheckpointError(
            f"checkpoint {checkpoint} was written with {len(states)} callbacks, this run has {len(callbacks)}"
        )
    for index, (callback, callback_state) in enumerate(zip(callbacks, states)):
        restored = dict(callback_state)
        for name in list(restored.get("_arrays", [])):
            count = restored.pop(name + "_count", 0)
            restored[name] = [arrays[f"callback.{index}.{name}.{i}"] for i in range(count)]
        restored.pop("_arrays", None)
        callback.load_state_dict(restored)
    if "loader" in saved and hasattr(train_loader, "load_state_dict"):
        train_loader.load_state_dict(saved["loader"])
    return program.with_trees(state, model, opt_state, saved["global_step"]), saved


def _callback_states(callbacks) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The callbacks' `state_dict()`s: JSON values for the header, lists of arrays as checkpoint arrays."""
    states, arrays = [], {}
    for index, callback in enumerate(callbacks):
        state = dict(callback.state_dict())
        names = []
        for name, value in list(state.items()):
            if isinstance(value, list) and value and all(isinstance(v, np.ndarray) for v in value):
                for i, array in enumerate(value):
                    arrays[f"callback.{index}.{name}.{i}"] = array
                state[name + "_count"] = len(value)
                names.append(name)
                del state[name]
        state["_arrays"] = names
        states.append(state)
    return states, arrays


def _loader_state(loader) -> dict | None:
    return loader.state_dict() if hasattr(loader, "state_dict") else None


def _save(checkpoint, program: TrainProgram, state: TrainState, position: dict, history, seed, loader_state, callbacks):
    """Write the checkpoint: `position` holds the epochs done, the global step and the batches done of the next epoch."""
    callback_states, arrays = _callback_states(callbacks)
    metadata = {**position, "history": history, "seed": seed, "callbacks": callback_states}
    if loader_state is not None:
        metadata["loader"] = loader_state
    model, opt_state = program.trees(state)
    model, model_state = split_model(model)
    for i, leaf in enumerate(jax.tree_util.tree_leaves(model_state)):
        arrays[f"model_state.{i}"] = np.asarray(leaf)
    save_checkpoint(checkpoint, params=model, opt_state=opt_state, metadata=metadata, arrays=arrays)


# --- running chunks ----------------------------------------------------------------------------


class _Runner:
    """Dispatches chunks as the host makes them and hands back their outputs a few chunks later.

    Waiting for a chunk's losses waits for the chunk. Waiting only after the next chunks have
    been pulled from the loader and dispatched keeps the host and the device busy together.
    Evaluation points (every `eval_every` steps) end a chunk; there the runner hands back every
    pending output, then says `"evaluate"`.
    """

    def __init__(self, program: TrainProgram, state: TrainState, step: int, lag: int, stop: StopOnSigterm, every):
        self.program, self.state, self.step, self.lag, self.stop, self.every = program, state, step, lag, stop, every
        self.stopped = False  # SIGTERM: the run stopped after the last chunk it dispatched

    def epoch(self, chunks: Iterator[Any]) -> Iterator[tuple[str, list]]:
        """Run `chunks`; yield `("outputs", [(chunk, first global step, outputs), ...])` and `("evaluate", [])`."""
        pending: collections.deque = collections.deque()
        for chunk in chunks:
            first = self.step
            self.state, outputs = chunk.run(self.program, self.state)
            if self.program.placement.block_each_call:
                jax.block_until_ready(outputs)
            self.step += chunk.num_steps
            pending.append((chunk, first, outputs))
            if self.stop.requested():
                self.stopped = True
                break
            if self.every and self.step % self.every == 0:
                yield "outputs", self._collect(pending, len(pending))
                yield "evaluate", []
            elif len(pending) > self.lag:  # all but the newest, which keeps the device busy meanwhile
                yield "outputs", self._collect(pending, len(pending) - 1)
        if pending:
            yield "outputs", self._collect(pending, len(pending))

    @staticmethod
    def _collect(pending: collections.deque, count: int) -> list[tuple[Any, int, dict]]:
        done = [pending.popleft() for _ in range(count)]
        return [
            (chunk, first, {name: host_copy(value).reshape(-1) for name, value in outputs.items()})
            for chunk, first, outputs in done
        ]


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
    """The book's log lines, the progress bar, and the NaN check, for each chunk's outputs."""

    def __init__(self, log, progress: bool, plan: _Plan, start_epoch: int, done: int, checkpoint):
        self.log, self.plan, self.checkpoint = log, plan, checkpoint
        total = None
        if plan.num_batches is not None and plan.num_epochs is not None:
            total = plan.num_epochs * plan.num_batches
        if plan.max_steps is not None:
            total = plan.max_steps if total is None else min(total, plan.max_steps)
        initial = done + (start_epoch * plan.num_batches if plan.num_batches is not None else 0)
        self.bar = tqdm(total=total, initial=initial, desc="train", unit="step") if progress else None

    def outputs(self, epoch: int, epoch_start: int, group: list[tuple[Any, int, dict]], history: dict) -> None:
        count = 0
        for chunk, first, outputs in group:
            losses = outputs["loss"].tolist()
            for offset, value in enumerate(losses):
                step = first + offset
                batch = step - epoch_start + 1
                if not math.isfinite(value):
                    raise _diverged(value, epoch, batch, step, chunk, offset, self.checkpoint)
                if self.log is not None:
                    self.log(format_step_log(epoch + 1, self.plan.num_epochs, batch, self.plan.num_batches, value))
            for name, values in outputs.items():
                history.setdefault(name, []).extend(values.tolist() if name != "loss" else losses)
            count += len(losses)
        if self.bar is not None and count:
            self.bar.update(count)
            self.bar.set_postfix(loss=f"{history['loss'][-1]:.4f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --- evaluation --------------------------------------------------------------------------------


class _Evaluator:
    """Evaluation points: the loss (and accuracy and metrics) over the validation data, compiled over chunks.

    It runs on this process's first device with its own copy of the parameters, whatever the
    training mesh (so a ragged validation batch need not split across devices), and sums over
    processes when there are several.
    """

    def __init__(self, program: TrainProgram, model, val_loader, train_loader, plan: _Plan, labels_are_classes, budget):
        self.program, self.plan = program, plan
        self.sources: list[tuple[str, Any]] = []
        placement = program.placement
        for prefix, loader in (  # the book's order: "Train loss ..., Val loss ..."
            ("train_eval", _ordered_twin(train_loader) if plan.eval_train_loss else None),
            ("val", val_loader),
        ):
            if loader is not None:
                where = "val_loader" if prefix == "val" else "train_loader"
                chunks, _ = chunk_source(loader, model, placement, True, budget, labels_are_classes, where)
                self.sources.append((prefix, chunks))
        self.recorded = (
            {"val_loss", "val_accuracy", *("val_" + name for name in program.metrics)} if val_loader else set()
        )
        if plan.eval_train_loss:
            self.recorded |= {"train_eval_loss", "train_eval_accuracy"}
        self.last_step: int | None = None

    def __call__(self, state: TrainState, epoch: int, step: int, history: dict, log, num_epochs) -> None:
        self.last_step = step
        state = state._replace(opt_state=[])  # evaluation reads the parameters (and model state) only
        if self.program.placement.mesh is not None:
            state = jax.device_put(local_copy(state), jax.local_devices()[0])
        history.setdefault("eval_step", []).append(step)
        history.setdefault("eval_epoch", []).append(epoch + 1)
        parts = []
        for prefix, source in self.sources:
            sums: dict | None = None
            for chunk in source(epoch, 0, self.plan.eval_batches):
                new = chunk.evaluate(self.program, state)
                sums = new if sums is None else jax.tree_util.tree_map(jax.numpy.add, sums, new)
            if sums is None:
                raise ValueError(f"fit: the {'validation' if prefix == 'val' else 'training'} data yielded no batches")
            totals = {name: float(value) for name, value in host_copy_tree(sums).items()}
            values = {f"{prefix}_loss": totals["loss"] / totals["count"]}
            if "correct" in totals:
                values[f"{prefix}_accuracy"] = totals["correct"] / totals["count"]
            for name in self.program.metrics:
                if prefix == "val":
                    values[f"val_{name}"] = totals[f"metric.{name}"] / totals["count"]
            for name, value in values.items():
                history.setdefault(name, []).append(value)
            parts += [f"{_label(name)}: {value:.3f}" for name, value in values.items()]
        if log is not None:
            epochs = f"{epoch + 1:03d}/{num_epochs:03d}" if num_epochs is not None else f"{epoch + 1:03d}"
            log(f"Epoch: {epochs} | Step {step:06d} | " + " | ".join(parts))


def host_copy_tree(sums: dict) -> dict:
    """Evaluation sums on the host, added up over the processes of a multi-process run."""
    local = {name: np.asarray(host_copy(value), dtype=np.float64) for name, value in sums.items()}
    if jax.process_count() > 1:
        names = sorted(local)
        gathered = multihost_utils.process_allgather(np.array([local[n] for n in names]))
        totals = np.asarray(gathered).reshape(jax.process_count(), len(names)).sum(axis=0)
        return dict(zip(names, totals))
    return local


def _label(name: str) -> str:
    words = name.replace("train_eval", "train").split("_")
    return " ".join([words[0].capitalize(), *words[1:]])


# --- fit -----------------------------------------------------------------------------------------


def fit(
    model: Model,
    optimizer: optax.GradientTransformation,
    train_loader: Iterable[Any],
    *,
    num_epochs: int | None = None,
    max_steps: int | None = None,
    val_loader: Iterable[Any] | None = None,
    eval_every: int | None = None,
    eval_batches: int | None = None,
    eval_train_loss: bool = False,
    metrics: dict[str, Callable] | None = None,
    callbacks: Iterable[Callback] = (),
    log: Callable[[str], Any] | None = print,
    progress: bool = False,
    checkpoint: str | None = None,
    resume: bool = False,
    mesh: Mesh | None = None,
    seed: int = 0,
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array] = cross_entropy,
    fused: bool = True,
    device_data_bytes: int | None = None,
    fuse_small_dots: bool = True,
) -> tuple[Model, dict[str, Any]]:
    """Train `model` with `optimizer` over `train_loader` for `num_epochs` epochs (or `max_steps` steps).

    Replaces the book's training loop (listing A.9): `model.train()`, the loop over epochs and
    batches, `F.cross_entropy`, `optimizer.zero_grad()`, `loss.backward()`, `optimizer.step()`
    and its log line `Epoch: 001/003 | Batch 001/002 | Train Loss: 0.75`; and the loop of the
    book's chapter 5 (`train_model_simple`), which evaluates the training and validation loss
    every `eval_freq` steps.

    **Arguments:**

    - `model`: an Equinox model returning logits (for example `NeuralNetwork`), or
      `(model, state)` as `eqx.nn.make_with_state` returns a stateful one (`BatchNorm`), called
      per example as `model(x, state) -> (logits, state)` (see `TrainProgram`).
    - `optimizer`: any Optax `GradientTransformation` (`optax.sgd(0.5)` as in the book,
      `optax.adam(1e-3)`, `optax.inject_hyperparams(optax.sgd)(learning_rate=schedule)`,
      `optax.contrib.reduce_on_plateau`, `optax.lbfgs()`: `value=`, `grad=` and `value_fn=` are
      passed to those that take them) or an `optax.MultiSteps` (gradient accumulation).
    - `train_loader`: a `DataLoader` over any dataset, or any iterable of
      `(features, labels, ...)` batches, with or without a length. If its sampler has
      `set_epoch`, it is called before every epoch, as PyTorch's `DistributedSampler` needs.
      Batches may change shape: each distinct shape is compiled once.
    - `num_epochs`: how many epochs in total (also when resuming); an epoch is one pass.
    - `max_steps`: end the run after this many steps in total (also within an epoch, and for
      a single pass over an endless stream). Give `num_epochs`, `max_steps` or both.
    - `val_loader`: evaluated at the end of every epoch (and every `eval_every` steps): the
      mean loss with `loss_fn` (`history["val_loss"]`), the accuracy when labels are class
      indices (`"val_accuracy"`), and each metric (`"val_" + name`).
    - `eval_every`: also evaluate every this many steps. Chunks end there; training between
      evaluation points stays fused, and evaluation itself runs compiled over chunks.
    - `eval_batches`: evaluate over at most this many batches of each loader (the book's
      `eval_iter`); all of them by default.
    - `eval_train_loss`: also record the training loss at each evaluation point, over the
      training data in order (`"train_eval_loss"`), without touching the loader's shuffle.
    - `metrics`: `{name: fn(logits, labels) -> scalar}`, averaged over the validation set like
      the loss (weighted by batch size).
    - `callbacks`: `fm.Callback` objects (`fm.EarlyStopping`, `fm.BestCheckpoint`, your own),
      called after each evaluation, at each epoch's end and at the end.
    - `log`: receives one line per step in the book's format and one per evaluation; None is
      silent. The lines of a chunk of steps arrive when the chunk finishes.
    - `progress`: show a tqdm bar over all steps, with the latest loss.
    - `checkpoint`: a path; after every epoch (and when the run stops early, by a callback or
      SIGTERM) the model, its state, optimizer state, position, loader RNG state, callbacks'
      state and history are written there atomically (process 0 only).
    - `resume`: continue from `checkpoint` if it exists; bit-identical to an uninterrupted run.
    - `mesh`: a `jax.sharding.Mesh` with a `"data"` axis (see `fundamentals.data_mesh`): each
      batch is sharded along it, parameters and optimizer state are replicated, and XLA
      averages the gradients inside the compiled step (PyTorch's DistributedDataParallel).
    - `seed`: the seed of the per-step keys handed to models that take a `key` (dropout).
    - `loss_fn`: `loss_fn(logits, labels) -> scalar`, `cross_entropy` by default.
    - `fused`: True (the default): chunks of batches run as one compiled `lax.scan` each.
      False: one compiled call a step, the reference the fused path equals bit for bit.
    - `device_data_bytes`: the budget for keeping an `ArrayDataset`'s arrays on the device
      (default: a quarter of the device's memory where JAX reports it, else 1 GiB).
    - `fuse_small_dots`: on a CPU, compile the step's small matrix products (at most
      `fundamentals._small_dots.MAX_ELEMENTS` multiply-adds) as fused multiply-and-sum, which
      halves the book's network's step. Their sums run in another order than XLA's `dot`, so
      results differ from a plain `jax.jit` step by float32 rounding; False keeps XLA's
      products (bit for bit a plain `jax.jit` step). Every path of one run uses the same.

    **Returns:**

    `(model, history)` (`((model, state), history)` for a stateful model): the trained model
    (the one passed in is unchanged) and a dict with `"loss"` (every step's loss),
    `"epoch_loss"` (mean per epoch), `"epoch_step"` (the step at each epoch's end),
    `"learning_rate"` (every step's, when the optimizer state carries it), the evaluation
    values with `"eval_step"`, `"stopped"` (when a callback or SIGTERM ended the run early),
    `"programs_run"`, `"programs_compiled"` and `"data_on_device"`.

    **Raises:** `TrainingDivergedError` (a `FloatingPointError`) naming the epoch and step if
    the loss becomes NaN or infinite (and the cause, if the batch's features are not finite);
    `ValueError`/`TypeError` naming the argument or the batch for bad input, before training.
    """
    plan = _check_arguments(
        num_epochs, max_steps, train_loader, val_loader, eval_every, eval_batches, eval_train_loss, metrics, callbacks
    )
    _check_rest(optimizer, checkpoint, resume, seed, device_data_bytes, fused)
    fused = True if fused is None else bool(fused)  # None: the old spelling of the default
    optimizer = as_transformation(optimizer)
    program = TrainProgram.create(
        model, optimizer, loss_fn=loss_fn, mesh=mesh, metrics=metrics, fuse_small_dots=fuse_small_dots
    )
    state = program.init(model, seed=seed)
    history: dict[str, Any] = {"loss": [], "epoch_loss": []}
    start_epoch = skip = 0
    saved: dict = {}
    if resume and checkpoint is not None and os.path.exists(checkpoint):  # resume without one was refused above
        state, saved = _restore(checkpoint, program, state, seed, train_loader, plan.callbacks)
        start_epoch, history, skip = saved["epoch"], saved["history"], saved["batches_done"]
        if skip and len(history.get("epoch_step", [])) > start_epoch:  # a partial epoch, summed when max_steps cut it
            history["epoch_loss"].pop()
            history["epoch_step"].pop()
        if log is not None:
            where = f", batch {skip:03d} of the next" if skip else ""
            total = f"/{plan.num_epochs:03d}" if plan.num_epochs is not None else ""
            log(f"Resumed from {checkpoint} after epoch {start_epoch:03d}{total}{where}")

    placement = program.placement
    labels_are_classes = loss_fn is cross_entropy
    evaluation_program = (
        program if mesh is None else TrainProgram.create(model, optimizer, loss_fn=loss_fn, metrics=metrics)
    )
    evaluator = _Evaluator(
        evaluation_program, model, val_loader, train_loader, plan, labels_are_classes, device_data_bytes
    )
    stop = StopOnSigterm()
    lag = 1 if fused else _STEP_LAG
    runner = _Runner(program, placement.replicate(state), int(state.step), lag, stop, plan.eval_every)
    run = Run(history, evaluator.recorded, lambda: program.model(runner.state))
    epoch_chunks, on_device = chunk_source(train_loader, model, placement, fused, device_data_bytes, labels_are_classes)
    training = _Training(
        program, runner, run, plan, evaluator, epoch_chunks, on_device, train_loader, log, checkpoint, seed, stop
    )
    if "stopped" in history:  # the checkpoint of a run that a callback already ended: nothing more to train
        return training.finish()
    for callback in plan.callbacks:
        callback.on_train_begin(run)
    reporter = _Reporter(log, progress, plan, start_epoch, skip, checkpoint)
    with stop:
        try:
            for epoch in plan.epochs(start_epoch):
                if plan.max_steps is not None and runner.step >= plan.max_steps:
                    break
                if not training.epoch(epoch, skip if epoch == start_epoch else 0, reporter):
                    break
        finally:
            reporter.close()
    return training.finish()


@dataclass
class _Training:
    """One `fit` run's parts, and what it does with each epoch."""

    program: TrainProgram
    runner: _Runner
    run: Run
    plan: _Plan
    evaluator: _Evaluator
    epoch_chunks: Callable[..., Iterator[Any]]
    on_device: bool
    loader: Any
    log: Callable[[str], Any] | None
    checkpoint: str | None
    seed: int
    stop: StopOnSigterm

    @property
    def history(self) -> dict:
        return self.run.history

    def epoch(self, epoch: int, done: int, reporter: _Reporter) -> bool:
        """Train epoch `epoch` (its first `done` batches were trained before a resume); False ends the run."""
        runner, run, plan, history = self.runner, self.run, self.plan, self.history
        run.epoch = epoch
        sampler = getattr(self.loader, "sampler", None)
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        loader_state = _loader_state(self.loader)  # before this epoch draws its order
        epoch_start = runner.step - done
        chunks = split_at(self.epoch_chunks(epoch, done), runner.step, plan.eval_every, plan.max_steps)
        for event, group in runner.epoch(chunks):
            if event == "outputs":
                reporter.outputs(epoch, epoch_start, group, history)
            else:
                self.evaluate(epoch)
                if run.stop_reason is not None:
                    break
        steps = runner.step - epoch_start
        if runner.stopped:  # SIGTERM: the checkpoint of the run so far, then the end of the process
            _count(history, self.program, self.on_device)
            _stop(self.log, self.checkpoint, runner, epoch, steps, loader_state, self.stop, self.save)
        if run.stop_reason is not None:  # a callback, at an evaluation point within the epoch
            self.stopped(epoch)
            self.save({"epoch": epoch, "global_step": runner.step, "batches_done": steps}, loader_state)
            return False
        if steps == 0:
            raise _no_batches(self.loader, epoch)
        # max_steps can cut an epoch short: then the checkpoint says how far into it the run got
        finished = plan.max_steps is None or runner.step < plan.max_steps or steps == plan.num_batches
        history["epoch_loss"].append(float(np.mean(history["loss"][-steps:])))
        history.setdefault("epoch_step", []).append(runner.step)
        if self.evaluator.sources and self.evaluator.last_step != runner.step:
            self.evaluate(epoch)
        run.step = runner.step
        for callback in plan.callbacks:
            callback.on_epoch_end(run)
        _count(history, self.program, self.on_device)
        if run.stop_reason is not None:
            self.stopped(epoch)
        if finished or run.stop_reason is not None:
            position = {"epoch": epoch + 1, "global_step": runner.step, "batches_done": 0}
            self.save(position, _loader_state(self.loader))
        else:
            self.save({"epoch": epoch, "global_step": runner.step, "batches_done": steps}, loader_state)
        return run.stop_reason is None

    def evaluate(self, epoch: int) -> None:
        self.run.step = self.runner.step
        self.evaluator(self.runner.state, epoch, self.runner.step, self.history, self.log, self.plan.num_epochs)
        for callback in self.plan.callbacks:
            callback.on_evaluation(self.run)

    def stopped(self, epoch: int) -> None:
        step, reason = self.runner.step, self.run.stop_reason
        self.history["stopped"] = {"step": step, "epoch": epoch + 1, "reason": reason}
        _count(self.history, self.program, self.on_device)
        if self.log is not None:
            self.log(f"Stopped at step {step} (epoch {epoch + 1}): {reason}")

    def save(self, position: dict, loader_state) -> None:
        if self.checkpoint is not None and jax.process_index() == 0:
            callbacks = self.plan.callbacks
            _save(
                self.checkpoint,
                self.program,
                self.runner.state,
                position,
                self.history,
                self.seed,
                loader_state,
                callbacks,
            )

    def finish(self):
        for callback in self.plan.callbacks:
            callback.on_train_end(self.run)
        _count(self.history, self.program, self.on_device)
        trained = self.run.final_model
        return (trained if trained is not None else self.program.model(self.runner.state)), self.history


def _check_rest(optimizer, checkpoint, resume, seed, device_data_bytes, fused) -> None:
    as_transformation(optimizer)  # a TypeError naming what it got
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=PATH to resume from")
    check_int("fit: seed", seed)
    if device_data_bytes is not None:
        check_int("fit: device_data_bytes", device_data_bytes, 0)
    if fused is not None and not isinstance(fused, (bool, np.bool_)):
        raise TypeError(f"fit: fused must be True or False, got {type(fused).__name__}")


def _no_batches(loader, epoch: int) -> ValueError:
    if _is_iterator(loader) and epoch > 0:
        return ValueError(
            f"fit: epoch {epoch + 1}: train_loader yielded no batches; it is a one-shot iterator (a generator?) "
            f"used up by epoch {epoch}. Pass a re-iterable (a list, a DataLoader, a class with __iter__), "
            "or end the run with max_steps"
        )
    return ValueError(f"fit: epoch {epoch + 1}: train_loader yielded no batches")


def _stop(log, checkpoint, runner: _Runner, epoch: int, steps: int, loader_state, stop, save) -> None:
    """SIGTERM: write the checkpoint of the run so far (mid-epoch), say so, and end the process."""
    saved = ""
    if checkpoint is not None:
        save({"epoch": epoch, "global_step": runner.step, "batches_done": steps}, loader_state)
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
