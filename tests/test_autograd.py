"""A.3-A.4: the logistic-regression loss and gradients, binary cross-entropy, the traced graph."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fundamentals as fm


def test_logistic_regression_loss_and_gradients_match_torch_and_book(torch):
    import torch.nn.functional as F
    from torch.autograd import grad

    y, x1 = torch.tensor([1.0]), torch.tensor([1.1])
    w1 = torch.tensor([2.2], requires_grad=True)
    b = torch.tensor([0.0], requires_grad=True)
    loss_t = F.binary_cross_entropy(torch.sigmoid(x1 * w1 + b), y)
    (gw_t,) = grad(loss_t, w1, retain_graph=True)
    (gb_t,) = grad(loss_t, b, retain_graph=True)

    w1_j, b_j = fm.tensor([2.2]), fm.tensor([0.0])
    loss, (gw, gb) = jax.value_and_grad(fm.logistic_regression_loss, argnums=(0, 1))(w1_j, b_j)
    np.testing.assert_allclose(float(loss), loss_t.item(), atol=1e-6)
    np.testing.assert_allclose(np.asarray(gw), gw_t.numpy(), atol=1e-6)
    np.testing.assert_allclose(np.asarray(gb), gb_t.numpy(), atol=1e-6)
    # the book's printed values
    assert round(float(loss), 4) == 0.0852
    assert round(float(gw[0]), 4) == -0.0898
    assert round(float(gb[0]), 4) == -0.0817

    loss_t.backward()  # .backward() leaves the same numbers in .grad
    np.testing.assert_allclose(np.asarray(gw), w1.grad.numpy(), atol=1e-6)
    np.testing.assert_allclose(np.asarray(gb), b.grad.numpy(), atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    probs=st.lists(st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0, width=32)), min_size=1, max_size=12),
    data=st.data(),
    reduction=st.sampled_from(["mean", "sum", "none"]),
)
def test_binary_cross_entropy_matches_torch(torch, probs, data, reduction):
    import torch.nn.functional as F

    targets = data.draw(st.lists(st.sampled_from([0.0, 1.0, 0.25]), min_size=len(probs), max_size=len(probs)))
    p, t = np.array(probs, np.float32), np.array(targets, np.float32)
    expected = F.binary_cross_entropy(torch.from_numpy(p), torch.from_numpy(t), reduction=reduction).numpy()
    got = np.asarray(fm.binary_cross_entropy(jnp.asarray(p), jnp.asarray(t), reduction=reduction))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_binary_cross_entropy_clamps_at_100():
    # log(0) clamps to -100: a certain, wrong prediction costs exactly 100
    assert float(fm.binary_cross_entropy(jnp.array([0.0]), jnp.array([1.0]))) == pytest.approx(100.0)


def test_binary_cross_entropy_bad_input():
    with pytest.raises(ValueError, match="shape"):
        fm.binary_cross_entropy(jnp.ones(3) * 0.5, jnp.ones(2))
    with pytest.raises(ValueError, match="reduction"):
        fm.binary_cross_entropy(jnp.ones(2) * 0.5, jnp.ones(2), reduction="avg")


def test_cross_entropy_matches_torch(torch):
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 4)).astype(np.float32)
    labels = rng.integers(0, 4, size=7)
    expected = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    assert float(fm.cross_entropy(logits, labels)) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="labels shape"):
        fm.cross_entropy(logits, labels[:3])
    with pytest.raises(TypeError, match="integer"):
        fm.cross_entropy(logits, labels.astype(np.float32))


def test_computation_graph_has_the_books_nodes():
    x1, y = fm.tensor([1.1]), fm.tensor([1.0])

    def forward(w1, b, x1, y):
        return fm.logistic_regression_loss(w1, b, x1, y)

    graph = fm.computation_graph(forward, fm.tensor([2.2]), fm.tensor([0.0]), x1, y)
    # figure A.7: x1 * w1, + b, sigmoid, then the loss against y
    for op in ("mul", "add", "logistic", "log"):
        assert f"{op} " in graph.text or f"= {op}" in graph.text
    for name in ("w1", "b", "x1", "y"):
        assert f'"{name}" ->' in graph.dot
    assert graph.dot.startswith("digraph") and graph.dot.rstrip().endswith("}")
    # w1 feeds the multiplication, whose result feeds the addition with b
    mul_node = next(line.split('"')[3] for line in graph.dot.splitlines() if line.strip().startswith('"w1" ->'))
    assert mul_node.startswith("mul_")
    assert f'"{mul_node}" -> "add_' in graph.dot


def test_computation_graph_is_data_worked_out_by_hand_and_prints_as_dot():
    # sin(x) * y, with a jitted helper that adds a literal 1.0: the helper's call is inlined.
    @jax.jit
    def plus_one(a):
        return a + 1.0

    graph = fm.computation_graph(lambda x, y: plus_one(jnp.sin(x)) * y, jnp.float32(1.0), jnp.float32(2.0))
    assert graph.nodes == {
        "x": fm.GraphNode("x", "input"),
        "y": fm.GraphNode("y", "input"),
        "sin_0": fm.GraphNode("sin", "op"),
        "add_1": fm.GraphNode("add", "op"),
        "const_0": fm.GraphNode("1.0", "literal"),
        "mul_2": fm.GraphNode("mul", "op"),
        "output": fm.GraphNode("output", "output"),
    }
    assert graph.edges == [
        ("x", "sin_0"),
        ("sin_0", "add_1"),
        ("const_0", "add_1"),
        ("add_1", "mul_2"),
        ("y", "mul_2"),
        ("mul_2", "output"),
    ]
    lines = graph.dot.splitlines()
    assert lines[0] == "digraph computation_graph {" and lines[-1] == "}"
    assert [line.strip() for line in lines if "->" in line] == [f'"{a}" -> "{b}";' for a, b in graph.edges]
    assert '  "const_0" [shape=plaintext, label="1.0"];' in lines
    assert '  "sin_0" [shape=ellipse, label="sin"];' in lines


def test_computation_graph_names_pytree_leaves_and_keyword_arguments():
    def fn(p, *, z, a):
        return (p["w"] * z - a) * p["v"]

    graph = fm.computation_graph(
        fn, {"w": jnp.float32(3.0), "v": jnp.float32(4.0)}, z=jnp.float32(2.0), a=jnp.float32(1.0)
    )
    # p's leaves in the order JAX flattens a dict (sorted keys: v, then w); then the keywords
    assert [name for name, node in graph.nodes.items() if node.kind == "input"] == ["p[0]", "p[1]", "a", "z"]
    assert graph.edges == [
        ("p[1]", "mul_0"),
        ("z", "mul_0"),
        ("mul_0", "sub_1"),
        ("a", "sub_1"),
        ("sub_1", "mul_2"),
        ("p[0]", "mul_2"),
        ("mul_2", "output"),
    ]


def test_computation_graph_text_has_no_colour_codes_even_where_jax_would_colour(monkeypatch):
    from jax._src import pretty_printer

    # Inside Jupyter JAX colours its printouts; the graph's text must stay plain.
    monkeypatch.setattr(pretty_printer, "CAN_USE_COLOR", True)
    graph = fm.computation_graph(fm.logistic_regression_loss, fm.tensor([2.2]), fm.tensor([0.0]))
    assert "\x1b[" in str(graph.jaxpr)  # what str() would have given
    assert "\x1b[" not in graph.text


def test_graph_layout_puts_each_node_in_the_column_worked_out_by_hand():
    # sin(x) * y: x -> sin -> mul -> output, and y feeds mul directly. Longest paths from the
    # inputs give x 0, sin 1, mul 2, output 3; y is pulled right, next to mul, into column 1.
    graph = fm.computation_graph(lambda x, y: jnp.sin(x) * y, jnp.float32(1.0), jnp.float32(2.0))
    layout = fm.graph_layout(graph)
    by_label = {layout.nodes[name].label: position for name, position in layout.position.items()}
    assert {label: column for label, (column, _) in by_label.items()} == {
        "x": 0,
        "sin": 1,
        "y": 1,
        "mul": 2,
        "output": 3,
    }
    assert by_label["sin"][1] != by_label["y"][1]  # the two nodes of column 1 do not overlap
    for source, target in layout.edges:  # data flows left to right
        assert layout.position[source][0] < layout.position[target][0]


def test_graph_layout_places_constants_beside_their_operation_and_draws():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    graph = fm.computation_graph(fm.logistic_regression_loss, fm.tensor([2.2]), fm.tensor([0.0]))
    layout = fm.graph_layout(graph)
    constants = [name for name, node in layout.nodes.items() if node.kind == "literal"]
    assert constants
    for source, target in layout.edges:
        if source in constants:
            assert layout.position[source] == pytest.approx(
                (layout.position[target][0] - 0.55, layout.position[target][1] - 0.6)
            )
    ax = fm.plot_computation_graph(graph, groups=[("z", 2), ("a", 1), ("loss", None)], output_label="loss")
    texts = [text.get_text() for text in ax.texts]
    assert {"z", "a", "loss", "w1", "b", "mul", "logistic"} <= set(texts)
    matplotlib.pyplot.close("all")
