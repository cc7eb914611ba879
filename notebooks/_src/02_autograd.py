# %% [markdown]
# # A.3–A.4 Computation graphs and automatic differentiation
#
# The book's logistic-regression example, in PyTorch and in JAX. PyTorch records a graph while
# the forward pass runs and `.backward()` walks it back, leaving gradients in `.grad`. JAX has
# no recording and no `.grad`: the forward pass is a plain function, JAX traces its graph when
# asked, and `jax.grad(f)` is a new function that returns the gradient.

# %%
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
import jax
import jax.numpy as jnp
import fundamentals as fm
from fundamentals.testing import assert_same

torch.set_num_threads(1)
jax.config.update("jax_default_matmul_precision", "highest")  # full float32 on GPUs too (not TF32)
np.set_printoptions(precision=4, suppress=True)  # print JAX arrays to PyTorch's 4 digits
# %config InlineBackend.figure_formats = ["png"]
jax.config.update("jax_pprint_use_color", False)  # plain text in the stored outputs
plt.rcParams["figure.dpi"] = 80

# %% [markdown]
# ## A.3 The forward pass (listing A.2)
#
# In JAX the forward pass becomes a function of the values it depends on. The parameters come
# first, because `jax.grad` differentiates with respect to the first argument unless told
# otherwise. `torch.sigmoid` is `jax.nn.sigmoid`; the loss is written out in `jax.numpy`,
# with PyTorch's clamp of each log at −100 (so that a probability of exactly 0 or 1 gives a
# loss of 100, not infinity). What `fm` does for you: `fm.binary_cross_entropy(a, y)` is that
# last line with PyTorch's argument checks, and `fm.logistic_regression_loss` the whole
# function ([source](../fundamentals/losses.py)).

# %%
# PyTorch (the book)
y = torch.tensor([1.0])
x1 = torch.tensor([1.1])
w1 = torch.tensor([2.2])
b = torch.tensor([0.0])
z = x1 * w1 + b
a = torch.sigmoid(z)

loss = F.binary_cross_entropy(a, y)
print(loss)

# %%
# JAX
def loss_fn(w1, b, x1, y):
    z = x1 * w1 + b
    a = jax.nn.sigmoid(z)
    log_a, log_not_a = jnp.maximum(jnp.log(a), -100.0), jnp.maximum(jnp.log1p(-a), -100.0)
    return -jnp.mean(y * log_a + (1 - y) * log_not_a)  # F.binary_cross_entropy(a, y)


y_jax, x1_jax, w1_jax, b_jax = jnp.array([1.0]), jnp.array([1.1]), jnp.array([2.2]), jnp.array([0.0])
loss_jax = loss_fn(w1_jax, b_jax, x1_jax, y_jax)
print(loss_jax)

# %%
# Check: the same loss; the book prints tensor(0.0852)
assert_same(loss_jax, loss)
assert abs(float(loss_jax) - 0.0852) < 5e-5
assert_same(fm.logistic_regression_loss(w1_jax, b_jax, x1_jax, y_jax), loss)
assert_same(fm.binary_cross_entropy(jax.nn.sigmoid(x1_jax * w1_jax + b_jax), y_jax), loss)
# the clamp: a certain, wrong prediction costs 100 in both, not infinity
certain = jnp.array([0.0, 1.0])
assert_same(-jnp.mean(jnp.array([1.0, 0.0]) * jnp.maximum(jnp.log(certain), -100.0)
                      + jnp.array([0.0, 1.0]) * jnp.maximum(jnp.log1p(-certain), -100.0)),
            F.binary_cross_entropy(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0])))

# %% [markdown]
# ## The computation graph (figure A.7)
#
# PyTorch builds its graph in the background, and only when a leaf tensor has
# `requires_grad=True`; above, `loss.grad_fn` is `None` because nothing asked for gradients.
# With `requires_grad=True` (as in listing A.3) each result remembers the backward function
# of the operation that made it, and we can walk that chain from the loss.
#
# JAX makes the graph explicit instead: `jax.make_jaxpr` runs the function once with abstract
# values and returns its program, one primitive operation per line. What `fm` does for you:
# `fm.computation_graph` returns that program as text and as a graph
# ([source](../fundamentals/autograd.py)).

# %%
# PyTorch: the graph autograd recorded
w1 = torch.tensor([2.2], requires_grad=True)
b = torch.tensor([0.0], requires_grad=True)
z = x1 * w1 + b
a = torch.sigmoid(z)
loss = F.binary_cross_entropy(a, y)

leaf_names = {id(w1): "w1", id(b): "b"}
torch_ops = []


def show(node, depth=0):
    name = type(node).__name__
    if name == "AccumulateGrad":
        name += f" -> {leaf_names[id(node.variable)]}.grad"
    else:
        torch_ops.append(name)
    print("    " * depth + name)
    for child, _ in node.next_functions:
        if child is not None:
            show(child, depth + 1)


show(loss.grad_fn)

# %%
# JAX: the graph jax.make_jaxpr traced
print(jax.make_jaxpr(loss_fn)(w1_jax, b_jax, x1_jax, y_jax))
graph = fm.computation_graph(loss_fn, w1_jax, b_jax, x1_jax, y_jax)  # the same program, as data for the picture

# %%
# Check: both graphs start with mul, add, sigmoid. PyTorch records binary_cross_entropy as one
# node with a hand-written backward; JAX traces it down to primitives (log, the clamp at -100, ...).
jax_ops = [eqn.primitive.name for eqn in graph.jaxpr.jaxpr.eqns]
assert jax_ops == [eqn.primitive.name for eqn in jax.make_jaxpr(loss_fn)(w1_jax, b_jax, x1_jax, y_jax).jaxpr.eqns]
assert torch_ops == ["BinaryCrossEntropyBackward0", "SigmoidBackward0", "AddBackward0", "MulBackward0"]
assert jax_ops[:3] == ["mul", "add", "logistic"]
assert {"log", "log1p", "max"} <= set(jax_ops)
print(len(torch_ops), "PyTorch nodes;", len(jax_ops), "JAX primitives")

# %% [markdown]
# The same graph as a picture: inputs on the left in blue, one box per primitive, constants
# in grey, the loss in yellow. The shaded bands are the three steps of figure A.7.
# (`fm.plot_computation_graph` lays out `graph.nodes` and `graph.edges` with matplotlib; any
# Graphviz renderer draws `graph.dot`, the same graph as DOT text, too.)

# %%
fm.plot_computation_graph(
    graph,
    groups=[("z = x1·w1 + b", 2), ("a = σ(z)", 1), ("loss = binary_cross_entropy(a, y)", None)],
    output_label=f"loss\n{float(loss_jax):.4f}",
    title="Figure A.7 as JAX traced it: fm.computation_graph(loss_fn, w1, b, x1, y)",
)
plt.show()

# %% [markdown]
# ## A.4 Gradients (listing A.3)
#
# `torch.autograd.grad(loss, w1)` walks the recorded graph back from `loss`. In JAX,
# `jax.grad(loss_fn, argnums=0)` is a *function*: called with the same inputs, it returns
# d loss / d w1. `argnums` picks which arguments to differentiate, so nothing has to be flagged
# with `requires_grad`, and there is no graph to keep alive, so nothing like `retain_graph`.

# %%
# PyTorch (the book)
from torch.autograd import grad

grad_L_w1 = grad(loss, w1, retain_graph=True)
grad_L_b = grad(loss, b, retain_graph=True)
print(grad_L_w1)
print(grad_L_b)

# %%
# JAX
grad_L_w1_jax = jax.grad(loss_fn, argnums=0)(w1_jax, b_jax, x1_jax, y_jax)
grad_L_b_jax = jax.grad(loss_fn, argnums=1)(w1_jax, b_jax, x1_jax, y_jax)
print(grad_L_w1_jax)
print(grad_L_b_jax)

# %%
# Check: PyTorch, JAX, the book (-0.0898, -0.0817) and the derivative by hand:
# for the sigmoid with binary cross-entropy, d loss / d w1 = (a - y) * x1 and d loss / d b = a - y.
assert_same(grad_L_w1_jax, grad_L_w1[0])
assert_same(grad_L_b_jax, grad_L_b[0])
assert abs(float(grad_L_w1_jax[0]) - (-0.0898)) < 5e-5 and abs(float(grad_L_b_jax[0]) - (-0.0817)) < 5e-5
a_value = jax.nn.sigmoid(x1_jax * w1_jax + b_jax)
assert_same(grad_L_w1_jax, (a_value - y_jax) * x1_jax)
assert_same(grad_L_b_jax, a_value - y_jax)

# %% [markdown]
# ### `.backward()` against one function for all gradients
#
# `loss.backward()` computes the gradients of every leaf and *stores* them in `.grad`.
# `jax.grad(loss_fn, argnums=(0, 1))` *returns* both, and `jax.value_and_grad` the loss too:
# the gradients are ordinary values you pass on (to an optimizer, in the training loop).

# %%
# PyTorch (the book)
loss.backward()
print(w1.grad)
print(b.grad)

# %%
# JAX
loss_value, (w1_grad, b_grad) = jax.value_and_grad(loss_fn, argnums=(0, 1))(w1_jax, b_jax, x1_jax, y_jax)
print(loss_value)
print(w1_grad)
print(b_grad)

# %%
# Check
assert_same(w1_grad, w1.grad)
assert_same(b_grad, b.grad)
assert_same(loss_value, loss)

# %% [markdown]
# ### Nothing accumulates, nothing is retained
#
# PyTorch *adds* new gradients to `.grad`, which is why a training loop calls
# `optimizer.zero_grad()` before each `backward()`; and it frees the graph after `backward()`,
# so a second call without `retain_graph=True` fails. A JAX gradient function has no state:
# call it twice and you get the same numbers twice.

# %%
# PyTorch: a second backward() through the freed graph fails; after a new forward pass it adds up
try:
    loss.backward()
except RuntimeError as error:
    print(type(error).__name__ + ":", str(error).split(". ")[0] + ".")  # its first sentence
loss = F.binary_cross_entropy(torch.sigmoid(x1 * w1 + b), y)
loss.backward()
print(w1.grad, b.grad)  # twice the gradient: it accumulated

# %%
# JAX: the same call, the same answer
grad_fn = jax.grad(loss_fn, argnums=(0, 1))
first, second = grad_fn(w1_jax, b_jax, x1_jax, y_jax), grad_fn(w1_jax, b_jax, x1_jax, y_jax)
print(first)
print(second)

# %%
# Check: PyTorch's .grad holds 2x the gradient; JAX's second call equals its first
assert_same(2 * w1_grad, w1.grad)
assert_same(2 * b_grad, b.grad)
for once, again in zip(first, second):
    assert np.array_equal(np.asarray(once), np.asarray(again))

# %% [markdown]
# ### The backward pass is a program too
#
# Because `jax.grad(loss_fn)` is a function, JAX can trace *it*: the program below is the
# backward pass of figure A.8, written out (the forward pass first, then the chain rule from
# right to left). `jax.jit` compiles that whole program into one fused computation; PyTorch
# instead runs the backward functions it recorded, one by one.

# %%
backward = jax.make_jaxpr(grad_fn)(w1_jax, b_jax, x1_jax, y_jax)
lines = backward.pretty_print(use_color=False).splitlines()
print("\n".join(lines[:12]))
print(f"    ... {len(lines) - 12} more lines")
print(textwrap.fill("primitives in order: " + " ".join(e.primitive.name for e in backward.jaxpr.eqns), 100))

# %%
# Check: the gradient program runs the forward pass first (mul, add, logistic), holds more
# operations than the forward pass, and compiled with jax.jit it gives the same gradients
backward_ops = [eqn.primitive.name for eqn in backward.jaxpr.eqns]
assert backward_ops[:3] == ["mul", "add", "logistic"] and len(backward_ops) > len(jax_ops)
for compiled, eager in zip(jax.jit(grad_fn)(w1_jax, b_jax, x1_jax, y_jax), first):
    assert_same(compiled, eager)

# %% [markdown]
# ## Beyond `grad`: `.detach()`, second derivatives, vector-Jacobian products
#
# ### `.detach()` is `jax.lax.stop_gradient`
#
# PyTorch's `t.detach()` gives the same values cut off from the graph: no gradient flows
# through it. JAX's `jax.lax.stop_gradient(x)` does the same inside a function: the value is
# used, its derivative is taken as zero. Below, `w * w.detach()` has derivative `w`, not `2w`.

# %%
# PyTorch
w = torch.tensor([3.0], requires_grad=True)
(w * w.detach()).sum().backward()
print(w.grad)

# %%
# JAX
stopped = jax.grad(lambda w: (w * jax.lax.stop_gradient(w)).sum())(jnp.array([3.0]))
print(stopped)

# %%
# Check: PyTorch, JAX and the analytic value d/dw (w * c) = c = 3, against d/dw (w * w) = 6
assert_same(stopped, w.grad)
assert float(stopped[0]) == 3.0 and float(jax.grad(lambda w: (w * w).sum())(jnp.array([3.0]))[0]) == 6.0

# %% [markdown]
# ### A gradient of a gradient: `jax.grad(jax.grad(f))`, `jax.hessian`
#
# In PyTorch a second derivative needs `create_graph=True`, so that the backward pass is
# itself recorded and can be differentiated. In JAX `jax.grad(f)` is a function like any
# other, so `jax.grad(jax.grad(f))` is the second derivative, and `jax.hessian(f)` the matrix
# of all second derivatives. For the loss above, d²loss / dw1² = a (1 − a) x1².

# %%
# PyTorch
w1 = torch.tensor([2.2], requires_grad=True)
loss = F.binary_cross_entropy(torch.sigmoid(x1 * w1 + b.detach()), y)
(first_torch,) = grad(loss, w1, create_graph=True)  # keep the backward pass differentiable
(second_torch,) = grad(first_torch.sum(), w1)
hessian_torch = torch.autograd.functional.hessian(
    lambda w: F.binary_cross_entropy(torch.sigmoid(x1 * w + b.detach()), y), w1.detach())
print(second_torch, hessian_torch)

# %%
# JAX
def loss_of_w1(w1):
    return loss_fn(w1, b_jax, x1_jax, y_jax)


second_jax = jax.grad(lambda w: jax.grad(loss_of_w1)(w).sum())(w1_jax)
hessian_jax = jax.hessian(loss_of_w1)(w1_jax)
print(second_jax, hessian_jax)

# %%
# Check: PyTorch, JAX and the analytic second derivative agree
assert_same(second_jax, second_torch)
assert_same(hessian_jax, hessian_torch)
a_value = jax.nn.sigmoid(x1_jax * w1_jax + b_jax)
assert_same(second_jax, a_value * (1 - a_value) * x1_jax**2)

# %% [markdown]
# ### `backward(gradient=v)` is `jax.vjp`
#
# `jax.grad` needs a function with one number as its output. For a function with many
# outputs, reverse-mode differentiation computes a *vector-Jacobian product* vᵀJ: PyTorch's
# `out.backward(gradient=v)`, JAX's `jax.vjp`, which runs the forward pass and returns the
# output and a function that maps v to vᵀJ. (`jax.grad(f)` is `jax.vjp` with v = 1.) Here
# f(w) = sigmoid(x · w) for three inputs at once, whose Jacobian is diagonal: vᵀJ = v · a (1 − a) · x.

# %%
# PyTorch
x3, v = torch.tensor([1.1, -0.5, 2.0]), torch.tensor([1.0, 0.5, -2.0])
w3 = torch.tensor([2.2, 2.2, 2.2], requires_grad=True)
out3 = torch.sigmoid(x3 * w3)
out3.backward(gradient=v)
print(out3, w3.grad)

# %%
# JAX
x3_jax, v_jax = jnp.array([1.1, -0.5, 2.0]), jnp.array([1.0, 0.5, -2.0])
out3_jax, pullback = jax.vjp(lambda w: jax.nn.sigmoid(x3_jax * w), jnp.array([2.2, 2.2, 2.2]))
(vjp_jax,) = pullback(v_jax)
print(out3_jax, vjp_jax)

# %%
# Check: PyTorch, JAX and the analytic vᵀJ
assert_same(out3_jax, out3)
assert_same(vjp_jax, w3.grad)
assert_same(vjp_jax, v_jax * out3_jax * (1 - out3_jax) * x3_jax)

# %% [markdown]
# ## Summary
#
# | PyTorch | JAX |
# |---|---|
# | `torch.sigmoid(z)` | `jax.nn.sigmoid(z)` |
# | `F.binary_cross_entropy(a, y)` | the clamped logs in `jax.numpy`, or `fm.binary_cross_entropy(a, y)` |
# | `requires_grad=True`, `loss.backward()`, `w.grad` | `jax.grad(loss_fn, argnums=0)(w, ...)` returns the gradient |
# | `grad(loss, [w, b])` | `jax.grad(loss_fn, argnums=(0, 1))`; `jax.value_and_grad` for the loss too |
# | `optimizer.zero_grad()` | nothing: gradients are returned, never accumulated |
# | `t.detach()` | `jax.lax.stop_gradient(t)` |
# | `grad(..., create_graph=True)` twice, `torch.autograd.functional.hessian` | `jax.grad(jax.grad(f))`, `jax.hessian(f)` |
# | `out.backward(gradient=v)` | `out, pullback = jax.vjp(f, w)`; `pullback(v)` |
# | the recorded graph (`loss.grad_fn`) | `jax.make_jaxpr(f)(*args)`; `fm.computation_graph` |
