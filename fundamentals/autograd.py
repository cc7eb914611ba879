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
from typing import Any, Callable, NamedTuple

import jax

from .losses import binary_cross_entropy
from .tensors import tensor

__all__ = [
    "logistic_regression_loss",
    "ComputationGraph",
    "computation_graph",
]

def logistic_regression_loss(w1, b, x1=None, y=None) -> jax.Array:
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


class ComputationGraph(NamedTuple):
    """The graph JAX traced for a function.

    - `jaxpr`: the `jax.core.ClosedJaxpr` from `jax.make_jaxpr`.
    - `text`: its printed form, one primitive operation a line.
    - `dot`: the same graph in Graphviz DOT, with calls to jitted helpers inlined, ready for
      `graphviz.Source(dot)` or any DOT renderer.
    """

    jaxpr: Any
    text: str
    dot: str


def _sub_jaxpr(eqn):
    """The inner jaxpr of a call-like equation (jit, custom_jvp, ...), or None."""
    for value in eqn.params.values():
        inner = getattr(value, "jaxpr", value)
        if hasattr(inner, "eqns") and hasattr(inner, "invars"):
            if len(inner.invars) == len(eqn.invars) and len(inner.outvars) == len(eqn.outvars):
                return inner
    return None


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def computation_graph(fn: Callable, *args, **kwargs) -> ComputationGraph:
    """The computation graph JAX traces for `fn(*args, **kwargs)`.

    PyTorch builds its graph silently while the forward pass runs (figure A.7 of the book).
    JAX makes the graph explicit: `jax.make_jaxpr` traces the function once with abstract
    values and returns its program. This function returns that program as text and as a DOT
    graph, whose inputs are labelled with `fn`'s argument names.

    ```python
    graph = fundamentals.computation_graph(fundamentals.logistic_regression_loss,
                                           tensor([2.2]), tensor([0.0]))
    print(graph.text)   # mul, add, logistic, log, max, ...
    graph.dot           # 'digraph { "w1" -> "mul_0"; ... }'
    ```
    """
    closed = jax.make_jaxpr(fn)(*args, **kwargs)
    text = closed.pretty_print(use_color=False)  # str() adds ANSI colour codes inside Jupyter

    try:
        parameters = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        parameters = []
    names: dict[Any, str] = {}
    lines = ["digraph computation_graph {", "  rankdir=LR;", '  node [fontname="Helvetica"];']
    counter = {"op": 0, "const": 0}

    leaf_index = 0
    for arg_position, arg in enumerate(args):
        count = len(jax.tree_util.tree_leaves(arg))
        base = parameters[arg_position] if arg_position < len(parameters) else f"arg{arg_position}"
        for i in range(count):
            label = base if count == 1 else f"{base}[{i}]"
            var = closed.jaxpr.invars[leaf_index]
            names[var] = label
            lines.append(f'  "{_dot_escape(label)}" [shape=box, style=filled, fillcolor="#dbeafe"];')
            leaf_index += 1
    for var in closed.jaxpr.invars[leaf_index:]:
        names[var] = f"arg{leaf_index}"
        lines.append(f'  "{names[var]}" [shape=box];')
        leaf_index += 1
    for var, value in zip(closed.jaxpr.constvars, closed.consts):
        names[var] = f"const_{counter['const']}"
        counter["const"] += 1
        lines.append(f'  "{names[var]}" [shape=box, label="{_dot_escape(str(value))}"];')

    def source(atom) -> str:
        if hasattr(atom, "val"):  # a Literal: draw it as its own constant node
            name = f"const_{counter['const']}"
            counter["const"] += 1
            lines.append(f'  "{name}" [shape=plaintext, label="{_dot_escape(str(atom.val))}"];')
            return name
        return names.get(atom, str(atom))

    def walk(jaxpr, env: dict) -> None:
        for eqn in jaxpr.eqns:
            inputs = [env.get(v, v) if not hasattr(v, "val") else v for v in eqn.invars]
            inner = _sub_jaxpr(eqn)
            if inner is not None:
                inner_env = {inner_var: outer for inner_var, outer in zip(inner.invars, inputs)}
                walk(inner, inner_env)
                for outer_var, inner_var in zip(eqn.outvars, inner.outvars):
                    env[outer_var] = inner_env.get(inner_var, inner_var)
                continue
            node = f"{eqn.primitive.name}_{counter['op']}"
            counter["op"] += 1
            lines.append(f'  "{node}" [shape=ellipse, label="{eqn.primitive.name}"];')
            for atom in inputs:
                lines.append(f'  "{source(atom)}" -> "{node}";')
            for out in eqn.outvars:
                env[out] = out
                names[out] = node

    top_env: dict = {}
    walk(closed.jaxpr, top_env)
    for i, out in enumerate(closed.jaxpr.outvars):
        resolved = top_env.get(out, out)
        label = "output" if len(closed.jaxpr.outvars) == 1 else f"output[{i}]"
        lines.append(f'  "{label}" [shape=box, style=filled, fillcolor="#fde68a"];')
        lines.append(f'  "{source(resolved)}" -> "{label}";')
    lines.append("}")
    return ComputationGraph(jaxpr=closed, text=text, dot="\n".join(lines))
