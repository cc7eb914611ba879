"""The training loop, evaluation and prediction (appendix A.7).

The book's loop, line by line, and where each line went:

```python
# PyTorch                                           # fundamentals.fit, inside one jax.jit
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

- **One compiled step, scanned.** The model is split once into its arrays (`params`, what the
  optimizer sees) and the rest (`static`, the structure). `TrainProgram` compiles the step
  (loss, gradient, optimizer update, apply) as one `jax.jit`, and the same step scanned over a
  chunk of batches as one `lax.scan`.
- **Chunks.** Batches, pulled from whatever loader `fit` is given, are stacked into chunks of
  equal-shape batches, bounded in bytes, and each chunk runs as one call. A change of shape
  (a ragged last batch, batches of varying length) starts a new chunk; every distinct shape
  and chunk length is one more program, compiled once, in the first epoch.
- **In-memory data lives on the device.** When the loader gathers batches from an
  `ArrayDataset` that fits a device-memory budget, its arrays go to the device once; after
  that only each chunk's indices cross, and the gathers run inside the compiled call.
- **The host runs ahead.** JAX dispatches asynchronously: while the device computes one
  chunk, the host already pulls the next from the loader (with the loader's worker threads
  when it has them), and only then waits for the finished chunk's losses to report them.
- **Bit for bit.** Every path computes the same step on the same batches, so losses and
  parameters equal those of one jitted call a step (`fused=False`, the reference path).
- **Compiled once per process.** Programs are cached by what determines them: the model's
  structure, the optimizer's settings, the loss, the mesh. A second `fit` with a new model and
  a new `optax.sgd(0.5)` of the same shapes, as a re-run notebook cell makes, compiles nothing.
"""

from __future__ import annotations

import collections
import inspect
import math
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from tqdm import TqdmWarning

with (
    warnings.catch_warnings()
):  # in Jupyter without ipywidgets tqdm.auto warns (naming its path), then uses the text bar
    warnings.simplefilter("ignore", TqdmWarning)
    from tqdm.auto import tqdm

from ._checks import check_int
from ._fingerprint import fingerprint
from .checkpoint import load_checkpoint, save_checkpoint
from .losses import check_labels, cross_entropy
from .sharding import Placement, host_copy, local_copy

__all__ = [
    "fit",
    "compute_accuracy",
    "predict",
    "predict_proba",
    "TrainProgram",
    "TrainingDivergedError",
    "format_step_log",
]

# Steps fused into one compiled call are bounded by the bytes of their stacked batches.
CHUNK_BYTES = 64 * 2**20
MAX_CHUNK_STEPS = 1024
# In-memory data sets up to this size go to the device once, when the device does not say how big it is.
DEFAULT_DEVICE_DATA_BYTES = 2**30
# Compiled programs kept per process (each holds its compiled step and chunk functions).
_MAX_CACHED_PROGRAMS = 32
# The per-step reference path lets this many steps queue before it waits for their losses.
_STEP_LAG = 32


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch and the step."""


def format_step_log(epoch: int, num_epochs: int, batch: int, num_batches: int, loss: float) -> str:
    """The book's log line: `Epoch: 001/003 | Batch 001/002 | Train Loss: 0.75` (1-based)."""
    return f"Epoch: {epoch:03d}/{num_epochs:03d} | Batch {batch:03d}/{num_batches:03d} | Train Loss: {loss:.2f}"


def _takes_key(model) -> bool:
    try:
        return "key" in inspect.signature(model).parameters
    except (TypeError, ValueError):
        return False


class TrainProgram:
    """The compiled training step, and the same step scanned over a chunk of batches.

    The body of the book's loop (`model(features)`, `F.cross_entropy`, `loss.backward()`,
    `optimizer.step()`) as pure functions under one `jax.jit` each. `fit` is built on it; use it
    directly to write your own loop at `fit`'s speed:

    ```python
    program = TrainProgram.create(model, optax.sgd(0.5))
    params, opt_state = program.init(model)                   # flat lists of arrays
    seed = np.uint32(0)                                         # dropout keys: fold_in(key(seed), step)
    params, opt_state, loss = program.step(params, opt_state, X, y, np.int32(0), seed)
    params, opt_state, losses = program.chunk(params, opt_state, Xs, ys, np.arange(1, 9, dtype=np.int32), seed)
    model = program.model(params)
    ```

    - `step(params, opt_state, X, y, step, seed)`: one step on one batch.
    - `chunk(params, opt_state, Xs, ys, steps, seed)`: `lax.scan` of the step over a stack of
      batches (`Xs`: `(num_steps, batch, ...)`), bit for bit the same as that many `step`s.
    - `gather_chunk(params, opt_state, (X_all, y_all), indices, steps, seed)`: the same, with
      the batches gathered on the device as `X_all[indices]` (`indices`: `(num_steps, batch)`).

    Parameters and optimizer state travel as flat lists of arrays (`init`, `model`): `jax.jit`
    flattens its arguments on every call, in C++ for lists but through Python callbacks for
    Equinox modules, a cost comparable to the book's whole step.

    `create` returns one program per process for everything that determines it (the model's
    structure, the optimizer's settings, the loss, whether the model takes a dropout `key`,
    the mesh), so a new model and a new `optax.sgd(0.5)` of the same shapes reuse what an
    earlier call compiled. JAX compiles each function once per distinct input shape.
    """

    def __init__(
        self,
        static,
        optimizer: optax.GradientTransformation,
        loss_fn,
        takes_key: bool,
        placement,
        params_def,
        opt_state_def,
    ):
        self.traces = 0  # how many programs JAX traced (and so compiled) for this object
        self.optimizer = optimizer
        self.placement = placement
        self._static = static
        self._params_def = params_def
        self._opt_state_def = opt_state_def

        def train_step(param_leaves, opt_state_leaves, X, y, step, seed):
            params = jax.tree_util.tree_unflatten(params_def, param_leaves)
            opt_state = jax.tree_util.tree_unflatten(opt_state_def, opt_state_leaves)

            def compute_loss(p):
                model = eqx.combine(p, static)
                if takes_key:
                    # A fresh key every step, a pure function of the run's seed and the step.
                    logits = model(X, key=jax.random.fold_in(jax.random.key(seed), step))
                else:
                    logits = model(X)
                return loss_fn(logits, y)

            loss, grads = jax.value_and_grad(compute_loss)(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(opt_state), loss

        def scan_steps(param_leaves, opt_state_leaves, Xs, ys, steps, seed):
            def body(carry, batch):
                X, y, step = batch
                p, o, loss = train_step(*carry, X, y, step, seed)
                return (p, o), loss

            (param_leaves, opt_state_leaves), losses = jax.lax.scan(
                body, (param_leaves, opt_state_leaves), (Xs, ys, steps)
            )
            return param_leaves, opt_state_leaves, losses

        def one_step(param_leaves, opt_state_leaves, X, y, step, seed):
            self.traces += 1  # runs only while tracing: one count per compiled program
            return train_step(param_leaves, opt_state_leaves, X, y, step, seed)

        def train_chunk(param_leaves, opt_state_leaves, Xs, ys, steps, seed):
            self.traces += 1
            return scan_steps(param_leaves, opt_state_leaves, Xs, ys, steps, seed)

        def gather_chunk(param_leaves, opt_state_leaves, data, indices, steps, seed):
            self.traces += 1
            Xs, ys = (array[indices] for array in data)
            if placement.mesh is not None:  # gathered rows stay on the devices whose indices they are
                Xs, ys = (jax.lax.with_sharding_constraint(a, placement.stacked) for a in (Xs, ys))
            return scan_steps(param_leaves, opt_state_leaves, Xs, ys, steps, seed)

        self.step = jax.jit(one_step, **placement.shardings("step"))
        self.chunk = jax.jit(train_chunk, **placement.shardings("chunk"))
        self.gather_chunk = jax.jit(gather_chunk, **placement.shardings("gather"))

    @classmethod
    def create(
        cls, model, optimizer: optax.GradientTransformation, *, loss_fn=cross_entropy, mesh=None
    ) -> TrainProgram:
        """The program that trains `model` with `optimizer`: a cached one if an equal one exists.

        **Arguments:**

        - `model`: an Equinox model; only its structure matters here, not its values.
        - `optimizer`: an Optax `GradientTransformation`.
        - `loss_fn`: `loss_fn(logits, labels) -> scalar`.
        - `mesh`: a mesh with a `"data"` axis for data-parallel steps, or None.
        """
        params, static = eqx.partition(model, eqx.is_inexact_array)
        params_def = jax.tree_util.tree_structure(params)
        takes_key = _takes_key(model)
        # The parameters' shapes too: an optimizer's state can depend on them (optax.masked by ndim).
        shapes = tuple((np.shape(leaf), str(leaf.dtype)) for leaf in jax.tree_util.tree_leaves(params))
        try:
            parts, holders = fingerprint((static, optimizer, loss_fn))
            key = (parts, takes_key, mesh, params_def, shapes)
            if key in _PROGRAMS:
                _PROGRAMS.move_to_end(key)
                return _PROGRAMS[key][0]
        except Exception:  # noqa: BLE001 - anything we cannot describe or compare is simply not shared
            key, holders = None, None
        opt_state_def = jax.tree_util.tree_structure(jax.eval_shape(optimizer.init, params))
        program = cls(static, optimizer, loss_fn, takes_key, Placement(mesh), params_def, opt_state_def)
        if key is not None:
            _PROGRAMS[key] = (program, holders)
            while len(_PROGRAMS) > _MAX_CACHED_PROGRAMS:
                _PROGRAMS.popitem(last=False)
        return program

    @staticmethod
    def clear_cache() -> None:
        """Forget every cached program (and the objects their keys keep alive); the next `fit` compiles anew."""
        _PROGRAMS.clear()

    def init(self, model) -> tuple[list, list]:
        """`(params, opt_state)` for `model`, as the flat lists of arrays the compiled functions take."""
        params = eqx.filter(model, eqx.is_inexact_array)
        return jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(self.optimizer.init(params))

    def model(self, params: list, like=None):
        """The model whose arrays are `params` (a flat list, as `init` and the compiled functions give).

        Its other fields come from `like` (the model `params` were taken from) if given, else from
        the model this program was created for, which has the same structure.
        """
        static = self._static if like is None else eqx.partition(like, eqx.is_inexact_array)[1]
        return eqx.combine(jax.tree_util.tree_unflatten(self._params_def, local_copy(params)), static)

    def trees(self, params: list, opt_state: list):
        """The parameters and optimizer state as pytrees, this process's copy (for checkpoints)."""
        return (
            jax.tree_util.tree_unflatten(self._params_def, local_copy(params)),
            jax.tree_util.tree_unflatten(self._opt_state_def, local_copy(opt_state)),
        )

    def from_trees(self, params, opt_state) -> tuple[list, list]:
        """Flat lists from the pytrees a checkpoint gives back."""
        return jax.tree_util.tree_leaves(eqx.filter(params, eqx.is_inexact_array)), jax.tree_util.tree_leaves(opt_state)


_PROGRAMS: collections.OrderedDict = collections.OrderedDict()


# --- what one training run carries from chunk to chunk -------------------------------------------


@dataclass
class _Run:
    """The state of one `fit` call: parameters, optimizer state, the step counter."""

    program: TrainProgram
    params: list
    opt_state: list
    seed: Any
    global_step: int = 0
    programs: set = field(default_factory=set)  # the distinct compiled calls this run made

    def dispatch(self, chunk) -> jax.Array:
        """Start `chunk` on the device and return its losses (not waited for)."""
        placement = self.program.placement
        steps = np.arange(self.global_step, self.global_step + chunk.num_steps, dtype=np.int32)
        if chunk.indices is not None:
            self.programs.add(("gather", chunk.indices.shape))
            self.params, self.opt_state, losses = self.program.gather_chunk(
                self.params,
                self.opt_state,
                chunk.data,
                placement.put(chunk.indices, stacked=True),
                placement.replicate(steps),
                self.seed,
            )
        elif chunk.num_steps == 1:
            X, y = chunk.Xs[0], chunk.ys[0]
            self.programs.add(("step", X.shape, X.dtype.str, y.shape, y.dtype.str))
            self.params, self.opt_state, losses = self.program.step(
                self.params,
                self.opt_state,
                placement.put(X),
                placement.put(y),
                placement.replicate(steps[0]),
                self.seed,
            )  # a scalar loss: indexing it on the device would cost one more dispatch
        else:
            self.programs.add(("chunk", chunk.Xs.shape, chunk.Xs.dtype.str, chunk.ys.shape, chunk.ys.dtype.str))
            self.params, self.opt_state, losses = self.program.chunk(
                self.params,
                self.opt_state,
                placement.put(chunk.Xs, stacked=True),
                placement.put(chunk.ys, stacked=True),
                placement.replicate(steps),
                self.seed,
            )
        if placement.block_each_call:
            losses.block_until_ready()
        self.global_step += chunk.num_steps
        return losses


@dataclass
class _Chunk:
    """Consecutive batches of one shape: stacked on the host, or indices into device data."""

    num_steps: int
    Xs: np.ndarray | None = None
    ys: np.ndarray | None = None
    indices: np.ndarray | None = None
    data: Any = None


def _run_epoch(run: _Run, chunks: Iterator[_Chunk], lag: int) -> Iterator[np.ndarray]:
    """Dispatch each chunk as the host makes it; yield each one's losses `lag` chunks later.

    Waiting for a chunk's losses waits for the chunk. Waiting only after the next chunks have
    been pulled from the loader and dispatched keeps the host and the device busy together.
    """
    pending: collections.deque = collections.deque()
    for chunk in chunks:
        pending.append(run.dispatch(chunk))
        if len(pending) > lag:  # all but the newest, which keeps the device busy meanwhile
            yield _collect(pending, len(pending) - 1)
    if pending:
        yield _collect(pending, len(pending))


def _collect(pending: collections.deque, count: int) -> np.ndarray:
    """The losses of the `count` oldest dispatched chunks, in order, as one host array."""
    losses = [host_copy(pending.popleft()).reshape(-1) for _ in range(count)]
    return losses[0] if count == 1 else np.concatenate(losses)


# --- where chunks come from ----------------------------------------------------------------------


def _chunk_limit(batch_bytes: int) -> int:
    return max(1, min(MAX_CHUNK_STEPS, CHUNK_BYTES // max(1, batch_bytes)))


def _index_chunks(plan, data, row_bytes: int, placement) -> Iterator[_Chunk]:
    """An epoch of a loader over device-resident arrays: each chunk is only its index order."""
    batches = list(plan.epochs())
    # Vectorised over batches: a Python loop per batch costs a third of a fused tiny step.
    sizes = np.fromiter(map(len, batches), dtype=np.int64, count=len(batches))
    edges = [0, *(np.flatnonzero(np.diff(sizes)) + 1).tolist(), len(batches)]
    for start, stop in zip(edges[:-1], edges[1:]):
        placement.check_batch(int(sizes[start]))
        limit = _chunk_limit(row_bytes * int(sizes[start]))
        for first in range(start, stop, limit):
            run = batches[first : min(first + limit, stop)]
            indices = np.concatenate(run).reshape(len(run), -1)  # np.stack: 4x slower on 1000 tiny batches
            yield _Chunk(len(run), indices=indices.astype(np.int32, copy=False), data=data)


def _features_and_labels(batch) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        got = (
            f"a {type(batch).__name__} of length {len(batch)}"
            if isinstance(batch, (tuple, list))
            else (f"a {type(batch).__name__}" + (f" with keys {sorted(batch)}" if isinstance(batch, dict) else ""))
        )
        raise TypeError(f"fit: each batch of train_loader must be a (features, labels, ...) tuple, got {got}")
    return np.asarray(batch[0]), np.asarray(batch[1])


def _host_chunks(batches, placement, max_steps: int, check: Callable | None) -> Iterator[_Chunk]:
    """Runs of equal-shape batches from any iterable, stacked on the host, up to `max_steps` each."""
    run_X: list[np.ndarray] = []
    run_y: list[np.ndarray] = []
    shape = None
    limit = max_steps

    def stack() -> _Chunk:
        n = len(run_X)
        if n == 1:  # a view, no copy: the per-step path makes one chunk a batch
            Xs, ys = run_X[0][None], run_y[0][None]
        else:  # np.stack: 4x slower on 1000 tiny batches
            Xs = np.concatenate(run_X).reshape(n, *run_X[0].shape) if run_X[0].ndim else np.stack(run_X)
            ys = np.concatenate(run_y).reshape(n, *run_y[0].shape) if run_y[0].ndim else np.stack(run_y)
        if check is not None:
            check(Xs, ys)
        return _Chunk(n, Xs=Xs, ys=ys)

    for batch in batches:
        X, y = _features_and_labels(batch)
        key = (X.shape, X.dtype, y.shape, y.dtype)
        if run_X and (key != shape or len(run_X) >= limit):
            yield stack()
            run_X, run_y = [], []
        if not run_X:
            shape = key
            placement.check_batch(X.shape[0] if X.ndim else 0)
            limit = min(max_steps, _chunk_limit(X.nbytes + y.nbytes))
        run_X.append(X)
        run_y.append(y)
    if run_X:
        yield stack()


class _LabelCheck:
    """Labels outside [0, classes) make cross-entropy NaN, which would be blamed on the learning rate."""

    def __init__(self, model):
        self.model = model
        self.num_outputs: int | None = None
        self.known = True  # False once the model's class count cannot be read: then nothing is checked

    def __call__(self, Xs: np.ndarray, ys: np.ndarray) -> None:
        if self.num_outputs is None and self.known:
            # The model's output shape for one batch, evaluated abstractly (nothing runs).
            model = eqx.nn.inference_mode(self.model)
            kwargs = {"key": jax.random.key(0)} if _takes_key(self.model) else {}
            try:
                out = jax.eval_shape(lambda X: model(X, **kwargs), jax.ShapeDtypeStruct(Xs.shape[1:], Xs.dtype))
                self.num_outputs = int(out.shape[-1])
            except Exception:  # noqa: BLE001 - a model this cannot call abstractly still trains, unchecked
                self.known = False
        if self.num_outputs is not None:
            check_labels(ys, self.num_outputs, "fit: train_loader")


def _device_budget(device_data_bytes: int | None) -> int:
    if device_data_bytes is not None:
        return device_data_bytes
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001 - backends without memory statistics
        stats = {}
    return int(stats["bytes_limit"]) // 4 if "bytes_limit" in stats else DEFAULT_DEVICE_DATA_BYTES


def _batch_source(loader, model, placement, fused: bool, device_data_bytes: int | None, check_labels_too: bool):
    """A function of no arguments giving one epoch's chunks, and a description of the path."""
    check = _LabelCheck(model) if check_labels_too else None
    plan = loader.device_plan() if callable(getattr(loader, "device_plan", None)) else None
    arrays: tuple[np.ndarray, ...] = plan.arrays if plan is not None else ()
    if (
        fused
        and len(arrays) >= 2
        and not placement.multi_process
        and sum(a.nbytes for a in arrays[:2]) <= _device_budget(device_data_bytes)
    ):
        if check is not None:
            check(arrays[0][None], arrays[1])
        data = placement.put_data(tuple(arrays[:2]))
        row_bytes = sum(a[0].nbytes for a in arrays[:2])
        return lambda: _index_chunks(plan, data, row_bytes, placement)
    max_steps = MAX_CHUNK_STEPS if fused else 1
    return lambda: _host_chunks(loader, placement, max_steps, check)


# --- fit -------------------------------------------------------------------------------------------


def _check_fit_arguments(num_epochs, optimizer, train_loader, checkpoint, resume, seed, device_data_bytes) -> int:
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
    try:
        num_batches = len(train_loader)
    except TypeError:
        raise TypeError(f"train_loader must have a length (a DataLoader), got {type(train_loader).__name__}") from None
    if num_batches == 0:
        raise ValueError("train_loader yields no batches: the dataset is smaller than batch_size with drop_last=True")
    return num_batches


def _restore(checkpoint: str, program: TrainProgram, model, opt_state: list, seed: int, train_loader):
    """Parameters, optimizer state and metadata from `checkpoint`, with the loader put back where it was."""
    params_model, opt_state_tree, state = load_checkpoint(
        checkpoint, params=model, opt_state=jax.tree_util.tree_unflatten(program._opt_state_def, opt_state)
    )
    if state.get("seed", seed) != seed:
        raise ValueError(
            f"seed={seed} differs from the seed {state['seed']} the checkpoint {checkpoint} was trained "
            "with; resume with the same seed to continue the same run"
        )
    if "loader" in state and hasattr(train_loader, "load_state_dict"):
        train_loader.load_state_dict(state["loader"])
    params, opt_state = program.from_trees(params_model, opt_state_tree)
    return params, opt_state, state


class _Reporter:
    """The book's log lines, the progress bar, and the NaN check, for each chunk's losses."""

    def __init__(self, log, progress: bool, num_epochs: int, num_batches: int, start_epoch: int, checkpoint):
        self.log, self.num_epochs, self.num_batches, self.checkpoint = log, num_epochs, num_batches, checkpoint
        self.bar = (
            tqdm(total=num_epochs * num_batches, initial=start_epoch * num_batches, desc="train", unit="step")
            if progress
            else None
        )

    def losses(self, epoch: int, first_batch: int, global_step: int, losses: np.ndarray) -> list[float]:
        values = losses.tolist()
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                raise TrainingDivergedError(
                    f"loss became {value} at epoch {epoch + 1}, step {first_batch + offset} "
                    f"(global step {global_step + offset + 1}); stopping. "
                    f"{'The last checkpoint ' + repr(self.checkpoint) + ' is intact. ' if self.checkpoint else ''}"
                    "Try a smaller learning rate."
                )
            if self.log is not None:
                self.log(format_step_log(epoch + 1, self.num_epochs, first_batch + offset, self.num_batches, value))
        if self.bar is not None:
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
    fused: bool | None = None,
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
    - `fused`: True (the default, None, means True): chunks of batches run as one compiled
      `lax.scan` each. False: one jitted call a step, the reference the fused path equals
      bit for bit.
    - `device_data_bytes`: the budget for keeping an `ArrayDataset`'s arrays on the device
      (default: a quarter of the device's memory where JAX reports it, else 1 GiB). Larger
      data sets, and every other dataset, stream from the host in chunks.

    **Returns:**

    `(model, history)`: the trained model (the one passed in is unchanged) and a dict with
    `"loss"` (every step's loss, in order), `"epoch_loss"` (mean per epoch),
    `"val_accuracy"` (per epoch, if `val_loader`), `"compilations"` (how many distinct
    compiled calls the run made: one per batch shape and chunk length) and `"compiled"` (how
    many of those JAX had to compile now: 0 when an earlier `fit` in this process did).

    **Raises:** `TrainingDivergedError` (a `FloatingPointError`) naming the epoch and step if
    the loss becomes NaN or infinite, the last checkpoint staying as it was; `ValueError` for
    labels outside the model's classes, before training on them; `TypeError` for a batch that
    is not a `(features, labels, ...)` tuple.
    """
    num_batches = _check_fit_arguments(num_epochs, optimizer, train_loader, checkpoint, resume, seed, device_data_bytes)
    program = TrainProgram.create(model, optimizer, loss_fn=loss_fn, mesh=mesh)
    traces_before = program.traces
    params, opt_state = program.init(model)
    history: dict[str, Any] = {"loss": [], "epoch_loss": []}
    start_epoch = global_step = 0
    if resume and checkpoint is not None and os.path.exists(checkpoint):  # resume without one was refused above
        params, opt_state, state = _restore(checkpoint, program, model, opt_state, seed, train_loader)
        start_epoch, global_step, history = state["epoch"], state["global_step"], state["history"]
        if log is not None:
            log(f"Resumed from {checkpoint} after epoch {start_epoch:03d}/{num_epochs:03d}")
    if val_loader is not None:
        history.setdefault("val_accuracy", [])

    placement = program.placement
    params, opt_state, step_seed = placement.replicate((params, opt_state, np.uint32(seed % 2**32)))
    run = _Run(program, params, opt_state, step_seed, global_step=global_step)
    fused = True if fused is None else bool(fused)
    epoch_chunks = _batch_source(train_loader, model, placement, fused, device_data_bytes, loss_fn is cross_entropy)
    reporter = _Reporter(log, progress, num_epochs, num_batches, start_epoch, checkpoint)
    try:
        for epoch in range(start_epoch, num_epochs):
            sampler = getattr(train_loader, "sampler", None)
            if sampler is not None and hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            epoch_losses: list[float] = []
            for losses in _run_epoch(run, epoch_chunks(), lag=1 if fused else _STEP_LAG):
                done = len(epoch_losses)
                epoch_losses += reporter.losses(epoch, done + 1, global_step + done, losses)
            global_step = run.global_step
            history["loss"].extend(epoch_losses)
            history["epoch_loss"].append(float(np.mean(epoch_losses)) if epoch_losses else float("nan"))

            if val_loader is not None:
                accuracy = compute_accuracy(program.model(run.params, like=model), val_loader, mesh=mesh)
                history["val_accuracy"].append(accuracy)
                if log is not None:
                    log(f"Epoch: {epoch + 1:03d}/{num_epochs:03d} | Val accuracy: {accuracy:.2f}")
            history["compilations"] = len(run.programs)
            if checkpoint is not None and jax.process_index() == 0:
                _save(checkpoint, program, run, epoch, history, seed, train_loader)
    except TrainingDivergedError as error:
        # Not a learning-rate problem if the data itself is not finite: say where, instead.
        data = _nonfinite_data(train_loader)
        if data is None:
            raise
        raise TrainingDivergedError(str(error).replace("Try a smaller learning rate.", data)) from None
    finally:
        reporter.close()
    history["compilations"] = len(run.programs)
    history["compiled"] = program.traces - traces_before
    return program.model(run.params, like=model), history


def _nonfinite_data(loader) -> str | None:
    """Where an in-memory dataset's floating-point arrays hold NaN or infinity (looked at only after a divergence)."""
    dataset = getattr(loader, "dataset", None)
    for index, array in enumerate(getattr(dataset, "arrays", ())):
        array = np.asarray(array)
        if array.dtype.kind != "f" or array.ndim == 0:
            continue
        bad = ~np.isfinite(array)
        if bad.any():
            where = np.argwhere(bad)[0]
            column = f", column {int(where[1])}" if array.ndim > 1 else ""
            name = "features" if index == 0 else f"array {index}"
            return (
                f"The training data is not finite: the dataset's {name} hold {array[tuple(where)]} at row "
                f"{int(where[0])}{column} ({int(bad.sum())} such value(s) in all); remove or replace them."
            )
    return None


def _save(checkpoint: str, program: TrainProgram, run: _Run, epoch: int, history: dict, seed: int, loader) -> None:
    state = {"epoch": epoch + 1, "global_step": run.global_step, "history": history, "seed": seed}
    if hasattr(loader, "state_dict"):
        state["loader"] = loader.state_dict()
    params, opt_state = program.trees(run.params, run.opt_state)
    save_checkpoint(checkpoint, params=eqx.combine(params, program._static), opt_state=opt_state, metadata=state)


@eqx.filter_jit
def _count_correct(model, X, y):
    predictions = jnp.argmax(model(X), axis=-1)
    return jnp.sum(predictions == y)


def compute_accuracy(model, loader, mesh=None) -> float:
    """The fraction of examples in `loader` whose predicted class is the label, in [0, 1].

    The book's `compute_accuracy(model, dataloader)`: `model.eval()`, then for each batch
    `torch.argmax(logits, dim=1) == labels`, summed and divided by the count. Here the model
    runs in inference mode (`eqx.nn.inference_mode`: dropout off) and nothing computes a
    gradient. In a multi-process run (`mesh` spanning several processes, each with its own
    shard of the data) the counts are summed across processes, so every process gets the
    accuracy over all the shards together. As in PyTorch, a `DistributedSampler` pads the
    shards to equal length by repeating a few examples, which are then counted twice (at most
    `num_replicas - 1` of them).
    """
    model = eqx.nn.inference_mode(model)
    correct, total = 0, 0
    for features, labels, *_ in loader:
        labels = np.asarray(labels)
        correct += int(_count_correct(model, np.asarray(features), labels))
        total += labels.shape[0]
    if mesh is not None and jax.process_count() > 1:
        counts = multihost_utils.process_allgather(np.array([correct, total], dtype=np.int64))
        correct, total = (int(v) for v in np.asarray(counts).reshape(-1, 2).sum(axis=0))
    if total == 0:
        raise ValueError("compute_accuracy: the loader yielded no examples")
    return correct / total


@eqx.filter_jit
def _logits(model, X):
    return model(X)


def predict_proba(model, X) -> np.ndarray:
    """Class probabilities for `X`: `torch.softmax(model(X), dim=1)` under `torch.no_grad()`."""
    logits = _logits(eqx.nn.inference_mode(model), jnp.asarray(X))
    return np.asarray(jax.nn.softmax(logits, axis=-1))


def predict(model, X) -> np.ndarray:
    """Predicted class labels for `X`: `torch.argmax(model(X), dim=1)`."""
    return np.asarray(jnp.argmax(_logits(eqx.nn.inference_mode(model), jnp.asarray(X)), axis=-1))
