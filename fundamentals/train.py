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

The model is split once into its arrays (`params`, what the optimizer sees) and the rest
(`static`, the structure), outside the compiled step, so the step is one `jax.jit` of loss,
gradient, optimizer update and apply that never recompiles after the first epoch (a ragged
last batch, or a shorter last chunk of a fused epoch, is one more shape, compiled once).

When the loader reads an in-memory `ArrayDataset`, a whole epoch runs as one compiled
`lax.scan` over its batches (in chunks, so memory stays bounded): the batch order still comes
from the loader's host RNG, so the losses and parameters are bit for bit those of the
one-call-per-step path, at a fraction of the dispatch cost.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .autograd import check_labels, cross_entropy
from .checkpoint import load_checkpoint, save_checkpoint
from .data import reads_arrays
from .parallel import DATA_AXIS, batch_sharding, check_batch_size, replicated_sharding

__all__ = [
    "fit",
    "compute_accuracy",
    "predict",
    "predict_proba",
    "TrainingDivergedError",
    "format_step_log",
    "enable_compilation_cache",
]

# Steps fused into one compiled call are bounded by the bytes of their stacked batches.
_CHUNK_BYTES = 64 * 2**20
_MAX_CHUNK_STEPS = 1024


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


def _local(tree):
    """The same pytree with every multi-process replicated array replaced by this process's copy."""

    def local(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return jnp.asarray(leaf.addressable_shards[0].data)
        return leaf

    return jax.tree_util.tree_map(local, tree)


def _host(array) -> np.ndarray:
    """A NumPy copy of an array, also of a replicated array that spans several processes."""
    return np.asarray(_local(array))


@dataclass
class _Placement:
    """Where batches and parameters live: one device, or a data-parallel mesh."""

    mesh: Any = None
    block_each_call: bool = False

    def __post_init__(self):
        if self.mesh is not None:
            if DATA_AXIS not in self.mesh.axis_names:
                raise ValueError(f"mesh must have a {DATA_AXIS!r} axis (see data_mesh), got axes {self.mesh.axis_names}")
            self.batch = batch_sharding(self.mesh)
            # A stack of batches, steps first: the scan walks axis 0, each step's batch is split.
            self.stacked = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(None, DATA_AXIS))
            self.replicated = replicated_sharding(self.mesh)
            self.multi_process = jax.process_count() > 1
            # Simulated CPU devices can deadlock XLA's all-reduce when many steps are queued.
            self.block_each_call = all(d.platform == "cpu" for d in self.mesh.devices.flat)

    def check_batch(self, local_batch_size: int) -> None:
        if self.mesh is None:
            return
        try:
            check_batch_size(local_batch_size * jax.process_count(), self.mesh)
        except ValueError as error:
            per = f" ({local_batch_size} rows in each of {jax.process_count()} processes)" if self.multi_process else ""
            raise ValueError(f"{error}{per}; or drop_last=True to drop a ragged last batch") from None

    def replicate(self, tree):
        if self.mesh is None:
            return tree
        if self.multi_process:
            return jax.tree_util.tree_map(
                lambda x: jax.make_array_from_process_local_data(self.replicated, np.asarray(x), np.shape(x)), tree
            )
        return jax.device_put(tree, self.replicated)

    def put(self, array: np.ndarray, stacked: bool = False):
        """Send a batch (or a stack of batches, steps first) to where the step runs."""
        if self.mesh is None:
            return array
        sharding = self.stacked if stacked else self.batch
        if self.multi_process:
            return jax.make_array_from_process_local_data(sharding, array)
        return jax.device_put(array, sharding)

    def shardings(self, fused: bool):
        if self.mesh is None:
            return {}
        data = self.stacked if fused else self.batch
        rep = self.replicated
        return {"in_shardings": (rep, rep, data, data, rep, rep), "out_shardings": (rep, rep, rep)}


class _Steps:
    """The compiled train step, and the same step scanned over a chunk of batches.

    Both take and return the parameters and the optimizer state as flat lists of arrays
    (`flatten` / `unflatten` convert): on every call `jax.jit` flattens its arguments and
    unflattens its results, in C++ for lists but through Python callbacks for Equinox
    modules, which cost about 20 µs a step for the book's model (a third of the step).
    """

    def __init__(
        self, static, optimizer: optax.GradientTransformation, takes_key: bool, loss_fn, placement, params, opt_state
    ):
        self.traces = 0
        self.params_def = jax.tree_util.tree_structure(params)
        self.opt_state_def = jax.tree_util.tree_structure(opt_state)

        def train_step(param_leaves, opt_state_leaves, X, y, step, seed):
            self.traces += 1  # runs only while tracing: counts compilations
            params, opt_state = self.unflatten(param_leaves, opt_state_leaves)

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
            return (*self.flatten(optax.apply_updates(params, updates), opt_state), loss)

        def train_chunk(params, opt_state, Xs, ys, steps, seed):
            def body(carry, batch):
                X, y, step = batch
                p, o, loss = train_step(*carry, X, y, step, seed)
                return (p, o), loss

            (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), (Xs, ys, steps))
            return params, opt_state, losses

        self.step = jax.jit(train_step, **placement.shardings(fused=False))
        self.chunk = jax.jit(train_chunk, **placement.shardings(fused=True))

    def flatten(self, params, opt_state) -> tuple[list, list]:
        return jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(opt_state)

    def unflatten(self, param_leaves, opt_state_leaves):
        return (
            jax.tree_util.tree_unflatten(self.params_def, param_leaves),
            jax.tree_util.tree_unflatten(self.opt_state_def, opt_state_leaves),
        )


def _num_outputs(model, X: np.ndarray) -> int:
    """The size of the model's last output axis, from its abstract evaluation on one example."""
    out = jax.eval_shape(eqx.nn.inference_mode(model), jax.ShapeDtypeStruct(X.shape[1:], X.dtype))
    return int(out.shape[-1])


def _can_fuse(loader) -> bool:
    return reads_arrays(loader) and len(loader.dataset.arrays) == 2 and loader.num_workers == 0


def _chunks(batches: list[np.ndarray], row_bytes: int) -> list[list[np.ndarray]]:
    """Split an epoch's index batches into runs of equal-size batches, bounded in bytes."""
    # Vectorised over batches: a Python loop per batch cost 1.5 µs a step, a third of a fused tiny step.
    sizes = np.fromiter(map(len, batches), dtype=np.int64, count=len(batches))
    edges = [0, *(np.flatnonzero(np.diff(sizes)) + 1).tolist(), len(batches)]
    runs: list[list[np.ndarray]] = []
    for start, stop in zip(edges[:-1], edges[1:]):
        limit = max(1, min(_MAX_CHUNK_STEPS, _CHUNK_BYTES // max(1, row_bytes * int(sizes[start]))))
        runs.extend(batches[i : min(i + limit, stop)] for i in range(start, stop, limit))
    return runs


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
    - `train_loader`: a `DataLoader` (or any iterable of `(features, labels)` batches with a
      `len`). If its sampler has `set_epoch`, it is called before every epoch, as PyTorch's
      `DistributedSampler` needs.
    - `num_epochs`: how many epochs in total (also when resuming).
    - `val_loader`: if given, `compute_accuracy` on it after every epoch.
    - `log`: receives one line per step in the book's format, and per-epoch validation lines;
      None is silent. With fused epochs the lines of a chunk arrive when the chunk finishes.
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
    - `fused`: run whole epochs as one `lax.scan` (True), one jitted call per step (False),
      or decide (None: fused whenever the loader reads an `ArrayDataset` in the main thread).

    **Returns:**

    `(model, history)`: the trained model (the one passed in is unchanged) and a dict with
    `"loss"` (every step's loss, in order), `"epoch_loss"` (mean per epoch),
    `"val_accuracy"` (per epoch, if `val_loader`) and `"compilations"` (how many programs
    were traced: one step per distinct batch shape, and with fused epochs one scan per
    distinct chunk length; all of them in the first epoch, none after).

    **Raises:** `TrainingDivergedError` (a `FloatingPointError`) naming the epoch and step if
    the loss becomes NaN or infinite; the last checkpoint stays as it was.
    """
    if isinstance(num_epochs, bool) or not isinstance(num_epochs, (int, np.integer)) or num_epochs < 0:
        raise ValueError(f"num_epochs must be a non-negative int, got {num_epochs!r}")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation (e.g. optax.sgd(0.5)), got {type(optimizer).__name__}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=PATH to resume from")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    try:
        num_batches = len(train_loader)
    except TypeError:
        raise TypeError(f"train_loader must have a length (a DataLoader), got {type(train_loader).__name__}") from None
    if num_batches == 0:
        raise ValueError("train_loader yields no batches: the dataset is smaller than batch_size with drop_last=True")
    if fused is None:
        fused = _can_fuse(train_loader)
    elif fused and not _can_fuse(train_loader):
        raise ValueError("fused=True needs a DataLoader over an ArrayDataset(X, y) with num_workers=0 and no collate_fn")

    placement = _Placement(mesh)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt_state = optimizer.init(params)
    history: dict[str, Any] = {"loss": [], "epoch_loss": []}
    if val_loader is not None:
        history["val_accuracy"] = []
    start_epoch, global_step = 0, 0

    if resume:
        import os

        if os.path.exists(checkpoint):
            params_model, opt_state, state = load_checkpoint(checkpoint, params=model, opt_state=opt_state)
            params = eqx.filter(params_model, eqx.is_inexact_array)
            if state.get("seed", seed) != seed:
                raise ValueError(
                    f"seed={seed} differs from the seed {state['seed']} the checkpoint {checkpoint} was trained "
                    "with; resume with the same seed to continue the same run"
                )
            start_epoch, global_step = state["epoch"], state["global_step"]
            history = state["history"]
            if val_loader is not None:
                history.setdefault("val_accuracy", [])
            if "loader" in state and hasattr(train_loader, "load_state_dict"):
                train_loader.load_state_dict(state["loader"])
            if log is not None:
                log(f"Resumed from {checkpoint} after epoch {start_epoch:03d}/{num_epochs:03d}")

    steps = _Steps(static, optimizer, _takes_key(model), loss_fn, placement, params, opt_state)
    params, opt_state, seed_array = placement.replicate((params, opt_state, np.uint32(seed % 2**32)))
    # From here on `params` and `opt_state` are flat lists of arrays, as the compiled steps take them.
    params, opt_state = steps.flatten(params, opt_state)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_epochs * num_batches, initial=start_epoch * num_batches, desc="train", unit="step")

    dataset_arrays = train_loader.dataset.arrays if fused else None
    row_bytes = sum(a[0].nbytes for a in dataset_arrays) if fused else 0
    # Labels outside [0, classes) make cross-entropy NaN, which would be blamed on the learning rate.
    check_each_batch = loss_fn is cross_entropy and not fused
    if loss_fn is cross_entropy and fused:
        check_labels(dataset_arrays[1], _num_outputs(model, dataset_arrays[0]), "fit: train_loader")
    num_outputs = None
    try:
        for epoch in range(start_epoch, num_epochs):
            sampler = getattr(train_loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            epoch_losses: list[float] = []

            def report(losses: np.ndarray, first_batch: int) -> None:
                values = losses.tolist()
                for offset, value in enumerate(values):
                    batch_number = first_batch + offset
                    if not math.isfinite(value):
                        raise TrainingDivergedError(
                            f"loss became {value} at epoch {epoch + 1}, step {batch_number} "
                            f"(global step {global_step - len(losses) + offset + 1}); stopping. "
                            f"{'The last checkpoint ' + repr(checkpoint) + ' is intact. ' if checkpoint else ''}"
                            "Try a smaller learning rate."
                        )
                    if log is not None:
                        log(format_step_log(epoch + 1, num_epochs, batch_number, num_batches, value))
                epoch_losses.extend(values)
                if bar is not None:
                    bar.update(len(losses))
                    bar.set_postfix(loss=f"{losses[-1]:.4f}")

            batch_number = 1
            if fused:
                batches = train_loader.epoch_indices()
                for run in _chunks(batches, row_bytes):
                    indices = np.concatenate(run).reshape(len(run), -1)  # np.stack: 4× slower on 1000 tiny batches
                    X, y = (array[indices] for array in dataset_arrays)
                    placement.check_batch(indices.shape[1])
                    step_ids = np.arange(global_step, global_step + len(run), dtype=np.int32)
                    if len(run) == 1:
                        params, opt_state, loss = steps.step(
                            params, opt_state, placement.put(X[0]), placement.put(y[0]),
                            placement.replicate(step_ids[0]), seed_array,
                        )
                        losses = loss[None]
                    else:
                        params, opt_state, losses = steps.chunk(
                            params, opt_state, placement.put(X, stacked=True), placement.put(y, stacked=True),
                            placement.replicate(step_ids), seed_array,
                        )
                    if placement.block_each_call:
                        losses.block_until_ready()
                    global_step += len(run)
                    report(_host(losses), batch_number)
                    batch_number += len(run)
            else:
                pending: list = []
                # Fetching a loss waits for its step; fetch in groups so dispatch stays asynchronous.
                flush_every = 32
                for features, labels, *_ in train_loader:
                    features, labels = np.asarray(features), np.asarray(labels)
                    placement.check_batch(features.shape[0])
                    if check_each_batch and epoch == start_epoch:  # labels are the same every epoch
                        num_outputs = num_outputs or _num_outputs(model, features)
                        check_labels(labels, num_outputs, "fit: train_loader")
                    params, opt_state, loss = steps.step(
                        params, opt_state, placement.put(features), placement.put(labels),
                        placement.replicate(np.int32(global_step)), seed_array,
                    )
                    if placement.block_each_call:
                        loss.block_until_ready()
                    global_step += 1
                    pending.append(loss)
                    if len(pending) >= flush_every:
                        report(np.array([_host(x) for x in pending]), batch_number)
                        batch_number += len(pending)
                        pending = []
                if pending:
                    report(np.array([_host(x) for x in pending]), batch_number)
            history["loss"].extend(epoch_losses)
            history["epoch_loss"].append(float(np.mean(epoch_losses)) if epoch_losses else float("nan"))

            if val_loader is not None:
                current = eqx.combine(jax.tree_util.tree_unflatten(steps.params_def, _local(params)), static)
                accuracy = compute_accuracy(current, val_loader, mesh=mesh)
                history["val_accuracy"].append(accuracy)
                if log is not None:
                    log(f"Epoch: {epoch + 1:03d}/{num_epochs:03d} | Val accuracy: {accuracy:.2f}")

            history["compilations"] = steps.traces
            if checkpoint is not None and jax.process_index() == 0:
                state = {
                    "epoch": epoch + 1,
                    "global_step": global_step,
                    "history": history,
                    "seed": seed,
                }
                if hasattr(train_loader, "state_dict"):
                    state["loader"] = train_loader.state_dict()
                params_tree, opt_state_tree = steps.unflatten(_local(params), _local(opt_state))
                save_checkpoint(
                    checkpoint, params=eqx.combine(params_tree, static), opt_state=opt_state_tree, metadata=state
                )
    finally:
        if bar is not None:
            bar.close()
    history["compilations"] = steps.traces
    return eqx.combine(jax.tree_util.tree_unflatten(steps.params_def, _local(params)), static), history


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
        from jax.experimental import multihost_utils

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


def default_cache_dir() -> str:
    """Where the CLI keeps JAX's persistent compilation cache: `$XDG_CACHE_HOME/fundamentals/jax`."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fundamentals", "jax")


def enable_compilation_cache(directory: str | None = None) -> str:
    """Turn on JAX's persistent compilation cache, with thresholds low enough to cache small steps.

    A compiled train step is then read from disk on the next run instead of compiled again
    (about 0.3 s cold against about 0.01 s warm for the book's step on a CPU). JAX's defaults
    skip entries that compiled in under a second, which is every step of a small model, so
    the minimum compile time and entry size are set to zero here.

    **Returns:** the cache directory.
    """
    directory = directory or default_cache_dir()
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    return directory
