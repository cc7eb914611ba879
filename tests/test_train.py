"""A.7: the training loop against PyTorch's, fused against per-step, resume, NaN, evaluation."""

import equinox as eqx
import jax
import numpy as np
import optax
import pytest

import fundamentals as fm

from .helpers import ReplaySampler, torch_book_training, torch_network


def book_model(initial):
    return fm.load_state_dict(fm.NeuralNetwork(2, 2, key=jax.random.key(0)), initial)


@pytest.mark.parametrize("fused", [True, False])
def test_book_training_matches_torch_step_for_step(torch, fused):
    X_train, y_train, X_test, y_test = fm.toy_data()
    initial, orders, torch_losses, network = torch_book_training(torch, X_train, y_train)
    # the book prints the losses 0.75, 0.65, 0.44, 0.13, 0.03, 0.00
    assert [round(x, 2) for x in torch_losses] == [0.75, 0.65, 0.44, 0.13, 0.03, 0.0]

    loader = fm.DataLoader(
        fm.ArrayDataset(X_train, y_train), batch_size=2, sampler=ReplaySampler(orders), drop_last=True
    )
    lines = []
    model, history = fm.fit(book_model(initial), optax.sgd(0.5), loader, num_epochs=3, log=lines.append, fused=fused)
    np.testing.assert_allclose(history["loss"], torch_losses, atol=1e-5)
    with torch.no_grad():
        expected = network(torch.from_numpy(X_train)).numpy()
    np.testing.assert_allclose(np.asarray(model(X_train)), expected, atol=1e-5)
    assert lines[0] == f"Epoch: 001/003 | Batch 001/002 | Train Loss: {torch_losses[0]:.2f}"
    assert lines[-1] == f"Epoch: 003/003 | Batch 002/002 | Train Loss: {torch_losses[-1]:.2f}"
    assert len(lines) == 6

    train_loader = fm.DataLoader(fm.ArrayDataset(X_train, y_train), batch_size=2)
    test_loader = fm.DataLoader(fm.ArrayDataset(X_test, y_test), batch_size=2)
    assert fm.compute_accuracy(model, train_loader) == 1.0  # the book's train and test accuracy
    assert fm.compute_accuracy(model, test_loader) == 1.0
    with torch.no_grad():
        probabilities = torch.softmax(network(torch.from_numpy(X_test)), dim=1).numpy()
    np.testing.assert_allclose(fm.predict_proba(model, X_test), probabilities, atol=1e-5)
    np.testing.assert_array_equal(fm.predict(model, X_test), probabilities.argmax(axis=1))


def random_classification(n=203, features=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1).astype(np.int64)
    return X, np.minimum(y, classes - 1)


@pytest.mark.parametrize("drop_last", [True, False])
def test_fused_and_per_step_agree_bit_for_bit(drop_last):
    X, y = random_classification()
    results = []
    for fused in (True, False):
        loader = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=16, shuffle=True, drop_last=drop_last, seed=7)
        model = fm.NeuralNetwork(5, 3, key=jax.random.key(1))
        results.append(fm.fit(model, optax.sgd(0.1, momentum=0.9), loader, num_epochs=3, log=None, fused=fused))
    (fused_model, fused_history), (step_model, step_history) = results
    assert fused_history["loss"] == step_history["loss"]
    assert len(step_history["loss"]) == 3 * (203 // 16 + (0 if drop_last else 1))
    for key, value in fm.state_dict(fused_model).items():
        np.testing.assert_array_equal(value, fm.state_dict(step_model)[key])


def test_step_never_recompiles():
    X, y = random_classification()
    for drop_last, shapes in ((True, 1), (False, 2)):  # a ragged last batch is one more shape
        loader = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=16, shuffle=True, drop_last=drop_last, seed=0)
        _, history = fm.fit(
            fm.NeuralNetwork(5, 3, key=jax.random.key(0)), optax.adam(1e-3), loader, num_epochs=4, log=None, fused=False
        )
        assert history["compilations"] == shapes


def test_same_seed_same_bits():
    X, y = random_classification()
    runs = []
    for _ in range(2):
        loader = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=32, shuffle=True, seed=3)
        runs.append(
            fm.fit(fm.NeuralNetwork(5, 3, key=jax.random.key(5)), optax.adam(1e-2), loader, num_epochs=2, log=None)
        )
    assert runs[0][1]["loss"] == runs[1][1]["loss"]


def test_resume_is_bit_identical(tmp_path):
    X, y = random_classification(seed=4)
    path = str(tmp_path / "run.ckpt")

    def loader():
        return fm.DataLoader(fm.ArrayDataset(X, y), batch_size=16, shuffle=True, seed=11)

    optimizer = optax.sgd(0.05, momentum=0.9)
    model = fm.NeuralNetwork(5, 3, key=jax.random.key(2))
    straight, straight_history = fm.fit(model, optimizer, loader(), num_epochs=3, log=None)

    fm.fit(model, optimizer, loader(), num_epochs=1, log=None, checkpoint=path)
    lines = []
    resumed, resumed_history = fm.fit(
        model, optimizer, loader(), num_epochs=3, log=lines.append, checkpoint=path, resume=True
    )
    assert lines[0].startswith("Resumed from")
    assert lines[1].startswith("Epoch: 002/003 | Batch 001/")
    assert resumed_history["loss"] == straight_history["loss"]
    for key, value in fm.state_dict(straight).items():
        np.testing.assert_array_equal(fm.state_dict(resumed)[key], value)


def test_nan_loss_stops_with_epoch_and_step_and_keeps_the_checkpoint(tmp_path):
    X, y = random_classification(n=8)
    X[5, 0] = np.nan
    path = tmp_path / "run.ckpt"
    # epoch 1 sees rows 0-3, epoch 2 starts with the batch holding the NaN row
    sampler = ReplaySampler([[0, 1, 2, 3], [4, 5, 6, 7]])
    loader = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=2, sampler=sampler)
    with pytest.raises(fm.TrainingDivergedError, match=r"epoch 2, step 1") as info:
        fm.fit(
            fm.NeuralNetwork(5, 3, key=jax.random.key(0)),
            optax.sgd(0.1),
            loader,
            num_epochs=3,
            log=None,
            checkpoint=str(path),
        )
    assert isinstance(info.value, FloatingPointError)
    saved = path.read_bytes()
    model = fm.load_model(path)  # the epoch-1 checkpoint is intact and loads as a model
    assert np.all(np.isfinite(fm.state_dict(model)["layers.0.weight"]))
    assert path.read_bytes() == saved


def test_dropout_models_get_a_key_per_step_and_are_evaluated_without_dropout():
    X, y = random_classification()

    def run(seed):
        loader = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=32, shuffle=True, seed=0)
        model = fm.NeuralNetwork(5, 3, key=jax.random.key(0), dropout=0.5)
        return fm.fit(
            model,
            optax.sgd(0.1),
            loader,
            num_epochs=2,
            log=None,
            seed=seed,
            val_loader=fm.DataLoader(fm.ArrayDataset(X, y), batch_size=50),
        )

    (model_a, history_a), (_, history_b), (_, history_c) = run(1), run(1), run(2)
    assert history_a["loss"] == history_b["loss"]
    assert history_a["loss"] != history_c["loss"]
    # validation accuracy is the inference-mode accuracy: dropout off, computed by hand here
    inference = eqx.nn.inference_mode(model_a)
    by_hand = float(np.mean(np.argmax(np.asarray(inference(X)), axis=1) == y))
    assert history_a["val_accuracy"][-1] == pytest.approx(by_hand)


def test_compute_accuracy_matches_torch(torch):
    X, y = random_classification(n=50)
    network = torch_network(torch, 5, 3)
    model = fm.load_state_dict(fm.NeuralNetwork(5, 3, key=jax.random.key(0)), network.state_dict())
    with torch.no_grad():
        expected = (network(torch.from_numpy(X)).argmax(dim=1).numpy() == y).mean()
    assert fm.compute_accuracy(model, fm.DataLoader(fm.ArrayDataset(X, y), batch_size=7)) == pytest.approx(expected)


def test_logging_progress_and_silence(capsys):
    X, y = random_classification(n=40)
    loader = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=10, shuffle=True, seed=0)
    model = fm.NeuralNetwork(5, 3, key=jax.random.key(0))
    fm.fit(model, optax.sgd(0.1), loader, num_epochs=2, log=None, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "8/8" in captured.err  # the tqdm bar reached every step
    fm.fit(model, optax.sgd(0.1), loader, num_epochs=1)
    out = capsys.readouterr().out.splitlines()
    assert out == [line for line in out if line.startswith("Epoch: 001/001 | Batch 00")] and len(out) == 4


def test_generic_dataset_uses_the_per_step_path_and_agrees():
    X, y = random_classification(n=30)

    class ToyDataset:  # the book's map-style dataset: one item at a time
        def __len__(self):
            return len(X)

        def __getitem__(self, index):
            return X[index], y[index]

    results = []
    for dataset in (ToyDataset(), fm.ArrayDataset(X, y)):
        loader = fm.DataLoader(dataset, batch_size=4, shuffle=True, seed=9)
        results.append(
            fm.fit(fm.NeuralNetwork(5, 3, key=jax.random.key(0)), optax.sgd(0.1), loader, num_epochs=2, log=None)[1][
                "loss"
            ]
        )
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6)


def test_bad_arguments():
    X, y = random_classification(n=10)
    loader = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=2)
    model = fm.NeuralNetwork(5, 3, key=jax.random.key(0))
    with pytest.raises(TypeError, match="optimizer"):
        fm.fit(model, "sgd", loader, num_epochs=1)
    with pytest.raises(ValueError, match="num_epochs"):
        fm.fit(model, optax.sgd(0.1), loader, num_epochs=-1)
    with pytest.raises(ValueError, match="resume"):
        fm.fit(model, optax.sgd(0.1), loader, num_epochs=1, resume=True)
    with pytest.raises(ValueError, match="no batches"):
        fm.fit(model, optax.sgd(0.1), fm.DataLoader(fm.ArrayDataset(X, y), batch_size=20, drop_last=True), num_epochs=1)
    # a batch that is not (features, labels, ...) is named, whatever the loader
    for batch, named in (
        (X[:2], "ndarray"),
        ({"x": X[:2], "y": y[:2]}, r"dict with keys \['x', 'y'\]"),
        ((X[:2],), "tuple of length 1"),
    ):
        with pytest.raises(TypeError, match=rf"\(features, labels, \.\.\.\) tuple, got a {named}"):
            fm.fit(model, optax.sgd(0.1), [batch], num_epochs=1, log=None)
    with pytest.raises(TypeError, match="train_loader must be iterable"):
        fm.fit(model, optax.sgd(0.1), 42, num_epochs=1, log=None)


@pytest.mark.parametrize("fused", [True, False])
def test_labels_out_of_range_are_named_not_blamed_on_the_learning_rate(fused):
    X, y = random_classification(n=20)
    loader = fm.DataLoader(fm.ArrayDataset(X, y + 5), batch_size=4)
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 3\).*got values from 5 to"):
        fm.fit(
            fm.NeuralNetwork(5, 3, key=jax.random.key(0)), optax.sgd(0.1), loader, num_epochs=1, log=None, fused=fused
        )
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        fm.cross_entropy(np.zeros((2, 2), np.float32), np.array([5, 7]))


def test_subclass_that_changes_getitem_is_not_gathered_around(torch):
    X, y = random_classification(n=40)

    class Scaled(fm.ArrayDataset):  # an augmentation the fused path must not skip
        def __getitem__(self, index):
            features, labels = super().__getitem__(index)
            return features * 0 + 1.0, labels

    def losses(fused):
        loader = fm.DataLoader(Scaled(X, y), batch_size=4, shuffle=True, seed=0)
        return fm.fit(
            fm.NeuralNetwork(5, 3, key=jax.random.key(0)), optax.sgd(0.1), loader, num_epochs=1, log=None, fused=fused
        )[1]["loss"]

    # fused or not, the subclass's __getitem__ runs: the chunks are stacked from its batches
    assert losses(True) == losses(False)
    # the default picks the per-step path, which sees the subclass's features (all ones):
    # the first loss is then the cross-entropy of the model's logits for a row of ones
    network = torch_network(torch, 5, 3)
    model = fm.load_state_dict(fm.NeuralNetwork(5, 3, key=jax.random.key(0)), network.state_dict())
    loader = fm.DataLoader(Scaled(X, y), batch_size=4, shuffle=True, seed=0)
    _, labels = next(iter(loader))
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(network(torch.ones(4, 5)), torch.from_numpy(labels)).item()
    first = fm.fit(
        model, optax.sgd(0.1), fm.DataLoader(Scaled(X, y), batch_size=4, shuffle=True, seed=0), num_epochs=1, log=None
    )[1]["loss"][0]
    assert first == pytest.approx(expected, abs=1e-5)


def test_fused_compilations_do_not_grow_with_epochs():
    X, y = random_classification(n=2100, features=3)
    counts = []
    for epochs in (1, 3):
        loader = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=2, shuffle=True, seed=0)
        counts.append(
            fm.fit(
                fm.NeuralNetwork(3, 3, key=jax.random.key(0)),
                optax.sgd(0.1),
                loader,
                num_epochs=epochs,
                log=None,
                fused=True,
            )[1]["compilations"]
        )
    # 1050 steps an epoch run as a chunk of 1024 and one of 26: two programs, compiled once each
    assert counts == [2, 2]


def test_resume_with_a_val_loader_and_a_different_seed(tmp_path):
    X, y = random_classification(n=40)
    path = str(tmp_path / "run.ckpt")
    loader = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=8, shuffle=True, seed=0)
    model = fm.NeuralNetwork(5, 3, key=jax.random.key(0))
    fm.fit(model, optax.sgd(0.1), loader, num_epochs=1, log=None, checkpoint=path)
    _, history = fm.fit(
        model,
        optax.sgd(0.1),
        loader,
        num_epochs=2,
        log=None,
        checkpoint=path,
        resume=True,
        val_loader=fm.DataLoader(fm.ArrayDataset(X, y), batch_size=40),
    )
    assert len(history["val_accuracy"]) == 1 and len(history["loss"]) == 10
    with pytest.raises(ValueError, match="seed=7 differs"):
        fm.fit(model, optax.sgd(0.1), loader, num_epochs=3, log=None, checkpoint=path, resume=True, seed=7)


def test_epoch_loss_is_the_mean_of_each_epochs_step_losses():
    X, y = random_classification(n=50)
    loader = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=8, shuffle=True, seed=2)
    _, history = fm.fit(fm.NeuralNetwork(5, 3, key=jax.random.key(0)), optax.sgd(0.1), loader, num_epochs=3, log=None)
    steps = len(loader)
    assert len(history["loss"]) == 3 * steps
    for epoch, value in enumerate(history["epoch_loss"]):
        assert value == pytest.approx(float(np.mean(history["loss"][epoch * steps : (epoch + 1) * steps])), rel=1e-12)


def test_resuming_with_an_optimizer_of_other_shapes_is_refused(tmp_path):
    X, y = random_classification(n=16)
    path = str(tmp_path / "run.ckpt")
    loader = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=8)
    model = fm.NeuralNetwork(5, 3, key=jax.random.key(0))
    fm.fit(model, optax.adam(1e-3), loader, num_epochs=1, log=None, checkpoint=path)  # count, mu (6), nu (6)
    other = optax.chain(optax.trace(0.9), optax.trace(0.5), optax.scale_by_schedule(lambda count: -0.1))
    assert len(jax.tree_util.tree_leaves(other.init(eqx.filter(model, eqx.is_inexact_array)))) == 13  # as many arrays
    with pytest.raises(
        fm.CheckpointError,
        match=r"another optimizer: its state is ScaleByAdamState.* with 13 arrays, "
        r"this optimizer's is TraceState \+ TraceState \+ ScaleByScheduleState with 13 arrays",
    ):
        fm.fit(model, other, loader, num_epochs=2, log=None, checkpoint=path, resume=True)


def test_fit_tells_the_sampler_each_epoch():
    X, y = random_classification(n=12)

    class Recording(fm.DistributedSampler):
        def set_epoch(self, epoch):
            calls.append(epoch)
            super().set_epoch(epoch)

    calls = []
    dataset = fm.ArrayDataset(X, y)
    loader = fm.DataLoader(dataset, batch_size=4, sampler=Recording(dataset, num_replicas=2, rank=0, seed=1))
    fm.fit(fm.NeuralNetwork(5, 3, key=jax.random.key(0)), optax.sgd(0.1), loader, num_epochs=3, log=None)
    assert calls == [0, 1, 2]
