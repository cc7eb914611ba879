"""Evaluation and prediction with a trained model: accuracy over a loader, class probabilities, labels."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from jax.typing import ArrayLike

from .program import Model

__all__ = ["compute_accuracy", "predict", "predict_proba"]


def _inference(model):
    """`(model, state)` or a model, in inference mode (dropout off, BatchNorm on its running statistics)."""
    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[1], eqx.nn.State):
        return eqx.nn.inference_mode(model[0]), model[1]
    return eqx.nn.inference_mode(model), None


def _call(model, state, X):
    if state is None:
        return model(X)
    # a stateful model is written for one example (see TrainProgram): mapped over the batch
    return jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(X, state)[0]


@eqx.filter_jit
def _count_correct(model, state, X, y):
    predictions = jnp.argmax(_call(model, state, X), axis=-1)
    return jnp.sum(predictions == y)


def compute_accuracy(model: Model, loader: Iterable[Any], mesh: Mesh | None = None) -> float:
    """The fraction of examples in `loader` whose predicted class is the label, in [0, 1].

    The book's `compute_accuracy(model, dataloader)`: `model.eval()`, then for each batch
    `torch.argmax(logits, dim=1) == labels`, summed and divided by the count. Here the model
    runs in inference mode (`eqx.nn.inference_mode`: dropout off) and nothing computes a
    gradient. In a multi-process run (`mesh` spanning several processes, each with its own
    shard of the data) the counts are summed across processes, so every process gets the
    accuracy over all the shards together. As in PyTorch, a `DistributedSampler` pads the
    shards to equal length by repeating a few examples, which are then counted twice (at most
    `num_replicas - 1` of them). A stateful model is given as `(model, state)`.
    """
    model, state = _inference(model)
    correct, total = 0, 0
    for features, labels, *_ in loader:
        labels = np.asarray(labels)
        correct += int(_count_correct(model, state, np.asarray(features), labels))
        total += labels.shape[0]
    if mesh is not None and jax.process_count() > 1:
        counts = multihost_utils.process_allgather(np.array([correct, total], dtype=np.int64))
        correct, total = (int(v) for v in np.asarray(counts).reshape(-1, 2).sum(axis=0))
    if total == 0:
        raise ValueError("compute_accuracy: the loader yielded no examples")
    return correct / total


@eqx.filter_jit
def _logits(model, state, X):
    return _call(model, state, X)


def predict_proba(model: Model, X: ArrayLike) -> np.ndarray:
    """Class probabilities for `X`: `torch.softmax(model(X), dim=1)` under `torch.no_grad()` (`model` or `(model, state)`)."""
    model, state = _inference(model)
    logits = _logits(model, state, jnp.asarray(X))
    return np.asarray(jax.nn.softmax(logits, axis=-1))


def predict(model: Model, X: ArrayLike) -> np.ndarray:
    """Predicted class labels for `X`: `torch.argmax(model(X), dim=1)` (`model` or `(model, state)`)."""
    model, state = _inference(model)
    return np.asarray(jnp.argmax(_logits(model, state, jnp.asarray(X)), axis=-1))
