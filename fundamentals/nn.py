"""The book's multilayer perceptron as an Equinox module (appendix A.5).

An Equinox module is a frozen dataclass of arrays: the model *is* its parameters, and a
training step returns a new model instead of changing the old one. Two PyTorch habits have
nothing to switch here:

- `with torch.no_grad():` — JAX computes no gradient unless you call `jax.grad`, so a plain
  `model(X)` is already inference.
- `model.train()` / `model.eval()` — an Equinox model has no hidden mode flag. Layers that
  behave differently in training (dropout) take a `key` while training and are switched with
  `eqx.nn.inference_mode(model)` (a new model, the old one unchanged) for evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import check_int
from .tensors import to_numpy

__all__ = ["ReLU", "NeuralNetwork", "count_parameters", "state_dict", "load_state_dict"]

M = TypeVar("M", bound=eqx.Module)  # a model, returned as the same kind of model


class ReLU(eqx.Module):
    """`torch.nn.ReLU()` as an Equinox layer: `max(x, 0)` elementwise, no parameters."""

    def __call__(self, x: Array, *, key: PRNGKeyArray | None = None) -> Array:
        return jax.nn.relu(x)

    def __repr__(self) -> str:
        return "ReLU()"


def _layer_repr(layer: eqx.Module) -> str:
    if isinstance(layer, eqx.nn.Linear):
        return f"Linear(in_features={layer.in_features}, out_features={layer.out_features}, bias={layer.use_bias})"
    if isinstance(layer, eqx.nn.Dropout):
        return f"Dropout(p={layer.p}, inplace=False)"
    return repr(layer)


class NeuralNetwork(eqx.Module):
    """The book's multilayer perceptron: two hidden layers with ReLU (listing A.4).

    ```python
    # PyTorch                                      # JAX
    torch.manual_seed(123)                         model = NeuralNetwork(50, 3, key=jax.random.key(123))
    model = NeuralNetwork(50, 3)
    with torch.no_grad(): out = model(X)           out = model(X)
    ```

    `layers` is a tuple `(Linear, ReLU, Linear, ReLU, Linear)`, so the parameter paths are
    PyTorch's `state_dict` keys (`layers.0.weight`, `layers.0.bias`, `layers.2.weight`, ...).
    `eqx.nn.Linear` stores `weight` as `(out_features, in_features)` and draws weight and bias
    from U(−1/√in, 1/√in), the distribution `torch.nn.Linear` uses. The *numbers* differ from
    PyTorch's for the same seed (the generators differ); load PyTorch's weights with
    `load_state_dict` to reproduce the book's outputs exactly.

    **Arguments:**

    - `num_inputs`: number of input features (50 in the book, 2 for the toy data).
    - `num_outputs`: number of classes (3 in the book, 2 for the toy data).
    - `key`: a `jax.random.key` for the initial parameters (PyTorch: `torch.manual_seed`).
    - `hidden`: the hidden layer sizes, `(30, 20)` as in the book.
    - `dropout`: if above 0, a `Dropout` follows each ReLU (PyTorch's
      `Sequential(Linear, ReLU, Dropout, ...)`, with the same key indices). Then calls in
      training need a `key`, and evaluation uses `eqx.nn.inference_mode(model)`.
    """

    layers: tuple
    num_inputs: int = eqx.field(static=True)
    num_outputs: int = eqx.field(static=True)
    hidden: tuple[int, ...] = eqx.field(static=True)
    dropout: float = eqx.field(static=True)

    def __init__(
        self,
        num_inputs: int,
        num_outputs: int,
        *,
        key: PRNGKeyArray,
        hidden: Sequence[int] = (30, 20),
        dropout: float = 0.0,
    ):
        num_inputs = check_int("NeuralNetwork: num_inputs", num_inputs, 1)
        num_outputs = check_int("NeuralNetwork: num_outputs", num_outputs, 1)
        hidden = tuple(check_int(f"NeuralNetwork: hidden[{i}]", h, 1) for i, h in enumerate(hidden))
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating)):
            raise TypeError(f"NeuralNetwork: dropout must be a float in [0, 1), got {type(dropout).__name__}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"NeuralNetwork: dropout must be in [0, 1), got {dropout!r}")
        sizes = (num_inputs, *hidden, num_outputs)
        keys = jax.random.split(key, len(sizes) - 1)
        layers: list = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(eqx.nn.Linear(fan_in, fan_out, key=keys[i]))
            if i < len(sizes) - 2:
                layers.append(ReLU())
                if dropout > 0:
                    layers.append(eqx.nn.Dropout(dropout))
        self.layers = tuple(layers)
        self.num_inputs = int(num_inputs)
        self.num_outputs = int(num_outputs)
        self.hidden = tuple(int(h) for h in hidden)
        self.dropout = float(dropout)

    def __call__(
        self, x: Float[Array, "batch num_inputs"] | Float[Array, " num_inputs"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "batch num_outputs"] | Float[Array, " num_outputs"]:
        """The logits for a batch `(batch, num_inputs)` or one example `(num_inputs,)`.

        PyTorch's `model(X)` / `model.forward(X)`. `key` is needed only in training with
        dropout (`Dropout` then draws its mask from it).
        """
        x = jnp.asarray(x)
        if x.ndim not in (1, 2) or x.shape[-1] != self.num_inputs:
            raise ValueError(
                f"NeuralNetwork: expected input of shape (batch, {self.num_inputs}) or ({self.num_inputs},), "
                f"got {tuple(x.shape)}"
            )
        if x.ndim == 2:
            return self._batched(x, key)
        return self._forward(x, key)

    def _forward(self, x: Array, key: PRNGKeyArray | None) -> Array:
        for layer in self.layers:
            if isinstance(layer, eqx.nn.Dropout):
                key, subkey = (None, None) if key is None else jax.random.split(key)
                x = layer(x, key=subkey)
            else:
                x = layer(x)
        return x

    def _batched(self, x: Array, key: PRNGKeyArray | None) -> Array:
        # With dropout each example needs its own mask: split the key across the batch.
        if key is None or self.dropout == 0:
            return jax.vmap(lambda row: self._forward(row, None))(x)
        keys = jax.random.split(key, x.shape[0])
        return jax.vmap(self._forward)(x, keys)

    def __repr__(self) -> str:
        rows = "\n".join(f"    ({i}): {_layer_repr(layer)}" for i, layer in enumerate(self.layers))
        return f"NeuralNetwork(\n  (layers): Sequential(\n{rows}\n  )\n)"


def parameter_shapes(
    num_inputs: int, num_outputs: int, hidden: Sequence[int] = (30, 20), dropout: float = 0.0
) -> dict[str, tuple[int, ...]]:
    """The `state_dict` keys and shapes of `NeuralNetwork(num_inputs, num_outputs, hidden=hidden,
    dropout=dropout)`, computed without building it (nothing is allocated).

    **Returns:** key → shape, in the order `state_dict` gives them.
    """
    sizes = (int(num_inputs), *(int(h) for h in hidden), int(num_outputs))
    step = 3 if dropout > 0 else 2  # Linear, ReLU[, Dropout] per hidden layer
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes[f"layers.{i * step}.weight"] = (fan_out, fan_in)
        shapes[f"layers.{i * step}.bias"] = (fan_out,)
    return shapes


def parameter_count(num_inputs: int, num_outputs: int, hidden: Sequence[int] = (30, 20)) -> int:
    """`count_parameters` of the `NeuralNetwork` these sizes would build, computed without building it."""
    sizes = (int(num_inputs), *(int(h) for h in hidden), int(num_outputs))
    return sum(fan_out * (fan_in + 1) for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))


def count_parameters(model: eqx.Module) -> int:
    """The number of trainable parameters (every floating-point array in the model).

    Replaces `sum(p.numel() for p in model.parameters() if p.requires_grad)`: 2213 for the
    book's `NeuralNetwork(50, 3)`, 752 for `NeuralNetwork(2, 2)` (exercise A.3).
    """
    return int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))))


def _path_to_key(path: tuple[Any, ...]) -> str:
    parts = []
    for entry in path:
        if isinstance(entry, jax.tree_util.GetAttrKey):
            parts.append(entry.name)
        elif isinstance(entry, jax.tree_util.SequenceKey):
            parts.append(str(entry.idx))
        elif isinstance(entry, jax.tree_util.DictKey):
            parts.append(str(entry.key))
        else:
            parts.append(str(entry).strip(".[]'\""))
    return ".".join(parts)


class NamedArrays(NamedTuple):
    """A model taken apart for `state_dict` and `load_state_dict` (see `named_arrays`)."""

    named: list[tuple[str, jax.Array]]  # (PyTorch state_dict key, array), in tree order
    treedef: Any  # the structure of the arrays, for jax.tree_util.tree_unflatten
    static: Any  # everything else of the model, for eqx.combine


def named_arrays(model: eqx.Module) -> NamedArrays:
    """The model's arrays with their PyTorch `state_dict` keys (`layers.0.weight`), and what rebuilds the model.

    Used by `state_dict`, `load_state_dict` and the checkpoint files. Two arrays may spell the
    same key (an attribute named `"0"` beside a list); callers that need one array a key check.
    """
    params, static = eqx.partition(model, eqx.is_array)
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    named = [(_path_to_key(path), leaf) for path, leaf in leaves_with_paths]
    return NamedArrays(named, treedef, static)


_named_arrays = named_arrays  # TEMPORARY: checkpoint.py's import, until it imports named_arrays


def state_dict(model: eqx.Module) -> dict[str, np.ndarray]:
    """The model's arrays by PyTorch `state_dict` key, as NumPy arrays.

    Replaces `model.state_dict()`. For `NeuralNetwork(2, 2)` the keys are `layers.0.weight`
    `(30, 2)`, `layers.0.bias` `(30,)`, `layers.2.weight` `(20, 30)`, ..., `layers.4.bias`
    `(2,)`: the keys and shapes PyTorch uses, so `torch_model.load_state_dict(
    {k: torch.from_numpy(v) for k, v in state_dict(model).items()})` loads it into PyTorch.
    """
    named, _, _ = named_arrays(model)
    return {key: np.array(value) for key, value in named}


def _to_numpy(value: Any, key: str) -> np.ndarray:
    try:
        return to_numpy(value)
    except Exception as error:  # noqa: BLE001 - report which key could not be read
        raise TypeError(
            f"load_state_dict: value for key {key!r} is not an array ({type(value).__name__}): {error}"
        ) from None


def load_state_dict(model: M, state_dict: Mapping[str, Any], strict: bool = True) -> M:
    """A new model with the arrays of `state_dict`; the model passed in is unchanged.

    Replaces `model.load_state_dict(state_dict)`. Equinox models are immutable, so where
    PyTorch copies into the existing parameters, this returns a new model.

    **Arguments:**

    - `model`: the model whose structure to fill (for example a fresh `NeuralNetwork(2, 2)`).
    - `state_dict`: key → array, with NumPy, JAX or PyTorch arrays as values (PyTorch's
      `model.state_dict()` works as it is). Values are cast to the model's dtypes.
    - `strict`: if True (default), a missing or an unexpected key is an error, as in PyTorch.
      If False, missing keys keep the model's values and unexpected keys are ignored.

    **Raises:**

    `ValueError` naming the key for a missing key, an unexpected key, or a shape that differs
    (with both shapes). `TypeError` if `state_dict` is not a mapping, or naming the key for a
    value that is not an array or whose dtype cannot be cast without losing part of it (complex
    or strings, or floats for an integer array).
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"load_state_dict: state_dict must be a mapping of key -> array, got {type(state_dict).__name__}"
        )
    named, treedef, static = named_arrays(model)
    model_keys = [key for key, _ in named]
    if strict:
        missing = [key for key in model_keys if key not in state_dict]
        unexpected = [key for key in state_dict if key not in set(model_keys)]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing key(s) {missing}")
            if unexpected:
                parts.append(f"unexpected key(s) {unexpected}")
            raise ValueError(f"load_state_dict: {' and '.join(parts)}; the model expects {model_keys}")
    new_leaves = []
    for key, current in named:
        if key not in state_dict:
            new_leaves.append(current)
            continue
        value = _to_numpy(state_dict[key], key)
        integer = np.dtype(current.dtype).kind in "biu"
        if value.dtype.kind not in ("biu" if integer else "biuf"):
            raise TypeError(
                f"load_state_dict: value for key {key!r} has dtype {value.dtype}, the model's array has "
                f"{current.dtype}; give {'integer' if integer else 'real'} values (casting would lose part of them)"
            )
        if value.shape != current.shape:
            raise ValueError(
                f"load_state_dict: shape mismatch for key {key!r}: the state dict has {tuple(value.shape)}, "
                f"the model has {tuple(current.shape)}"
            )
        # A copy: jnp.asarray may alias NumPy (and so torch) memory on the CPU, and a torch
        # optimizer step would then change this "immutable" model behind its back.
        new_leaves.append(jnp.array(value, dtype=current.dtype, copy=True))
    params = jax.tree_util.tree_unflatten(treedef, new_leaves)
    return eqx.combine(params, static)
