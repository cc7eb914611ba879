"""Saving and loading models and training state (appendix A.8).

Files are safetensors with PyTorch's `state_dict` keys, so a model saved here loads into the
book's PyTorch model:

```python
# PyTorch                                         # fundamentals
torch.save(model.state_dict(), "model.pth")       fm.save_model(model, "model.safetensors")
model = NeuralNetwork(2, 2)                       model = fm.load_model("model.safetensors")
model.load_state_dict(torch.load("model.pth"))

# and the file this library wrote, in PyTorch:
from safetensors.torch import load_file
torch_model.load_state_dict(load_file("model.safetensors"))
```

Every file is written atomically: to a temporary file in the same folder, flushed to disk,
then moved over the target with `os.replace`. A crash mid-write leaves the previous file as
it was; a failed load leaves the model you had.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._files import atomic_write_bytes
from .nn import NeuralNetwork, load_state_dict, state_dict

__all__ = ["save_model", "load_model", "CheckpointError", "save_checkpoint", "load_checkpoint", "atomic_write_bytes"]

_FORMAT = "fundamentals.model/1"
_CHECKPOINT_FORMAT = "fundamentals.checkpoint/1"


class CheckpointError(ValueError):
    """A model or checkpoint file that is missing, unreadable, or for another model."""


def _serialise(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    from safetensors.numpy import save

    # safetensors wants C-contiguous arrays. Not np.ascontiguousarray: it turns a 0-d array
    # (Adam's step count) into shape (1,), and the checkpoint then no longer fits the optimizer.
    return save({k: np.require(v, requirements="C") for k, v in tensors.items()}, metadata=metadata)


def _read(path: str | os.PathLike, what: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} file not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{what} path is a folder, not a file: {path}")
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


def save_model(model, path: str | os.PathLike) -> Path:
    """Save the model's parameters to a safetensors file with PyTorch's keys, atomically.

    Replaces `torch.save(model.state_dict(), path)`. For a `NeuralNetwork` the architecture
    (inputs, outputs, hidden sizes, dropout) goes into the file's metadata, so `load_model`
    can rebuild the model without being told its shape.

    **Returns:** the path written.
    """
    arrays = state_dict(model)
    metadata = {"format": _FORMAT}
    architecture = _architecture(model)
    if architecture is not None:
        metadata["architecture"] = json.dumps(architecture)
    return atomic_write_bytes(path, _serialise(arrays, metadata))


def load_model(path: str | os.PathLike, like=None):
    """Load a model saved with `save_model` (or any safetensors file with matching keys).

    Replaces `model = NeuralNetwork(2, 2); model.load_state_dict(torch.load(path))`.

    **Arguments:**

    - `path`: the file.
    - `like`: a model with the structure to fill. If None, the `NeuralNetwork` is rebuilt
      from the architecture stored in the file's metadata.

    **Returns:** a new model; `like` is unchanged.

    **Raises:** `FileNotFoundError` for a missing file; `CheckpointError` (a `ValueError`)
    for a truncated or corrupted file, for a file without an architecture when `like` is None,
    and for a file whose keys or shapes differ from the model's (naming the key and shapes).
    """
    tensors, metadata = _read(path, "model")
    if like is None:
        if "architecture" not in metadata:
            raise CheckpointError(
                f"{path} has no architecture metadata (not written by save_model); pass like=<a model of the same shape>"
            )
        try:
            architecture = json.loads(metadata["architecture"])
            like = NeuralNetwork(
                architecture["num_inputs"],
                architecture["num_outputs"],
                hidden=tuple(architecture["hidden"]),
                dropout=architecture.get("dropout", 0.0),
                key=jax.random.key(0),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{path} has invalid architecture metadata: {error}") from None
    try:
        return load_state_dict(like, tensors)
    except ValueError as error:
        raise CheckpointError(f"{path} does not fit the model: {error}") from None


def save_checkpoint(path: str | os.PathLike, *, params, opt_state, metadata: dict[str, Any]) -> Path:
    """Write a training checkpoint atomically: parameters, optimizer state and JSON metadata.

    Parameters are stored under their PyTorch keys (so the file also loads as a model), the
    optimizer state's arrays as `optimizer.0`, `optimizer.1`, ... in tree order, and
    `metadata` (epoch, step, loader RNG state, history) as JSON.
    """
    tensors = state_dict(params)
    for i, leaf in enumerate(jax.tree_util.tree_leaves(opt_state)):
        tensors[f"optimizer.{i}"] = np.asarray(leaf)
    header = {"format": _CHECKPOINT_FORMAT, "state": json.dumps(metadata)}
    architecture = _architecture(params)
    if architecture is not None:
        header["architecture"] = json.dumps(architecture)
    return atomic_write_bytes(path, _serialise(tensors, header))


def load_checkpoint(path: str | os.PathLike, *, params, opt_state) -> tuple[Any, Any, dict[str, Any]]:
    """Read a checkpoint written by `save_checkpoint` into the structures of `params` and `opt_state`.

    **Returns:** `(params, opt_state, metadata)`, new objects; the arguments are unchanged.

    **Raises:** `CheckpointError` if the file is unreadable, is not a training checkpoint, or
    was written for another model or optimizer (naming the key and shapes that differ).
    """
    tensors, header = _read(path, "checkpoint")
    if header.get("format") != _CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a training checkpoint (format {header.get('format')!r})")
    model_tensors = {k: v for k, v in tensors.items() if not k.startswith("optimizer.")}
    try:
        new_params = load_state_dict(params, model_tensors)
    except ValueError as error:
        raise CheckpointError(f"checkpoint {path} was written for another model: {error}") from None
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
    try:
        metadata = json.loads(header["state"])
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} has invalid metadata: {error}") from None
    return new_params, jax.tree_util.tree_unflatten(treedef, new_leaves), metadata
