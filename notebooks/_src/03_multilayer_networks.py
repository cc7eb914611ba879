# %% [markdown]
# # A.5 Implementing multilayer neural networks
#
# The book's multilayer perceptron (listing A.4) as a `torch.nn.Module`, then as a plain
# Equinox module written out here, then as `fm.NeuralNetwork`, the library's version of the
# same. An Equinox module is a frozen dataclass: the model *is* its parameters, and JAX sees
# it as a *pytree*, a nested structure with leaves. It holds no gradients and no
# `requires_grad` flags, and it never changes; training returns a new model.
#
# When every leaf of a pytree is an array, `jax.jit`, `jax.grad` and Optax take it as they take
# a single array. Not every Equinox model is like that: an activation function stored in the
# model (`eqx.nn.Lambda(jax.nn.relu)`, the activations of `eqx.nn.MLP`) is a leaf too, and
# plain `jax.jit` and `jax.grad` refuse it with a `TypeError`. That is why Equinox has
# `eqx.filter_jit` and `eqx.filter_grad`, and `eqx.partition` to split the arrays from the rest
# (below).
#
# Some of this is Equinox's design rather than JAX's. Equinox has no `train()` / `eval()`
# switch (a `Dropout` layer takes an `inference` flag, which `eqx.nn.inference_mode(model)`
# flips in a new model) and treats every floating-point array as trainable unless you filter
# it out. Flax NNX, the other common JAX library for networks, chose differently: its modules
# are mutable Python objects. They still have `model.train()` / `model.eval()`, but the current
# Flax documentation (its guide "Model Views") teaches *views*, models that share the weights
# with the mode set, which is close to Equinox's `inference_mode`. Not run here (Flax is not a
# dependency); checked with Flax 0.12:
#
# ```python
# from flax import nnx
# model = nnx.Sequential(nnx.Linear(2, 30, rngs=nnx.Rngs(0)), nnx.relu, nnx.Dropout(0.5, rngs=nnx.Rngs(1)))
# train_model = nnx.view(model, deterministic=False)  # PyTorch: model.train()
# eval_model = nnx.view(model, deterministic=True)    # PyTorch: model.eval()
# assert eval_model.layers[0].kernel is model.layers[0].kernel  # the same weights, not a copy
# ```

# %%
import equinox as eqx
import matplotlib.pyplot as plt
import numpy as np
import torch
import jax
import jax.numpy as jnp
import fundamentals as fm
from fundamentals.testing import assert_same

torch.set_num_threads(1)
jax.config.update("jax_default_matmul_precision", "highest")  # full float32 on GPUs too (not TF32)
np.set_printoptions(precision=4, suppress=True)  # print JAX arrays to PyTorch's 4 digits
# %config InlineBackend.figure_formats = ["png"]
plt.rcParams["figure.dpi"] = 80

# %% [markdown]
# ## Listing A.4: the network
#
# The same network in plain Equinox: `eqx.nn.Linear` is `torch.nn.Linear`, and
# `eqx.nn.Lambda(jax.nn.relu)` wraps the activation as a layer (`torch.nn.ReLU()`). Two
# differences from PyTorch. The random initial weights come from an explicit
# `jax.random.key(123)` instead of the global `torch.manual_seed(123)`. And Equinox layers
# work on one example; a batch goes through `jax.vmap(model)` (below).

# %%
# PyTorch (the book)
class NeuralNetwork(torch.nn.Module):
    def __init__(self, num_inputs, num_outputs):
        super().__init__()

        self.layers = torch.nn.Sequential(

            # 1st hidden layer
            torch.nn.Linear(num_inputs, 30),
            torch.nn.ReLU(),

            # 2nd hidden layer
            torch.nn.Linear(30, 20),
            torch.nn.ReLU(),

            # output layer
            torch.nn.Linear(20, num_outputs),
        )

    def forward(self, x):
        logits = self.layers(x)
        return logits


torch.manual_seed(123)
model = NeuralNetwork(50, 3)
print(model)

# %%
# JAX, plain Equinox
class PlainNetwork(eqx.Module):
    layers: tuple

    def __init__(self, num_inputs, num_outputs, *, key):
        key1, key2, key3 = jax.random.split(key, 3)
        self.layers = (
            # 1st hidden layer
            eqx.nn.Linear(num_inputs, 30, key=key1),
            eqx.nn.Lambda(jax.nn.relu),
            # 2nd hidden layer
            eqx.nn.Linear(30, 20, key=key2),
            eqx.nn.Lambda(jax.nn.relu),
            # output layer
            eqx.nn.Linear(20, num_outputs, key=key3),
        )

    def __call__(self, x):  # one example, shape (num_inputs,)
        for layer in self.layers:
            x = layer(x)
        return x  # the logits


plain_model = PlainNetwork(50, 3, key=jax.random.key(123))
print(plain_model.layers[0])

# %% [markdown]
# What `fm` does for you: `fm.NeuralNetwork` ([source](../fundamentals/nn.py)) is this network
# with argument checks, optional dropout, batches handled inside (`model(X)` for one example or
# many), and a printout in PyTorch's format.

# %%
# JAX with fundamentals
model_jax = fm.NeuralNetwork(50, 3, key=jax.random.key(123))
print(model_jax)  # fundamentals prints the model as PyTorch does

# %%
# Check: the same layers in all three, printed the same way by PyTorch and fundamentals
assert repr(model_jax) == repr(model)
torch_linears = [layer for layer in model.layers if isinstance(layer, torch.nn.Linear)]
plain_linears = [layer for layer in plain_model.layers if isinstance(layer, eqx.nn.Linear)]
assert [(layer.in_features, layer.out_features) for layer in plain_linears] == [
    (layer.in_features, layer.out_features) for layer in torch_linears]

# %% [markdown]
# ## The model is a pytree
#
# What an Equinox model is shows with Equinox's own printer, `eqx.tree_pprint`: a tree of
# layers whose leaves are arrays (shown as dtype and shape) and anything else that is not a
# pytree itself, here the two `jax.nn.relu` functions. Fields marked static
# (`in_features=50`) are part of the tree's *structure*, not leaves. `jax.tree.leaves` lists
# the leaves, in order; `jax.tree.structure` is the rest, and `jax.tree.unflatten` puts leaves
# back into a structure.

# %%
# JAX, plain Equinox and JAX
import re



def without_addresses(text):
    return re.sub(r" at 0x[0-9a-f]+", "", text)  # (so that the output is the same every run)


print(without_addresses(eqx.tree_pformat(plain_model)))  # eqx.tree_pprint(plain_model), without memory addresses
leaves = jax.tree.leaves(plain_model)
print([getattr(leaf, "shape", type(leaf).__name__) for leaf in leaves])

# %%
def draw_pytree(model, title):
    """model -> its tree of layers -> its leaves, and the flat list that jax.tree.leaves returns."""
    rows = []  # (layer index, layer name, [(field, leaf)])
    for index, layer in enumerate(model.layers):
        fields = [(jax.tree_util.keystr(path, simple=True, separator="."), leaf)
                  for path, leaf in jax.tree_util.tree_flatten_with_path(layer)[0]]
        rows.append((index, type(layer).__name__, fields))
    fig, ax = plt.subplots(figsize=(10, 4.6))
    ax.set_axis_off()
    box = dict(boxstyle="round,pad=0.3", linewidth=1)
    array_colour, other_colour, module_colour = "#1d4ed8", "#b91c1c", "#374151"
    flat, row_y = [], 0
    layer_positions = []
    for index, name, fields in rows:
        ys = [row_y - k for k in range(max(len(fields), 1))]
        layer_y = sum(ys) / len(ys)
        layer_positions.append(layer_y)
        ax.annotate(f"layers[{index}]\n{name}", (1.6, layer_y), ha="center", va="center", fontsize=9,
                    color=module_colour, bbox=dict(box, facecolor="#f3f4f6", edgecolor=module_colour))
        for (field, leaf), leaf_y in zip(fields, ys):
            is_array = isinstance(leaf, jax.Array)
            label = f"{field}: {leaf.dtype}{list(leaf.shape)}" if is_array else f"{field}: {getattr(leaf, '__name__', type(leaf).__name__)} (a function)"
            colour = array_colour if is_array else other_colour
            ax.plot([1.95, 2.75], [layer_y, leaf_y], color="#9ca3af", linewidth=0.8, zorder=0)
            ax.annotate(label, (2.8, leaf_y), ha="left", va="center", fontsize=8.5, color=colour)
            flat.append((leaf_y, len(flat), colour, "array" if is_array else "not an array"))
        if not fields:
            ax.annotate("(no leaves)", (2.8, ys[0]), ha="left", va="center", fontsize=8.5, color="#6b7280")
        row_y -= max(len(fields), 1) + 0.4
    for layer_y in layer_positions:
        ax.plot([0.55, 1.25], [sum(layer_positions) / len(layer_positions), layer_y], color="#9ca3af", linewidth=0.8, zorder=0)
    ax.annotate(type(model).__name__, (0.1, sum(layer_positions) / len(layer_positions)), ha="center", va="center",
                fontsize=10, color="white", bbox=dict(box, facecolor=module_colour, edgecolor=module_colour))
    for leaf_y, position, colour, kind in flat:
        ax.annotate(f"leaf {position}: {kind}", (5.3, leaf_y), ha="left", va="center", fontsize=8.5, color="white",
                    bbox=dict(box, facecolor=colour, edgecolor=colour))
        ax.annotate("", (5.25, leaf_y), (4.75, leaf_y), arrowprops=dict(arrowstyle="->", color="#9ca3af"))
    top = 1.2
    for x, heading in [(0.1, "the model"), (1.6, "the tree"), (3.4, "its leaves"), (5.8, "jax.tree.leaves(model)")]:
        ax.annotate(heading, (x, top), ha="center", fontsize=10, fontweight="bold")
    ax.set_xlim(-0.4, 6.7)
    ax.set_ylim(row_y + 0.2, top + 0.6)
    ax.set_title(title, fontsize=10)
    plt.show()
    return flat


drawn = draw_pytree(plain_model, "PlainNetwork(50, 3): blue leaves are arrays, red ones are functions")

# %% [markdown]
# `fm.NeuralNetwork` keeps its activations as small modules with no fields (`fm.ReLU()`), so
# its leaves are the six arrays only, and plain `jax.jit` takes it. The plain Equinox model
# above has two function leaves, which plain `jax.jit` and `jax.grad` cannot turn into traced
# arrays. Equinox's answer:
#
# - `eqx.filter_jit(f)` traces the array leaves and treats every other leaf as a static,
#   hashable part of the compiled program's identity;
# - `eqx.filter_grad(f)` / `eqx.filter_value_and_grad(f)` differentiate with respect to the
#   floating-point array leaves of the first argument only;
# - `params, static = eqx.partition(model, eqx.is_array)` splits the tree in two, with `None`
#   where the other half has its leaves, and `eqx.combine(params, static)` joins them again:
#   then plain `jax.jit` and `jax.grad` work on `params`.

# %%
# JAX: plain jax.jit refuses the function leaves; Equinox's filtered transformations take them
def run(model, x):
    return model(x)


X_example = jnp.ones(50)
try:
    jax.jit(run)(plain_model, X_example)
except TypeError as error:
    print(type(error).__name__ + ":", without_addresses(str(error).splitlines()[0]))
filtered_out = eqx.filter_jit(run)(plain_model, X_example)
params, static = eqx.partition(plain_model, eqx.is_array)
partitioned_out = jax.jit(lambda params, x: eqx.combine(params, static)(x))(params, X_example)
print(filtered_out, partitioned_out)
print(jax.jit(run)(model_jax, X_example))  # fm.NeuralNetwork: no function leaves

# %%
# Check: the leaves are PyTorch's parameters (in order and shape) plus the two functions;
# the picture shows them all; filter_jit, partition + jax.jit and the plain call agree
array_leaves = [leaf for leaf in leaves if eqx.is_array(leaf)]
assert [leaf.shape for leaf in array_leaves] == [tuple(p.shape) for p in model.parameters()]
assert [leaf for leaf in leaves if not eqx.is_array(leaf)] == [jax.nn.relu, jax.nn.relu]
assert [kind for *_, kind in drawn] == ["array", "array", "not an array"] * 2 + ["array", "array"]
assert [leaf.shape for leaf in jax.tree.leaves(model_jax)] == [tuple(p.shape) for p in model.parameters()]
assert jax.tree.leaves(params) == array_leaves and jax.tree.leaves(static) == [jax.nn.relu, jax.nn.relu]
assert_same(filtered_out, plain_model(X_example))
assert_same(partitioned_out, plain_model(X_example))

# %% [markdown]
# ## Counting the trainable parameters
#
# PyTorch counts the tensors with `requires_grad=True`. By Equinox's convention every
# floating-point array of the model is a parameter (`eqx.is_inexact_array` picks them out);
# freezing one is done by leaving it out of what you differentiate, not with a flag. JAX
# itself has no notion of a parameter: `jax.grad` differentiates whatever you pass it.

# %%
# PyTorch (the book)
num_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
print("Total number of trainable model parameters:", num_params)

# %%
# JAX, plain Equinox: the sizes of the floating-point array leaves
num_params_plain = sum(leaf.size for leaf in jax.tree.leaves(eqx.filter(plain_model, eqx.is_inexact_array)))
print("Total number of trainable model parameters:", num_params_plain)

# %%
# JAX with fundamentals: the same count (source: fundamentals/nn.py)
num_params_jax = fm.count_parameters(model_jax)
print("Total number of trainable model parameters:", num_params_jax)

# %%
# Check: the book's 2213 in all three
assert num_params == num_params_plain == num_params_jax == 2213

# %% [markdown]
# ## The weights
#
# Both store a linear layer's weight as `(out_features, in_features)` and draw it from the
# same distribution, U(−1/√in, 1/√in). The *numbers* differ for the same seed 123: the two
# libraries have different random generators. To get the book's numbers we will load
# PyTorch's weights below.

# %%
# PyTorch (the book)
print(model.layers[0].weight)
print(model.layers[0].weight.shape)
print(model.layers[0].bias.shape)

# %%
# JAX
print(model_jax.layers[0].weight)
print(model_jax.layers[0].weight.shape)
print(model_jax.layers[0].bias.shape)

# %%
# Check: same shapes, dtype and keys, both inside the same bound, different numbers
weight, weight_jax = model.layers[0].weight.detach().numpy(), np.asarray(model_jax.layers[0].weight)
assert weight.shape == weight_jax.shape == (30, 50) and weight.dtype == weight_jax.dtype == np.float32
assert tuple(model.layers[0].bias.shape) == model_jax.layers[0].bias.shape == (30,)
bound = 1 / np.sqrt(50)
assert np.abs(weight).max() <= bound and np.abs(weight_jax).max() <= bound
assert not np.allclose(weight, weight_jax)
assert np.allclose(weight[0, :3], [-0.0577, 0.0047, -0.0702], atol=5e-5)  # as a readers' notebook prints it
state = fm.state_dict(model_jax)
assert list(state) == list(model.state_dict())
assert all(state[k].shape == tuple(v.shape) for k, v in model.state_dict().items())

# %% [markdown]
# ## Explicit randomness: keys instead of a global seed
#
# `torch.manual_seed(123)` sets one global generator that every later `torch.rand` and every
# layer's initialisation draws from, in program order. JAX has no global generator. A random
# function takes a **key**, and the same key always gives the same numbers:
#
# - `jax.random.key(123)` makes a key from a seed;
# - `jax.random.split(key, n)` makes `n` new, independent keys (use each once);
# - `jax.random.fold_in(key, i)` derives a key from a key and an integer, such as a step number;
# - `jax.random.uniform(key, shape)` is the book's `torch.rand(shape)`: U[0, 1), float32.
#
# The pitfall is the other side of the same coin: passing one key twice gives the *same*
# numbers twice, where PyTorch would have moved on. Split first, then draw.

# %%
# PyTorch
torch.manual_seed(123)
first, second = torch.rand(3), torch.rand(3)  # the global generator moves on
print(first, second)

# %%
# JAX
key = jax.random.key(123)
reused_1, reused_2 = jax.random.uniform(key, (3,)), jax.random.uniform(key, (3,))  # the pitfall
print(reused_1, reused_2)
key_1, key_2 = jax.random.split(key)  # the fix: one new key per draw
print(jax.random.uniform(key_1, (3,)), jax.random.uniform(key_2, (3,)))
step_keys = [jax.random.fold_in(key, step) for step in range(3)]  # e.g. one key per training step
X_jax_random = jax.random.uniform(jax.random.key(123), (1, 50))  # the book's torch.rand((1, 50)), JAX's numbers
print(X_jax_random.shape, X_jax_random.dtype)

# %%
# Check: PyTorch's draws differ; a reused JAX key repeats itself; split and fold_in keys differ
# from each other and are reproducible; uniform draws have torch.rand's range, shape and dtype
assert not torch.equal(first, second)
assert np.array_equal(reused_1, reused_2)
assert not np.array_equal(jax.random.uniform(key_1, (3,)), jax.random.uniform(key_2, (3,)))
assert np.array_equal(jax.random.uniform(jax.random.fold_in(key, 1), (3,)), jax.random.uniform(step_keys[1], (3,)))
assert not np.array_equal(jax.random.uniform(step_keys[0], (3,)), jax.random.uniform(step_keys[1], (3,)))
torch.manual_seed(123)
X_torch_random = torch.rand((1, 50))
assert X_jax_random.shape == tuple(X_torch_random.shape) and X_jax_random.dtype == jnp.float32
assert 0.0 <= float(X_jax_random.min()) and float(X_jax_random.max()) < 1.0

# %% [markdown]
# ## The forward pass
#
# The book draws a random input with the seed set again, `torch.manual_seed(123)`, and runs
# the model. (The JAX way to draw it, `jax.random.uniform`, is in the section above.) To
# compare numbers, the JAX models get PyTorch's weights. In plain Equinox, `eqx.tree_at`
# returns a new model with chosen leaves replaced; what `fm` does for you: `fm.load_state_dict`
# takes PyTorch's `state_dict()` as it is, checks every key and shape, and also returns a
# *new* model (the one passed in is unchanged).
#
# PyTorch's output carries `grad_fn=<AddmmBackward0>`: it recorded a graph, in case we call
# `.backward()`. A JAX array never does; gradients come only from `jax.grad`.

# %%
# PyTorch (the book)
torch.manual_seed(123)
X = torch.rand((1, 50))
out = model(X)
print(out)

# %%
# JAX, plain Equinox: PyTorch's six arrays into the six array leaves, a batch through jax.vmap
torch_arrays = [jnp.asarray(value.numpy()) for value in model.state_dict().values()]  # layers.0.weight, layers.0.bias, ...
plain_model = eqx.tree_at(lambda m: [x for i in (0, 2, 4) for x in (m.layers[i].weight, m.layers[i].bias)],
                          plain_model, torch_arrays)
X_jax = jnp.asarray(X.numpy())  # the same input
out_plain = jax.vmap(plain_model)(X_jax)
print(out_plain)

# %%
# JAX with fundamentals
model_jax = fm.load_state_dict(model_jax, model.state_dict())
out_jax = model_jax(X_jax)
print(out_jax)

# %%
# Check: PyTorch, both JAX models and the book's printed tensor([[-0.1262, 0.1080, -0.1792]])
assert_same(out_plain, out)
assert_same(out_jax, out)
assert np.allclose(np.asarray(out_jax), [[-0.1262, 0.1080, -0.1792]], atol=5e-5)
assert out.grad_fn is not None and type(out.grad_fn).__name__ == "AddmmBackward0"

# %% [markdown]
# ## Inference: `torch.no_grad()` has nothing to switch off
#
# For inference the book wraps the call in `with torch.no_grad():` so that PyTorch records no
# graph. JAX computes no gradient unless asked, so a plain call already is inference. Class
# probabilities come from the softmax of the logits in both.

# %%
# PyTorch (the book)
with torch.no_grad():
    out = model(X)
print(out)

with torch.no_grad():
    out = torch.softmax(model(X), dim=1)
print(out)

# %%
# JAX
out_jax = model_jax(X_jax)
print(out_jax)

out_jax = jax.nn.softmax(model_jax(X_jax), axis=1)
print(out_jax)
print(fm.predict_proba(model_jax, X_jax))  # the same, as a library function

# %%
# Check: the same probabilities; the book prints tensor([[0.3113, 0.3934, 0.2952]])
assert out.grad_fn is None
assert_same(out_jax, out)
assert_same(fm.predict_proba(model_jax, X_jax), out)
assert np.allclose(np.asarray(out_jax), [[0.3113, 0.3934, 0.2952]], atol=5e-5)

# %% [markdown]
# ## One example, or a batch
#
# `torch.nn.Linear` accepts any number of leading dimensions. An Equinox layer takes one
# example; `fm.NeuralNetwork` maps itself over a batch with `jax.vmap`, so both shapes work.

# %%
# PyTorch
with torch.no_grad():
    one = model(X[0])
    batch = model(torch.cat([X, 2 * X]))
print(one.shape, batch.shape)

# %%
# JAX
one_jax = model_jax(X_jax[0])
batch_jax = model_jax(jnp.concatenate([X_jax, 2 * X_jax]))
by_hand = jax.vmap(model_jax)(jnp.concatenate([X_jax, 2 * X_jax]))  # what the model does inside
print(one_jax.shape, batch_jax.shape)

# %%
# Check
assert_same(one_jax, one)
assert_same(batch_jax, batch)
assert_same(by_hand, batch)

# %% [markdown]
# ## Changing a parameter
#
# PyTorch changes a parameter in place (under `torch.no_grad()`). An Equinox model is
# immutable: `eqx.tree_at` returns a new model with one leaf replaced, and the old model keeps
# its weights. This is what lets `jax.jit` and `jax.grad` treat a model as plain data.

# %%
# PyTorch
with torch.no_grad():
    model.layers[4].bias[0] = 1.0
    out = model(X)
print(out)

# %%
# JAX
changed_jax = eqx.tree_at(lambda m: m.layers[4].bias, model_jax, model_jax.layers[4].bias.at[0].set(1.0))
print(changed_jax(X_jax))
print(model_jax(X_jax))  # the original, unchanged

# %%
# Check: the new JAX model matches PyTorch's changed one; the old JAX model still gives the book's output
assert_same(changed_jax(X_jax), out)
assert np.allclose(np.asarray(model_jax(X_jax)), [[-0.1262, 0.1080, -0.1792]], atol=5e-5)
