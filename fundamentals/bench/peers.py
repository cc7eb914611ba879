"""The JAX ecosystem's own training loops in the benchmark: Equinox, Flax NNX and Keras 3, each in its own process.

How people already train in JAX, timed on the problem `fundamentals bench tiny` and `wide`
define (the same data, batches, network sizes, starting weights, SGD and learning rate), each
written the way its documentation writes it:

- **Equinox**: an `eqx.filter_jit` step over the whole model, `eqx.filter_value_and_grad`, the
  optimizer state from `optimizer.init(eqx.filter(model, eqx.is_array))`.
- **Flax NNX**: an `nnx.Module` of `nnx.Linear` layers, an `nnx.jit` step with
  `nnx.value_and_grad` and `nnx.Optimizer(model, tx, wrt=nnx.Param)`.
- **Keras 3 on JAX** (`KERAS_BACKEND=jax`): `model.fit` on the arrays, once with Keras's
  default `steps_per_execution=1` and once with one execution an epoch (up to 1,000 steps).

Each worker returns JSON-ready figures in seconds a step; a package that is not installed gives
a row that says so and names the command that installs it. Flax and Keras are imported inside
the workers only (the `bench` extra installs them).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from .common import epoch_order, figure, time_blocks, training_problem
from .records import Figure, JaxInfo, TrainingResult

# The pip command for each optional package, printed in its skipped row.
INSTALL = {
    "flax": "pip install 'flax>=0.11'",
    "keras": "pip install 'keras>=3.6'",
}
# Keras's large steps_per_execution: one execution an epoch, at most this many steps.
KERAS_STEPS_PER_EXECUTION = 1000
FIRST_LOSSES = 5  # the first steps' losses, recorded so a test can check each peer trains the same problem


def _skipped(package: str, labels: dict[str, str]) -> TrainingResult:
    """The rows of a peer whose package cannot be imported, each naming the command that installs it."""
    reason = f"{package} is not installed ({INSTALL[package]})"
    return {
        "missing": package,
        "figures": {name: {"label": label, "skipped": reason} for name, label in labels.items()},
    }


def _starting_point(
    cfg: dict[str, Any], kind: str
) -> tuple[np.ndarray, np.ndarray, float, Any, list[tuple[np.ndarray, np.ndarray]], list[np.ndarray], JaxInfo]:
    """The benchmark's problem, its batches, and the starting weights `fit` gets: `[(W (out, in), b), ...]`."""
    import jax

    from ..nn import NeuralNetwork
    from .jax_side import _info, _setup

    _setup()
    X, y, inputs, outputs, hidden, lr = training_problem(cfg, kind)
    model = NeuralNetwork(inputs, outputs, hidden=hidden, key=jax.random.key(123))
    weights = [(np.asarray(layer.weight), np.asarray(layer.bias)) for layer in model.layers[::2]]
    batches = epoch_order(len(X), cfg["batch_size"])
    return X, y, lr, model, weights, batches, _info()


def equinox_training(cfg: dict[str, Any], kind: str) -> TrainingResult:
    """Equinox's documented loop: an `eqx.filter_jit` step over the whole model, on pre-made batches."""
    import equinox as eqx
    import jax
    import optax

    from ..losses import cross_entropy

    X, y, lr, model, _, batches, info = _starting_point(cfg, kind)
    optimizer = optax.sgd(lr)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def make_step(model, opt_state, features, labels):
        loss, grads = eqx.filter_value_and_grad(lambda m: cross_entropy(m(features), labels))(model)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    step_batches = [(X[i], y[i]) for i in batches]
    state: dict[str, Any] = {"model": model, "opt_state": opt_state, "losses": []}

    def run() -> None:
        m, o = state["model"], state["opt_state"]
        for features, labels in step_batches:
            m, o, loss = make_step(m, o, features, labels)
            if len(state["losses"]) < FIRST_LOSSES:
                state["losses"].append(float(loss))
        jax.block_until_ready(loss)
        state["model"], state["opt_state"] = m, o

    label = "Equinox: eqx.filter_jit step, pre-made batches (its own process)"
    samples = time_blocks(run, cfg["repeats"])
    return {
        "info": info,
        "first_losses": state["losses"],
        "figures": {"filter_jit": figure(label, samples, per=len(batches))},
    }


def flax_training(cfg: dict[str, Any], kind: str) -> TrainingResult:
    """Flax NNX's documented loop: an `nnx.jit` step with `nnx.Optimizer`, on pre-made batches."""
    label = "Flax NNX: nnx.jit step with nnx.Optimizer, pre-made batches"
    try:
        from flax import nnx
    except ImportError:
        return _skipped("flax", {"nnx_jit": label})
    import jax
    import jax.numpy as jnp
    import optax

    X, y, lr, _, weights, batches, info = _starting_point(cfg, kind)

    class MLP(nnx.Module):
        def __init__(self, sizes, rngs: nnx.Rngs):
            self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])

        def __call__(self, x):
            for layer in self.layers[:-1]:
                x = nnx.relu(layer(x))
            return self.layers[-1](x)

    sizes = [weights[0][0].shape[1], *(w.shape[0] for w, _ in weights)]
    model = MLP(sizes, nnx.Rngs(0))
    for layer, (W, b) in zip(model.layers, weights):  # fit's starting weights; nnx keeps kernels as (in, out)
        layer.kernel.set_value(jnp.asarray(W.T))
        if layer.bias is not None:  # (always: nnx.Linear has a bias by default)
            layer.bias.set_value(jnp.asarray(b))
    optimizer = nnx.Optimizer(model, optax.sgd(lr), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, features, labels):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(features), labels).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    step_batches = [(X[i], y[i]) for i in batches]
    losses: list[float] = []

    def run() -> None:
        for features, labels in step_batches:
            loss = train_step(model, optimizer, features, labels)
            if len(losses) < FIRST_LOSSES:
                losses.append(float(loss))
        jax.block_until_ready(loss)

    samples = time_blocks(run, cfg["repeats"])
    return {"info": info, "first_losses": losses, "figures": {"nnx_jit": figure(label, samples, per=len(batches))}}


def keras_training(cfg: dict[str, Any], kind: str) -> TrainingResult:
    """Keras 3 on JAX: `model.fit` on the arrays, with the default and with a large `steps_per_execution`."""
    steps_per_epoch = len(epoch_order(cfg["rows"], cfg["batch_size"]))
    large = min(KERAS_STEPS_PER_EXECUTION, steps_per_epoch)
    labels = {
        "keras_fit": "Keras 3 (JAX backend): model.fit, default steps_per_execution=1",
        "keras_fit_steps": f"Keras 3 (JAX backend): model.fit, steps_per_execution={large}",
    }
    os.environ["KERAS_BACKEND"] = "jax"  # read when keras is first imported, in this worker process
    try:
        import keras
    except ImportError:
        return _skipped("keras", labels)
    if keras.backend.backend() != "jax":
        raise RuntimeError(f"keras runs on its {keras.backend.backend()} backend here, not on JAX")

    X, y, lr, _, weights, _, info = _starting_point(cfg, kind)
    keras.utils.set_random_seed(123)  # the order model.fit shuffles the rows in
    figures: dict[str, Figure] = {}
    final_losses: dict[str, float] = {}
    for name, steps_per_execution in (("keras_fit", 1), ("keras_fit_steps", large)):
        model = keras.Sequential(
            [keras.Input(shape=(X.shape[1],))]
            + [keras.layers.Dense(W.shape[0], activation="relu") for W, _ in weights[:-1]]
            + [keras.layers.Dense(weights[-1][0].shape[0])]
        )
        for layer, (W, b) in zip(model.layers, weights):  # Dense keeps kernels as (in, out)
            layer.set_weights([W.T, b])
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=lr),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            steps_per_execution=steps_per_execution,
        )
        starts: list[float] = []
        clock = keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs, starts=starts: starts.append(time.perf_counter())
        )
        history = model.fit(
            X,
            y,
            batch_size=cfg["batch_size"],
            epochs=1 + cfg["repeats"],
            shuffle=True,
            verbose=0,
            callbacks=[clock],
        )
        epochs = np.diff([*starts, time.perf_counter()])[1:]  # the first epoch also traces and compiles
        figures[name] = figure(labels[name], epochs.tolist(), per=steps_per_epoch)
        final_losses[name] = float(history.history["loss"][-1])
    return {
        "info": info,
        "steps_per_epoch": steps_per_epoch,
        "final_losses": final_losses,
        "figures": figures,
    }
