"""fundamentals.testing: the comparison and the replayed order that tests and notebooks share."""

import numpy as np
import pytest

import fundamentals as fm
from fundamentals.testing import ReplaySampler, assert_same


def test_assert_same_names_shape_dtype_and_difference(torch):
    assert_same(np.float32([1.0, 2.0]), torch.tensor([1.0, 2.0 + 1e-6]))
    with pytest.raises(AssertionError, match=r"shape \(2,\) != \(3,\)"):
        assert_same(np.zeros(2, np.float32), torch.zeros(3))
    with pytest.raises(AssertionError, match="dtype float64 != float32"):
        assert_same(np.zeros(2), torch.zeros(2))
    assert_same(np.zeros(2), torch.zeros(2), same_dtype=False)
    with pytest.raises(AssertionError, match="largest difference 0.5"):
        assert_same(np.float32([1.0]), torch.tensor([1.5]))
    assert_same(np.float32([100.0]), np.float32([100.5]), atol=0.0, rtol=0.01)


def test_replay_sampler_follows_set_epoch_or_moves_on_by_itself():
    orders = [[3, 1, 2, 0], [0, 2, 1, 3]]
    sampler = ReplaySampler(orders)
    assert [list(sampler), list(sampler), list(sampler)] == [orders[0], orders[1], orders[0]]
    sampler.set_epoch(1)
    assert list(sampler) == orders[1]
    loader = fm.DataLoader(fm.ArrayDataset(np.arange(4)), batch_size=2, sampler=ReplaySampler(orders))
    assert [batch[0].tolist() for batch in loader] == [[3, 1], [2, 0]]
    with pytest.raises(ValueError, match="same length"):
        ReplaySampler([[0, 1], [0]])
