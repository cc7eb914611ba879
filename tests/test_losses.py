"""Losses against torch.nn.functional: every reduction, the clamp of binary cross-entropy, label checks."""

import numpy as np
import pytest

import fundamentals as fm


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_torch_for_every_reduction(torch, reduction):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 4)).astype(np.float32)
    labels = rng.integers(0, 4, size=7)
    expected = torch.nn.functional.cross_entropy(
        torch.from_numpy(logits), torch.from_numpy(labels), reduction=reduction
    ).numpy()
    got = np.asarray(fm.cross_entropy(logits, labels, reduction=reduction))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_binary_cross_entropy_matches_torch_for_every_reduction(torch, reduction):
    probs = np.array([0.0, 0.2, 0.5, 0.9, 1.0], dtype=np.float32)
    targets = np.array([1.0, 0.0, 1.0, 1.0, 0.0], dtype=np.float32)
    expected = torch.nn.functional.binary_cross_entropy(
        torch.from_numpy(probs), torch.from_numpy(targets), reduction=reduction
    ).numpy()
    np.testing.assert_allclose(
        np.asarray(fm.binary_cross_entropy(probs, targets, reduction=reduction)), expected, rtol=1e-6
    )


def test_an_unknown_reduction_is_named():
    with pytest.raises(ValueError, match="reduction must be one of"):
        fm.cross_entropy(np.zeros((2, 2), np.float32), np.array([0, 1]), reduction="average")
