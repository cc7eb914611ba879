"""The compiled-program cache is keyed on the program JAX traced: nothing that changes what is computed
can reuse a stale program, and a re-run of the same program compiles nothing.

Each staleness case changes something the loss reads while it is traced (a module attribute, a
reloaded module, a class attribute, a monkeypatched helper, an environment variable) and checks
the first loss against the analytic value: the scale times the cross-entropy of the untrained
model, computed by hand in NumPy. No `clear_cache()` anywhere.
"""

import importlib
import os
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fundamentals as fm
from fundamentals.train import cache

from .helpers import cross_entropy_by_hand


def data(n=8):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 2)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.int64)


def first_loss(loss_fn, dropout=0.0):
    X, y = data()
    model = fm.NeuralNetwork(2, 2, key=jax.random.key(123), dropout=dropout)
    loader = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=8)
    _, history = fm.fit(model, optax.sgd(0.5), loader, num_epochs=1, log=None, loss_fn=loss_fn)
    return history["loss"][0], cross_entropy_by_hand(model(X), y)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module of the user's own, `mylosses`, written to a folder on sys.path."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(scale):
        source = f"""
            import fundamentals as fm

            SCALE = {scale}


            def make_loss():
                def loss(logits, labels):
                    return SCALE * fm.cross_entropy(logits, labels)

                return loss
        """
        path = tmp_path / "mylosses.py"
        path.write_text(textwrap.dedent(source))
        stat = path.stat()  # a new mtime, so that the reload reads the file again
        os.utime(path, (stat.st_atime, stat.st_mtime + 10))
        importlib.invalidate_caches()

    write(1.0)
    yield write
    sys.modules.pop("mylosses", None)


def test_a_changed_module_attribute_is_a_new_program(user_module):
    import mylosses

    loss, ce = first_loss(mylosses.make_loss())
    assert loss == pytest.approx(ce, rel=1e-6)
    mylosses.SCALE = 10.0
    loss, ce = first_loss(mylosses.make_loss())
    assert loss == pytest.approx(10 * ce, rel=1e-6)


def test_an_edited_and_reloaded_module_is_a_new_program(user_module):
    import mylosses

    first_loss(mylosses.make_loss())
    user_module(10.0)  # the user edits the file; %autoreload (or importlib.reload) reads it again
    importlib.reload(mylosses)
    loss, ce = first_loss(mylosses.make_loss())
    assert loss == pytest.approx(10 * ce, rel=1e-6)


def test_a_changed_class_attribute_is_a_new_program():
    class ScaledLoss:
        scale = 1.0

        def __call__(self, logits, labels):
            return type(self).scale * fm.cross_entropy(logits, labels)

    first_loss(ScaledLoss())
    ScaledLoss.scale = 10.0
    loss, ce = first_loss(ScaledLoss())
    assert loss == pytest.approx(10 * ce, rel=1e-6)


def test_a_monkeypatched_helper_is_a_new_program(monkeypatch):
    import types

    helpers = types.ModuleType("helpers_of_the_user")
    helpers.scale = lambda: 1.0

    def loss(logits, labels):
        return helpers.scale() * fm.cross_entropy(logits, labels)

    first_loss(loss)
    monkeypatch.setattr(helpers, "scale", lambda: 10.0)
    value, ce = first_loss(loss)
    assert value == pytest.approx(10 * ce, rel=1e-6)


def test_an_environment_variable_read_while_tracing_is_a_new_program(monkeypatch):
    def loss(logits, labels):
        return float(os.environ.get("LOSS_SCALE", "1")) * fm.cross_entropy(logits, labels)

    monkeypatch.setenv("LOSS_SCALE", "1")
    first_loss(loss)
    monkeypatch.setenv("LOSS_SCALE", "10")
    value, ce = first_loss(loss)
    assert value == pytest.approx(10 * ce, rel=1e-6)


def test_a_changed_closed_over_array_and_a_changed_default_argument_are_new_programs():
    weights = np.ones(2, dtype=np.float32)

    def weighted(logits, labels, temperature=1.0):
        return fm.cross_entropy(logits * weights / temperature, labels)

    first_loss(weighted)
    weights[:] = 2.0  # changed in place: the traced constant's bytes differ
    X, y = data()
    model = fm.NeuralNetwork(2, 2, key=jax.random.key(123))
    value, _ = first_loss(weighted)
    assert value == pytest.approx(cross_entropy_by_hand(2 * np.asarray(model(X)), y), rel=1e-6)
    weighted.__defaults__ = (4.0,)
    value, _ = first_loss(weighted)
    assert value == pytest.approx(cross_entropy_by_hand(0.5 * np.asarray(model(X)), y), rel=1e-6)


def count_compiles(run):
    compiles = []

    def on_duration(event, seconds, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(seconds)

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    try:
        result = run()
    finally:
        jax.monitoring.unregister_event_duration_listener(on_duration)
    return result, len(compiles)


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_a_new_model_and_optimizer_of_the_same_shapes_compile_nothing(dropout):
    X, y = data(n=12)

    def cell(lr):
        loader = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=4, shuffle=True, seed=123)
        model = fm.NeuralNetwork(2, 2, key=jax.random.key(123), dropout=dropout)
        return model, fm.fit(model, optax.sgd(lr), loader, num_epochs=3, log=None, seed=1)

    count_compiles(lambda: cell(0.5))
    (_, (_, again)), compiles = count_compiles(lambda: cell(0.5))
    assert compiles == 0 and again["programs_compiled"] == 0 and again["programs_run"] == 1
    # another learning rate: compiled anew, and one step is exactly p - 0.25 * g
    (model, _), compiles = count_compiles(lambda: cell(0.25))
    assert compiles >= 1
    one_step = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=12)
    trained, history = fm.fit(model, optax.sgd(0.25), one_step, num_epochs=1, log=None, seed=1)
    key = jax.random.fold_in(jax.random.key(1), 0)

    def loss(m):
        logits = m(X, key=key) if dropout else m(X)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = fm.state_dict(eqx.filter_grad(loss)(model))
    for name, value in fm.state_dict(model).items():
        np.testing.assert_allclose(fm.state_dict(trained)[name], value - 0.25 * grads[name], rtol=1e-6, atol=1e-7)


def traced_key(function, *args):
    return cache.program_key(jax.jit(function).trace(*args))[0]


def test_equal_programs_built_anew_have_equal_keys():
    # Fresh closures, fresh Equinox modules and fresh optimizers, as every fit builds them:
    # nothing in the key (ids, addresses, names of fresh functions) may differ between them.
    def build():
        model = fm.NeuralNetwork(2, 2, key=jax.random.key(0), dropout=0.1)
        params, static = eqx.partition(model, eqx.is_inexact_array)
        optimizer = optax.adam(1e-3)

        def step(params, opt_state, X, y, key):
            def loss(p):
                return fm.cross_entropy(eqx.combine(p, static)(X, key=key), y)

            value, grads = jax.value_and_grad(loss)(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, value

        return step, params, optimizer.init(params)

    keys = []
    for _ in range(2):
        step, params, opt_state = build()
        keys.append(traced_key(step, params, opt_state, jnp.ones((4, 2)), jnp.zeros(4, jnp.int32), jax.random.key(0)))
    assert keys[0] == keys[1]


def test_the_key_tells_apart_what_compares_equal_in_python():
    x = jnp.ones(3)
    # a weak constant keeps a float16 input float16, a strong float32 one promotes it
    half = jnp.ones(3, jnp.float16)
    assert traced_key(lambda v: v * jnp.asarray(1.5), half) != traced_key(
        lambda v: v * jnp.asarray(1.5, dtype=jnp.float32), half
    )
    # -0.0 and 0.0, an int and a float range closed over
    assert traced_key(lambda v: v * np.float32(0.0), x) != traced_key(lambda v: v * np.float32(-0.0), x)
    assert traced_key(lambda v: v + np.arange(3), x) != traced_key(lambda v: v + np.arange(3.0), x)
    # the configuration JAX traces under: matmul precision
    matmul = (lambda a: a @ a, jnp.ones((3, 3)))
    default = traced_key(*matmul)
    with jax.default_matmul_precision("highest"):
        assert traced_key(*matmul) != default
