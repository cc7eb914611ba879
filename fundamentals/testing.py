"""Helpers shared by the tests, the notebooks and the benchmark: the book's PyTorch network, comparing, replaying.

Nothing here imports torch: `to_numpy` recognises a PyTorch tensor by its `detach` method, and
`torch_network` takes the `torch` module as an argument.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .tensors import to_numpy

__all__ = ["assert_same", "ReplaySampler", "torch_network", "book_toy_dataset"]


def assert_same(ours: Any, theirs: Any, atol: float = 1e-5, rtol: float = 0.0, same_dtype: bool = True) -> None:
    """Check a JAX result against PyTorch's: the same shape, the same dtype (unless told), close numbers.

    **Arguments:**

    - `ours`: a JAX or NumPy array, or anything `numpy.asarray` takes (a list of floats).
    - `theirs`: a `torch.Tensor` (detached and moved to the CPU here), or the same.
    - `atol`, `rtol`: the tolerance, as `numpy.allclose` (`|ours - theirs| <= atol + rtol * |theirs|`).
    - `same_dtype`: also require equal dtypes (False for Python floats against float32).

    **Raises:** `AssertionError` naming the shapes, the dtypes, or the largest difference.
    """
    ours, theirs = to_numpy(ours), to_numpy(theirs)
    assert ours.shape == theirs.shape, f"shape {ours.shape} != {theirs.shape}"
    if same_dtype:
        assert ours.dtype == theirs.dtype, f"dtype {ours.dtype} != {theirs.dtype}"
    assert np.allclose(ours, theirs, rtol=rtol, atol=atol), f"largest difference {np.abs(ours - theirs).max()}"


class ReplaySampler:
    """A sampler that yields a recorded order of indices each epoch: PyTorch's batch order, replayed.

    Epoch `e` yields `orders[e % len(orders)]`. `fit` (and a hand-written loop) tells the epoch
    with `set_epoch(e)`, as for a `DistributedSampler`; without it, each pass over the sampler
    moves on to the next recorded epoch.

    **Arguments:**

    - `orders`: one sequence of dataset indices per epoch, all of the same length.
    """

    def __init__(self, orders: Sequence[Sequence[int]]):
        self.orders = [[int(i) for i in order] for order in orders]
        if not self.orders or len({len(order) for order in self.orders}) != 1:
            raise ValueError("ReplaySampler: orders must be one or more index lists of the same length")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        order = self.orders[self.epoch % len(self.orders)]
        self.epoch += 1
        return iter(order)

    def __len__(self) -> int:
        return len(self.orders[0])


def torch_network(torch: Any, num_inputs: int, num_outputs: int, hidden: tuple[int, ...] = (30, 20)) -> Any:
    """The book's PyTorch `NeuralNetwork` (listing A.4), with its hidden sizes as a parameter.

    **Arguments:**

    - `torch`: the `torch` module (passed in: the library never imports torch itself).
    - `num_inputs`, `num_outputs`: the sizes of the first and last layers.
    - `hidden`: the hidden layers' sizes; the book's are `(30, 20)`.

    **Returns:**

    A `torch.nn.Module` whose `layers` is a `Sequential` of `Linear` and `ReLU`, so its
    `state_dict` keys (`layers.0.weight`, ...) are the book's and `fm.state_dict`'s. With
    `torch.manual_seed(123)` first, its parameters are the book's.
    """

    class NeuralNetwork(torch.nn.Module):
        def __init__(self, num_inputs, num_outputs):
            super().__init__()
            sizes = (num_inputs, *hidden)
            layers = []
            for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
                layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
            layers.append(torch.nn.Linear(sizes[-1], num_outputs))
            self.layers = torch.nn.Sequential(*layers)

        def forward(self, x):
            return self.layers(x)

    return NeuralNetwork(num_inputs, num_outputs)


def book_toy_dataset(base: type = object) -> type:
    """The book's `ToyDataset` class (listing A.6): one example per `__getitem__`, as every reader writes it.

    **Arguments:**

    - `base`: its base class: `object` for `fm.DataLoader`, `torch.utils.data.Dataset` for PyTorch's.

    **Returns:** the class; `ToyDataset(X, y)` keeps the arrays as they are given.
    """

    class ToyDataset(base):
        def __init__(self, X, y):
            self.features = X
            self.labels = y

        def __getitem__(self, index):
            one_x = self.features[index]
            one_y = self.labels[index]
            return one_x, one_y

        def __len__(self):
            return self.labels.shape[0]

    return ToyDataset
