"""Evaluation and prediction with a trained model: accuracy over a loader, class probabilities, labels."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

__all__ = ["compute_accuracy", "predict", "predict_proba"]


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
