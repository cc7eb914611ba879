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
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .nn import NeuralNetwork, _named_arrays, load_state_dict, state_dict

__all__ = ["save_model", "load_model", "CheckpointError", "save_checkpoint", "load_checkpoint", "atomic_write_bytes"]

_FORMAT = "fundamentals.model/1"
_TORCH_SUFFIXES = (".pth", ".pt")
_CHECKPOINT_FORMAT = "fundamentals.checkpoint/1"


class CheckpointError(ValueError):
    """A model or checkpoint file that is missing, unreadable, or for another model."""


def _read_umask() -> int:
    umask = os.umask(0)  # the only way to read it is to set it: once, at import
    os.umask(umask)
    return umask


_UMASK = _read_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically: a temporary file in the same folder, then `os.replace`.

    **Raises:** `IsADirectoryError` naming the path if it is a folder (before writing anything).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a folder, not a file name")
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        # mkstemp makes the file private (0600); give it the permissions open() would have.
        os.chmod(temporary, 0o666 & ~_UMASK)
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    try:  # make the rename itself durable
        directory = os.open(path.parent or ".", os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(directory)
    except OSError:
        pass  # some file systems cannot sync a folder; the data itself is on disk
    finally:
        os.close(directory)
    return path


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


def _model_arrays(model) -> dict[str, np.ndarray]:
    """`state_dict(model)` for any Equinox module, refusing two arrays whose paths spell the same key."""
    keys = [key for key, _ in _named_arrays(model)[0]]
    if len(set(keys)) != len(keys):
        twice = sorted({key for key in keys if keys.count(key) > 1})
        raise ValueError(f"save_model: two arrays of the model have the same key {twice[0]!r}; rename a field")
    return state_dict(model)


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

    **Raises:** `ValueError` if two arrays' paths spell the same key; `IsADirectoryError`
    if `path` is a folder.
    """
    arrays = _model_arrays(model)
    if Path(path).suffix.lower() in _TORCH_SUFFIXES:
        from collections import OrderedDict

        from .torchfile import torch_save

        return torch_save(OrderedDict(arrays), path)  # torch's state_dict is an OrderedDict
    metadata = {"format": _FORMAT}
    architecture = _architecture(model)
    if architecture is not None:
        metadata["architecture"] = json.dumps(architecture)
    return atomic_write_bytes(path, _serialise(arrays, metadata))


def _read_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A `.pth` file's state dict (key -> array), read without torch; a clear error for anything else."""
    from .torchfile import TorchFileError, torch_load

    try:
        state = torch_load(path)
    except TorchFileError as error:
        raise CheckpointError(str(error)) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict (a dict of key -> tensor)")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise CheckpointError(
                f"{path} is not a state dict: key {key!r} holds a value of type {type(value).__name__}, not a tensor "
                f"(a training checkpoint? read it with fm.torch_load and pass its model state dict)"
            )
    return dict(state)


def _is_torch_file(path: str | os.PathLike) -> bool:
    from .torchfile import is_torch_file

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
    if _is_torch_file(path):
        tensors, metadata = _read_torch_state_dict(path), {}
    else:
        tensors, metadata = _read(path, "model")
    if like is None:
        if "architecture" not in metadata:
            raise CheckpointError(
                f"{path} has no architecture metadata (not a safetensors file written by save_model); "
                "pass like=<a model of the same shape>"
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


def convert(source: str | os.PathLike, destination: str | os.PathLike) -> tuple[int, Path]:
    """Convert a state dict file between PyTorch's `.pth` and safetensors (`fundamentals convert SRC DST`).

    The source's format is read from its content, the destination's from its suffix (`.pth`
    or `.pt`: PyTorch's; anything else: safetensors). Keys, dtypes and values are unchanged;
    safetensors metadata has no place in a `.pth` file and is dropped.

    **Returns:** `(number of tensors, path written)`.

    **Raises:** `FileNotFoundError` for a missing source; `CheckpointError` for a broken or
    refused source, or one that is not a flat key -> tensor state dict. Nothing is written then.
    """
    source = Path(source)
    if _is_torch_file(source):
        tensors, metadata = _read_torch_state_dict(source), {}
    else:
        tensors, metadata = _read(source, "source")
    destination = Path(destination)
    if destination.is_dir():
        raise IsADirectoryError(f"cannot write {destination}: it is a folder, not a file name")
    if destination.suffix.lower() in _TORCH_SUFFIXES:
        from collections import OrderedDict

        from .torchfile import torch_save

        return len(tensors), torch_save(OrderedDict(tensors), destination)
    try:
        data = _serialise(tensors, metadata)
    except Exception as error:  # noqa: BLE001 - safetensors names what it cannot store
        raise CheckpointError(f"cannot write {destination} as safetensors: {error}") from None
    return len(tensors), atomic_write_bytes(destination, data)


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
