"""The loops people port: evaluation every N steps, callbacks, every Optax transformation, stateful
layers, loaders without a length, `max_steps` and the history plot. Each against an independent
truth: a hand-written per-step loop in plain JAX (Optax called by hand, `value=` passed by hand),
the Equinox idiom for stateful models, or losses computed by hand in NumPy."""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fundamentals as fm

from .helpers import cross_entropy_by_hand


def classification(n=96, features=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1).astype(np.int64)
    return X, np.minimum(y, classes - 1)


def batches_of(X, y, size):
    return [(X[i : i + size], y[i : i + size]) for i in range(0, len(X), size)]


def ce(logits, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def by_hand(model, optimizer, batches, extra_args=False):
    """The per-step loop written out: jax.jit of loss, grad, Optax's update (with value= when asked)."""
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss_of(p, X, y):
        return ce(eqx.combine(p, static)(X), y)

    @jax.jit
    def step(params, opt_state, X, y):
        value, grads = jax.value_and_grad(loss_of)(params, X, y)
        if extra_args:
            updates, opt_state = optimizer.update(
                grads, opt_state, params, value=value, grad=grads, value_fn=lambda p: loss_of(p, X, y)
            )
        else:
            updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    opt_state = optimizer.init(params)
    losses, states = [], []
    for X, y in batches:
        params, opt_state, value = step(params, opt_state, X, y)
        losses.append(float(value))
        states.append(opt_state)
    return eqx.combine(params, static), losses, states


def assert_close_models(a, b, rtol=2e-6):
    sa, sb = fm.state_dict(a), fm.state_dict(b)
    for key in sa:
        np.testing.assert_allclose(sa[key], sb[key], rtol=rtol, atol=1e-7, err_msg=key)


# --- every Optax transformation ------------------------------------------------------------------


def test_reduce_on_plateau_gets_the_loss_as_optax_documents():
    X, y = classification()
    batches = batches_of(X, y, 8) * 3
    model = fm.NeuralNetwork(4, 3, key=jax.random.key(0))

    def optimizer():
        return optax.chain(
            optax.sgd(0.5), optax.contrib.reduce_on_plateau(patience=2, factor=0.5, cooldown=0, accumulation_size=1)
        )

    trained, history = fm.fit(model, optimizer(), batches, num_epochs=1, log=None)
    expected, losses, states = by_hand(model, optimizer(), batches, extra_args=True)
    np.testing.assert_allclose(history["loss"], losses, rtol=2e-6)
    assert_close_models(trained, expected)
    scales = [float(s[1].scale) for s in states]
    assert history["lr_scale"] == pytest.approx(scales) and min(scales) < 1.0  # the plateau did reduce it


def test_multisteps_accumulates_gradients_and_keeps_a_loss_per_micro_batch():
    X, y = classification()
    batches = batches_of(X, y, 8)
    model = fm.NeuralNetwork(4, 3, key=jax.random.key(1))
    trained, history = fm.fit(
        model, optax.MultiSteps(optax.adam(0.05), every_k_schedule=3), batches, num_epochs=1, log=None
    )
    expected, losses, _ = by_hand(
        model, optax.MultiSteps(optax.adam(0.05), every_k_schedule=3).gradient_transformation(), batches
    )
    assert len(history["loss"]) == len(batches)
    np.testing.assert_allclose(history["loss"], losses, rtol=2e-6)
    assert_close_models(trained, expected)
    # and the accumulation is real: after two micro-batches nothing has moved yet
    two, _ = fm.fit(model, optax.MultiSteps(optax.adam(0.05), every_k_schedule=3), batches[:2], num_epochs=1, log=None)
    assert_close_models(two, model, rtol=0)


def test_the_learning_rate_of_every_step_is_the_schedules():
    X, y = classification()
    batches = batches_of(X, y, 8)
    schedule = optax.warmup_cosine_decay_schedule(0.0, 0.3, warmup_steps=4, decay_steps=20, end_value=0.01)
    model = fm.NeuralNetwork(4, 3, key=jax.random.key(2))
    optimizer = optax.inject_hyperparams(optax.sgd)(learning_rate=schedule)
    trained, history = fm.fit(model, optimizer, batches, num_epochs=2, log=None)
    assert history["learning_rate"] == pytest.approx([float(schedule(i)) for i in range(2 * len(batches))], rel=1e-6)
    expected, losses, _ = by_hand(model, optax.inject_hyperparams(optax.sgd)(learning_rate=schedule), batches * 2)
    np.testing.assert_allclose(history["loss"], losses, rtol=2e-6)
    assert_close_models(trained, expected)


def test_lbfgs_gets_value_grad_and_value_fn():
    X, y = classification(n=32)
    batches = [(X, y)] * 5  # L-BFGS on one full batch, as it is meant to run
    model = fm.NeuralNetwork(4, 3, key=jax.random.key(3), hidden=(8,))
    trained, history = fm.fit(model, optax.lbfgs(), batches, num_epochs=1, log=None)
    expected, losses, _ = by_hand(model, optax.lbfgs(), batches, extra_args=True)
    np.testing.assert_allclose(history["loss"], losses, rtol=1e-5)
    assert history["loss"][-1] < history["loss"][0]
    assert_close_models(trained, expected, rtol=1e-5)


# --- evaluation every N steps, callbacks ---------------------------------------------------------


def val_loss_by_hand(model, X, y):
    return cross_entropy_by_hand(np.asarray(eqx.nn.inference_mode(model)(X)), y)


def test_val_loss_at_each_evaluation_is_the_models_mean_cross_entropy_then():
    X, y = classification(n=96)
    Xv, yv = classification(n=30, seed=1)
    batches = batches_of(X, y, 8)  # 12 steps an epoch
    model = fm.NeuralNetwork(4, 3, key=jax.random.key(4))
    lines = []
    _, history = fm.fit(
        model,
        optax.sgd(0.2),
        batches,
        num_epochs=2,
        val_loader=fm.DataLoader(fm.ArrayDataset(Xv, yv), batch_size=7),  # a ragged last batch of 2
        eval_every=5,
        eval_train_loss=True,
        metrics={"error": lambda logits, labels: jnp.mean(jnp.argmax(logits, -1) != labels)},
        log=lines.append,
    )
    assert history["eval_step"] == [5, 10, 12, 15, 20, 24]  # every 5 steps, and each epoch's end
    # the truth: the same steps by hand, the loss of the model at each evaluation step
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimizer = optax.sgd(0.2)
    opt_state = optimizer.init(params)
    expected_val, expected_train, expected_error = [], [], []
    for step, (Xb, yb) in enumerate(batches * 2, 1):
        grads = jax.grad(lambda p, Xb=Xb, yb=yb: ce(eqx.combine(p, static)(Xb), yb))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if step in history["eval_step"]:
            current = eqx.combine(params, static)
            expected_val.append(val_loss_by_hand(current, Xv, yv))
            expected_train.append(val_loss_by_hand(current, X, y))
            expected_error.append(float(np.mean(np.argmax(np.asarray(current(Xv)), -1) != yv)))
    np.testing.assert_allclose(history["val_loss"], expected_val, rtol=1e-5)
    np.testing.assert_allclose(history["train_eval_loss"], expected_train, rtol=1e-5)
    np.testing.assert_allclose(history["val_error"], expected_error, rtol=1e-6)
    np.testing.assert_allclose(history["val_accuracy"], 1 - np.asarray(expected_error), rtol=1e-6)
    assert [line for line in lines if "Val loss" in line][0].startswith("Epoch: 001/002 | Step 000005 | Train loss: ")
    assert history["programs_run"] <= 8  # chunks of 5, 5, 2, 3, ... and the evaluation programs, not one a step


def test_early_stopping_restores_the_model_of_the_lowest_validation_loss(tmp_path):
    X, y = classification(n=64)
    Xv, yv = classification(n=64, seed=7)
    yv = (yv + 1) % 3  # labels the training data contradicts: the validation loss turns up soon
    best_file = tmp_path / "best.safetensors"
    model = fm.NeuralNetwork(4, 3, key=jax.random.key(5))
    lines = []
    trained, history = fm.fit(
        model,
        optax.sgd(0.3),
        fm.DataLoader(fm.ArrayDataset(X, y), batch_size=8, shuffle=True, seed=0),
        num_epochs=50,
        val_loader=fm.DataLoader(fm.ArrayDataset(Xv, yv), batch_size=64),
        eval_every=4,
        callbacks=[fm.EarlyStopping("val_loss", patience=3), fm.BestCheckpoint(best_file, monitor="val_loss")],
        log=lines.append,
    )
    assert "stopped" in history and history["stopped"]["reason"].startswith("EarlyStopping: val_loss")
    assert history["stopped"]["step"] < 50 * 8
    stopped = history["stopped"]
    assert stopped["epoch"] == (stopped["step"] - 1) // 8 + 1  # 8 steps an epoch
    assert f"Stopped at step {stopped['step']} (epoch {stopped['epoch']}): {stopped['reason']}" in lines
    best = min(history["val_loss"])
    assert history["val_loss"][-4] == best  # three evaluations without improvement after the best
    assert val_loss_by_hand(trained, Xv, yv) == pytest.approx(best, rel=1e-5)
    saved = fm.load_model(best_file, like=model)
    assert val_loss_by_hand(saved, Xv, yv) == pytest.approx(best, rel=1e-5)


def test_a_resumed_run_stops_where_an_uninterrupted_one_does(tmp_path):
    X, y = classification(n=64)
    Xv, yv = classification(n=64, seed=7)
    yv = (yv + 1) % 3
    path = str(tmp_path / "run.ckpt")

    def run(num_epochs, resume=False, checkpoint=None):
        return fm.fit(
            fm.NeuralNetwork(4, 3, key=jax.random.key(5)),
            optax.sgd(0.3, momentum=0.5),
            fm.DataLoader(fm.ArrayDataset(X, y), batch_size=8, shuffle=True, seed=0),
            num_epochs=num_epochs,
            val_loader=fm.DataLoader(fm.ArrayDataset(Xv, yv), batch_size=64),
            eval_every=4,
            callbacks=[fm.EarlyStopping("val_loss", patience=3)],
            checkpoint=checkpoint,
            resume=resume,
            log=None,
        )

    straight = run(50)
    stop_epoch = straight[1]["stopped"]["epoch"]
    assert stop_epoch >= 2
    run(stop_epoch - 1, checkpoint=path)  # ends (without stopping) one epoch before the stop
    resumed = run(50, resume=True, checkpoint=path)
    assert resumed[1]["stopped"] == straight[1]["stopped"]
    assert resumed[1]["loss"] == straight[1]["loss"] and resumed[1]["val_loss"] == straight[1]["val_loss"]
    assert_close_models(resumed[0], straight[0], rtol=0)
    again = run(50, resume=True, checkpoint=path)  # the checkpoint of a stopped run: nothing more to train
    assert again[1]["loss"] == straight[1]["loss"]
    assert_close_models(again[0], straight[0], rtol=0)


# --- stateful models -------------------------------------------------------------------------------


class BatchNormNet(eqx.Module):
    """A network with BatchNorm, written for one example as in Equinox's own examples."""

    linear1: eqx.nn.Linear
    norm: eqx.nn.BatchNorm
    linear2: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.linear1 = eqx.nn.Linear(4, 16, key=k1)
        self.norm = eqx.nn.BatchNorm(16, axis_name="batch", mode="batch")
        self.linear2 = eqx.nn.Linear(16, 3, key=k2)

    def __call__(self, x, state):
        x, state = self.norm(jax.nn.relu(self.linear1(x)), state)
        return self.linear2(x), state


def equinox_idiom(model, state, optimizer, batches):
    """Equinox's documented loop for a stateful model: filter_jit, filter_value_and_grad, vmap with axis_name."""

    @eqx.filter_jit
    def step(model, state, opt_state, X, y):
        def loss(model, state):
            batch_model = jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))
            logits, state = batch_model(X, state)
            return ce(logits, y), state

        (value, state), grads = eqx.filter_value_and_grad(loss, has_aux=True)(model, state)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), state, opt_state, value

    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    losses = []
    for X, y in batches:
        model, state, opt_state, value = step(model, state, opt_state, X, y)
        losses.append(float(value))
    return model, state, losses


def test_a_batchnorm_model_trains_as_the_equinox_idiom_bit_for_bit(tmp_path):
    X, y = classification(n=64)
    batches = batches_of(X, y, 8)
    model, state = eqx.nn.make_with_state(BatchNormNet)(jax.random.key(6))
    expected, expected_state, losses = equinox_idiom(model, state, optax.adam(0.01), batches * 2)
    # XLA's own products: bit for bit Equinox's loop
    (exact, exact_state), exact_history = fm.fit(
        (model, state), optax.adam(0.01), batches, num_epochs=2, log=None, fuse_small_dots=False
    )
    assert exact_history["loss"] == losses
    expected_leaves = jax.tree_util.tree_leaves((expected, expected_state))
    for a, b in zip(jax.tree_util.tree_leaves((exact, exact_state)), expected_leaves):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the default, small products fused on the CPU: the same to float32 rounding
    (trained, trained_state), history = fm.fit((model, state), optax.adam(0.01), batches, num_epochs=2, log=None)
    np.testing.assert_allclose(history["loss"], losses, rtol=1e-5)
    arrays = jax.tree_util.tree_leaves(eqx.filter((trained, trained_state), eqx.is_array))
    for a, b in zip(arrays, jax.tree_util.tree_leaves(eqx.filter((expected, expected_state), eqx.is_array))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    # the running statistics moved, and inference uses them
    running_mean = trained_state.get(trained.norm.batch_state_index)[0]
    assert np.abs(np.asarray(running_mean)).sum() > 0
    inference = eqx.nn.inference_mode(trained)
    by_hand = jax.vmap(inference, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(X, trained_state)[0]
    accuracy = fm.compute_accuracy((trained, trained_state), fm.DataLoader(fm.ArrayDataset(X, y), batch_size=16))
    assert accuracy == pytest.approx(float(np.mean(np.argmax(np.asarray(by_hand), -1) == y)))
    np.testing.assert_allclose(fm.predict((trained, trained_state), X), np.argmax(np.asarray(by_hand), -1))

    # its state is in the checkpoint, and resume is bit-identical
    path = str(tmp_path / "bn.ckpt")
    fm.fit((model, state), optax.adam(0.01), batches, num_epochs=1, log=None, checkpoint=path)
    (resumed, resumed_state), resumed_history = fm.fit(
        (model, state), optax.adam(0.01), batches, num_epochs=2, log=None, checkpoint=path, resume=True
    )
    assert resumed_history["loss"] == history["loss"]
    for a, b in zip(
        jax.tree_util.tree_leaves((resumed, resumed_state)), jax.tree_util.tree_leaves((trained, trained_state))
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# --- loaders without a length, max_steps -------------------------------------------------------------


class Stream:
    """A re-iterable of batches with no __len__ (a stream read afresh each epoch)."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


def test_an_iterable_without_len_trains_as_a_list_of_the_same_batches():
    X, y = classification()
    batches = batches_of(X, y, 8)
    model = fm.NeuralNetwork(4, 3, key=jax.random.key(7))
    lines = []
    from_stream = fm.fit(model, optax.sgd(0.1), Stream(batches), num_epochs=2, log=lines.append, progress=True)
    from_list = fm.fit(model, optax.sgd(0.1), batches, num_epochs=2, log=None)
    assert from_stream[1]["loss"] == from_list[1]["loss"]
    assert lines[0] == f"Epoch: 001/002 | Batch 001 | Train Loss: {from_list[1]['loss'][0]:.2f}"  # no invented total


def test_max_steps_ends_a_run_mid_epoch_and_over_an_endless_stream(tmp_path):
    X, y = classification()
    batches = batches_of(X, y, 8)
    model = fm.NeuralNetwork(4, 3, key=jax.random.key(8))
    _, history = fm.fit(model, optax.sgd(0.1), batches, num_epochs=5, max_steps=17, log=None)
    assert len(history["loss"]) == 17
    endless = itertools.cycle(batches)
    _, streamed = fm.fit(model, optax.sgd(0.1), endless, max_steps=17, log=None)
    assert streamed["loss"] == history["loss"]
    # a run cut by max_steps resumes from where it stopped
    path = str(tmp_path / "run.ckpt")
    fm.fit(model, optax.sgd(0.1), batches, num_epochs=5, max_steps=17, log=None, checkpoint=path)
    lines = []
    _, resumed = fm.fit(
        model, optax.sgd(0.1), batches, num_epochs=5, max_steps=30, log=lines.append, checkpoint=path, resume=True
    )
    assert lines[0] == f"Resumed from {path} after epoch 001/005, batch 005 of the next"
    assert lines[1].startswith("Epoch: 002/005 | Batch 006/012 | Train Loss: ")
    _, straight = fm.fit(model, optax.sgd(0.1), batches, num_epochs=5, max_steps=30, log=None)
    assert resumed["loss"] == straight["loss"] and resumed["epoch_loss"] == straight["epoch_loss"]
    # without num_epochs the log line says what it knows
    stream_path = str(tmp_path / "stream.ckpt")
    fm.fit(model, optax.sgd(0.1), Stream(batches), max_steps=17, log=None, checkpoint=stream_path)
    lines = []
    fm.fit(model, optax.sgd(0.1), Stream(batches), max_steps=20, log=lines.append, checkpoint=stream_path, resume=True)
    assert lines[0] == f"Resumed from {stream_path} after epoch 001, batch 005 of the next"
    assert lines[1].startswith("Epoch: 002 | Batch 006 | Train Loss: ")


def test_bad_settings_are_named_before_training(tmp_path):
    X, y = classification(n=16)
    model = fm.NeuralNetwork(4, 3, key=jax.random.key(0))
    path = tmp_path / "run.ckpt"
    val = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=8)
    cases = [
        (dict(num_epochs=1, eval_every=5), ValueError, "eval_every needs something to evaluate"),
        (dict(num_epochs=1, max_steps=0), ValueError, "max_steps"),
        (dict(num_epochs=1, val_loader=val, eval_every=0), ValueError, "eval_every"),
        (dict(), ValueError, "num_epochs, max_steps or both"),
        (
            dict(num_epochs=1, val_loader=val, callbacks=[fm.EarlyStopping("val_los")]),
            ValueError,
            "monitor='val_los' is never recorded",
        ),
        (dict(num_epochs=1, callbacks=[fm.EarlyStopping()]), ValueError, "pass val_loader= to evaluate"),
        (dict(num_epochs=1, callbacks=[object()]), TypeError, "callbacks must be fm.Callback objects"),
        (dict(num_epochs=1, metrics={"m": len}), ValueError, "pass val_loader= too"),
    ]
    for options, error, message in cases:
        lines = []
        with pytest.raises(error, match=message):
            fm.fit(model, optax.sgd(0.1), batches_of(X, y, 8), log=lines.append, checkpoint=str(path), **options)
        assert lines == [] and not path.exists()  # nothing trained, nothing written
    generator = (batch for batch in batches_of(X, y, 8))
    with pytest.raises(ValueError, match="epoch 2: train_loader yielded no batches; it is a one-shot iterator"):
        fm.fit(model, optax.sgd(0.1), generator, num_epochs=2, log=None)


# --- the picture of a run ----------------------------------------------------------------------------


def test_plot_history_draws_every_recorded_series(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    X, y = classification()
    schedule = optax.linear_schedule(0.2, 0.02, 24)
    _, history = fm.fit(
        fm.NeuralNetwork(4, 3, key=jax.random.key(9)),
        optax.inject_hyperparams(optax.sgd)(learning_rate=schedule),
        batches_of(X, y, 8),
        num_epochs=2,
        val_loader=fm.DataLoader(fm.ArrayDataset(X, y), batch_size=32),
        eval_every=6,
        eval_train_loss=True,
        log=None,
    )
    path = tmp_path / "run.png"
    figure = fm.plot_history(history, path, title="toy")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    main, rate = figure.axes[0], figure.axes[-1]
    drawn = {line.get_label(): line for axis in figure.axes for line in axis.get_lines()}
    np.testing.assert_array_equal(drawn["training loss (each step)"].get_ydata(), history["loss"])
    np.testing.assert_array_equal(drawn["validation loss"].get_xdata(), history["eval_step"])
    np.testing.assert_array_equal(drawn["validation loss"].get_ydata(), history["val_loss"])
    np.testing.assert_array_equal(drawn["training loss (evaluated)"].get_ydata(), history["train_eval_loss"])
    np.testing.assert_allclose(drawn["learning rate"].get_ydata(), [float(schedule(i)) for i in range(24)], rtol=1e-6)
    assert main.get_xlabel() == "step" and rate.get_ylabel() == "learning rate"
    with pytest.raises(ValueError, match="per-step 'loss'"):
        fm.plot_history({})


def test_early_stopping_never_takes_a_nan_for_the_best_value():
    run = fm.train.Run({"val_loss": []}, {"val_loss"}, lambda: None)
    stopping = fm.EarlyStopping("val_loss", patience=2, restore_best=False)
    stopping.on_train_begin(run)
    for step, value in enumerate([0.5, float("nan"), 0.4, float("nan"), float("nan")], 1):
        run.step = step
        run.history["val_loss"].append(value)
        stopping.on_evaluation(run)
    assert stopping.best == 0.4 and stopping.best_step == 3
    assert run.stop_reason is not None and "did not improve on 0.4 (step 3) for 2 evaluations" in run.stop_reason
    maximising = fm.EarlyStopping("val_accuracy", patience=1, restore_best=False)
    assert maximising.mode == "max" and fm.EarlyStopping("val_loss").mode == "min"
    # an equal value is no improvement (min_delta 0), a smaller one by less than min_delta neither
    run = fm.train.Run({"val_loss": []}, {"val_loss"}, lambda: None)
    same = fm.EarlyStopping("val_loss", patience=2, restore_best=False)
    for step, value in enumerate((0.5, 0.5, 0.5), 1):
        run.step = step
        run.history["val_loss"].append(value)
        same.on_evaluation(run)
    assert same.best_step == 1 and run.stop_reason is not None
    run = fm.train.Run({"val_loss": []}, {"val_loss"}, lambda: None)
    flat = fm.EarlyStopping("val_loss", patience=2, min_delta=0.01, restore_best=False)
    for value in (0.5, 0.5, 0.495):
        run.history["val_loss"].append(value)
        flat.on_evaluation(run)
    assert flat.best == 0.5 and run.stop_reason is not None


def test_the_default_seed_is_zero():
    # the per-step dropout keys of a run without seed= are those of seed=0
    X, y = classification(n=16)
    model = fm.NeuralNetwork(4, 3, key=jax.random.key(0), dropout=0.5)
    _, default = fm.fit(model, optax.sgd(0.1), [(X, y)] * 3, num_epochs=1, log=None)
    _, zero = fm.fit(model, optax.sgd(0.1), [(X, y)] * 3, num_epochs=1, log=None, seed=0)
    _, one = fm.fit(model, optax.sgd(0.1), [(X, y)] * 3, num_epochs=1, log=None, seed=1)
    assert default["loss"] == zero["loss"] != one["loss"]


def test_zero_epochs_trains_nothing():
    X, y = classification(n=16)
    model = fm.NeuralNetwork(4, 3, key=jax.random.key(0))
    trained, history = fm.fit(model, optax.sgd(0.1), [(X, y)], num_epochs=0, log=None)
    assert history["loss"] == [] and history["epoch_loss"] == []
    assert_close_models(trained, model, rtol=0)
    with pytest.raises(ValueError, match="num_epochs"):
        fm.fit(model, optax.sgd(0.1), [(X, y)], num_epochs=-1, log=None)


def test_evaluation_after_every_step():
    X, y = classification(n=16)
    val = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=8)
    _, history = fm.fit(
        fm.NeuralNetwork(4, 3, key=jax.random.key(0)),
        optax.sgd(0.1),
        batches_of(X, y, 4),
        num_epochs=2,
        val_loader=val,
        eval_every=1,
        log=None,
    )
    assert history["eval_step"] == list(range(1, 9)) and len(history["val_loss"]) == 8


def test_the_progress_bar_of_a_resumed_run_starts_where_the_run_stopped(tmp_path, capsys):
    X, y = classification(n=32)
    batches = batches_of(X, y, 8)  # 4 steps an epoch
    path = str(tmp_path / "run.ckpt")
    model = fm.NeuralNetwork(4, 3, key=jax.random.key(0))
    fm.fit(model, optax.sgd(0.1), batches, num_epochs=3, max_steps=6, log=None, checkpoint=path)
    capsys.readouterr()
    fm.fit(model, optax.sgd(0.1), batches, num_epochs=3, log=None, checkpoint=path, resume=True, progress=True)
    bar = capsys.readouterr().err
    assert " 6/12 " in bar and " 12/12 " in bar and " 0/12 " not in bar


def test_resuming_with_other_callbacks_is_refused(tmp_path):
    X, y = classification(n=32)
    val = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=16)
    path = str(tmp_path / "run.ckpt")
    model = fm.NeuralNetwork(4, 3, key=jax.random.key(0))
    options = dict(val_loader=val, log=None, checkpoint=path)
    fm.fit(model, optax.sgd(0.1), batches_of(X, y, 8), num_epochs=1, callbacks=[fm.EarlyStopping()], **options)
    with pytest.raises(fm.CheckpointError, match="written with 1 callbacks, this run has 2"):
        fm.fit(
            model,
            optax.sgd(0.1),
            batches_of(X, y, 8),
            num_epochs=2,
            resume=True,
            callbacks=[fm.EarlyStopping(), fm.EarlyStopping("val_accuracy")],
            **options,
        )
