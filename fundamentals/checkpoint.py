"""Saving and loading models and training state (appendix A.8).

Model files are safetensors, or PyTorch's own `.pth` format when the name ends in `.pth` or
`.pt`; both hold PyTorch's `state_dict` keys, so a model saved here loads into the book's
PyTorch model, and the book's file loads here:

```python
# PyTorch                                         # fundamentals
torch.save(model.state_dict(), "model.pth")       fm.save_model(model, "model.pth")  # or "model.safetensors"
model = NeuralNetwork(2, 2)                       model = fm.load_model("model.pth", like=fm.NeuralNetwork(2, 2, key=key))
model.load_state_dict(torch.load("model.pth"))    model = fm.load_model("model.safetensors")  # architecture stored

# and the files this library wrote, in PyTorch:
torch_model.load_state_dict(torch.load("model.pth", weights_only=True))
torch_model.load_state_dict(safetensors.torch.load_file("model.safetensors"))
```

Every file is written atomically: to a temporary file in the same folder, flushed to disk,
then moved over the target with `os.replace`. A crash mid-write leaves the previous file as
it was; a failed load leaves the model you had.
"""

from __future__ import annotations

import json
import os
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save

from ._checks import cut
from ._files import atomic_write_bytes, check_output_path, check_regular
from .nn import (
    NeuralNetwork,
    _named_arrays,
    load_state_dict,
    parameter_shapes,
    state_dict,
)
from .torchfile import TorchFileError, _brief, is_torch_file, torch_load, torch_save

__all__ = ["save_model", "load_model", "CheckpointError", "save_checkpoint", "load_checkpoint", "atomic_write_bytes"]

_FORMAT = "fundamentals.model/1"
_TORCH_SUFFIXES = (".pth", ".pt")
_CHECKPOINT_FORMAT = "fundamentals.checkpoint/1"
_COUNTER_LIMIT = 2**31 - 1  # epochs and steps: the training loop counts them in int32


def _json(text: str):
    """`json.loads`, with a hand-edited header nested too deeply turned into a `ValueError`, as other bad JSON is."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("its JSON is nested too deeply") from None


class CheckpointError(ValueError):
    """A model or checkpoint file that is missing, unreadable, or for another model."""


def _serialise(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """A safetensors file's bytes, the same for the same tensors and metadata.

    safetensors writes its metadata in the order of a Rust hash map, which changes from one
    process to the next: the header is written again here with the metadata sorted by key
    (the tensors' order and offsets, which safetensors sorts itself, are kept).
    """
    # safetensors wants C-contiguous arrays. Not np.ascontiguousarray: it turns a 0-d array
    # (Adam's step count) into shape (1,), and the checkpoint then no longer fits the optimizer.
    data = save({k: np.require(v, requirements="C") for k, v in tensors.items()}, metadata=metadata)
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    if "__metadata__" in header:
        header = {"__metadata__": dict(sorted(header.pop("__metadata__").items())), **header}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the tensors' data starts 8-byte aligned, as safetensors pads it
    return struct.pack("<Q", len(text)) + text + memoryview(data)[8 + length :]


def _read(path: str | os.PathLike, what: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    path = Path(path)
    try:  # a FIFO would block safetensors' reader, a device never end: only regular files are read
        check_regular(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise CheckpointError(f"{what} path is a folder, not a file: {path}") from None
    except ValueError as error:
        raise CheckpointError(f"cannot read {what} file: {error}; only regular files are read") from None
    try:
        with safe_open(str(path), framework="numpy") as file:
            metadata = dict(file.metadata() or {})
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except Exception as error:  # noqa: BLE001 - safetensors raises several types for bad files
        raise CheckpointError(
            f"cannot read {what} file {path}: it is truncated, corrupted or not a safetensors file ({error})"
        ) from None
    return tensors, metadata


def _architecture(model) -> dict[str, Any] | None:
    if isinstance(model, NeuralNetwork):
        return {
            "num_inputs": model.num_inputs,
            "num_outputs": model.num_outputs,
            "hidden": list(model.hidden),
            "dropout": model.dropout,
        }
    return None


def _model_arrays(model) -> dict[str, np.ndarray]:
    """`state_dict(model)` for any Equinox module, refusing two arrays whose paths spell the same key."""
    keys = [key for key, _ in _named_arrays(model)[0]]
    if len(set(keys)) != len(keys):
        twice = sorted({key for key in keys if keys.count(key) > 1})
        raise ValueError(f"save_model: two arrays of the model have the same key {twice[0]!r}; rename a field")
    return state_dict(model)


def _model_tensors(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in tensors.items() if not k.startswith(("optimizer.", "history.", "extra."))}


def _checked_architecture(path, text: str, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    """The architecture in a file's header, checked against the file's own tensors before anything is built.

    A header claiming a hidden size of 10^8 over a few kilobytes of tensors is refused here,
    without allocating the network it describes.
    """
    try:
        architecture = _json(text)
        if not isinstance(architecture, dict):
            raise TypeError(f"expected a JSON object, got {type(architecture).__name__}")
        sizes = {"num_inputs": architecture["num_inputs"], "num_outputs": architecture["num_outputs"]}
        hidden = architecture["hidden"]
        dropout = architecture.get("dropout", 0.0)
        if not isinstance(hidden, list):
            raise TypeError(f"'hidden' must be a list of sizes, got {type(hidden).__name__}")
        for name, value in [*sizes.items(), *((f"hidden[{i}]", h) for i, h in enumerate(hidden))]:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TypeError(f"{name!r} must be a positive integer, got {_brief(value)}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise TypeError(f"'dropout' must be a number in [0, 1), got {_brief(dropout)}")
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path} has invalid architecture metadata: {cut(str(error), 200)}") from None
    if 2 * (len(hidden) + 1) != len(tensors):
        raise CheckpointError(
            f"{path}: its architecture metadata describes {len(hidden) + 1} layers ({2 * (len(hidden) + 1)} arrays), "
            f"but the file holds {len(tensors)} arrays"
        )
    for key, shape in parameter_shapes(sizes["num_inputs"], sizes["num_outputs"], hidden, dropout).items():
        if key not in tensors:
            raise CheckpointError(
                f"{path}: its architecture metadata needs array {key!r}, which the file does not hold"
            )
        if tuple(tensors[key].shape) != shape:
            raise CheckpointError(
                f"{path}: its architecture metadata says {key!r} has shape {shape}, the file's array has "
                f"{tuple(tensors[key].shape)}"
            )
    return {**sizes, "hidden": hidden, "dropout": float(dropout)}


def save_model(model, path: str | os.PathLike) -> Path:
    """Save any Equinox module's arrays with PyTorch's `state_dict` keys (`layers.0.weight`), atomically.

    Replaces `torch.save(model.state_dict(), path)`. A name ending in `.pth` or `.pt` gets
    PyTorch's format (`torch.load(path, weights_only=True)` reads it, and the book's
    `model.load_state_dict` takes what it returns); any other name gets safetensors. In a
    safetensors file a `NeuralNetwork`'s architecture (inputs, outputs, hidden sizes,
    dropout) goes into the metadata, so `load_model` can rebuild it without `like=`.

    **Arguments:**

    - `model`: an `eqx.Module` (or any pytree of arrays); keys come from its pytree paths.
    - `path`: the file to write.

    **Returns:** the path written.

    **Raises:** `TypeError` if `model` holds no arrays (a PyTorch module, an empty dict), before
    anything is written; `ValueError` if two arrays' paths spell the same key; the errors of
    `atomic_write_bytes` for a path that cannot be written.
    """
    arrays = _model_arrays(model)
    if not arrays:
        raise TypeError(
            f"save_model: expected an Equinox model (such as NeuralNetwork) or a pytree holding arrays, "
            f"got {type(model).__module__}.{type(model).__name__} with no JAX or NumPy arrays in it"
            + (
                "; for a PyTorch module, save model.state_dict() with torch.save"
                if hasattr(model, "state_dict")
                else ""
            )
        )
    if Path(path).suffix.lower() in _TORCH_SUFFIXES:
        return torch_save(OrderedDict(arrays), path)  # torch's state_dict is an OrderedDict
    metadata = {"format": _FORMAT}
    architecture = _architecture(model)
    if architecture is not None:
        metadata["architecture"] = json.dumps(architecture)
    return atomic_write_bytes(path, _serialise(arrays, metadata))


def _read_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A `.pth` file's state dict (key -> array), read without torch; a clear error for anything else."""
    try:
        state = torch_load(path)
    except TorchFileError as error:
        raise CheckpointError(str(error)) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict (a dict of key -> tensor)")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise CheckpointError(
                f"{path} is not a state dict: key {_brief(key)} holds a value of type {type(value).__name__}, not a tensor "
                f"(a training checkpoint? read it with fm.torch_load and pass its model state dict)"
            )
    return dict(state)


def _is_torch_file(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_file() and is_torch_file(path)


def load_model(path: str | os.PathLike, like=None):
    """Load a model from a safetensors or a PyTorch `.pth` file, into any Equinox module's structure.

    Replaces `model = NeuralNetwork(2, 2); model.load_state_dict(torch.load(path))`. The format
    is decided by the file's content, not its name; `.pth` files are read without torch and
    as safely as `torch.load(weights_only=True)`.

    **Arguments:**

    - `path`: the file.
    - `like`: a model with the structure to fill (any `eqx.Module`). If None, a
      `NeuralNetwork` is rebuilt from the architecture stored in a safetensors file written
      by `save_model`.

    **Returns:** a new model; `like` is unchanged.

    **Raises:** `FileNotFoundError` for a missing file; `CheckpointError` (a `ValueError`)
    for a truncated, corrupted or refused file, for a file without an architecture when
    `like` is None, and for a file whose keys or shapes differ from the model's (naming the
    key and both shapes).
    """
    metadata: dict[str, str] = {}  # a .pth file has none
    if _is_torch_file(path):
        tensors = _read_torch_state_dict(path)
    else:
        tensors, metadata = _read(path, "model")
        if metadata.get("format") == _CHECKPOINT_FORMAT:  # a training checkpoint also holds a model
            tensors = _model_tensors(tensors)
    if like is None:
        if "architecture" not in metadata:
            raise CheckpointError(
                f"{path} has no architecture metadata (not a safetensors file written by save_model); "
                "pass like=<a model of the same shape>"
            )
        architecture = _checked_architecture(path, metadata["architecture"], tensors)
        like = NeuralNetwork(
            architecture["num_inputs"],
            architecture["num_outputs"],
            hidden=tuple(architecture["hidden"]),
            dropout=architecture["dropout"],
            key=jax.random.key(0),
        )
    try:
        return load_state_dict(like, tensors)
    except ValueError as error:
        raise CheckpointError(f"{path} does not fit the model: {error}") from None


def convert(source: str | os.PathLike, destination: str | os.PathLike) -> tuple[int, Path]:
    """Convert a state dict file between PyTorch's `.pth` and safetensors (`fundamentals convert SRC DST`).

    The source's format is read from its content, the destination's from its suffix (`.pth`
    or `.pt`: PyTorch's; anything else: safetensors). Keys, dtypes and values are unchanged;
    safetensors metadata has no place in a `.pth` file and is dropped.

    **Returns:** `(number of tensors, path written)`.

    **Raises:** `FileNotFoundError` for a missing source; `CheckpointError` for a broken or
    refused source (a FIFO or device too), one that is not a flat key -> tensor state dict, or
    one whose expanded (stride-0) tensors would write far more than the file holds; the errors
    of `check_output_path` for a destination that cannot be written (a FIFO, a device, a
    read-only folder, a full disk: checked before the source is read). Nothing is written then.
    """
    source, destination = Path(source), Path(destination)
    check_output_path(destination)  # a FIFO, device, folder or read-only folder: refused before reading
    metadata: dict[str, str] = {}  # a .pth file has none
    if _is_torch_file(source):
        tensors = _read_torch_state_dict(source)
        _check_expanded_size(source, tensors)
    else:
        tensors, metadata = _read(source, "source")
    if destination.suffix.lower() in _TORCH_SUFFIXES:
        return len(tensors), torch_save(OrderedDict(tensors), destination)
    try:
        data = _serialise(tensors, metadata)
    except Exception as error:  # noqa: BLE001 - safetensors names what it cannot store
        raise CheckpointError(f"cannot write {destination} as safetensors: {error}") from None
    return len(tensors), atomic_write_bytes(destination, data)


def _check_expanded_size(source: Path, tensors: dict[str, np.ndarray]) -> None:
    """Refuse to write out expanded (stride-0) views far larger than the file they came from.

    A tensor of 10^9 elements viewing one stored number is a few hundred bytes in a `.pth`
    file; written out it takes its full size. The output may take what `torch_load` allows
    the file to take in memory: its own size plus 64 MiB.
    """
    total = sum(int(array.nbytes) for array in tensors.values())
    limit = source.stat().st_size + (64 << 20)
    if total > limit:
        raise CheckpointError(
            f"{source} holds expanded tensors that take {total:,} bytes written out, far more than the file "
            f"({limit:,} bytes allowed: its size plus 64 MiB); nothing was written"
        )


def _optimizer_signature(opt_state) -> dict[str, Any]:
    """What identifies an optimizer's state: the names of its state types, and each array's shape and dtype.

    `optax.sgd(lr, momentum=0.9)` and `optax.rmsprop(lr)` both keep one array per parameter;
    only the state types (`TraceState` against `ScaleByRmsState`) tell them apart.
    """
    names: list[str] = []

    def visit(node) -> None:
        if isinstance(node, tuple) and hasattr(node, "_fields"):  # optax states are NamedTuples
            names.append(type(node).__name__)
        if isinstance(node, (tuple, list)):
            for child in node:
                visit(child)
        elif isinstance(node, dict):
            for child in node.values():
                visit(child)

    visit(opt_state)
    leaves = [
        [list(np.shape(leaf)), np.dtype(np.asarray(leaf).dtype).name] for leaf in jax.tree_util.tree_leaves(opt_state)
    ]
    return {"states": names, "leaves": leaves}


def _history_arrays(history: dict) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Split a history into per-step number lists, stored as arrays, and the rest, kept in the JSON header."""
    arrays: dict[str, np.ndarray] = {}
    rest: dict[str, Any] = {}
    for name, value in history.items():
        if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            arrays[f"history.{name}"] = np.asarray(value, dtype=np.int64)  # steps: they come back as ints
        elif isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            values = np.asarray(value, dtype=np.float64)
            narrow = values.astype(np.float32)  # losses are float32 values: half the bytes, exactly
            exact = np.array_equal(narrow.astype(np.float64), values, equal_nan=True)
            arrays[f"history.{name}"] = narrow if exact else values
        else:
            rest[name] = value
    return arrays, rest


def save_checkpoint(
    path: str | os.PathLike, *, params, opt_state, metadata: dict[str, Any], arrays: dict[str, Any] | None = None
) -> Path:
    """Write a training checkpoint atomically: parameters, optimizer state, history and JSON metadata.

    **Arguments:**

    - `path`: the file.
    - `params`: the model (its arrays are stored under their PyTorch keys, so the file also
      loads as a model).
    - `opt_state`: the optimizer state; its arrays are stored as `optimizer.0`, `optimizer.1`,
      ... in tree order, and its state types and array shapes in the header, so that
      `load_checkpoint` can refuse another optimizer.
    - `metadata`: epoch, step, loader RNG state, seed and `history` (JSON-serialisable). The
      history's lists of numbers (every step's loss) are stored as arrays `history.loss`,
      ..., so the header stays small however long the run.
    - `arrays`: other arrays of the run (a model's state, callbacks' arrays), by name; stored
      as `extra.NAME` and given back by `load_checkpoint` in `metadata["arrays"]`.

    **Returns:** the path written.
    """
    tensors = state_dict(params)
    for i, leaf in enumerate(jax.tree_util.tree_leaves(opt_state)):
        tensors[f"optimizer.{i}"] = np.asarray(leaf)
    for name, value in (arrays or {}).items():
        tensors[f"extra.{name}"] = np.asarray(value)
    state = dict(metadata)
    if isinstance(state.get("history"), dict):
        history_arrays, state["history"] = _history_arrays(state["history"])
        tensors.update(history_arrays)
    header = {
        "format": _CHECKPOINT_FORMAT,
        "state": json.dumps(state),
        "optimizer": json.dumps(_optimizer_signature(opt_state)),
    }
    architecture = _architecture(params)
    if architecture is not None:
        header["architecture"] = json.dumps(architecture)
    return atomic_write_bytes(path, _serialise(tensors, header))


def _check_optimizer(path, header: dict[str, str], opt_state) -> None:
    if "optimizer" not in header:
        return  # written before checkpoints recorded the optimizer: only the arrays can be compared
    try:
        stored = _json(header["optimizer"])
        stored_states, stored_leaves = stored["states"], stored["leaves"]
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"checkpoint {path} has invalid optimizer metadata: {cut(str(error), 200)}") from None
    current = _optimizer_signature(opt_state)
    if stored_states != current["states"] or stored_leaves != current["leaves"]:

        def describe(states, leaves):
            return f"{' + '.join(states) or 'no state types'} with {len(leaves)} arrays"

        if stored_states == current["states"] and len(stored_leaves) == len(current["leaves"]):
            i = next(i for i, (a, b) in enumerate(zip(stored_leaves, current["leaves"])) if a != b)
            raise CheckpointError(
                f"checkpoint {path} was written for another optimizer state: its array {i} is "
                f"{stored_leaves[i][1]} {tuple(stored_leaves[i][0])}, this optimizer's is "
                f"{current['leaves'][i][1]} {tuple(current['leaves'][i][0])}"
            )
        raise CheckpointError(
            f"checkpoint {path} was written for another optimizer: its state is "
            f"{describe(stored_states, stored_leaves)}, this optimizer's is "
            f"{describe(current['states'], current['leaves'])}; resume with the optimizer it was trained with"
        )


def _checked_state(path, header: dict[str, str], tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    """The checkpoint's JSON state, each field the training loop reads checked, with the history arrays put back."""
    try:
        state = _json(header["state"])
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} has invalid metadata: {cut(str(error), 200)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path}: its state must be a JSON object, got {type(state).__name__}")
    for field in ("epoch", "global_step"):
        if field not in state:
            raise CheckpointError(f"checkpoint {path}: its state has no {field!r} field")
        value = state[field]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _COUNTER_LIMIT:
            raise CheckpointError(
                f"checkpoint {path}: field {field!r} must be an integer from 0 to {_COUNTER_LIMIT:,}, got {_brief(value)}"
            )
    if "seed" in state and (isinstance(state["seed"], bool) or not isinstance(state["seed"], int)):
        raise CheckpointError(f"checkpoint {path}: field 'seed' must be an integer, got {_brief(state['seed'])}")
    if "loader" in state and not isinstance(state["loader"], dict):
        raise CheckpointError(
            f"checkpoint {path}: field 'loader' must be an object, got {type(state['loader']).__name__}"
        )
    history = state.get("history", {})
    if not isinstance(history, dict):
        raise CheckpointError(
            f"checkpoint {path}: field 'history' must be an object of lists, got {type(history).__name__}"
        )
    for key, value in tensors.items():
        if key.startswith("history."):
            history[key[len("history.") :]] = value.tolist()
    for name in ("loss", "epoch_loss", "val_accuracy"):
        if name in history and not isinstance(history[name], list):
            raise CheckpointError(
                f"checkpoint {path}: field 'history.{name}' must be a list of numbers, got {type(history[name]).__name__}"
            )
    history.setdefault("loss", [])
    history.setdefault("epoch_loss", [])
    state["history"] = history
    return state


def load_checkpoint(path: str | os.PathLike, *, params, opt_state) -> tuple[Any, Any, dict[str, Any]]:
    """Read a checkpoint written by `save_checkpoint` into the structures of `params` and `opt_state`.

    Checkpoints written before the history was stored as arrays (all of it in the JSON
    header) load too.

    **Arguments:**

    - `path`: the file.
    - `params`, `opt_state`: a model and an optimizer state with the structure to fill.

    **Returns:** `(params, opt_state, metadata)`, new objects; the arguments are unchanged.
    `metadata["history"]` is a dict of lists with at least `"loss"` and `"epoch_loss"`.

    **Raises:** `CheckpointError` if the file is unreadable, is not a training checkpoint, was
    written for another model or optimizer (naming the key and shapes, or both optimizers'
    state types, that differ), or has a state field that is missing or of the wrong type
    (naming the field).
    """
    tensors, header = _read(path, "checkpoint")
    if header.get("format") != _CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a training checkpoint (format {_brief(header.get('format'))})")
    try:
        new_params = load_state_dict(params, _model_tensors(tensors))
    except ValueError as error:
        raise CheckpointError(f"checkpoint {path} was written for another model: {error}") from None
    _check_optimizer(path, header, opt_state)
    leaves, treedef = jax.tree_util.tree_flatten(opt_state)
    stored = [k for k in tensors if k.startswith("optimizer.")]
    if len(stored) != len(leaves):
        raise CheckpointError(
            f"checkpoint {path} was written for another optimizer: it has {len(stored)} optimizer arrays, "
            f"this optimizer has {len(leaves)}"
        )
    new_leaves = []
    for i, leaf in enumerate(leaves):
        value = tensors[f"optimizer.{i}"]
        if value.shape != np.shape(leaf):
            raise CheckpointError(
                f"checkpoint {path} was written for another optimizer: optimizer.{i} has shape {value.shape}, "
                f"expected {np.shape(leaf)}"
            )
        new_leaves.append(jnp.asarray(value, dtype=jnp.asarray(leaf).dtype))
    metadata = _checked_state(path, header, tensors)
    metadata["arrays"] = {key[len("extra.") :]: value for key, value in tensors.items() if key.startswith("extra.")}
    return new_params, jax.tree_util.tree_unflatten(treedef, new_leaves), metadata
