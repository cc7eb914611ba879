"""One training engine: every loader's batches run as compiled scans, bit for bit the per-step path,
and a re-run `fit` reuses what the process already compiled."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fundamentals as fm
from fundamentals.testing import book_toy_dataset

from .helpers import ReplaySampler, cross_entropy_by_hand, plain_jax_training


def classification(n=203, features=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1).astype(np.int64)
    return X, np.minimum(y, classes - 1)


BookDataset = book_toy_dataset()  # the book's listing A.6: one example per __getitem__


def scaled_collate(items):
    """A collate_fn that changes the batch, so skipping it would change the losses."""
    X = np.stack([x for x, _ in items]) * 0.5
    return X, np.array([label for _, label in items])


class EpochCompiles:
    """A sampler that counts XLA compilations by epoch (fit tells it the epoch through set_epoch)."""

    def __init__(self, inner):
        self.inner, self.epoch, self.by_epoch = inner, None, {}
        jax.monitoring.register_event_duration_secs_listener(self.on_duration)

    def on_duration(self, event, seconds, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            self.by_epoch[self.epoch] = self.by_epoch.get(self.epoch, 0) + 1

    def set_epoch(self, epoch):
        self.epoch = epoch
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __iter__(self):
        return iter(self.inner)

    def __len__(self):
        return len(self.inner)


LOADERS = {
    "book Dataset class": lambda X, y: fm.DataLoader(BookDataset(X, y), batch_size=16, shuffle=True, seed=7),
    "collate_fn": lambda X, y: fm.DataLoader(
        fm.ArrayDataset(X, y), batch_size=16, shuffle=True, seed=7, collate_fn=scaled_collate
    ),
    "num_workers=2": lambda X, y: fm.DataLoader(BookDataset(X, y), batch_size=16, shuffle=True, seed=7, num_workers=2),
    "ArrayDataset, ragged last batch": lambda X, y: fm.DataLoader(
        fm.ArrayDataset(X, y), batch_size=16, shuffle=True, seed=7
    ),
    "ArrayDataset, host chunks": lambda X, y: fm.DataLoader(fm.ArrayDataset(X, y), batch_size=16, shuffle=True, seed=7),
    "DistributedSampler": lambda X, y: fm.DataLoader(
        BookDataset(X, y),
        batch_size=16,
        drop_last=True,
        sampler=fm.DistributedSampler(BookDataset(X, y), num_replicas=2, rank=1, shuffle=True, seed=3),
    ),
    "DistributedSampler, ArrayDataset": lambda X, y: fm.DataLoader(
        fm.ArrayDataset(X, y),
        batch_size=16,
        sampler=fm.DistributedSampler(fm.ArrayDataset(X, y), num_replicas=2, rank=0, shuffle=True, seed=3),
    ),
    "list of batches": lambda X, y: [(X[i : i + 16], y[i : i + 16]) for i in range(0, len(X), 16)],
}


def train(make_loader, fused, dropout=0.0, **kwargs):
    X, y = classification()
    model = fm.NeuralNetwork(5, 3, key=jax.random.key(1), dropout=dropout)
    return fm.fit(model, optax.sgd(0.1, momentum=0.9), make_loader(X, y), num_epochs=3, log=None, fused=fused, **kwargs)


def assert_same_bits(a, b):
    (model_a, history_a), (model_b, history_b) = a, b
    assert history_a["loss"] == history_b["loss"]
    state_b = fm.state_dict(model_b)
    for key, value in fm.state_dict(model_a).items():
        np.testing.assert_array_equal(value, state_b[key], err_msg=key)


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_every_loader_kind_equals_one_jitted_call_a_step_bit_for_bit(name):
    options = {"device_data_bytes": 0} if name.endswith("host chunks") else {}
    fused = train(LOADERS[name], True, **options)
    per_step = train(LOADERS[name], False)
    assert_same_bits(fused, per_step)
    # fused: whole runs of batches in one call each; per step: one call per batch shape
    X, _ = classification()
    assert len(fused[1]["loss"]) == 3 * len(LOADERS[name](*classification()))
    assert fused[1]["compilations"] <= 3 and per_step[1]["compilations"] <= 2


def test_dropout_gets_the_same_per_step_keys_in_every_path():
    make = LOADERS["book Dataset class"]
    fused, per_step = train(make, True, dropout=0.5, seed=4), train(make, False, dropout=0.5, seed=4)
    assert_same_bits(fused, per_step)
    device = train(LOADERS["ArrayDataset, ragged last batch"], True, dropout=0.5, seed=4)
    assert_same_bits(device, per_step)  # the same batches (same seed and order), gathered on the device
    other_seed = train(make, True, dropout=0.5, seed=5)
    assert other_seed[1]["loss"] != fused[1]["loss"]


def test_the_book_dataset_class_and_an_array_dataset_give_the_same_bits():
    # the same seed draws the same batches; one is gathered on the device, one stacked on the host
    assert_same_bits(
        train(LOADERS["book Dataset class"], True), train(LOADERS["ArrayDataset, ragged last batch"], True)
    )


def test_resume_is_bit_identical_with_a_custom_dataset(tmp_path):
    X, y = classification(n=60, seed=4)
    path = str(tmp_path / "run.ckpt")

    def loader():
        return fm.DataLoader(BookDataset(X, y), batch_size=8, shuffle=True, seed=11)

    model = fm.NeuralNetwork(5, 3, key=jax.random.key(2))
    straight = fm.fit(model, optax.adam(1e-2), loader(), num_epochs=3, log=None)
    fm.fit(model, optax.adam(1e-2), loader(), num_epochs=1, log=None, checkpoint=path)
    resumed = fm.fit(model, optax.adam(1e-2), loader(), num_epochs=3, log=None, checkpoint=path, resume=True)
    assert_same_bits(resumed, straight)


def test_nan_stops_with_the_epoch_and_step_on_host_chunks(tmp_path):
    X, y = classification(n=8)
    X[5, 0] = np.nan
    loader = fm.DataLoader(BookDataset(X, y), batch_size=2, sampler=ReplaySampler([[0, 1, 2, 3], [4, 5, 6, 7]]))
    with pytest.raises(fm.TrainingDivergedError, match=r"epoch 2, step 1 \(global step 3\)"):
        fm.fit(fm.NeuralNetwork(5, 3, key=jax.random.key(0)), optax.sgd(0.1), loader, num_epochs=3, log=None)


def test_out_of_range_labels_are_caught_before_any_step():
    X, y = classification(n=40)
    y[-1] = 7  # in the last batch: the check must come before the chunk holding it runs
    lines = []
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 3\).*got values from 0 to 7"):
        fm.fit(
            fm.NeuralNetwork(5, 3, key=jax.random.key(0)),
            optax.sgd(0.1),
            fm.DataLoader(BookDataset(X, y), batch_size=4),
            num_epochs=1,
            log=lines.append,
        )
    assert lines == []


@pytest.mark.parametrize("dataset", ["book class", "ArrayDataset"])
def test_nothing_compiles_after_the_first_epoch(dataset):
    X, y = classification(n=203, features=4)  # a new shape for this test: its programs are compiled here
    data = BookDataset(X, y) if dataset == "book class" else fm.ArrayDataset(X, y)
    counter = EpochCompiles(fm.DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=0))
    model = fm.NeuralNetwork(4, 3, key=jax.random.key(0), hidden=(7, 5))
    try:
        fm.fit(model, optax.sgd(0.1), fm.DataLoader(data, batch_size=16, sampler=counter), num_epochs=4, log=None)
    finally:
        jax.monitoring.unregister_event_duration_listener(counter.on_duration)
    assert counter.by_epoch.get(0, 0) >= 1
    assert {epoch: n for epoch, n in counter.by_epoch.items() if epoch not in (None, 0)} == {}


def test_batches_that_change_shape_mid_epoch_train_with_one_program_per_shape():
    X, y = classification(n=40)
    sizes = [4, 4, 3, 4, 4, 2, 2, 5, 4, 8]
    edges = np.cumsum([0, *sizes])
    batches = [(X[a:b], y[a:b]) for a, b in zip(edges[:-1], edges[1:])]
    fused = fm.fit(fm.NeuralNetwork(5, 3, key=jax.random.key(0)), optax.sgd(0.1), batches, num_epochs=2, log=None)
    per_step = fm.fit(
        fm.NeuralNetwork(5, 3, key=jax.random.key(0)), optax.sgd(0.1), batches, num_epochs=2, log=None, fused=False
    )
    assert_same_bits(fused, per_step)
    # runs: [4, 4] [3] [4, 4] [2, 2] [5] [4] [8] -> chunks of 2 batches of 4, 2 of 2, and single steps of 3, 5, 4, 8
    assert fused[1]["compilations"] == 6
    assert per_step[1]["compilations"] == 5  # one step program per batch size


def test_a_rerun_fit_compiles_nothing_and_a_changed_setting_compiles_anew():
    X_train, y_train, _, _ = fm.toy_data()

    def book_cell(lr):
        compiles = []

        def on_duration(event, seconds, **kwargs):
            if event == "/jax/core/compile/backend_compile_duration":
                compiles.append(seconds)

        jax.monitoring.register_event_duration_secs_listener(on_duration)
        try:
            # the book's cell, as a notebook re-runs it: new data loader, new model, new optimizer
            loader = fm.DataLoader(
                fm.ToyDataset(X_train, y_train), batch_size=2, shuffle=True, seed=123, drop_last=True
            )
            model = fm.NeuralNetwork(2, 2, key=jax.random.key(123))
            model, history = fm.fit(model, optax.sgd(learning_rate=lr), loader, num_epochs=3, log=None)
        finally:
            jax.monitoring.unregister_event_duration_listener(on_duration)
        return model, history, len(compiles)

    first = book_cell(0.5)
    again = book_cell(0.5)
    assert again[2] == 0 and again[1]["compiled"] == 0
    assert_same_bits(first[:2], again[:2])
    # another learning rate is another program: it compiles, and it trains with its own rate
    other = book_cell(0.25)
    assert other[1]["compiled"] >= 1 and other[2] >= 1
    assert other[1]["loss"][0] == first[1]["loss"][0] and other[1]["loss"][1] != first[1]["loss"][1]


def test_a_loss_closure_with_another_constant_is_another_program():
    X, y = classification(n=16)

    def scaled(scale):
        return lambda logits, labels: scale * fm.cross_entropy(logits, labels)

    losses = []
    for scale in (1.0, 3.0):
        loader = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=16)
        _, history = fm.fit(
            fm.NeuralNetwork(5, 3, key=jax.random.key(0)),
            optax.sgd(0.0),
            loader,
            num_epochs=1,
            log=None,
            loss_fn=scaled(scale),
        )
        losses.append(history["loss"][0])
    assert losses[1] == pytest.approx(3 * losses[0], rel=1e-6)


def test_a_cached_program_applies_the_new_optimizer_settings_exactly():
    # one SGD step by hand: params - lr * grad, against fit with a learning rate used nowhere else
    X, y = classification(n=8)
    model = fm.NeuralNetwork(5, 3, key=jax.random.key(3))
    for lr in (0.3, 0.7):
        trained, _ = fm.fit(model, optax.sgd(lr), [(X, y)], num_epochs=1, log=None)
        grads = jax.grad(lambda m: optax.softmax_cross_entropy_with_integer_labels(m(X), y).mean())(model)
        expected = jax.tree_util.tree_map(lambda p, g, lr=lr: p - lr * g, fm.state_dict(model), fm.state_dict(grads))
        for key, value in fm.state_dict(trained).items():
            np.testing.assert_allclose(value, expected[key], rtol=1e-6, atol=1e-7)


def test_bad_device_data_budget_is_named():
    X, y = classification(n=8)
    with pytest.raises(ValueError, match="device_data_bytes"):
        fm.fit(
            fm.NeuralNetwork(5, 3, key=jax.random.key(0)),
            optax.sgd(0.1),
            fm.DataLoader(fm.ArrayDataset(X, y), batch_size=4),
            num_epochs=1,
            device_data_bytes=-1,
        )


# --- what the cache of compiled programs must tell apart ---------------------------------------------

SCALE = 1.0  # read by ScaledNet.__call__: a notebook changes such a global and re-runs its fit cell


class ScaledNet(eqx.Module):
    linear: eqx.nn.Linear

    def __call__(self, x):
        return jax.vmap(self.linear)(x) * SCALE


def test_a_changed_global_the_model_reads_is_a_new_program():
    global SCALE
    X, y = classification(n=8, classes=2)
    model = ScaledNet(eqx.nn.Linear(5, 2, key=jax.random.key(0)))
    try:
        SCALE = 1.0
        _, first = fm.fit(model, optax.sgd(0.5), [(X, y)] * 2, num_epochs=1, log=None)
        SCALE = 0.0  # logits all zero: the loss is log(2) at every step, and nothing trains
        _, second = fm.fit(model, optax.sgd(0.5), [(X, y)] * 2, num_epochs=1, log=None)
    finally:
        SCALE = 1.0
    assert first["loss"][0] != pytest.approx(np.log(2), abs=1e-3)
    np.testing.assert_allclose(second["loss"], [np.log(2)] * 2, rtol=1e-6)
    assert second["compiled"] >= 1


def test_a_loss_object_changed_in_place_is_a_new_program():
    X, y = classification(n=8)

    class WeightedLoss:
        def __init__(self, weight):
            self.weight = weight

        def __call__(self, logits, labels):
            return self.weight * fm.cross_entropy(logits, labels)

    loss = WeightedLoss(1.0)
    model = fm.NeuralNetwork(5, 3, key=jax.random.key(0))
    _, first = fm.fit(model, optax.sgd(0.1), [(X, y)] * 2, num_epochs=1, log=None, loss_fn=loss)
    loss.weight = 0.0
    _, second = fm.fit(model, optax.sgd(0.1), [(X, y)] * 2, num_epochs=1, log=None, loss_fn=loss)
    assert first["loss"][0] > 0 and second["loss"] == [0.0, 0.0]


def test_an_optimizer_state_that_depends_on_parameter_shapes_is_a_new_program():
    class TwoArrays(eqx.Module):
        a: jax.Array
        b: jax.Array

        def __call__(self, x):
            return x[:, :2] @ self.a.reshape(2, 2) + self.b.reshape(-1)[:2]

    def masked_adam():  # Adam on matrices only: the state's structure follows the parameters' ranks
        return optax.masked(optax.adam(0.1), lambda p: jax.tree.map(lambda x: x.ndim > 1, p))

    X, y = classification(n=8, classes=2)
    for model in (TwoArrays(jnp.ones((2, 2)), jnp.ones((1, 2))), TwoArrays(jnp.ones((4,)), jnp.ones((2,)))):
        _, history = fm.fit(model, masked_adam(), [(X, y)], num_epochs=1, log=None)
        assert history["loss"][0] == pytest.approx(cross_entropy_by_hand(model(X), y), rel=1e-6)


def test_compiled_counts_what_xla_compiled():
    X, y = classification(n=40, features=6)  # shapes no other test uses: everything compiles here
    compiles = []

    def on_duration(event, seconds, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    try:
        loader = fm.DataLoader(BookDataset(X, y), batch_size=8)  # 5 batches: one chunk of 5
        _, history = fm.fit(
            fm.NeuralNetwork(6, 3, key=jax.random.key(0), hidden=(9, 4)), optax.sgd(0.1), loader, num_epochs=2, log=None
        )
    finally:
        jax.monitoring.unregister_event_duration_listener(on_duration)
    assert history["compilations"] == history["compiled"] == 1
    assert len(compiles) >= history["compiled"]


def test_models_that_take_only_batches_or_need_a_key_train_and_are_label_checked():
    class BatchOnly(eqx.Module):
        linear: eqx.nn.Linear

        def __call__(self, x):
            assert x.ndim == 2, f"expects a batch, got {x.shape}"
            return jax.vmap(self.linear)(x)

    class NeedsKey(eqx.Module):
        linear: eqx.nn.Linear
        dropout: eqx.nn.Dropout

        def __call__(self, x, *, key):
            return self.dropout(jax.vmap(self.linear)(x), key=key)

    X, y = classification(n=8, classes=2)
    for model in (
        BatchOnly(eqx.nn.Linear(5, 2, key=jax.random.key(0))),
        NeedsKey(eqx.nn.Linear(5, 2, key=jax.random.key(0)), eqx.nn.Dropout(0.1)),
    ):
        _, history = fm.fit(model, optax.sgd(0.1), [(X, y)], num_epochs=1, log=None)
        assert np.isfinite(history["loss"][0])
        with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 2\)"):
            fm.fit(model, optax.sgd(0.1), [(X, y + 2)], num_epochs=1, log=None)


def test_clear_cache_lets_go_of_what_a_program_key_holds_by_identity():
    import gc
    import weakref

    X, y = classification(n=8)

    class Scale:  # a callback object: the traced program can only name it by identity, and keeps it alive
        def __call__(self, logits):
            return np.asarray(logits) * 1.0

    scale = Scale()
    ref = weakref.ref(scale)

    def loss(logits, labels, scale=scale):
        shape = jax.ShapeDtypeStruct(logits.shape, logits.dtype)
        return fm.cross_entropy(logits + 0 * jax.pure_callback(scale, shape, jax.lax.stop_gradient(logits)), labels)

    fm.fit(
        fm.NeuralNetwork(5, 3, key=jax.random.key(0)), optax.sgd(0.1), [(X, y)], num_epochs=1, log=None, loss_fn=loss
    )
    del scale, loss
    gc.collect()
    assert ref() is not None  # kept by the cached program's key, so that its id is not reused
    fm.TrainProgram.clear_cache()
    gc.collect()
    assert ref() is None


# --- against a hand-written loop in plain JAX (no chunks, no cache, no TrainState) ----------------


def loader_epochs(make_loader, num_epochs):
    """The batches a fresh twin of the loader gives, epoch by epoch, as `fit` would see them."""
    X, y = classification()
    loader = make_loader(X, y)
    batches = []
    for epoch in range(num_epochs):
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        batches += [tuple(np.asarray(a) for a in batch[:2]) for batch in loader]
    return batches


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_every_loader_kind_trains_as_a_plain_jax_loop(name):
    model = fm.NeuralNetwork(5, 3, key=jax.random.key(1))
    expected_model, expected_losses = plain_jax_training(
        model, optax.sgd(0.1, momentum=0.9), loader_epochs(LOADERS[name], 3)
    )
    options = {"device_data_bytes": 0} if name.endswith("host chunks") else {}
    # XLA's own products: the plain loop's bits; small products fused (the default on a CPU): its values
    exact, exact_history = train(LOADERS[name], True, fuse_small_dots=False, **options)
    assert exact_history["loss"] == expected_losses
    expected = fm.state_dict(expected_model)
    for key, value in fm.state_dict(exact).items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)
    trained, history = train(LOADERS[name], True, **options)
    np.testing.assert_allclose(history["loss"], expected_losses, rtol=1e-5, atol=1e-7)
    for key, value in fm.state_dict(trained).items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_an_array_dataset_subclass_with_an_extra_field_keeps_the_device_path():
    X, y = classification()

    class Tagged(fm.ArrayDataset):
        def __init__(self, X, y):
            super().__init__(X, y)
            self.source = "sensor 3"

    class Doubled(fm.ArrayDataset):  # its own items: the loader must call its __getitem__
        def __getitem__(self, index):
            features, label = super().__getitem__(index)
            return features * 2, label

    tagged = train(lambda X, y: fm.DataLoader(Tagged(X, y), batch_size=16, shuffle=True, seed=7), True)
    assert tagged[1]["data_on_device"] is True
    assert_same_bits(tagged, train(LOADERS["ArrayDataset, ragged last batch"], False))
    doubled = train(lambda X, y: fm.DataLoader(Doubled(X, y), batch_size=16, shuffle=True, seed=7), True)
    assert doubled[1]["data_on_device"] is False
    expected = plain_jax_training(
        fm.NeuralNetwork(5, 3, key=jax.random.key(1)),
        optax.sgd(0.1, momentum=0.9),
        [(2 * X_, y_) for X_, y_ in loader_epochs(LOADERS["ArrayDataset, ragged last batch"], 3)],
    )[1]
    np.testing.assert_allclose(doubled[1]["loss"], expected, rtol=2e-6, atol=1e-7)


def test_a_zero_device_budget_keeps_the_data_on_the_host():
    on_host = train(LOADERS["ArrayDataset, ragged last batch"], True, device_data_bytes=0)
    on_device = train(LOADERS["ArrayDataset, ragged last batch"], True)
    assert on_host[1]["data_on_device"] is False and on_device[1]["data_on_device"] is True
    assert_same_bits(on_host, on_device)


def test_resume_with_a_shuffling_distributed_sampler_is_bit_identical(tmp_path):
    X, y = classification(n=64, seed=5)
    path = str(tmp_path / "run.ckpt")

    def loader():
        dataset = fm.ArrayDataset(X, y)
        return fm.DataLoader(
            dataset, batch_size=8, sampler=fm.DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True, seed=3)
        )

    model = fm.NeuralNetwork(5, 3, key=jax.random.key(2))
    straight = fm.fit(model, optax.sgd(0.1, momentum=0.9), loader(), num_epochs=3, log=None)
    fm.fit(model, optax.sgd(0.1, momentum=0.9), loader(), num_epochs=1, log=None, checkpoint=path)
    resumed = fm.fit(
        model, optax.sgd(0.1, momentum=0.9), loader(), num_epochs=3, log=None, checkpoint=path, resume=True
    )
    assert_same_bits(resumed, straight)
    # and what that is, independently: rank 1's shard of each epoch's shuffle, epochs 0, 1, 2
    batches = []
    for epoch in range(3):
        order = np.random.default_rng(3 + epoch).permutation(64)[1::2]
        batches += [(X[order[i : i + 8]], y[order[i : i + 8]]) for i in range(0, 32, 8)]
    expected = plain_jax_training(model, optax.sgd(0.1, momentum=0.9), batches)[1]
    np.testing.assert_allclose(resumed[1]["loss"], expected, rtol=2e-6, atol=1e-7)


def test_chunks_respect_the_byte_bound(monkeypatch):
    from fundamentals.train import chunks, program

    calls = []
    original = program.TrainProgram.chunk

    def spy(self, state, batches):
        calls.append(batches[0].shape)
        return original(self, state, batches)

    monkeypatch.setattr(program.TrainProgram, "chunk", spy)
    monkeypatch.setattr(chunks, "CHUNK_BYTES", 1000)  # a batch of 16 x 5 float32 + 16 int64 labels is 448 bytes
    X, y = classification(n=160)
    _, history = fm.fit(
        fm.NeuralNetwork(5, 3, key=jax.random.key(0)),
        optax.sgd(0.1),
        fm.DataLoader(BookDataset(X, y), batch_size=16),
        num_epochs=1,
        log=None,
    )
    assert calls and all(shape[0] * 448 <= 1000 for shape in calls)
    assert sum(shape[0] for shape in calls) == 10 and len(history["loss"]) == 10


def test_batches_of_one_shape_and_another_dtype_are_not_stacked_together():
    X, y = classification(n=32)
    batches = [(X[i : i + 8].astype(np.float16 if i % 16 else np.float32), y[i : i + 8]) for i in range(0, 32, 8)]
    model = fm.NeuralNetwork(5, 3, key=jax.random.key(0))
    _, history = fm.fit(model, optax.sgd(0.1), batches, num_epochs=1, log=None)
    # float16 batches go through the model as float16 inputs (promoted with the float32 weights), each batch its own run
    expected = plain_jax_training(model, optax.sgd(0.1), batches)[1]
    np.testing.assert_allclose(history["loss"], expected, rtol=2e-6, atol=1e-7)
    assert history["programs_run"] == 2  # a float32 step and a float16 step, no chunk mixing them


@pytest.mark.parametrize("dataset", ["book class", "ArrayDataset"])
def test_nan_in_a_later_chunk_names_its_own_step_and_the_features(dataset):
    X, y = classification(n=48)
    X[37, 1] = np.nan  # batch 5 of epoch 1 with batches of 8 in order (rows 32-39): global step 5
    data = BookDataset(X, y) if dataset == "book class" else fm.ArrayDataset(X, y)
    loader = fm.DataLoader(data, batch_size=8)
    where = "row 5, column 1 of this batch" if dataset == "book class" else "row 37, column 1 of the dataset"
    with pytest.raises(
        fm.TrainingDivergedError, match=rf"epoch 1, step 5 \(global step 5\).*features hold nan at {where}"
    ):
        fm.fit(fm.NeuralNetwork(5, 3, key=jax.random.key(0)), optax.sgd(0.1), loader, num_epochs=2, log=None)
    with pytest.raises(fm.TrainingDivergedError, match=r"epoch 1, step 5 \(global step 5\)"):
        fm.fit(
            fm.NeuralNetwork(5, 3, key=jax.random.key(0)), optax.sgd(0.1), loader, num_epochs=2, log=None, fused=False
        )


def test_a_diverging_learning_rate_is_named_as_such():
    X, y = classification(n=32)
    X *= 1e18
    with pytest.raises(fm.TrainingDivergedError, match="Try a smaller learning rate"):
        fm.fit(fm.NeuralNetwork(5, 3, key=jax.random.key(0)), optax.sgd(1e30), [(X, y)] * 4, num_epochs=3, log=None)


def test_bad_batches_are_named_before_training():
    X, y = classification(n=16)
    model = fm.NeuralNetwork(5, 3, key=jax.random.key(0))
    with pytest.raises(TypeError, match=r"labels must be numbers.*dtype <U1.*map them to class indices"):
        fm.fit(model, optax.sgd(0.1), [(X, np.array(list("abcdefghijklmnop")))], num_epochs=1, log=None)
    with pytest.raises(TypeError, match=r"labels must be numbers.*dtype object"):
        fm.fit(model, optax.sgd(0.1), [(X, np.array([None] * 16))], num_epochs=1, log=None)
    with pytest.raises(ValueError, match=r"empty batch.*epoch 1, batch 2"):
        fm.fit(model, optax.sgd(0.1), [(X, y), (X[:0], y[:0])], num_epochs=1, log=None)

    class TwoOutputs(eqx.Module):
        linear: eqx.nn.Linear

        def __call__(self, x):
            logits = jax.vmap(self.linear)(x)
            return logits, jnp.sum(logits)

    with pytest.raises(TypeError, match=r"model returned a tuple of 2 for a batch, not one array of logits"):
        fm.fit(TwoOutputs(eqx.nn.Linear(5, 3, key=jax.random.key(0))), optax.sgd(0.1), [(X, y)], num_epochs=1, log=None)


def test_dropout_keys_are_one_per_row_from_fold_in_of_the_seed_and_the_step():
    # lr 0: the weights never change and every step sees the same batch; only the dropout masks
    # change, and they must be drawn as written out here: the step's key fold_in(key(seed), step),
    # split into one key per row, and each row's key split once per dropout layer.
    X, y = classification(n=8)
    model = fm.NeuralNetwork(5, 3, key=jax.random.key(0), dropout=0.5)
    _, history = fm.fit(model, optax.sgd(0.0), [(X, y)] * 4, num_epochs=1, log=None, seed=9)
    weights = fm.state_dict(model)

    def forward_by_hand(step):
        rows = []
        for x, row_key in zip(X, jax.random.split(jax.random.fold_in(jax.random.key(9), step), len(X))):
            h = np.asarray(x, np.float64)
            for index in (0, 3):  # Linear, ReLU, Dropout at PyTorch's indices 0-2 and 3-5
                h = np.maximum(weights[f"layers.{index}.weight"] @ h + weights[f"layers.{index}.bias"], 0)
                row_key, mask_key = jax.random.split(row_key)
                keep = np.asarray(jax.random.bernoulli(mask_key, 0.5, h.shape))
                h = np.where(keep, h / 0.5, 0.0)
            rows.append(weights["layers.6.weight"] @ h + weights["layers.6.bias"])
        return np.array(rows)

    expected = [cross_entropy_by_hand(forward_by_hand(step), y) for step in range(4)]
    np.testing.assert_allclose(history["loss"], expected, rtol=1e-5)
    assert len(set(history["loss"])) == 4


def test_device_chunks_respect_the_byte_bound(monkeypatch):
    from fundamentals.train import chunks, program

    shapes = []
    original = program.TrainProgram.gather_chunk

    def spy(self, state, data, indices):
        shapes.append(indices.shape)
        return original(self, state, data, indices)

    monkeypatch.setattr(program.TrainProgram, "gather_chunk", spy)
    monkeypatch.setattr(chunks, "CHUNK_BYTES", 2000)  # a batch of 16 rows of 5 float32 and an int64 label: 448 bytes
    X, y = classification(n=160)
    _, history = fm.fit(
        fm.NeuralNetwork(5, 3, key=jax.random.key(0)),
        optax.sgd(0.1),
        fm.DataLoader(fm.ArrayDataset(X, y), batch_size=16),
        num_epochs=1,
        log=None,
    )
    assert history["data_on_device"] and shapes == [(4, 16), (4, 16), (2, 16)]
