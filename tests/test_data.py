"""Tests for fundamentals.data: datasets, DataLoader and DistributedSampler against PyTorch."""

from __future__ import annotations

import gc
import json
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fundamentals as fm
from fundamentals.bench.loader import bench_loader
from fundamentals.bench.report import format_loader_table

from .helpers import TORCH_MISSING

try:  # the comparisons need torch; the rest of the module runs without it
    import torch
    from torch.utils.data import DataLoader as TorchDataLoader
    from torch.utils.data import TensorDataset
    from torch.utils.data.distributed import DistributedSampler as TorchDistributedSampler
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason=TORCH_MISSING)

SETTINGS = settings(max_examples=40, deadline=None)


def _random_arrays(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3)).astype(np.float32)
    y = rng.integers(0, 5, size=n).astype(np.int64)
    return X, y


def _torch_batches(loader):
    return [tuple(t.numpy() for t in batch) for batch in loader]


def _epoch_order(loader) -> np.ndarray:
    """The row order one epoch visits, read back from the first feature (set to arange)."""
    return np.concatenate([batch[0][:, 0] for batch in loader]).astype(np.int64)


# --- the book's data --------------------------------------------------------------------


@needs_torch
def test_toy_data_is_the_books_data():
    X_train, y_train, X_test, y_test = fm.toy_data()
    np.testing.assert_array_equal(
        X_train, np.array([[-1.2, 3.1], [-0.9, 2.9], [-0.5, 2.6], [2.3, -1.1], [2.7, -1.5]], dtype=np.float32)
    )
    np.testing.assert_array_equal(y_train, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(X_test, np.array([[-0.8, 2.8], [2.6, -1.6]], dtype=np.float32))
    np.testing.assert_array_equal(y_test, [0, 1])
    assert X_train.dtype == X_test.dtype == np.float32
    assert y_train.dtype == y_test.dtype == np.int64
    # PyTorch's dtypes for the book's torch.tensor(...) calls
    assert str(torch.tensor([[-1.2, 3.1]]).dtype) == f"torch.{X_train.dtype}"
    assert str(torch.tensor([0, 1]).dtype) == f"torch.{y_train.dtype}"


def _BookToyDataset(X, y):
    """The book's ToyDataset (listing A.6), recording the order PyTorch reads items in."""

    class ToyDataset(torch.utils.data.Dataset):
        def __init__(self, X, y):
            self.features = torch.tensor(X)
            self.labels = torch.tensor(y)
            self.seen: list[int] = []

        def __getitem__(self, index):
            self.seen.append(int(index))
            return self.features[index], self.labels[index]

        def __len__(self):
            return self.labels.shape[0]

    return ToyDataset(X, y)


@needs_torch
def test_books_batches_replayed_from_pytorch_order():
    X_train, y_train, _, _ = fm.toy_data()
    torch.manual_seed(123)
    torch_ds = _BookToyDataset(X_train, y_train)
    expected = _torch_batches(TorchDataLoader(torch_ds, batch_size=2, shuffle=True, num_workers=0))
    # The book prints these three batches for torch.manual_seed(123).
    np.testing.assert_array_equal(expected[0][0], np.array([[2.3, -1.1], [-0.9, 2.9]], dtype=np.float32))
    np.testing.assert_array_equal(expected[0][1], [1, 0])
    np.testing.assert_array_equal(expected[2][0], np.array([[2.7, -1.5]], dtype=np.float32))

    loader = fm.DataLoader(fm.ToyDataset(X_train, y_train), batch_size=2, sampler=list(torch_ds.seen))
    ours = list(loader)
    assert len(loader) == len(ours) == len(expected) == 3
    for (X, y), (tX, ty) in zip(ours, expected):
        assert isinstance(X, np.ndarray) and isinstance(y, np.ndarray)
        assert X.dtype == tX.dtype and y.dtype == ty.dtype
        np.testing.assert_array_equal(X, tX)
        np.testing.assert_array_equal(y, ty)


@needs_torch
def test_books_drop_last_gives_two_batches_of_two():
    X_train, y_train, _, _ = fm.toy_data()
    loader = fm.DataLoader(fm.ToyDataset(X_train, y_train), batch_size=2, shuffle=True, drop_last=True, seed=123)
    torch_loader = TorchDataLoader(
        TensorDataset(torch.tensor(X_train), torch.tensor(y_train)), batch_size=2, shuffle=True, drop_last=True
    )
    assert len(loader) == len(torch_loader) == 2
    for _ in range(3):
        batches = list(loader)
        assert [len(y) for _, y in batches] == [len(y) for _, y in torch_loader] == [2, 2]
        rows = np.concatenate([X for X, _ in batches])
        # four distinct training rows, each one of the book's
        assert len({tuple(r) for r in rows}) == 4
        assert all(any(np.array_equal(r, x) for x in X_train) for r in rows)


@needs_torch
def test_generic_dataset_matches_pytorch_value_for_value():
    """The book's ToyDataset class itself (per-item __getitem__) collated like torch."""
    X_train, y_train, _, _ = fm.toy_data()
    torch_ds = _BookToyDataset(X_train, y_train)
    expected = _torch_batches(TorchDataLoader(torch_ds, batch_size=2, shuffle=False))

    class NumpyToyDataset:  # the book's class, over NumPy arrays, without any base class
        def __init__(self, X, y):
            self.features, self.labels = X, y

        def __getitem__(self, index):
            return self.features[index], self.labels[index]

        def __len__(self):
            return self.labels.shape[0]

    ours = list(fm.DataLoader(NumpyToyDataset(X_train, y_train), batch_size=2, shuffle=False))
    assert isinstance(NumpyToyDataset(X_train, y_train), fm.Dataset)
    assert len(ours) == len(expected)
    for (X, y), (tX, ty) in zip(ours, expected):
        assert X.dtype == tX.dtype and y.dtype == ty.dtype
        np.testing.assert_array_equal(X, tX)
        np.testing.assert_array_equal(y, ty)


@needs_torch
def test_default_collate_matches_pytorch():
    from torch.utils.data import default_collate as torch_collate

    rng = np.random.default_rng(1)
    items = [
        {
            "x": rng.standard_normal(3).astype(np.float32),
            "label": i,
            "weight": 0.5 * i,
            "flag": i % 2 == 0,
            "pair": (np.int32(i), rng.standard_normal(2)),
        }
        for i in range(4)
    ]
    ours = fm.default_collate(items)
    theirs = torch_collate(items)
    assert set(ours) == set(theirs)
    for key in ("x", "label", "weight", "flag"):
        assert str(theirs[key].dtype) == f"torch.{ours[key].dtype}", key
        np.testing.assert_array_equal(ours[key], theirs[key].numpy())
    for ours_field, theirs_field in zip(ours["pair"], theirs["pair"]):
        assert str(theirs_field.dtype) == f"torch.{ours_field.dtype}"
        np.testing.assert_array_equal(ours_field, theirs_field.numpy())
    assert isinstance(ours["pair"], tuple)  # torch gives a list here; documented difference
    assert fm.default_collate(["a", "b"]) == torch_collate(["a", "b"])
    with pytest.raises(TypeError, match="default_collate"):
        fm.default_collate([object(), object()])
    with pytest.raises(ValueError, match="shape"):
        fm.default_collate([np.zeros(2), np.zeros(3)])


# --- ArrayDataset ---------------------------------------------------------------------


@needs_torch
def test_array_dataset_items_and_batches():
    X, y = _random_arrays(7)
    ds = fm.ArrayDataset(X, y)
    assert fm.ToyDataset is fm.ArrayDataset
    assert len(ds) == 7 == len(TensorDataset(torch.from_numpy(X), torch.from_numpy(y)))
    assert ds.arrays[0] is X and ds.arrays[1] is y  # NumPy arrays are not copied
    x3, y3 = ds[3]
    np.testing.assert_array_equal(x3, X[3])
    assert y3 == y[3]
    np.testing.assert_array_equal(ds[-1][0], X[6])
    indices = np.array([5, 0, 0, 2])
    Xb, yb = ds[indices]
    np.testing.assert_array_equal(Xb, np.stack([X[i] for i in indices]))
    np.testing.assert_array_equal(yb, np.array([y[i] for i in indices]))
    converted = fm.ArrayDataset(torch.from_numpy(X), [[1]] * 7)
    assert isinstance(converted.arrays[0], np.ndarray) and converted.arrays[1].shape == (7, 1)
    with pytest.raises(IndexError, match="index 7"):
        ds[7]
    with pytest.raises(IndexError, match="index 9"):
        ds[np.array([0, 9])]
    with pytest.raises(TypeError, match="index"):
        ds[np.array([0.5])]


# --- DataLoader against torch.utils.data.DataLoader ------------------------------------


@needs_torch
@SETTINGS
@given(
    n=st.integers(1, 60),
    batch_size=st.integers(1, 16),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_loader_matches_pytorch(n, batch_size, shuffle, drop_last, seed):
    X, y = _random_arrays(n, seed=n)
    X[:, 0] = np.arange(n)  # the first feature names the row, to read orders back
    ours = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed)
    torch.manual_seed(seed)
    theirs = TorchDataLoader(
        TensorDataset(torch.from_numpy(X), torch.from_numpy(y)),
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=0,
    )
    assert len(ours) == len(theirs)
    kept = (n // batch_size) * batch_size if drop_last else n
    orders = []
    for _ in range(3):
        our_batches = list(ours)
        their_batches = _torch_batches(theirs)
        assert [len(b[1]) for b in our_batches] == [len(b[1]) for b in their_batches]
        assert len(our_batches) == len(ours)
        for Xb, yb in our_batches:
            assert Xb.dtype == np.float32 and yb.dtype == np.int64
            rows = Xb[:, 0].astype(np.int64)
            np.testing.assert_array_equal(Xb, X[rows])  # every row is a whole example
            np.testing.assert_array_equal(yb, y[rows])
        order = np.concatenate([b[0][:, 0] for b in our_batches]).astype(np.int64) if our_batches else np.zeros(0)
        assert len(order) == kept
        assert len(set(order.tolist())) == kept  # no example twice: a permutation (of all but a dropped tail)
        if not shuffle:
            assert len(our_batches) == len(their_batches)
            for (Xb, yb), (tX, ty) in zip(our_batches, their_batches):
                np.testing.assert_array_equal(Xb, tX)
                np.testing.assert_array_equal(yb, ty)
        orders.append(order)
    if shuffle and kept >= 12:
        # 12! orders: two equal epochs by chance has probability ~2e-9
        assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
        their_orders = [np.concatenate([b[0][:, 0] for b in _torch_batches(theirs)]) for _ in range(2)]
        assert not np.array_equal(*their_orders)  # torch reshuffles too
    # The same seed gives the same epochs, whether given as an int or a Generator.
    for again in (
        fm.DataLoader(fm.ArrayDataset(X, y), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed),
        fm.DataLoader(
            fm.ArrayDataset(X, y),
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            seed=np.random.default_rng(seed),
        ),
    ):
        for order in orders:
            replay = [b[0][:, 0] for b in again]
            np.testing.assert_array_equal(np.concatenate(replay) if replay else np.zeros(0), order)


def test_different_and_missing_seeds_shuffle_differently():
    X, y = _random_arrays(100)
    X[:, 0] = np.arange(100)
    first = _epoch_order(fm.DataLoader(fm.ArrayDataset(X, y), batch_size=10, shuffle=True, seed=1))
    second = _epoch_order(fm.DataLoader(fm.ArrayDataset(X, y), batch_size=10, shuffle=True, seed=2))
    assert not np.array_equal(first, second)
    unseeded = [_epoch_order(fm.DataLoader(fm.ArrayDataset(X, y), batch_size=10, shuffle=True)) for _ in range(2)]
    assert not np.array_equal(*unseeded)  # seed=None is random, as without torch.manual_seed


@needs_torch
def test_len_follows_sampler():
    X, y = _random_arrays(10)
    sampler = [1, 3, 5, 7, 9, 1, 3]
    ours = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=3, sampler=sampler)
    theirs = TorchDataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(y)), batch_size=3, sampler=sampler)
    assert len(ours) == len(theirs) == 3
    for (Xb, yb), (tX, ty) in zip(ours, _torch_batches(theirs), strict=True):
        np.testing.assert_array_equal(Xb, tX)
        np.testing.assert_array_equal(yb, ty)
    assert len(fm.DataLoader(fm.ArrayDataset(X, y), batch_size=3, sampler=sampler, drop_last=True)) == 2


def test_sampler_is_iterated_afresh_each_epoch():
    X, y = _random_arrays(6)
    X[:, 0] = np.arange(6)

    class CountingSampler:
        def __init__(self):
            self.epochs = 0

        def __iter__(self):
            self.epochs += 1
            return iter(range(self.epochs % 6, 6))

        def __len__(self):
            return 6

    sampler = CountingSampler()
    loader = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=4, sampler=sampler)
    assert _epoch_order(loader).tolist() == [1, 2, 3, 4, 5]
    assert _epoch_order(loader).tolist() == [2, 3, 4, 5]
    assert sampler.epochs == 2


def test_epoch_indices_is_what_iteration_gives():
    """Both against the truth drawn by hand: epoch e is the e-th permutation of default_rng(seed)."""
    X, y = _random_arrays(23)
    ds = fm.ArrayDataset(X, y)
    truth = np.random.default_rng(7)
    reference = fm.DataLoader(ds, batch_size=5, shuffle=True, seed=7)
    split = fm.DataLoader(ds, batch_size=5, shuffle=True, seed=7)
    for _ in range(3):  # epoch_indices advances the generator exactly as one iter() does
        order = truth.permutation(23)
        expected = [order[start : start + 5] for start in range(0, 23, 5)]
        indices = split.epoch_indices()
        assert all(idx.dtype == np.int64 and idx.ndim == 1 for idx in indices)
        assert [i.tolist() for i in indices] == [e.tolist() for e in expected]
        batches = list(reference)
        assert len(batches) == len(expected)
        for idx, (Xb, yb) in zip(expected, batches):
            np.testing.assert_array_equal(X[idx], Xb)  # bit for bit: the same gather
            np.testing.assert_array_equal(y[idx], yb)
    assert [len(i) for i in fm.DataLoader(ds, batch_size=5, drop_last=True).epoch_indices()] == [5, 5, 5, 5]


def test_state_dict_resumes_the_same_epochs():
    X, y = _random_arrays(31)
    ds = fm.ArrayDataset(X, y)
    original = fm.DataLoader(ds, batch_size=4, shuffle=True, seed=3)
    for _ in range(2):
        list(original)
    saved = json.loads(json.dumps(original.state_dict()))  # survives a JSON checkpoint
    restored = fm.DataLoader(ds, batch_size=4, shuffle=True, seed=999)
    restored.load_state_dict(saved)
    for _ in range(3):
        for a, b in zip(original.epoch_indices(), restored.epoch_indices(), strict=True):
            np.testing.assert_array_equal(a, b)
    # a Generator with another bit generator (MT19937 keeps an array in its state)
    mt = fm.DataLoader(ds, batch_size=4, shuffle=True, seed=np.random.Generator(np.random.MT19937(5)))
    list(mt)
    mt_saved = json.loads(json.dumps(mt.state_dict()))
    mt_restored = fm.DataLoader(ds, batch_size=4, shuffle=True, seed=np.random.Generator(np.random.MT19937(6)))
    mt_restored.load_state_dict(mt_saved)
    np.testing.assert_array_equal(np.concatenate(mt.epoch_indices()), np.concatenate(mt_restored.epoch_indices()))
    with pytest.raises(ValueError, match="rng"):
        restored.load_state_dict({})
    with pytest.raises(ValueError, match="MT19937"):
        restored.load_state_dict(mt_saved)


def test_state_dict_restores_sampler_epoch():
    X, y = _random_arrays(20)
    ds = fm.ArrayDataset(X, y)
    sampler = fm.DistributedSampler(ds, num_replicas=2, rank=1, seed=4)
    loader = fm.DataLoader(ds, batch_size=3, sampler=sampler)
    sampler.set_epoch(5)
    saved = json.loads(json.dumps(loader.state_dict()))
    assert saved["sampler_epoch"] == 5
    other_sampler = fm.DistributedSampler(ds, num_replicas=2, rank=1, seed=4)
    other = fm.DataLoader(ds, batch_size=3, sampler=other_sampler)
    other.load_state_dict(saved)
    assert other_sampler.epoch == 5
    for a, b in zip(loader.epoch_indices(), other.epoch_indices(), strict=True):
        np.testing.assert_array_equal(a, b)


# --- background workers ----------------------------------------------------------------


def _worker_threads():
    return [t for t in threading.enumerate() if t.name.startswith("fundamentals-DataLoader")]


@needs_torch
def test_workers_match_pytorch_and_serial_order():
    X, y = _random_arrays(50)
    ds = fm.ArrayDataset(X, y)
    theirs = _torch_batches(TorchDataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(y)), batch_size=7))
    threaded = list(fm.DataLoader(ds, batch_size=7, num_workers=3))
    assert len(threaded) == len(theirs)
    for (Xb, yb), (tX, ty) in zip(threaded, theirs):
        np.testing.assert_array_equal(Xb, tX)
        np.testing.assert_array_equal(yb, ty)
    # shuffled: the same batches in the same order as num_workers=0 with the same seed
    serial = fm.DataLoader(ds, batch_size=7, shuffle=True, seed=11)
    parallel = fm.DataLoader(ds, batch_size=7, shuffle=True, seed=11, num_workers=2)
    for _ in range(2):
        for (a, b), (c, d) in zip(serial, parallel, strict=True):
            np.testing.assert_array_equal(a, c)
            np.testing.assert_array_equal(b, d)
    # a generic (per-item) dataset through the threads too
    items = fm.DataLoader([(X[i], y[i]) for i in range(50)], batch_size=7, num_workers=2)
    for (Xb, yb), (tX, ty) in zip(items, theirs, strict=True):
        np.testing.assert_array_equal(Xb, tX)
        np.testing.assert_array_equal(yb, ty)
    gc.collect()
    assert _worker_threads() == []


def test_workers_shut_down_when_loop_breaks():
    X, y = _random_arrays(200)
    loader = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=4, shuffle=True, seed=0, num_workers=2)
    for i, _ in enumerate(loader):
        if i == 1:
            assert _worker_threads()  # the workers are running mid-epoch
            break
    gc.collect()
    assert _worker_threads() == []


def test_worker_error_reaches_the_loop():
    class Broken:
        def __len__(self):
            return 8

        def __getitem__(self, index):
            if index == 5:
                raise KeyError("item 5 is broken")
            return np.float32(index)

    with pytest.raises(KeyError, match="item 5"):
        list(fm.DataLoader(Broken(), batch_size=2, num_workers=2))
    gc.collect()
    assert _worker_threads() == []


# --- DistributedSampler against torch's ------------------------------------------------


@needs_torch
@SETTINGS
@given(
    n=st.integers(1, 60),
    num_replicas=st.integers(1, 8),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_distributed_sampler_matches_pytorch(n, num_replicas, shuffle, drop_last, seed):
    dataset = list(range(n))
    ours = [
        fm.DistributedSampler(
            dataset, num_replicas=num_replicas, rank=r, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        for r in range(num_replicas)
    ]
    theirs = [
        TorchDistributedSampler(
            dataset, num_replicas=num_replicas, rank=r, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        for r in range(num_replicas)
    ]

    def their_unshuffled(epoch):
        samplers = [
            TorchDistributedSampler(dataset, num_replicas=num_replicas, rank=r, shuffle=False, drop_last=drop_last)
            for r in range(num_replicas)
        ]
        return [list(sampler) for sampler in samplers]

    for epoch in (0, 1, 0):
        for sampler in ours + theirs:
            sampler.set_epoch(epoch)
        our_lists = [list(s) for s in ours]
        their_lists = [list(s) for s in theirs]
        assert (
            [len(s) for s in ours]
            == [len(s) for s in theirs]
            == [len(x) for x in our_lists]
            == [len(x) for x in their_lists]
        )
        assert ours[0].total_size == theirs[0].total_size
        if not shuffle:
            assert our_lists == their_lists
        # Undo the interleaving: rank r holds positions r, r + R, ...; compare the padding.
        for lists in (our_lists, their_lists):
            full = [lists[i % num_replicas][i // num_replicas] for i in range(ours[0].total_size)]
            if drop_last:
                assert len(set(full)) == len(full)  # a cut permutation: nothing repeated
            else:
                assert sorted(full[:n]) == list(range(n))  # every example once ...
                assert full[n:] == (full[:n] * (len(full) // n + 1))[: len(full) - n]  # ... then its head again
        if shuffle:
            # PyTorch's padding and interleaving (its unshuffled sampler's positions) applied to the
            # documented order, default_rng(seed + epoch).permutation(n), gives each rank's indices.
            permutation = np.random.default_rng(seed + epoch).permutation(n)
            for our_list, positions in zip(our_lists, their_unshuffled(epoch)):
                assert our_list == permutation[positions].tolist()
        if epoch == 0:
            first = our_lists
    assert our_lists == first  # set_epoch(0) again: the same order
    # determinism across set_epoch: a second sampler with the same seed agrees, epoch by epoch
    twin = fm.DistributedSampler(
        dataset, num_replicas=num_replicas, rank=0, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    for epoch in (3, 4):
        ours[0].set_epoch(epoch)
        twin.set_epoch(epoch)
        assert list(ours[0]) == list(twin)


def test_distributed_sampler_shuffled_values_written_out():
    """default_rng(4 + 1).permutation(7) is [1, 4, 2, 3, 6, 5, 0]; padded with its head [1, 4] to 9,
    rank r takes positions r, r + 3, r + 6; with drop_last the list is cut to 6 instead."""
    samplers = [fm.DistributedSampler(list(range(7)), num_replicas=3, rank=r, seed=4) for r in range(3)]
    cut = [fm.DistributedSampler(list(range(7)), num_replicas=3, rank=r, seed=4, drop_last=True) for r in range(3)]
    for sampler in samplers + cut:
        sampler.set_epoch(1)
    assert [list(s) for s in samplers] == [[1, 3, 0], [4, 6, 1], [2, 5, 4]]
    assert [list(s) for s in cut] == [[1, 3], [4, 6], [2, 5]]


def test_distributed_sampler_reshuffles_with_epoch():
    sampler = fm.DistributedSampler(list(range(40)), num_replicas=2, rank=0, seed=0)
    epoch0 = list(sampler)
    assert list(sampler) == epoch0  # without set_epoch the order repeats, as in PyTorch
    sampler.set_epoch(1)
    assert list(sampler) != epoch0
    assert sampler.epoch == 1


def test_distributed_sampler_defaults_to_jax_process():
    import jax

    sampler = fm.DistributedSampler(list(range(10)))
    assert sampler.num_replicas == jax.process_count()
    assert sampler.rank == jax.process_index()


def test_distributed_sampler_in_a_loader_splits_the_data():
    X, y = _random_arrays(21)
    X[:, 0] = np.arange(21)
    ds = fm.ArrayDataset(X, y)
    seen = []
    for rank in range(3):
        sampler = fm.DistributedSampler(ds, num_replicas=3, rank=rank, seed=2)
        sampler.set_epoch(4)
        loader = fm.DataLoader(ds, batch_size=4, sampler=sampler)
        assert len(loader) == 2  # 7 per rank
        seen.extend(_epoch_order(loader).tolist())
    assert sorted(seen) == list(range(21))


# --- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [0, -3])
def test_bad_batch_size_value(batch_size):
    X, y = _random_arrays(5)
    with pytest.raises(ValueError, match="batch_size"):
        fm.DataLoader(fm.ArrayDataset(X, y), batch_size=batch_size)


@pytest.mark.parametrize("batch_size", [2.5, "2", True])
def test_bad_batch_size_type(batch_size):
    X, y = _random_arrays(5)
    with pytest.raises(TypeError, match="batch_size"):
        fm.DataLoader(fm.ArrayDataset(X, y), batch_size=batch_size)


def test_unequal_lengths():
    with pytest.raises(ValueError, match=r"arrays.*\(5, 2\).*\(4,\)"):
        fm.ArrayDataset(np.zeros((5, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="arrays"):
        fm.ArrayDataset()
    with pytest.raises(ValueError, match=r"arrays\[1\]"):
        fm.ArrayDataset(np.zeros(3), np.float32(1.0))


@needs_torch
def test_empty_dataset():
    """PyTorch gives a loader of length 0 and an empty epoch; so do we, with and without shuffling."""
    empty = fm.ArrayDataset(np.zeros((0, 2), np.float32), np.zeros(0, np.int64))
    theirs = TorchDataLoader(TensorDataset(torch.zeros(0, 2), torch.zeros(0)), batch_size=2)
    assert len(theirs) == 0 and list(theirs) == []
    for shuffle in (False, True):
        loader = fm.DataLoader(empty, batch_size=2, shuffle=shuffle, seed=0)
        assert len(loader) == 0 and list(loader) == [] and loader.epoch_indices() == []
    assert len(fm.DataLoader([], batch_size=2)) == 0 and list(fm.DataLoader([], batch_size=2)) == []
    ours = fm.DistributedSampler([], num_replicas=2, rank=1)
    assert list(ours) == list(TorchDistributedSampler([], num_replicas=2, rank=1)) == [] and len(ours) == 0


def test_not_a_dataset():
    with pytest.raises(TypeError, match="dataset"):
        fm.DataLoader(iter([1, 2, 3]), batch_size=2)


@pytest.mark.parametrize("rank,num_replicas", [(2, 2), (5, 3), (-1, 2)])
def test_bad_rank(rank, num_replicas):
    with pytest.raises(ValueError, match="rank"):
        fm.DistributedSampler(list(range(10)), num_replicas=num_replicas, rank=rank)


def test_bad_num_replicas_and_seed():
    with pytest.raises(ValueError, match="num_replicas"):
        fm.DistributedSampler(list(range(10)), num_replicas=0, rank=0)
    with pytest.raises(ValueError, match="seed"):
        fm.DistributedSampler(list(range(10)), num_replicas=1, rank=0, seed=-1)
    with pytest.raises(ValueError, match="epoch"):
        fm.DistributedSampler(list(range(10)), num_replicas=1, rank=0).set_epoch(-1)


@needs_torch
def test_shuffle_with_sampler():
    X, y = _random_arrays(5)
    with pytest.raises(ValueError, match="sampler.*shuffle"):
        fm.DataLoader(fm.ArrayDataset(X, y), batch_size=2, shuffle=True, sampler=[0, 1, 2])
    with pytest.raises(ValueError):  # PyTorch refuses the same combination
        TorchDataLoader(TensorDataset(torch.from_numpy(X)), batch_size=2, shuffle=True, sampler=[0, 1, 2])


@needs_torch
def test_shuffle_takes_any_truthy_value_as_pytorch():
    X, y = _random_arrays(5)
    theirs = TorchDataLoader(TensorDataset(torch.from_numpy(X)), batch_size=2, shuffle=3)
    ours = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=2, shuffle=3, seed=0)
    assert type(theirs.sampler).__name__ == type(ours.sampler).__name__ == "RandomSampler"
    assert ours.shuffle is True
    order = np.concatenate(ours.epoch_indices())
    assert order.tolist() == np.random.default_rng(0).permutation(5).tolist()


@needs_torch
def test_negative_num_workers():
    X, y = _random_arrays(5)
    with pytest.raises(ValueError, match="num_workers"):
        fm.DataLoader(fm.ArrayDataset(X, y), batch_size=2, num_workers=-1)
    with pytest.raises(ValueError):  # PyTorch refuses it too
        TorchDataLoader(TensorDataset(torch.from_numpy(X)), batch_size=2, num_workers=-1)


@pytest.mark.parametrize("sampler", [[0, 1, 5], [0, -1, 2], np.array([9, 0])])
def test_sampler_index_out_of_range(sampler):
    X, y = _random_arrays(5)
    loader = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=2, sampler=sampler)
    with pytest.raises(ValueError, match="sampler gave index"):
        list(loader)
    with pytest.raises(IndexError, match="sampler gave index"):
        loader.epoch_indices()


def test_bad_sampler_and_seed_and_collate_fn():
    X, y = _random_arrays(5)
    ds = fm.ArrayDataset(X, y)
    with pytest.raises(TypeError, match="has no len"):
        len(fm.DataLoader(ds, batch_size=2, sampler=iter([0, 1])))  # no length: fine until len() is asked, as in torch
    with pytest.raises(TypeError, match="sampler must be an iterable"):
        fm.DataLoader(ds, batch_size=2, sampler=3)
    with pytest.raises(TypeError, match="sampler"):
        list(fm.DataLoader(ds, batch_size=2, sampler=[0.5, 1.0]))
    with pytest.raises(TypeError, match="sampler"):
        list(fm.DataLoader(ds, batch_size=2, sampler=[[0, 1], [2]]))
    with pytest.raises(TypeError, match="seed"):
        fm.DataLoader(ds, batch_size=2, seed=1.5)
    with pytest.raises(ValueError, match="seed"):
        fm.DataLoader(ds, batch_size=2, seed=-1)
    with pytest.raises(TypeError, match="collate_fn"):
        fm.DataLoader(ds, batch_size=2, collate_fn="stack")


@needs_torch
def test_collate_fn_is_called_with_items_as_in_pytorch():
    X, y = _random_arrays(5)
    calls = []

    def collate(items):
        calls.append(items)
        return len(items)

    ours = list(fm.DataLoader(fm.ArrayDataset(X, y), batch_size=2, collate_fn=collate))
    theirs = list(
        TorchDataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(y)), batch_size=2, collate_fn=len)
    )
    assert ours == theirs == [2, 2, 1]
    assert isinstance(calls[0], list) and len(calls[0][0]) == 2  # a list of (x, y) items


# --- benchmark ---------------------------------------------------------------------------


def test_bench_loader_quick_returns_positive_numbers():
    result = bench_loader(quick=True)
    timings = [result["ours"], result["ours_2_workers"], result["floor"]]
    if torch is not None:
        assert result["torch"] is not None and result["speedup_vs_torch"] > 0
        timings.append(result["torch"])
    else:
        assert result["torch"] is None and result["speedup_vs_torch"] is None
    for timing in timings:
        assert timing["epoch_ms"] > 0
        assert timing["batches_per_s"] == pytest.approx(result["num_batches"] / (timing["epoch_ms"] / 1e3))
    assert result["ours_over_floor"] == pytest.approx(result["ours"]["epoch_ms"] / result["floor"]["epoch_ms"])
    assert result["num_batches"] == -(-result["num_samples"] // result["batch_size"])
    work = result["python_work"]  # the dataset doing Python work: ours (and torch's, if installed), 0 and 2 workers
    for key in ("ours_0", "ours_2") + (("torch_0", "torch_2") if torch is not None else ()):
        assert work["epoch_ms"][key] > 0
    table = "\n".join(format_loader_table(result))
    assert "| fundamentals.DataLoader (worker processes) |" in table


def test_device_plan_follows_what_an_item_is():
    """A subclass that only adds fields keeps the one-gather plan; one with its own __getitem__ has none."""
    X, y = np.arange(12, dtype=np.float32).reshape(6, 2), np.arange(6)

    class Tagged(fm.ArrayDataset):
        note = "extra"

        def __init__(self, X, y):
            super().__init__(X, y)
            self.extra = 1

    class Doubled(fm.ArrayDataset):
        def __getitem__(self, index):
            features, label = super().__getitem__(index)
            return features * 2, label

    class Reordered(fm.DataLoader):
        def __iter__(self):
            return reversed(list(super().__iter__()))

    plan = fm.DataLoader(Tagged(X, y), batch_size=4, shuffle=True, seed=0).device_plan()
    assert plan is not None and plan.arrays[0] is X
    # The plan's gathers are what iteration gives, epoch after epoch (the truth: X[i], y[i] by hand).
    planned = fm.DataLoader(Tagged(X, y), batch_size=4, shuffle=True, seed=0).device_plan()
    twin = fm.DataLoader(Tagged(X, y), batch_size=4, shuffle=True, seed=0)
    for _ in range(2):
        for indices, (features, labels) in zip(planned.epochs(), twin, strict=True):
            np.testing.assert_array_equal(features, X[indices])
            np.testing.assert_array_equal(labels, y[indices])
    assert fm.DataLoader(Doubled(X, y), batch_size=2).device_plan() is None
    np.testing.assert_array_equal(next(iter(fm.DataLoader(Doubled(X, y), batch_size=2)))[0], X[:2] * 2)
    assert fm.DataLoader(fm.ArrayDataset(X, y), batch_size=2, collate_fn=fm.default_collate).device_plan() is None
    assert Reordered(fm.ArrayDataset(X, y), batch_size=2).device_plan() is None
