"""Where a training epoch's chunks come from: batches stacked on the host, or index orders into device data.

A chunk is a run of consecutive batches of one shape that runs as one compiled call. Two kinds:

- `HostChunk`: batches pulled from any loader and stacked on the host, steps first; sent to
  the device with the call.
- `IndexChunk`: the index orders of batches of a loader whose `device_plan()` says its batches
  are row gathers of arrays (an `ArrayDataset`); the arrays went to the device once, and only
  the indices travel.

Each checks what it is given before it runs (numeric dtypes, non-empty batches, labels within
the model's classes) so that bad data is named here, not discovered as a NaN later.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import numpy as np

from ..losses import check_labels
from .program import TrainProgram, TrainState, _takes_key, split_model

__all__ = ["HostChunk", "IndexChunk", "chunk_source", "CHUNK_BYTES", "MAX_CHUNK_STEPS"]

# Steps fused into one compiled call are bounded by the bytes of their stacked batches.
CHUNK_BYTES = 64 * 2**20
MAX_CHUNK_STEPS = 1024
# In-memory data sets up to this size go to the device once, when the device does not say how big it is.
DEFAULT_DEVICE_DATA_BYTES = 2**30


def chunk_limit(batch_bytes: int) -> int:
    """How many batches of `batch_bytes` bytes one chunk holds."""
    return max(1, min(MAX_CHUNK_STEPS, CHUNK_BYTES // max(1, batch_bytes)))


@dataclass(frozen=True)
class HostChunk:
    """Consecutive batches of one shape and dtype, stacked on the host: `Xs[k]`, `ys[k]` is batch `k`."""

    Xs: np.ndarray
    ys: np.ndarray

    @property
    def num_steps(self) -> int:
        return len(self.Xs)

    def run(self, program: TrainProgram, state: TrainState) -> tuple[TrainState, dict]:
        put = program.placement.put
        if self.num_steps == 1:  # one step: the step program, not a scan of length 1
            return program.step(state, (put(self.Xs[0]), put(self.ys[0])))
        return program.chunk(state, (put(self.Xs, stacked=True), put(self.ys, stacked=True)))

    def evaluate(self, program: TrainProgram, state: TrainState) -> dict:
        put = program.placement.put
        return program.evaluate(state, (put(self.Xs, stacked=True), put(self.ys, stacked=True)))

    def part(self, start: int, stop: int) -> HostChunk:
        return HostChunk(self.Xs[start:stop], self.ys[start:stop])

    def features(self, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Batch `k`'s features, and which rows of the dataset they are (unknown here: None)."""
        return self.Xs[k], None


@dataclass(frozen=True)
class IndexChunk:
    """Consecutive batches of one size as indices into arrays on the device: batch `k` is `data[i][indices[k]]`."""

    indices: np.ndarray
    data: tuple  # the arrays on the device
    host: tuple  # the same arrays on the host, to name bad values

    @property
    def num_steps(self) -> int:
        return len(self.indices)

    def run(self, program: TrainProgram, state: TrainState) -> tuple[TrainState, dict]:
        return program.gather_chunk(state, self.data, program.placement.put(self.indices, stacked=True))

    def evaluate(self, program: TrainProgram, state: TrainState) -> dict:
        return program.evaluate_gather(state, self.data, program.placement.put(self.indices, stacked=True))

    def part(self, start: int, stop: int) -> IndexChunk:
        return IndexChunk(self.indices[start:stop], self.data, self.host)

    def features(self, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Batch `k`'s features, and which rows of the dataset they are."""
        return self.host[0][self.indices[k]], self.indices[k]


Chunk = HostChunk | IndexChunk


def split_at(chunks: Iterator[Any], first_step: int, every: int | None, last_step: int | None) -> Iterator[Any]:
    """The same chunks, cut so that one ends at each multiple of `every` steps and at `last_step`.

    An evaluation point (or the end of a run of `max_steps`) falls between two compiled calls,
    never inside one; training between those points stays fused.
    """
    step = first_step
    for chunk in chunks:
        size, start = chunk.num_steps, 0
        while start < size:
            room = size - start
            if every:
                room = min(room, every - step % every)
            if last_step is not None:
                room = min(room, last_step - step)
            if room <= 0:
                return
            yield chunk if (start, room) == (0, size) else chunk.part(start, start + room)
            start += room
            step += room
        if last_step is not None and step >= last_step:
            return


class BatchCheck:
    """What `fit` checks in the data before training on it; each failure names what is wrong."""

    def __init__(self, model, labels_are_classes: bool, where: str = "train_loader"):
        self.model, self.model_state = split_model(model)
        self.where = where
        self.labels_are_classes = labels_are_classes
        self.num_outputs: int | None = None
        self.checked_model = False

    def dtypes(self, X: np.ndarray, y: np.ndarray) -> None:
        for name, array in (("features", X), ("labels", y)):
            if array.dtype.kind not in "biuf":
                raise TypeError(
                    f"fit: {self.where}'s {name} must be numbers (bool, int or float), got dtype {array.dtype}"
                    + (" (strings: map them to class indices first)" if array.dtype.kind in "USO" else "")
                )

    def _model_output(self, batch_shape: tuple, dtype) -> None:
        """The model's output for one batch, evaluated abstractly (nothing runs): one array of logits."""
        model = eqx.nn.inference_mode(self.model)
        kwargs = {"key": jax.random.key(0)} if _takes_key(self.model) else {}
        state = self.model_state

        def call(X):
            if state is None:
                return model(X, **kwargs)
            return jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(X, state)[0]

        try:
            out = jax.eval_shape(call, jax.ShapeDtypeStruct(batch_shape, dtype))
        except Exception:  # noqa: BLE001 - a model this cannot call abstractly fails in the step, with its own error
            return
        if not isinstance(out, jax.ShapeDtypeStruct):
            kind = type(out).__name__ + (f" of {len(out)}" if isinstance(out, (tuple, list)) else "")
            expected = "model(features) -> logits" if state is None else "model(x, state) -> (logits, state)"
            raise TypeError(
                f"fit: the model returned a {kind} for a batch, not one array of logits; fit trains "
                f"{expected} (wrap a model that returns more in one that returns the logits)"
            )
        if out.ndim:
            self.num_outputs = int(out.shape[-1])

    def __call__(self, Xs: np.ndarray, ys: np.ndarray) -> None:
        """Check a stack of batches (steps first) of one shape."""
        self.dtypes(Xs, ys)
        if not self.checked_model:
            self.checked_model = True
            self._model_output(Xs.shape[1:], Xs.dtype)
        if self.labels_are_classes and self.num_outputs is not None:
            check_labels(ys, self.num_outputs, f"fit: {self.where}")


def _empty_batch(epoch: int, batch: int, where: str = "train_loader") -> ValueError:
    return ValueError(
        f"fit: {where} gave an empty batch (no rows) at epoch {epoch + 1}, batch {batch}; "
        "a loss over no examples is not a number"
    )


def _features_and_labels(batch, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        got = (
            f"a {type(batch).__name__} of length {len(batch)}"
            if isinstance(batch, (tuple, list))
            else (f"a {type(batch).__name__}" + (f" with keys {sorted(batch)}" if isinstance(batch, dict) else ""))
        )
        raise TypeError(f"fit: each batch of {where} must be a (features, labels, ...) tuple, got {got}")
    return np.asarray(batch[0]), np.asarray(batch[1])


def host_chunks(
    batches, placement, max_steps: int, check: BatchCheck, epoch: int, skip: int = 0, max_batches: int | None = None
) -> Iterator[HostChunk]:
    """Runs of batches of one shape and dtype from any iterable, stacked on the host, up to `max_steps` each.

    The first `skip` batches are pulled and dropped (they were trained before a resume); at
    most `max_batches` batches follow.
    """
    run_X: list[np.ndarray] = []
    run_y: list[np.ndarray] = []
    shape = None
    limit = max_steps

    def stack() -> HostChunk:
        n = len(run_X)
        if n == 1:  # a view, no copy: the per-step path makes one chunk a batch
            Xs, ys = run_X[0][None], run_y[0][None]
        else:  # np.stack: 4x slower on 1000 tiny batches
            Xs = np.concatenate(run_X).reshape(n, *run_X[0].shape) if run_X[0].ndim else np.stack(run_X)
            ys = np.concatenate(run_y).reshape(n, *run_y[0].shape) if run_y[0].ndim else np.stack(run_y)
        check(Xs, ys)
        return HostChunk(Xs, ys)

    stop = None if max_batches is None else skip + max_batches
    for number, batch in enumerate(itertools.islice(batches, skip, stop), skip + 1):
        X, y = _features_and_labels(batch, check.where)
        if X.ndim and X.shape[0] == 0:
            raise _empty_batch(epoch, number, check.where)
        key = (X.shape, X.dtype, y.shape, y.dtype)
        if run_X and (key != shape or len(run_X) >= limit):
            yield stack()
            run_X, run_y = [], []
        if not run_X:
            shape = key
            check.dtypes(X, y)
            placement.check_batch(X.shape[0] if X.ndim else 0)
            limit = min(max_steps, chunk_limit(X.nbytes + y.nbytes))
        run_X.append(X)
        run_y.append(y)
    if run_X:
        yield stack()


def device_chunks(
    plan, data: tuple, placement, epoch: int, skip: int = 0, max_batches: int | None = None
) -> Iterator[IndexChunk]:
    """An epoch of a `DevicePlan` over arrays already on the device: each chunk is only its indices.

    The plan's index batches are pulled in blocks and split where their size changes, vectorised
    over the block (a Python step per batch costs a third of a fused tiny step). The first
    `skip` batches are dropped (they were trained before a resume); at most `max_batches` follow.
    """
    host = plan.arrays[:2]
    row_bytes = sum(array[0].nbytes for array in host) if len(host[0]) else 1
    index_type = np.int32 if len(host[0]) < 2**31 else np.int64
    batches = itertools.islice(plan.epochs(), skip, None if max_batches is None else skip + max_batches)
    first = next(batches, None)
    if first is None:
        return
    limit = chunk_limit(row_bytes * len(first))
    block_size = limit * max(1, MAX_CHUNK_STEPS // limit)  # whole chunks per block, as one list would give
    block = [first, *itertools.islice(batches, block_size - 1)]
    done = skip
    while block:
        sizes = np.fromiter(map(len, block), dtype=np.int64, count=len(block))
        edges = [0, *(np.flatnonzero(np.diff(sizes)) + 1).tolist(), len(block)]
        for start, stop in zip(edges[:-1], edges[1:]):
            size = int(sizes[start])
            if size == 0:
                raise _empty_batch(epoch, done + start + 1)
            placement.check_batch(size)
            run_limit = chunk_limit(row_bytes * size)
            for first_batch in range(start, stop, run_limit):
                run = block[first_batch : min(first_batch + run_limit, stop)]
                indices = np.concatenate(run).reshape(len(run), size)  # np.stack: 4x slower on 1000 tiny batches
                yield IndexChunk(indices.astype(index_type, copy=False), data, host)
        done += len(block)
        block = list(itertools.islice(batches, block_size))


def _device_budget(device_data_bytes: int | None) -> int:
    if device_data_bytes is not None:
        return device_data_bytes
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001 - backends without memory statistics
        stats = {}
    return int(stats["bytes_limit"]) // 4 if "bytes_limit" in stats else DEFAULT_DEVICE_DATA_BYTES


def chunk_source(
    loader,
    model,
    placement,
    fused: bool,
    device_data_bytes: int | None,
    labels_are_classes: bool,
    where: str = "train_loader",
) -> tuple[Callable[..., Iterator[Any]], bool]:
    """`(epoch_chunks, on_device)`: `epoch_chunks(epoch, skip, limit)` gives an epoch's chunks after its first
    `skip` batches, at most `limit` batches; `on_device` says whether the data went to the device.

    The data goes to the device when the loader offers a `device_plan()`, `fused` is on, the
    run is in one process, and the plan's features and labels fit `device_data_bytes`.
    """
    check = BatchCheck(model, labels_are_classes, where)
    plan = loader.device_plan() if callable(getattr(loader, "device_plan", None)) else None
    if (
        fused
        and plan is not None
        and len(plan.arrays) >= 2
        and not placement.multi_process
        and sum(array.nbytes for array in plan.arrays[:2]) <= _device_budget(device_data_bytes)
    ):
        features, labels = (np.asarray(array) for array in plan.arrays[:2])
        check(features[None], labels)
        data = placement.put_data((features, labels))
        return (lambda epoch, skip=0, limit=None: device_chunks(plan, data, placement, epoch, skip, limit)), True
    max_steps = MAX_CHUNK_STEPS if fused else 1
    return (
        lambda epoch, skip=0, limit=None: host_chunks(loader, placement, max_steps, check, epoch, skip, limit)
    ), False
