"""`fuse_small_dots`: small products become fused multiply-and-sum, with the same values, at any depth.

Truths: NumPy's float64 `einsum` for single products, and the same function compiled by plain
`jax.jit` (its `dot`s untouched) for whole programs, down to float32 rounding.
"""

import json
import os
import re
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

import fundamentals as fm
from fundamentals._small_dots import MAX_ELEMENTS, dot_as_multiply_sum, fuse_small_dots, rewrite_small_dots

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the rewrite applies to CPU programs only")


def _primitives(closed) -> list[str]:
    """Every primitive of a closed jaxpr, nested programs included (JAX 0.10's and 0.12's jaxprs)."""
    found: list[str] = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            found.append(eqn.primitive.name)
            for value in eqn.params.values():
                for item in value if isinstance(value, tuple) else (value,):
                    if isinstance(item, jax.extend.core.ClosedJaxpr | jax.extend.core.Jaxpr):
                        walk(getattr(item, "jaxpr", item))

    walk(getattr(closed, "jaxpr", closed))
    return found


def _hlo_dots(compiled_text: str) -> int:
    return len(re.findall(r"\bdot\(", compiled_text))


# --- one product, any dimension numbers ----------------------------------------------------------


@st.composite
def dot_cases(draw):
    """Operands and dimension numbers of a random `dot_general`: batch, free and contracted axes in any order."""
    sizes = st.integers(1, 4)
    batch = draw(st.lists(sizes, max_size=2))
    contract = draw(st.lists(sizes, max_size=2))
    lhs_free = draw(st.lists(sizes, max_size=2))
    rhs_free = draw(st.lists(sizes, max_size=2))
    # Each operand's axes as (kind, index) in a random order: where each axis sits is the dimension number.
    lhs_axes = draw(
        st.permutations(
            [("b", i) for i in range(len(batch))]
            + [("c", i) for i in range(len(contract))]
            + [("f", i) for i in range(len(lhs_free))]
        )
    )
    rhs_axes = draw(
        st.permutations(
            [("b", i) for i in range(len(batch))]
            + [("c", i) for i in range(len(contract))]
            + [("f", i) for i in range(len(rhs_free))]
        )
    )
    size = {"b": batch, "c": contract}
    lhs_shape = [(size | {"f": lhs_free})[k][i] for k, i in lhs_axes]
    rhs_shape = [(size | {"f": rhs_free})[k][i] for k, i in rhs_axes]
    where = lambda axes, kind, n: tuple(axes.index((kind, i)) for i in range(n))  # noqa: E731
    dimension_numbers = (
        (where(lhs_axes, "c", len(contract)), where(rhs_axes, "c", len(contract))),
        (where(lhs_axes, "b", len(batch)), where(rhs_axes, "b", len(batch))),
    )
    dtype, preferred = draw(
        st.sampled_from(
            [
                (jnp.float32, None),
                (jnp.float32, jnp.float32),
                (jnp.bfloat16, jnp.float32),
                (jnp.float16, None),
                (jnp.bfloat16, None),
            ]
        )
    )
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    lhs = rng.standard_normal(lhs_shape).astype(np.float32)
    rhs = rng.standard_normal(rhs_shape).astype(np.float32)
    precision = draw(st.sampled_from([None, lax.Precision.DEFAULT, lax.Precision.HIGHEST]))
    return lhs, rhs, dimension_numbers, dtype, preferred, precision


def _einsum(lhs, rhs, dimension_numbers) -> np.ndarray:
    """`dot_general` in float64 by `np.einsum`: the independent truth."""
    (lc, rc), (lb, rb) = dimension_numbers
    letters = iter("abcdefghijklmnop")
    lhs_sub = [None] * lhs.ndim
    rhs_sub = [None] * rhs.ndim
    batch = []
    for i, j in zip(lb, rb):
        lhs_sub[i] = rhs_sub[j] = letter = next(letters)
        batch.append(letter)
    for i, j in zip(lc, rc):
        lhs_sub[i] = rhs_sub[j] = next(letters)
    lhs_free = []
    for i in range(lhs.ndim):
        if lhs_sub[i] is None:
            lhs_sub[i] = letter = next(letters)
            lhs_free.append(letter)
    rhs_free = []
    for j in range(rhs.ndim):
        if rhs_sub[j] is None:
            rhs_sub[j] = letter = next(letters)
            rhs_free.append(letter)
    spec = f"{''.join(lhs_sub)},{''.join(rhs_sub)}->{''.join(batch + lhs_free + rhs_free)}"
    return np.einsum(spec, lhs.astype(np.float64), rhs.astype(np.float64))


@settings(max_examples=60, deadline=None)
@given(dot_cases())
def test_any_dimension_numbers_give_the_product(case):
    lhs, rhs, dimension_numbers, dtype, preferred, precision = case
    lhs, rhs = jnp.asarray(lhs, dtype), jnp.asarray(rhs, dtype)

    def product(a, b):
        return lax.dot_general(a, b, dimension_numbers, precision=precision, preferred_element_type=preferred)

    rewritten = fuse_small_dots(product, max_elements=2**30)  # up to 4**8 multiply-adds here: all rewritten
    assert "dot_general" not in _primitives(jax.make_jaxpr(rewritten)(lhs, rhs))
    got = jax.jit(rewritten)(lhs, rhs)
    plain = jax.eval_shape(product, lhs, rhs)  # (XLA's CPU dot cannot run bfloat16 x bfloat16 = float32 at all)
    assert got.dtype == plain.dtype and got.shape == plain.shape
    truth = _einsum(np.asarray(lhs, np.float64), np.asarray(rhs, np.float64), dimension_numbers)
    contracted = max(1, int(np.prod([lhs.shape[d] for d in dimension_numbers[0][0]])))
    if got.dtype == jnp.float32:
        # float32 rounding of a sum of `contracted` products of standard normals
        np.testing.assert_allclose(np.asarray(got), truth, rtol=1e-6, atol=1e-6 * contracted)
        if dtype == jnp.float32:
            np.testing.assert_allclose(
                np.asarray(got), np.asarray(jax.jit(product)(lhs, rhs)), rtol=1e-6, atol=1e-6 * contracted
            )
    else:  # a 16-bit result: one rounding of the float32 sum
        eps = float(jnp.finfo(got.dtype).eps)
        np.testing.assert_allclose(np.asarray(got, np.float64), truth, rtol=eps, atol=eps * contracted)


def test_dot_as_multiply_sum_matches_matmul_in_float64():
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        a, b = rng.standard_normal((3, 5)), rng.standard_normal((5, 4))
        out = dot_as_multiply_sum(
            jnp.asarray(a), jnp.asarray(b), dimension_numbers=(((1,), (0,)), ((), ())), out_dtype=jnp.float64
        )
        assert out.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(out), a @ b, rtol=1e-14)


# --- what is left alone -------------------------------------------------------------------------


def test_large_products_keep_their_dot():
    x = jnp.ones((64, 128))
    w = jnp.ones((128, 256))  # 2,097,152 multiply-adds, far above the bound
    rewritten = fuse_small_dots(lambda x, w: jnp.tanh(x @ w))
    assert _primitives(jax.make_jaxpr(rewritten)(x, w)).count("dot_general") == 1
    assert _hlo_dots(jax.jit(rewritten).lower(x, w).compile().as_text()) == 1


def test_the_bound_is_inclusive_and_adjustable():
    x, w = jnp.ones((2, 32)), jnp.ones((32, 32))  # exactly 2,048 multiply-adds
    assert 2 * 32 * 32 == MAX_ELEMENTS
    assert "dot_general" not in _primitives(jax.make_jaxpr(fuse_small_dots(jnp.matmul))(x, w))
    tighter = fuse_small_dots(jnp.matmul, max_elements=2 * 32 * 32 - 1)
    assert "dot_general" in _primitives(jax.make_jaxpr(tighter)(x, w))
    assert fuse_small_dots(jnp.matmul, max_elements=0) is jnp.matmul


def test_integer_and_algorithm_products_are_left_alone():
    i = jnp.arange(6, dtype=jnp.int32).reshape(2, 3)
    rewritten = fuse_small_dots(lambda a: a @ a.T)
    assert "dot_general" in _primitives(jax.make_jaxpr(rewritten)(i))
    np.testing.assert_array_equal(np.asarray(jax.jit(rewritten)(i)), np.asarray(i) @ np.asarray(i).T)
    x = jnp.ones((2, 3))
    algorithm = fuse_small_dots(lambda a: lax.dot(a, a.T, precision=lax.DotAlgorithmPreset.F32_F32_F32))
    assert "dot_general" in _primitives(jax.make_jaxpr(algorithm)(x))


def test_other_platforms_are_not_rewritten(monkeypatch):
    def f(x):
        return x @ x.T

    assert fuse_small_dots(f, platform="gpu") is f
    assert fuse_small_dots(f, platform="tpu") is f
    x = jnp.ones((2, 3))
    # Without a platform, the default backend when it is traced (each wrapper is traced once: JAX caches traces).
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert "dot_general" in _primitives(jax.make_jaxpr(fuse_small_dots(f))(x))
    monkeypatch.undo()
    assert "dot_general" not in _primitives(jax.make_jaxpr(fuse_small_dots(f))(x))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"max_elements": -1}, ValueError, "max_elements must be a non-negative int, got -1"),
        ({"max_elements": 2.5}, TypeError, "max_elements must be a non-negative int, got float"),
        ({"platform": 0}, TypeError, "platform must be a str"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        fuse_small_dots(jnp.matmul, **kwargs)
    with pytest.raises(TypeError, match="fn must be callable, got int"):
        fuse_small_dots(3)


# --- nested programs ----------------------------------------------------------------------------


@jax.custom_jvp
def _custom_jvp_product(x, w):
    return jnp.tanh(x @ w)


@_custom_jvp_product.defjvp
def _custom_jvp_product_jvp(primals, tangents):
    x, w = primals
    dx, dw = tangents
    y = _custom_jvp_product(x, w)
    return y, (1 - y**2) * (dx @ w + x @ dw)


@jax.custom_vjp
def _custom_vjp_product(x, w):
    return x @ w


_custom_vjp_product.defvjp(lambda x, w: (x @ w, (x, w)), lambda res, g: (g @ res[1].T, res[0].T @ g))


def _nested(x, w, while_loop=True):
    """Products inside every kind of nested program JAX makes (`while_loop=False`: all but the one without a gradient)."""

    def body(carry, row):
        return jnp.tanh(carry @ w) + row, jnp.sum(carry @ w)

    carry, sums = lax.scan(body, x, jnp.ones((3, *x.shape)))
    looped = (
        lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, jnp.tanh(c[1] @ w)), (0, x))[1] if while_loop else x
    )
    branch = lax.cond(jnp.sum(x) > 0, lambda v: v @ w, lambda v: -(v @ w), x)
    remat = jax.checkpoint(lambda v: jnp.sin(v @ w))(x)
    inner = jax.jit(lambda v: v @ w)(x)
    unrolled = lax.fori_loop(0, 2, lambda i, v: jnp.tanh(v @ w), x, unroll=True)
    custom = _custom_jvp_product(x, w) + _custom_vjp_product(x, w)
    return carry, sums, looped, branch, remat, inner, unrolled, custom


def test_products_in_nested_programs_are_rewritten():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 4)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((4, 4)) * 0.5, jnp.float32)
    plain_primitives = _primitives(jax.make_jaxpr(_nested)(x, w))
    for nested in (
        "scan",
        "while",
        "cond",
        "checkpoint",
        "remat2",
        "pjit",
        "jit",
        "custom_jvp_call",
        "custom_vjp_call",
    ):
        if nested in plain_primitives:
            plain_primitives.remove(nested)
    assert plain_primitives.count("dot_general") >= 8  # the test would prove nothing without them
    rewritten = fuse_small_dots(_nested)
    assert "dot_general" not in _primitives(jax.make_jaxpr(rewritten)(x, w))
    assert _hlo_dots(jax.jit(rewritten).lower(x, w).compile().as_text()) == 0
    for got, want in zip(jax.jit(rewritten)(x, w), jax.jit(_nested)(x, w)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


def test_gradients_of_the_rewritten_function_are_the_gradients():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((2, 4)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((4, 4)) * 0.5, jnp.float32)

    def loss(x, w):
        return sum(jnp.sum(jnp.sin(out)) for out in _nested(x, w, while_loop=False))

    got = jax.jit(jax.grad(fuse_small_dots(loss), argnums=(0, 1)))(x, w)
    want = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w)
    for g, v in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(v), rtol=1e-5, atol=1e-5)


def test_arguments_that_are_not_arrays_pass_through():
    def scaled(x, *, scale, name):
        assert isinstance(scale, float) and name == "layer"  # seen as given, not traced
        return scale * (x @ x.T)

    x = jnp.arange(6.0).reshape(2, 3)
    got = jax.jit(fuse_small_dots(scaled), static_argnames=("scale", "name"))(x, scale=0.5, name="layer")
    np.testing.assert_allclose(np.asarray(got), 0.5 * np.asarray(x) @ np.asarray(x).T, rtol=1e-6)


def test_rewrite_small_dots_on_a_traced_program():
    x = jnp.ones((2, 3))
    closed = jax.make_jaxpr(lambda a: jnp.tanh(a @ a.T))(x)
    rewritten = rewrite_small_dots(closed)
    assert "dot_general" not in _primitives(rewritten)
    assert rewritten.in_avals == closed.in_avals and rewritten.out_avals == closed.out_avals
    np.testing.assert_allclose(
        np.asarray(jax.extend.core.jaxpr_as_fun(rewritten)(x)[0]), np.tanh(np.full((2, 2), 3.0)), rtol=1e-6
    )
    untouched = jax.make_jaxpr(lambda a: jnp.tanh(a))(x)
    assert rewrite_small_dots(untouched) is untouched
    with pytest.raises(TypeError, match=r"expected a closed jaxpr .*, got str"):
        rewrite_small_dots("{ lambda ; a. let in (a,) }")


# --- the book's network: a whole training step, and a scan over it ------------------------------


def _book_step():
    model = fm.NeuralNetwork(2, 2, key=jax.random.key(123))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimizer = optax.sgd(0.5)

    def step(params, opt_state, X, y):
        loss, grads = jax.value_and_grad(lambda p: fm.cross_entropy(eqx.combine(p, static)(X), y))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step, params, optimizer.init(params)


def _scanned(step):
    def run(params, opt_state, Xs, ys):
        def body(carry, batch):
            params, opt_state, loss = step(*carry, *batch)
            return (params, opt_state), loss

        return lax.scan(body, (params, opt_state), (Xs, ys))

    return run


def _book_batches(num_steps: int, batch_size: int = 2):
    X, y, _, _ = fm.toy_data()
    order = np.random.default_rng(0).integers(0, len(X), size=(num_steps, batch_size))
    return jnp.asarray(X[order]), jnp.asarray(y[order])


def test_the_book_step_has_no_dot_and_the_same_losses():
    step, params, opt_state = _book_step()
    Xs, ys = _book_batches(300)
    plain = jax.jit(_scanned(step))
    rewritten = jax.jit(_scanned(fuse_small_dots(step)))
    assert _hlo_dots(plain.lower(params, opt_state, Xs, ys).compile().as_text()) == 8
    assert _hlo_dots(rewritten.lower(params, opt_state, Xs, ys).compile().as_text()) == 0
    (want_params, _), want = plain(params, opt_state, Xs, ys)
    (got_params, _), got = rewritten(params, opt_state, Xs, ys)
    assert float(want[-1]) < 0.1 * float(want[0])  # it trains: 300 steps that compare something
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-6)
    for g, w in zip(jax.tree_util.tree_leaves(got_params), jax.tree_util.tree_leaves(want_params)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=0, atol=1e-6)


def test_a_scan_rewritten_from_outside_rewrites_its_body():
    step, params, opt_state = _book_step()
    Xs, ys = _book_batches(50)
    whole = jax.jit(fuse_small_dots(_scanned(step)))
    assert _hlo_dots(whole.lower(params, opt_state, Xs, ys).compile().as_text()) == 0
    _, want = jax.jit(_scanned(step))(params, opt_state, Xs, ys)
    _, got = whole(params, opt_state, Xs, ys)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-6)


def test_the_wide_network_keeps_its_dots():
    model = fm.NeuralNetwork(784, 10, hidden=(1024, 1024), key=jax.random.key(0))
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def grads(params, X, y):
        return jax.grad(lambda p: fm.cross_entropy(eqx.combine(p, static)(X), y))(params)

    X, y = jnp.zeros((256, 784)), jnp.zeros((256,), jnp.int32)
    plain = _primitives(jax.make_jaxpr(grads)(params, X, y))
    rewritten = _primitives(jax.make_jaxpr(fuse_small_dots(grads))(params, X, y))
    assert rewritten.count("dot_general") == plain.count("dot_general") == 8


_MESH_SCRIPT = r"""
import json, os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
sys.path.insert(0, sys.argv[1])
import jax, numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import test_small_dots as t
from fundamentals._small_dots import fuse_small_dots

step, params, opt_state = t._book_step()
Xs, ys = t._book_batches(40, batch_size=8)
report = {"devices": len(jax.devices())}
# fit's mesh (fm.data_mesh: Auto axes), and an Explicit one, whose sharded types the rewrite leaves alone.
for axes in ("Auto", "Explicit"):
    mesh = jax.make_mesh((8,), ("data",), axis_types=(getattr(AxisType, axes),))
    stacked, replicated = NamedSharding(mesh, P(None, "data")), NamedSharding(mesh, P())
    args = (*jax.device_put((params, opt_state), replicated), *jax.device_put((Xs, ys), stacked))
    # The bound is on the program's global shapes (batch 8 makes 4,800 multiply-adds of the 30 x 20 layer): all here.
    for name, body in (("plain", step), ("rewritten", fuse_small_dots(step, max_elements=1 << 20))):
        run = jax.jit(t._scanned(body), out_shardings=((replicated, replicated), replicated))
        with jax.set_mesh(mesh):
            dots = t._hlo_dots(run.lower(*args).compile().as_text())
            (p, _), losses = run(*args)
        report[f"{axes}_{name}"] = {
            "dots": dots,
            "losses": np.asarray(losses).tolist(),
            "params": [np.asarray(leaf).tolist() for leaf in jax.tree_util.tree_leaves(p)],
        }
json.dump(report, sys.stdout)
"""


def test_under_a_mesh_of_eight_devices():
    here = os.path.dirname(os.path.abspath(__file__))
    completed = subprocess.run([sys.executable, "-c", _MESH_SCRIPT, here], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["devices"] == 8
    assert report["Auto_plain"]["dots"] > 0 and report["Auto_rewritten"]["dots"] == 0
    assert report["Explicit_rewritten"]["dots"] == report["Explicit_plain"]["dots"] > 0
    for axes in ("Auto", "Explicit"):
        got, want = report[f"{axes}_rewritten"], report[f"{axes}_plain"]
        np.testing.assert_allclose(got["losses"], want["losses"], rtol=0, atol=1e-6)
        for g, w in zip(got["params"], want["params"]):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=0, atol=1e-6)
    # and the mesh trains what one device trains (the batches are the same)
    step, params, opt_state = _book_step()
    Xs, ys = _book_batches(40, batch_size=8)
    _, single = jax.jit(_scanned(step))(params, opt_state, Xs, ys)
    np.testing.assert_allclose(report["Auto_rewritten"]["losses"], np.asarray(single), rtol=0, atol=1e-6)


def test_a_dropout_step_with_keys_and_a_debug_callback():
    """PRNG keys (extended dtypes) and an effect inside the scanned step: traced again as they were."""
    model = fm.NeuralNetwork(2, 2, key=jax.random.key(0), dropout=0.5)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    printed = []

    def step(params, X, y, key):
        loss, grads = jax.value_and_grad(lambda p: fm.cross_entropy(eqx.combine(p, static)(X, key=key), y))(params)
        jax.debug.callback(lambda value: printed.append(float(value)), loss)
        return jax.tree_util.tree_map(lambda p, g: p - 0.5 * g, params, grads), loss

    def run(step):
        def body(params, batch):
            X, y, i = batch
            return step(params, X, y, jax.random.fold_in(jax.random.key(7), i))

        return jax.jit(lambda params, Xs, ys: lax.scan(body, params, (Xs, ys, jnp.arange(len(Xs)))))

    Xs, ys = _book_batches(20)
    _, want = run(step)(params, Xs, ys)
    jax.effects_barrier()
    assert printed == pytest.approx(np.asarray(want).tolist(), abs=0)
    printed.clear()
    rewritten = run(fuse_small_dots(step))
    assert _hlo_dots(rewritten.lower(params, Xs, ys).compile().as_text()) == 0
    _, got = rewritten(params, Xs, ys)
    jax.effects_barrier()
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-6)
    assert printed == pytest.approx(np.asarray(got).tolist(), abs=0)


@pytest.mark.parametrize("max_elements, unroll", [(MAX_ELEMENTS, 1), (MAX_ELEMENTS, 2), (1 << 20, 1)])
def test_scanned_and_called_step_by_step_agree_bit_for_bit(max_elements, unroll):
    """What fit's two paths need: the rewritten step in a scan is the rewritten step called once a step.

    NeuralNetwork(5, 3), batch 16, momentum: with the default bound some products are rewritten
    (16 × 20 × 3) and some keep their dot (16 × 30 × 20); with a large bound all are rewritten.
    """
    model = fm.NeuralNetwork(5, 3, key=jax.random.key(1))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimizer = optax.sgd(0.1, momentum=0.9)

    def step(params, opt_state, X, y):
        loss, grads = jax.value_and_grad(lambda p: fm.cross_entropy(eqx.combine(p, static)(X), y))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rewritten = fuse_small_dots(step, max_elements=max_elements)
    rng = np.random.default_rng(3)
    Xs = jnp.asarray(rng.normal(size=(60, 16, 5)).astype(np.float32))
    ys = jnp.asarray(rng.integers(0, 3, size=(60, 16)))
    opt_state = optimizer.init(params)
    dots = _hlo_dots(jax.jit(rewritten).lower(params, opt_state, Xs[0], ys[0]).compile().as_text())
    assert dots == (0 if max_elements > MAX_ELEMENTS else 5)

    def body(carry, batch):
        params, opt_state, loss = rewritten(*carry, *batch)
        return (params, opt_state), loss

    (scanned, _), scanned_losses = jax.jit(lambda c, Xs, ys: lax.scan(body, c, (Xs, ys), unroll=unroll))(
        (params, opt_state), Xs, ys
    )
    one_step = jax.jit(rewritten)
    losses = []
    for X, y in zip(Xs, ys):
        params, opt_state, loss = one_step(params, opt_state, X, y)
        losses.append(loss)
    np.testing.assert_array_equal(np.asarray(scanned_losses), np.asarray(losses))
    for a, b in zip(jax.tree_util.tree_leaves(scanned), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
