"""Loss functions with PyTorch's semantics: `F.cross_entropy` and `F.binary_cross_entropy`.

=====================================================  ==============================================
PyTorch                                                `fundamentals`
=====================================================  ==============================================
``F.cross_entropy(logits, labels)``                    ``cross_entropy(logits, labels)``
``F.binary_cross_entropy(probs, targets)``             ``binary_cross_entropy(probs, targets)``
``reduction="mean" | "sum" | "none"``                  the same argument
=====================================================  ==============================================

`check_labels` is the guard `fit` and `cross_entropy` share: a label outside `[0, classes)`
does not fail inside a softmax cross-entropy, it gives NaN or a wrong loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

__all__ = ["cross_entropy", "binary_cross_entropy", "check_labels"]

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(values: jax.Array, reduction: str) -> jax.Array:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def binary_cross_entropy(probs: ArrayLike, targets: ArrayLike, reduction: str = "mean") -> jax.Array:
    r"""Binary cross-entropy between probabilities and targets.

    Replaces `torch.nn.functional.binary_cross_entropy(probs, targets, reduction=...)`, with
    the same numbers:

    $$\ell_i = -\bigl(t_i \max(\log p_i, -100) + (1 - t_i)\max(\log(1 - p_i), -100)\bigr)$$

    The clamp of each log at −100 is PyTorch's: a probability of exactly 0 or 1 gives a
    finite loss (100 per wrong element) instead of infinity.

    **Arguments:**

    - `probs`: probabilities in [0, 1], any shape (for example `jax.nn.sigmoid(z)`).
    - `targets`: the same shape, values in [0, 1].
    - `reduction`: `"mean"` (default), `"sum"` or `"none"`.

    **Returns:**

    A scalar for `"mean"` and `"sum"`, else an array of `probs`'s shape.
    """
    _check_reduction(reduction)
    probs = jnp.asarray(probs)
    targets = jnp.asarray(targets, dtype=probs.dtype)
    if probs.shape != targets.shape:
        raise ValueError(
            f"binary_cross_entropy: targets shape {tuple(targets.shape)} must equal probs shape {tuple(probs.shape)}"
        )
    log_p = jnp.maximum(jnp.log(probs), -100.0)
    log_not_p = jnp.maximum(jnp.log1p(-probs), -100.0)
    losses = -(targets * log_p + (1.0 - targets) * log_not_p)
    return _reduce(losses, reduction)


def cross_entropy(logits: ArrayLike, labels: ArrayLike, reduction: str = "mean") -> jax.Array:
    """Softmax cross-entropy of logits against integer class labels.

    Replaces `torch.nn.functional.cross_entropy(logits, labels)` (integer targets), built on
    `optax.softmax_cross_entropy_with_integer_labels`.

    **Arguments:**

    - `logits`: `(batch, num_classes)` unnormalised scores, as the network returns them.
    - `labels`: `(batch,)` integer class indices in `[0, num_classes)`.
    - `reduction`: `"mean"` (default), `"sum"` or `"none"`.
    """
    _check_reduction(reduction)
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if logits.ndim < 1 or labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"cross_entropy: labels shape {tuple(labels.shape)} must be logits shape {tuple(logits.shape)} "
            "without its last (class) axis"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"cross_entropy: labels must be integer class indices, got dtype {labels.dtype}")
    check_labels(labels, logits.shape[-1], "cross_entropy")
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return _reduce(losses, reduction)


def check_labels(labels: ArrayLike, num_classes: int, where: str) -> None:
    """Raise a `ValueError` if concrete integer `labels` fall outside `[0, num_classes)`.

    Out-of-range labels do not fail inside a softmax cross-entropy: they give NaN or a
    silently wrong loss. Labels being traced inside `jax.jit` cannot be checked and pass.
    """
    if isinstance(labels, jax.core.Tracer):
        return
    values = np.asarray(labels)
    if values.size and (values.min() < 0 or values.max() >= num_classes):
        raise ValueError(
            f"{where}: labels must be class indices in [0, {num_classes}) for {num_classes} outputs, "
            f"got values from {values.min()} to {values.max()}"
        )
