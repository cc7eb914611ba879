"""Computation graphs and automatic differentiation (appendix A.3 and A.4).

PyTorch records a graph while tensors with `requires_grad=True` flow through operations, and
`loss.backward()` walks it back, leaving gradients in each leaf's `.grad`. JAX has no tape and
no `.grad` attribute: a gradient is a *function*. `jax.grad(f)` returns a new function that
computes the derivative of `f`, and `argnums` picks the arguments to differentiate:

=============================================  ===============================================
PyTorch                                        JAX
=============================================  ===============================================
``w1 = torch.tensor([2.2], requires_grad=True)``  ``w1 = fundamentals.tensor([2.2])`` (nothing to flag)
``loss = F.binary_cross_entropy(a, y)``        ``loss = binary_cross_entropy(a, y)``
``grad(loss, w1, retain_graph=True)``          ``jax.grad(loss_fn, argnums=0)(w1, b)``
``loss.backward(); w1.grad, b.grad``           ``jax.grad(loss_fn, argnums=(0, 1))(w1, b)``
``loss`` and the gradients together            ``jax.value_and_grad(loss_fn, argnums=(0, 1))``
the graph autograd built                       ``jax.make_jaxpr(loss_fn)(w1, b)``, or ``computation_graph``
=============================================  ===============================================

Nothing is retained between calls (there is no `retain_graph`) and nothing accumulates (there
is no `zero_grad`): every call of the gradient function starts from scratch.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
from jax.typing import ArrayLike

from .losses import binary_cross_entropy
from .tensors import tensor

__all__ = [
    "logistic_regression_loss",
    "ComputationGraph",
    "GraphLayout",
    "GraphNode",
    "computation_graph",
    "graph_layout",
    "plot_computation_graph",
]


def logistic_regression_loss(
    w1: ArrayLike, b: ArrayLike, x1: ArrayLike | None = None, y: ArrayLike | None = None
) -> jax.Array:
    """The book's logistic-regression forward pass and loss (listings A.2 and A.3), as a pure function.

    ```python
    # PyTorch (listing A.3)                     # JAX
    z = x1 * w1 + b                             loss_fn = fundamentals.logistic_regression_loss
    a = torch.sigmoid(z)                        w1, b = tensor([2.2]), tensor([0.0])
    loss = F.binary_cross_entropy(a, y)         loss = loss_fn(w1, b)                      # 0.0852
    grad(loss, w1); grad(loss, b)               jax.grad(loss_fn, argnums=(0, 1))(w1, b)   # -0.0898, -0.0817
    ```

    **Arguments:**

    - `w1`, `b`: the weight and the bias, the parameters the gradient is taken for.
    - `x1`, `y`: the input feature and the true label; default to the book's `[1.1]` and `[1.0]`.
    """
    x1 = tensor([1.1]) if x1 is None else x1
    y = tensor([1.0]) if y is None else y
    z = x1 * w1 + b
    a = jax.nn.sigmoid(z)
    return binary_cross_entropy(a, y)


class GraphNode(NamedTuple):
    """One node of a `ComputationGraph`.

    - `label`: the text drawn in it (an argument's name, a primitive's name, a literal's value).
    - `kind`: `"input"` (an argument of the function), `"constant"` (an array it closes over),
      `"literal"` (a scalar written into the program), `"op"` (a primitive) or `"output"`.
    """

    label: str
    kind: str


class ComputationGraph(NamedTuple):
    """The graph JAX traced for a function, as data.

    - `jaxpr`: the `jax.core.ClosedJaxpr` from `jax.make_jaxpr`.
    - `text`: its printed form, one primitive operation a line.
    - `nodes`: node name -> `GraphNode`, inputs first, then constants, the primitives in trace
      order (calls to jitted helpers inlined) with their literals, and the outputs last.
    - `edges`: `(source, target)` node names, each operation's inputs in argument order.

    `dot` prints the same graph in Graphviz DOT, for `graphviz.Source(graph.dot)` or any DOT
    renderer.
    """

    jaxpr: Any
    text: str
    nodes: dict[str, GraphNode]
    edges: list[tuple[str, str]]

    @property
    def dot(self) -> str:
        """The graph in Graphviz DOT: inputs blue, the output yellow, one ellipse per primitive."""
        return to_dot(self.nodes, self.edges)


_DOT_STYLE = {
    "input": 'shape=box, style=filled, fillcolor="#dbeafe"',
    "constant": "shape=box",
    "literal": "shape=plaintext",
    "op": "shape=ellipse",
    "output": 'shape=box, style=filled, fillcolor="#fde68a"',
}


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def to_dot(nodes: Mapping[str, GraphNode], edges: Sequence[tuple[str, str]]) -> str:
    """Graphviz DOT text for a graph's nodes and edges (what `ComputationGraph.dot` returns)."""
    lines = ["digraph computation_graph {", "  rankdir=LR;", '  node [fontname="Helvetica"];']
    for name, node in nodes.items():
        lines.append(f'  "{_dot_escape(name)}" [{_DOT_STYLE[node.kind]}, label="{_dot_escape(node.label)}"];')
    lines.extend(f'  "{_dot_escape(source)}" -> "{_dot_escape(target)}";' for source, target in edges)
    lines.append("}")
    return "\n".join(lines)


def _sub_jaxpr(eqn: Any) -> Any:
    """The inner jaxpr of a call-like equation (jit, custom_jvp, ...), or None."""
    for value in eqn.params.values():
        inner = getattr(value, "jaxpr", value)
        if hasattr(inner, "eqns") and hasattr(inner, "invars"):
            if len(inner.invars) == len(eqn.invars) and len(inner.outvars) == len(eqn.outvars):
                return inner
    return None


class _GraphBuilder:
    """Walks a closed jaxpr into nodes and edges, inlining calls of jitted helpers."""

    def __init__(self) -> None:
        self.nodes: dict[str, GraphNode] = {}
        self.edges: list[tuple[str, str]] = []
        self.names: dict[Any, str] = {}  # jaxpr variable -> the node that produces it
        self.ops = 0
        self.constants = 0

    def add(self, name: str, label: str, kind: str) -> str:
        self.nodes[name] = GraphNode(label, kind)
        return name

    def constant(self, label: str, kind: str) -> str:
        name = self.add(f"const_{self.constants}", label, kind)
        self.constants += 1
        return name

    def source(self, atom: Any) -> str:
        if hasattr(atom, "val"):  # a Literal: its own node, beside the operation that reads it
            return self.constant(str(atom.val), "literal")
        return self.names.get(atom, str(atom))

    def walk(self, jaxpr: Any, env: dict[Any, Any]) -> None:
        for eqn in jaxpr.eqns:
            inputs = [v if hasattr(v, "val") else env.get(v, v) for v in eqn.invars]
            inner = _sub_jaxpr(eqn)
            if inner is not None:
                inner_env = dict(zip(inner.invars, inputs))
                self.walk(inner, inner_env)
                for outer_var, inner_var in zip(eqn.outvars, inner.outvars):
                    env[outer_var] = inner_env.get(inner_var, inner_var)
                continue
            node = self.add(f"{eqn.primitive.name}_{self.ops}", eqn.primitive.name, "op")
            self.ops += 1
            for atom in inputs:
                self.edges.append((self.source(atom), node))
            for out in eqn.outvars:
                env[out] = out
                self.names[out] = node


def computation_graph(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> ComputationGraph:
    """The computation graph JAX traces for `fn(*args, **kwargs)`.

    PyTorch builds its graph silently while the forward pass runs (figure A.7 of the book).
    JAX makes the graph explicit: `jax.make_jaxpr` traces the function once with abstract
    values and returns its program. This function returns that program as text and as a graph
    (nodes and edges, printable as DOT), whose inputs are labelled with `fn`'s argument names.

    ```python
    graph = fundamentals.computation_graph(fundamentals.logistic_regression_loss,
                                           tensor([2.2]), tensor([0.0]))
    print(graph.text)   # mul, add, logistic, log, max, ...
    graph.edges         # [("w1", "mul_0"), ("const_0", "mul_0"), ("mul_0", "add_1"), ...]
    graph.dot           # 'digraph computation_graph { ... "w1" -> "mul_0"; ... }'
    ```

    **Arguments:**

    - `fn`: the function to trace.
    - `*args`, `**kwargs`: what to call it with (arrays, or pytrees of them).

    **Returns:**

    A `ComputationGraph`.
    """
    closed = jax.make_jaxpr(fn)(*args, **kwargs)
    text = closed.pretty_print(use_color=False)  # str() adds ANSI colour codes inside Jupyter
    try:
        parameters = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        parameters = []
    builder = _GraphBuilder()
    named = [(parameters[i] if i < len(parameters) else f"arg{i}", arg) for i, arg in enumerate(args)]
    named += sorted(kwargs.items())  # make_jaxpr flattens (args, kwargs), a dict's keys in sorted order
    labels = []
    for base, value in named:
        count = len(jax.tree_util.tree_leaves(value))
        labels += [base] if count == 1 else [f"{base}[{i}]" for i in range(count)]
    for var, label in zip(closed.jaxpr.invars, labels, strict=True):
        builder.names[var] = builder.add(label, label, "input")
    for var, value in zip(closed.jaxpr.constvars, closed.consts):
        builder.names[var] = builder.constant(str(value), "constant")
    outputs: dict[Any, Any] = {}
    builder.walk(closed.jaxpr, outputs)
    for i, out in enumerate(closed.jaxpr.outvars):
        label = "output" if len(closed.jaxpr.outvars) == 1 else f"output[{i}]"
        source = builder.source(outputs.get(out, out))
        builder.edges.append((source, builder.add(label, label, "output")))
    return ComputationGraph(jaxpr=closed, text=text, nodes=builder.nodes, edges=builder.edges)


class GraphLayout(NamedTuple):
    """Where to draw each node of a `ComputationGraph`.

    - `nodes`: the graph's nodes, name -> `GraphNode`.
    - `edges`: the graph's `(source, target)` edges.
    - `position`: node name -> `(column, row)`; data flows from lower to higher columns.
    """

    nodes: dict[str, GraphNode]
    edges: list[tuple[str, str]]
    position: dict[str, tuple[float, float]]


def graph_layout(graph: ComputationGraph, sweeps: int = 6) -> GraphLayout:
    """A left-to-right layered layout of a computation graph, for drawing it without Graphviz.

    Each node's column is its longest path from an input, then moved right as far as its
    consumers allow (so an input sits next to the operation that first uses it); rows within
    a column are ordered by the mean row of the neighbours, alternating left and right for
    `sweeps` passes. A literal constant is not laid out: it sits just below and left of the
    operation that uses it.

    **Arguments:**

    - `graph`: what `computation_graph` returned.
    - `sweeps`: how many ordering passes over the columns.

    **Returns:**

    A `GraphLayout` with the nodes, the edges and each node's `(column, row)`.
    """
    nodes, edges = graph.nodes, graph.edges
    preds: dict[str, list[str]] = defaultdict(list)
    succs: dict[str, list[str]] = defaultdict(list)
    for source, target in edges:
        if nodes[source].kind != "literal":
            preds[target].append(source)
            succs[source].append(target)
    laid_out = [name for name in nodes if nodes[name].kind != "literal"]
    column: dict[str, int] = {}

    def depth(name: str) -> int:  # the longest path from an input
        if name not in column:
            column[name] = 1 + max((depth(p) for p in preds[name]), default=-1)
        return column[name]

    for name in sorted(laid_out, key=depth, reverse=True):  # next to the first consumer
        if succs[name]:
            column[name] = min(column[s] for s in succs[name]) - 1
    columns: dict[int, list[str]] = defaultdict(list)
    for name in sorted(laid_out, key=lambda n: column[n]):
        columns[column[name]].append(name)
    row: dict[str, float] = {}

    def place(names: list[str]) -> None:
        for i, name in enumerate(names):
            row[name] = i - (len(names) - 1) / 2

    for c in sorted(columns):
        place(columns[c])
    for sweep in range(sweeps):
        neighbours = preds if sweep % 2 == 0 else succs
        for c in sorted(columns, reverse=sweep % 2 == 1):
            columns[c].sort(
                key=lambda n: sum(row[m] for m in neighbours[n]) / len(neighbours[n]) if neighbours[n] else row[n]
            )
            place(columns[c])
    position: dict[str, tuple[float, float]] = {name: (float(column[name]), row[name]) for name in laid_out}
    for source, target in edges:
        if nodes[source].kind == "literal":
            x_target, y_target = position[target]
            position[source] = (x_target - 0.55, y_target - 0.6)
    return GraphLayout(nodes=nodes, edges=edges, position=position)


def plot_computation_graph(
    graph: ComputationGraph,
    groups: Sequence[tuple[str, int | None]] = (),
    output_label: str | None = None,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """Draw a computation graph with matplotlib: inputs in blue, one box per primitive, the output in yellow.

    **Arguments:**

    - `graph`: what `computation_graph` returned.
    - `groups`: `(text, count)` pairs that shade consecutive primitives, in trace order, as one
      step with a caption (`count=None`: all the rest), e.g. the three steps of figure A.7.
    - `output_label`: the output box's text; `"output"` by default.
    - `ax`: a matplotlib `Axes` to draw on; a new figure if `None`.
    - `title`: the axes' title.

    **Returns:**

    The matplotlib `Axes`.
    """
    import matplotlib.pyplot as plt

    layout = graph_layout(graph)
    nodes, position = layout.nodes, layout.position
    if ax is None:
        _, ax = plt.subplots(figsize=(12, 3.4))
    box = dict(boxstyle="round,pad=0.35", facecolor="#dbeafe", edgecolor="#1e3a8a")
    styles = {
        "input": box,
        "constant": box,
        "op": dict(boxstyle="round4,pad=0.3", facecolor="white", edgecolor="#374151"),
        "literal": dict(boxstyle="square,pad=0.1", facecolor="none", edgecolor="none"),
        "output": dict(box, facecolor="#fde68a", edgecolor="#92400e"),
    }
    ops = [name for name, node in nodes.items() if node.kind == "op"]  # in trace order
    colours = ["#eef2ff", "#ecfdf5", "#fff7ed", "#fdf2f8"]
    start = 0
    for i, (text, count) in enumerate(groups):
        members = ops[start:] if count is None else ops[start : start + count]
        start = len(ops) if count is None else start + count
        if not members:
            continue
        xs = [position[n][0] for n in members]
        ax.axvspan(min(xs) - 0.45, max(xs) + 0.45, color=colours[i % len(colours)], zorder=0)
        ax.text((min(xs) + max(xs)) / 2, 1.75, text, ha="center", fontsize=10)
    for source, target in layout.edges:
        ax.annotate(
            "",
            xy=position[target],
            xytext=position[source],
            arrowprops=dict(arrowstyle="-|>", color="#6b7280", shrinkA=14, shrinkB=14, lw=1),
        )
    for name, (x, y) in position.items():
        kind = nodes[name].kind
        label = output_label if kind == "output" and output_label is not None else nodes[name].label
        ax.text(
            x,
            y,
            label,
            ha="center",
            va="center",
            fontsize=8 if kind == "literal" else 9,
            color="#6b7280" if kind == "literal" else "black",
            bbox=styles[kind],
            zorder=3,
        )
    xs = [p[0] for p in position.values()]
    ys = [p[1] for p in position.values()]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(min(-2.0, min(ys) - 0.5), max(2.1, max(ys) + 0.5))
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=11)
    return ax
