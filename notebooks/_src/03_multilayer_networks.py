# %% [markdown]
# # A.5 Implementing multilayer neural networks
#
# The book's multilayer perceptron (listing A.4) as a `torch.nn.Module` and as
# `fm.NeuralNetwork`, an Equinox module. An Equinox module is a frozen dataclass of arrays:
# the model *is* its parameters, and JAX sees it as a *pytree*, a nested structure whose leaves
# are arrays, which `jax.grad`, `jax.jit` and Optax take as they take a single array. It holds
# no gradients and no `requires_grad` flags, and it never changes; training returns a new model.
#
# Some of this is Equinox's design rather than JAX's. Equinox has no `train()` / `eval()`
# switch (a `Dropout` layer takes an `inference` flag, which `eqx.nn.inference_mode` flips)
# and treats every floating-point array as trainable unless you filter it out. Flax NNX, the
# other common JAX library for networks, chose differently: its modules are mutable Python
# objects with `model.train()` / `model.eval()`, much as in PyTorch.

# %%
import equinox as eqx
import numpy as np
import torch
import jax
import jax.numpy as jnp
import fundamentals as fm
from fundamentals.testing import assert_same

torch.set_num_threads(1)
jax.config.update("jax_default_matmul_precision", "highest")  # full float32 on GPUs too (not TF32)
np.set_printoptions(precision=4, suppress=True)  # print JAX arrays to PyTorch's 4 digits

# %% [markdown]
# ## Listing A.4: the network
#
# `fm.NeuralNetwork` is the same network written with Equinox. Its core, without the input
# checks and the optional dropout, is
#
# ```python
# class NeuralNetwork(eqx.Module):
#     layers: tuple
#
#     def __init__(self, num_inputs, num_outputs, *, key):
#         k1, k2, k3 = jax.random.split(key, 3)
#         self.layers = (eqx.nn.Linear(num_inputs, 30, key=k1), ReLU(),
#                        eqx.nn.Linear(30, 20, key=k2), ReLU(),
#                        eqx.nn.Linear(20, num_outputs, key=k3))
#
#     def __call__(self, x):            # one example, shape (num_inputs,)
#         for layer in self.layers:
#             x = layer(x)
#         return x                      # a batch goes through jax.vmap(model)
# ```
#
# Two differences from PyTorch. The random initial weights come from an explicit
# `jax.random.key(123)` instead of the global `torch.manual_seed(123)`. And Equinox layers
# work on one example; the model maps them over a batch with `jax.vmap`.

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
# JAX
model_jax = fm.NeuralNetwork(50, 3, key=jax.random.key(123))
print(model_jax)  # fundamentals prints the model as PyTorch does

# %%
# Check: the same layers, printed the same way
assert repr(model_jax) == repr(model)

# %% [markdown]
# That listing is a courtesy of `fm.NeuralNetwork`. What the model really is shows with
# Equinox's own printer, `eqx.tree_pprint`: a tree of layers whose leaves are arrays (shown as
# dtype and shape) and plain Python values. `jax.tree_util.tree_leaves` lists the leaves that
# JAX transformations see; the Python values (`in_features=50`, the activation) are part of
# the tree's structure, not leaves.

# %%
# JAX, plain Equinox and JAX
eqx.tree_pprint(model_jax)
leaves = jax.tree_util.tree_leaves(model_jax)
print([leaf.shape for leaf in leaves])

# %%
# Check: the pytree's leaves are PyTorch's parameters, in the same order and shapes
assert [leaf.shape for leaf in leaves] == [tuple(p.shape) for p in model.parameters()]

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
# JAX
num_params_jax = fm.count_parameters(model_jax)
print("Total number of trainable model parameters:", num_params_jax)
# the same count, by hand
print(sum(leaf.size for leaf in jax.tree_util.tree_leaves(eqx.filter(model_jax, eqx.is_inexact_array))))

# %%
# Check: the book's 2213 in both
assert num_params == num_params_jax == 2213

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
# the model. (The JAX way to draw it is in the next section.) To compare numbers, the JAX model gets PyTorch's weights with
# `fm.load_state_dict`, which returns a *new* model (the one passed in is unchanged) and
# accepts PyTorch's `state_dict()` as it is.
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
# JAX
model_jax = fm.load_state_dict(model_jax, model.state_dict())
X_jax = jnp.asarray(X.numpy())  # the same input
out_jax = model_jax(X_jax)
print(out_jax)

# %%
# Check: PyTorch, JAX and the book's printed tensor([[-0.1262, 0.1080, -0.1792]])
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
