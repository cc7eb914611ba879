# %% [markdown]
# # A.7, continued: what `jax.jit` does, `vmap` beyond batches, debugging
#
# Notebook 05 trained the book's network with a step compiled by `jax.jit`. This notebook looks
# at the machinery: when JAX traces and compiles, what makes it compile again and how to find
# out why, the Python that cannot run inside a compiled function and what to write instead,
# what `jax.vmap` does besides batching (per-example gradients, a key per example, many models
# at once), randomness inside a compiled step, and the tools for debugging compiled code. Every
# result is checked against PyTorch or an analytic value.

# %%
import copy
import io
import logging
import re

import equinox as eqx
import numpy as np
import optax
import torch
import torch.nn.functional as F
import jax
import jax.numpy as jnp
import fundamentals as fm
from fundamentals.testing import assert_same

torch.set_num_threads(1)
jax.config.update("jax_default_matmul_precision", "highest")  # full float32 on GPUs too (not TF32)
np.set_printoptions(precision=4, suppress=True)  # print arrays to PyTorch's 4 digits


class NeuralNetwork(torch.nn.Module):  # the book's listing A.4
    def __init__(self, num_inputs, num_outputs):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(num_inputs, 30), torch.nn.ReLU(),
            torch.nn.Linear(30, 20), torch.nn.ReLU(),
            torch.nn.Linear(20, num_outputs),
        )

    def forward(self, x):
        return self.layers(x)


X_train_np, y_train_np, X_test_np, y_test_np = fm.toy_data()
X_train, y_train = torch.from_numpy(X_train_np), torch.from_numpy(y_train_np)
train_ds_jax = fm.ArrayDataset(X_train_np, y_train_np)
train_loader_jax = fm.DataLoader(train_ds_jax, batch_size=2, shuffle=True, drop_last=True, seed=123)
torch.manual_seed(123)
model = NeuralNetwork(2, 2)
initial_state = copy.deepcopy(model.state_dict())

# notebook 05's step: the model split into arrays and the rest, one Optax SGD step
model_jax = fm.load_state_dict(fm.NeuralNetwork(2, 2, key=jax.random.key(123)), initial_state)
params, static = eqx.partition(model_jax, eqx.is_array)
optimizer_jax = optax.sgd(learning_rate=0.5)
opt_state = optimizer_jax.init(params)


def loss_fn(params, features, labels):
    logits = eqx.combine(params, static)(features)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()  # F.cross_entropy


@jax.jit
def train_step(params, opt_state, features, labels):
    loss, grads = jax.value_and_grad(loss_fn)(params, features, labels)
    updates, opt_state = optimizer_jax.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


logits_np = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
labels_np = np.array([0, 2, 1, 1, 0])
num_epochs = 3

# ## What `jax.jit` does: tracing, recompiling, static arguments
#
# `jax.jit` does not run your Python function on every call. On the first call it *traces* it:
# runs the Python once with abstract arrays that have only a shape and a dtype, records the
# operations, and compiles them. A `print` inside therefore runs once, at trace time, and
# shows an abstract value, not numbers (`jax.debug.print` prints on every call). Later calls
# with arguments of the same shapes and dtypes reuse the compiled program. A new shape is a
# new program: without `drop_last`, the last batch of each epoch holds one row, and the step
# compiles a second time for it, once. (The step is the one of notebook 05, repeated in the
# set-up above.)

# %%
# JAX
traced_shapes = []


def noisy_train_step(params, opt_state, features, labels):
    print("tracing, features:", features)  # Python: runs only while tracing
    traced_shapes.append(features.shape)
    return train_step(params, opt_state, features, labels)


noisy_step = jax.jit(noisy_train_step)
ragged_loader = fm.DataLoader(train_ds_jax, batch_size=2, shuffle=True, seed=123)  # batches of 2, 2, 1
trace_params, trace_state = params, opt_state
for epoch in range(2):
    print(f"epoch {epoch}:", [len(labels) for _, labels in ragged_loader])
    for features, labels in ragged_loader:
        trace_params, trace_state, _ = noisy_step(trace_params, trace_state, features, labels)

# %% [markdown]
# A value the program's *shape* depends on cannot be abstract: `jax.nn.one_hot(labels,
# num_classes)` needs `num_classes` as a Python int. Marking it static (`static_argnames`)
# makes it part of the compiled program's identity: each new value compiles again, so keep
# static arguments to a few values. The error without it is the one every JAX user meets: a
# traced value where Python needs a concrete number.

# %%
# JAX
compiled_for = []


def one_hot_loss(logits, labels, num_classes):
    one_hot = jax.nn.one_hot(labels, num_classes)
    compiled_for.append(num_classes)  # Python: runs once per compilation
    return -(one_hot * jax.nn.log_softmax(logits)).sum(axis=1).mean()


one_hot_loss_jit = jax.jit(one_hot_loss, static_argnames="num_classes")
for _ in range(3):
    one_hot_value = one_hot_loss_jit(logits_np, labels_np, num_classes=3)
try:
    jax.jit(one_hot_loss)(logits_np, labels_np, 3)  # not static: num_classes arrives as a tracer
except Exception as error:
    print(type(error).__name__ + ":", str(error).splitlines()[0])
print(one_hot_value, "compiled for num_classes:", compiled_for)

# %%
# Check: one trace for batches of 2 and one for the last batch of 1, over two epochs; the
# static argument compiled once for three calls; the losses agree with PyTorch's
assert traced_shapes == [(2, 2), (1, 2)]
assert compiled_for == [3]
assert_same(one_hot_value, F.cross_entropy(torch.from_numpy(logits_np), torch.from_numpy(labels_np)))

# %% [markdown]
# ## Python numbers as arguments: `jax.jit` against `eqx.filter_jit`
#
# A value that changes every call, such as the step number for a learning-rate schedule, must
# not become part of the program's identity. `jax.jit` already handles a Python `int` or
# `float` argument well: it traces it as a (weakly typed) scalar array, so one program serves
# every value. `eqx.filter_jit` does not: it traces only the *array* leaves of its arguments
# and treats everything else as static, so each new Python `int` is a new compilation. That is
# the trap when moving a step to Equinox's idiom: pass such values as arrays,
# `jnp.asarray(step)`.

# %%
# JAX
traces = {"jax.jit, int": 0, "eqx.filter_jit, int": 0, "eqx.filter_jit, jnp.asarray(int)": 0}


def counted(name):
    def decayed(x, step):
        traces[name] += 1  # Python: runs once per trace
        return x * 0.9**step  # e.g. a learning rate decayed by the step number
    return decayed


jit_decayed = jax.jit(counted("jax.jit, int"))
filter_decayed = eqx.filter_jit(counted("eqx.filter_jit, int"))
filter_decayed_array = eqx.filter_jit(counted("eqx.filter_jit, jnp.asarray(int)"))
x = jnp.ones(3)
decayed_values = []
for step in range(3):
    decayed_values.append((jit_decayed(x, step), filter_decayed(x, step), filter_decayed_array(x, jnp.asarray(step))))
print(traces)

# %%
# Check: one trace for jax.jit and for the array, three for eqx.filter_jit with Python ints;
# every value is PyTorch's torch.ones(3) * 0.9 ** step
assert traces == {"jax.jit, int": 1, "eqx.filter_jit, int": 3, "eqx.filter_jit, jnp.asarray(int)": 1}
for step, values in enumerate(decayed_values):
    for value in values:
        assert_same(value, torch.ones(3) * 0.9**step)

# %% [markdown]
# ## Why did it compile again? `jax_explain_cache_misses` and `jax.log_compiles`
#
# Counting traces with a Python side effect works, but JAX can tell you itself. With
# `jax.config.update("jax_explain_cache_misses", True)` every new trace is logged with the
# reason (which argument changed, and from what to what); inside `with jax.log_compiles():`
# every compilation is logged with the shapes and dtypes it was compiled for. Both write to
# Python's `logging` under the name `"jax"`; here a small handler collects the lines so that
# the notebook can show the interesting ones and check them.

# %%
class JaxLog:
    """Collect what JAX logs inside the `with` block (instead of printing it to stderr)."""

    def __enter__(self):
        self.stream, self.logger = io.StringIO(), logging.getLogger("jax")
        self.handler, self.propagate = logging.StreamHandler(self.stream), self.logger.propagate
        self.logger.addHandler(self.handler)
        self.logger.propagate = False
        return self

    def __exit__(self, *exc_info):
        self.logger.removeHandler(self.handler)
        self.logger.propagate = self.propagate

    def lines(self, pattern):
        return [line.strip() for line in self.stream.getvalue().splitlines() if re.search(pattern, line)]


explained_step = jax.jit(lambda params, features, labels: loss_fn(params, features, labels))
batches = [(X_train_np[:2], y_train_np[:2]), (X_train_np[2:4], y_train_np[2:4]), (X_train_np[4:], y_train_np[4:])]
jax.config.update("jax_explain_cache_misses", True)
with JaxLog() as log, jax.log_compiles():
    explained_losses = [explained_step(params, features, labels) for features, labels in batches]
jax.config.update("jax_explain_cache_misses", False)
reasons = log.lines(r"^\s*\* at ")
compiled = [", ".join(re.findall(r"ShapedArray\([^)]*\)", line)[-2:])  # the batch's two arguments
            for line in log.lines(r"Compiling jit\(<lambda>\)")]
print("why it traced again:", *reasons, sep="\n  ")
print("what it compiled for (features, labels):", *compiled, sep="\n  ")

# %%
# Check: two compilations (batches of 2, then the batch of 1), and the reason names the
# features' shape; the losses are PyTorch's F.cross_entropy for each batch
assert len(compiled) == 2 and "float32[2,2]" in compiled[0] and "float32[1,2]" in compiled[1]
assert any("features" in reason and "f32[1,2]" in reason and "f32[2,2]" in reason for reason in reasons)
for loss, (features, labels) in zip(explained_losses, batches):
    assert_same(loss, F.cross_entropy(model(torch.from_numpy(features)), torch.from_numpy(labels)))

# %% [markdown]
# ## The sharp bits: Python control flow, boolean masks, shapes that change
#
# Inside a compiled function the arrays are abstract: they have a shape and a dtype, not
# values. Three things a PyTorch user writes without thinking fail for that reason.
#
# **An `if` on an array.** Python's `if` needs `True` or `False` now, at trace time, so
# `if x.sum() > 0:` raises `TracerBoolConversionError`. Both branches can be computed and one
# chosen per element with `jnp.where(condition, a, b)`, or one branch run with
# `jax.lax.cond(condition, true_fn, false_fn, x)`. (An `if` on a Python value, such as a static
# argument or a shape, is fine: it is decided while tracing.)

# %%
# PyTorch: eager, so the `if` sees the value
def torch_branch(x):
    if x.sum() > 0:
        return x * 2
    return -x


inputs = [[1.0, -0.5], [-1.0, 0.5]]
torch_branches = [torch_branch(torch.tensor(values)) for values in inputs]
print(torch_branches)

# %%
# JAX
def python_if(x):
    if x.sum() > 0:
        return x * 2
    return -x


try:
    jax.jit(python_if)(jnp.array(inputs[0]))
except jax.errors.TracerBoolConversionError as error:
    print(type(error).__name__ + ":", str(error).splitlines()[0])

with_where = jax.jit(lambda x: jnp.where(x.sum() > 0, x * 2, -x))
with_cond = jax.jit(lambda x: jax.lax.cond(x.sum() > 0, lambda x: x * 2, lambda x: -x, x))
print([with_where(jnp.array(values)) for values in inputs], [with_cond(jnp.array(values)) for values in inputs])

# %%
# Check: jnp.where and lax.cond give PyTorch's results for both inputs
for values, expected in zip(inputs, torch_branches):
    assert_same(with_where(jnp.array(values)), expected)
    assert_same(with_cond(jnp.array(values)), expected)

# %% [markdown]
# **A boolean mask as an index.** `x[x > 0]` has as many elements as `x` has positive
# entries, a shape that depends on the values, which a compiled program cannot have. It works
# outside `jit`, and raises `NonConcreteBooleanIndexError` inside. Keep the shape and mask the
# values instead: `jnp.where(x > 0, x, 0)`, or reductions that take a mask,
# `jnp.sum(x, where=x > 0)`. If you need the indices, `jnp.nonzero(x > 0, size=n, fill_value=...)`
# returns a fixed number of them.

# %%
# PyTorch
values = torch.tensor([0.5, -1.0, 2.0, -3.0, 1.5])
print(values[values > 0].sum(), values[values > 0].mean())

# %%
# JAX
values_jax = jnp.array([0.5, -1.0, 2.0, -3.0, 1.5])
print(values_jax[values_jax > 0].sum())  # outside jit: a concrete mask is fine
try:
    jax.jit(lambda x: x[x > 0].sum())(values_jax)
except jax.errors.NonConcreteBooleanIndexError as error:
    print(type(error).__name__ + ":", str(error).splitlines()[0])
masked_sum = jax.jit(lambda x: jnp.sum(x, where=x > 0))(values_jax)
masked_mean = jax.jit(lambda x: jnp.mean(x, where=x > 0))(values_jax)
positive_indices = jax.jit(lambda x: jnp.nonzero(x > 0, size=3, fill_value=-1)[0])(values_jax)
print(masked_sum, masked_mean, positive_indices)

# %%
# Check: the masked reductions equal PyTorch's indexing; the fixed-size indices are the positive ones
assert_same(masked_sum, values[values > 0].sum())
assert_same(masked_mean, values[values > 0].mean())
assert positive_indices.tolist() == torch.nonzero(values > 0).flatten().tolist() == [0, 2, 4]

# %% [markdown]
# **Shapes that change.** Every new shape is a new compilation. A last batch of another size
# costs one more (above); shapes that change all the time, such as sentences of every length,
# would compile without end. The remedy is padding to a fixed shape and masking what was
# padded: here the toy data's last batch of one row is padded to two rows with a weight of 0
# for the padding, and the weighted mean of the per-example losses is exactly the loss of the
# one real row, for the loss and for the gradients.

# %%
# PyTorch: the last batch of one row, as it is
last_features, last_labels = X_train[4:], y_train[4:]
torch_model = NeuralNetwork(2, 2)
torch_model.load_state_dict(initial_state)
last_loss = F.cross_entropy(torch_model(last_features), last_labels)
last_loss.backward()
print(last_loss, [tuple(p.grad.shape) for p in torch_model.parameters()])

# %%
# JAX: pad to the batch size, weight the padding 0; one compiled program for every batch
padded_traces = []


@jax.jit
def padded_loss_and_grads(params, features, labels, weights):
    padded_traces.append(features.shape)
    def weighted_loss(params):
        losses = optax.softmax_cross_entropy_with_integer_labels(eqx.combine(params, static)(features), labels)
        return (losses * weights).sum() / weights.sum()
    return jax.value_and_grad(weighted_loss)(params)


def pad(features, labels, batch_size):
    missing = batch_size - len(labels)
    weights = np.concatenate([np.ones(len(labels), np.float32), np.zeros(missing, np.float32)])
    return np.pad(features, ((0, missing), (0, 0))), np.pad(labels, (0, missing)), weights


full_loss, _ = padded_loss_and_grads(params, *pad(X_train_np[:2], y_train_np[:2], 2))
padded_loss, padded_grads = padded_loss_and_grads(params, *pad(X_train_np[4:], y_train_np[4:], 2))
print(padded_loss, "traced for:", padded_traces)

# %%
# Check: one trace for both batches; the padded batch gives PyTorch's loss and gradients of the
# unpadded one; the full batch gives PyTorch's loss for it
assert padded_traces == [(2, 2)]
assert_same(padded_loss, last_loss)
for grad_leaf, parameter in zip(jax.tree.leaves(padded_grads), torch_model.parameters()):
    assert_same(grad_leaf, parameter.grad)
assert_same(full_loss, F.cross_entropy(model(X_train[:2]), y_train[:2]))

# %% [markdown]
# ## `jax.vmap` beyond batches
#
# `jax.vmap(f)` turns a function of one example into a function of a batch. Its `in_axes`
# says, argument by argument, which axis to map over, or `None` for an argument shared by
# every example. Three uses that PyTorch writes with `torch.func` (its port of these JAX
# transformations) or with a Python loop:
#
# - **per-example gradients**: `jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))` maps the
#   gradient over the examples with the parameters shared; PyTorch's `loss.backward()` only
#   gives their mean;
# - **many models at once**: parameters stacked along a new first axis, `in_axes=(0, None)`;
# - **a key per example** (below, with dropout).
#
# Each transformed function is also wrapped in `jax.jit`: without it JAX runs the mapped
# gradient operation by operation, dispatching every small operation on its own, which takes
# far longer than compiling it once.

# %%
# PyTorch: per-example gradients with torch.func
from torch.func import functional_call, grad as torch_grad, vmap as torch_vmap

torch_params = {name: parameter.detach() for name, parameter in model.named_parameters()}


def torch_loss_one(parameters, x, y):
    return F.cross_entropy(functional_call(model, parameters, (x[None],)), y[None])


per_example_torch = torch_vmap(torch_grad(torch_loss_one), in_dims=(None, 0, 0))(torch_params, X_train, y_train)
print({name: tuple(value.shape) for name, value in per_example_torch.items()})

# %%
# JAX
def loss_one(params, x, y):
    return loss_fn(params, x[None], y[None])  # a batch of one


per_example = jax.jit(jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0)))(params, X_train_np, y_train_np)
batch_grads = jax.jit(jax.grad(loss_fn))(params, X_train_np, y_train_np)
print([leaf.shape for leaf in jax.tree.leaves(per_example)])

# %%
# Check: every example's gradient equals PyTorch's; their mean is the gradient of the mean loss
for leaf, (name, value) in zip(jax.tree.leaves(per_example), per_example_torch.items()):
    assert leaf.shape == (5, *initial_state[name].shape)
    assert_same(leaf, value)
for leaf, mean_leaf in zip(jax.tree.leaves(per_example), jax.tree.leaves(batch_grads)):
    assert_same(leaf.mean(axis=0), mean_leaf)

# %%
# PyTorch: three models (three seeds), one input, a loop
torch_models = []
for seed in range(3):
    torch.manual_seed(seed)
    torch_models.append(NeuralNetwork(2, 2))
with torch.no_grad():
    ensemble_torch = torch.stack([m(X_train) for m in torch_models])
print(ensemble_torch.shape)

# %%
# JAX: the three models' parameters stacked, one vmap over them (in_axes=(0, None))
ensemble_params = [eqx.partition(fm.load_state_dict(model_jax, m.state_dict()), eqx.is_array)[0] for m in torch_models]
stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *ensemble_params)
ensemble = jax.vmap(lambda params, X: eqx.combine(params, static)(X), in_axes=(0, None))(stacked, X_train_np)
print(ensemble.shape)

# %%
# Check: the same (3, 5, 2) outputs as PyTorch's loop
assert_same(ensemble, ensemble_torch)

# %% [markdown]
# ## Dropout: a new key every step
#
# PyTorch's `Dropout` draws its mask from the global generator, so `model.train()` is all it
# needs. In JAX the mask comes from a key you pass in, and a key reused gives the same mask:
# each step needs its own. `jax.random.fold_in(key, step)` derives it from one key and the
# step number, inside the compiled step, so the step stays one program. For evaluation,
# `eqx.nn.inference_mode(model)` turns dropout off, PyTorch's `model.eval()`; both then compute
# the same outputs from the same weights.

# %%
# PyTorch
torch.manual_seed(123)
dropout_model = torch.nn.Sequential(
    torch.nn.Linear(2, 30), torch.nn.ReLU(), torch.nn.Dropout(0.5),
    torch.nn.Linear(30, 20), torch.nn.ReLU(), torch.nn.Dropout(0.5),
    torch.nn.Linear(20, 2),
)
dropout_model.eval()
with torch.no_grad():
    dropout_eval = dropout_model(X_train)

# %%
# JAX
dropout_jax = fm.NeuralNetwork(2, 2, dropout=0.5, key=jax.random.key(123))
dropout_jax = fm.load_state_dict(dropout_jax, {f"layers.{k}": v for k, v in dropout_model.state_dict().items()})
d_params, d_static = eqx.partition(dropout_jax, eqx.is_inexact_array)
d_opt_state = optimizer_jax.init(d_params)
dropout_key = jax.random.key(0)


@jax.jit
def dropout_step(params, opt_state, step, features, labels):
    key = jax.random.fold_in(dropout_key, step)  # a new mask every step
    def loss(params):
        logits = eqx.combine(params, d_static)(features, key=key)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    value, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = optimizer_jax.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value


dropout_losses, step = [], 0
for epoch in range(num_epochs):
    for features, labels in train_loader_jax:
        d_params, d_opt_state, value = dropout_step(d_params, d_opt_state, jnp.asarray(step), features, labels)
        dropout_losses.append(float(value))
        step += 1
print(np.round(dropout_losses, 2))
forward = eqx.filter_jit(lambda model, X, key: model(X, key=key))  # compiled once, not op by op
same_key = [forward(dropout_jax, X_train_np, jax.random.fold_in(dropout_key, 0)) for _ in range(2)]
next_key = forward(dropout_jax, X_train_np, jax.random.fold_in(dropout_key, 1))

# %%
# Check: one key, one mask; the next step's key, another mask; in inference mode the JAX
# model equals PyTorch's model in eval mode
assert np.array_equal(same_key[0], same_key[1]) and not np.array_equal(same_key[0], next_key)
assert_same(eqx.nn.inference_mode(dropout_jax)(X_train_np), dropout_eval)
assert len(dropout_losses) == 6 and all(np.isfinite(dropout_losses))

# %% [markdown]
# ### A key per example
#
# Inside a batch, PyTorch's dropout draws every element's mask on its own. An Equinox layer
# works on one example with one key, so a batch needs a key per example:
# `jax.random.split(key, batch_size)` and `jax.vmap` over the examples and the keys together.
# With one key for the whole batch (`in_axes=(0, None)`), every example would get the *same*
# mask, which is not dropout any more.

# %%
# PyTorch: four identical rows through dropout in training mode
dropout_model.train()
torch.manual_seed(0)
with torch.no_grad():
    same_rows_torch = dropout_model(X_train[:1].repeat(4, 1))
print(same_rows_torch)

# %%
# JAX
same_rows = jnp.repeat(X_train_np[:1], 4, axis=0)
example_keys = jax.random.split(jax.random.key(1), 4)
per_example_masks = jax.jit(jax.vmap(lambda x, key: dropout_jax(x, key=key)))(same_rows, example_keys)
one_mask = jax.jit(jax.vmap(lambda x, key: dropout_jax(x, key=key), in_axes=(0, None)))(same_rows, example_keys[0])
print(per_example_masks)
print(one_mask)

# %%
# Check: with a key per example (as in PyTorch) the identical rows come out different; with one
# shared key they come out identical
assert len({tuple(row) for row in same_rows_torch.tolist()}) > 1
assert len({tuple(row) for row in np.asarray(per_example_masks).tolist()}) > 1
assert all(np.array_equal(row, one_mask[0]) for row in np.asarray(one_mask))

# %% [markdown]
# ## Debugging compiled code
#
# - **`print` runs once, at trace time; `jax.debug.print` runs every call**, inside the
#   compiled program, with the values (`jax.debug.callback` hands them to any Python function).
# - **NaNs**: `jax.config.update("jax_debug_nans", True)`, or `with jax.debug_nans(True):`,
#   makes a compiled function that produces a NaN raise `FloatingPointError`, after running it
#   again operation by operation to name the one that made it. Without it, the NaN just flows
#   on (PyTorch's eager code has the same problem; `torch.autograd.detect_anomaly()` does this
#   for the backward pass).
# - **Recompiles**: `jax_explain_cache_misses` and `jax.log_compiles()`, above.
# - **The program itself**: `jax.make_jaxpr(f)(*args)` (notebook 02), and
#   `jax.jit(f).lower(*args).compile().as_text()` for what XLA made of it (notebook 07).
#
# (`jax.disable_jit()` runs everything eagerly, where a debugger and `print` work as usual.)

# %%
# JAX
seen = []


@jax.jit
def debugged(x):
    print("print, while tracing:", x)
    y = jnp.log(x)
    jax.debug.print("jax.debug.print, every call: log(x) = {y}", y=y)
    jax.debug.callback(lambda value: seen.append(np.asarray(value)), y)
    return y


for value in (1.0, np.e):
    debugged(jnp.array([value]))
jax.effects_barrier()  # wait until the callbacks have run

nan_result = jax.jit(lambda x: jnp.log(x) * 2)(jnp.array([-1.0]))
try:
    with jax.debug_nans(True):
        jax.jit(lambda x: jnp.log(x) * 2)(jnp.array([-1.0]))
except FloatingPointError as error:
    nan_error = error
    print(type(error).__name__ + ":", str(error).splitlines()[0])
print("without jax_debug_nans:", nan_result)

# %%
# Check: the callback saw log(1) = 0 and log(e) = 1, as PyTorch computes them; the NaN was
# silent without the flag and raised with it, naming the log
assert_same(np.concatenate(seen), torch.log(torch.tensor([1.0, np.e], dtype=torch.float32)))
assert bool(jnp.isnan(nan_result[0])) and torch.isnan(torch.log(torch.tensor([-1.0])))[0]
assert "log" in str(nan_error)

# %% [markdown]
# ## Summary
#
# | PyTorch | JAX |
# |---|---|
# | eager: every line runs as written | `jax.jit`: traced once per shape, dtype and static value, then compiled |
# | `print(x)` in `forward` | `print` at trace time; `jax.debug.print("{x}", x=x)` every call |
# | `if x.sum() > 0:` | `jnp.where(cond, a, b)`, `jax.lax.cond(cond, f, g, x)` |
# | `x[x > 0].sum()` | `jnp.sum(x, where=x > 0)`; `jnp.nonzero(mask, size=n)` |
# | batches of any size | pad to a fixed shape, weight the padding 0 |
# | a step number as a Python `int` | fine with `jax.jit`; `jnp.asarray(step)` with `eqx.filter_jit` |
# | `torch.func.vmap(torch.func.grad(f), in_dims=(None, 0, 0))` | `jax.vmap(jax.grad(f), in_axes=(None, 0, 0))` |
# | a loop over models | stacked parameters, `jax.vmap(..., in_axes=(0, None))` |
# | dropout masks from the global generator | `jax.random.fold_in(key, step)` per step, `jax.random.split(key, n)` per example |
# | `torch.autograd.detect_anomaly()` | `jax.config.update("jax_debug_nans", True)` |
# | why is it slow the first time? | `jax_explain_cache_misses`, `jax.log_compiles()` |
