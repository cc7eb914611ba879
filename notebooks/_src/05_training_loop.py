# %% [markdown]
# # A.7 A typical training loop
#
# The book trains its network on the toy data for three epochs with SGD and prints six losses:
# 0.75, 0.65, 0.44, 0.13, 0.03, 0.00. Here the same run happens three times: in PyTorch (the
# book's listing A.9), in JAX written out by hand, and with `fm.fit`. The JAX runs start from
# PyTorch's initial weights and see PyTorch's batches in PyTorch's order, so every loss agrees
# to 1e-5.
#
# What changes in JAX: the model is split into its arrays and the rest; one pure function
# computes the loss and the gradients and applies the optimizer update, returning new
# parameters; `jax.jit` compiles that function. There is no `zero_grad()` (nothing
# accumulates), no `backward()` or `.grad` (the gradient is a return value), no `step()` (Optax
# returns the update) and no `model.train()` / `model.eval()` (an Equinox model has no mode; that
# is Equinox's design, and Flax NNX models do have `train()` / `eval()`).

# %%
import copy
import time

import equinox as eqx
import matplotlib.pyplot as plt
import numpy as np
import optax
import torch
import torch.nn.functional as F
import jax
import jax.numpy as jnp
import fundamentals as fm
from fundamentals.testing import assert_same, ReplaySampler

torch.set_num_threads(1)
jax.config.update("jax_default_matmul_precision", "highest")  # full float32 on GPUs too (not TF32)
np.set_printoptions(precision=4, suppress=True)  # print arrays to PyTorch's 4 digits
# %config InlineBackend.figure_formats = ["png"]
plt.rcParams["figure.dpi"] = 80


def row_indices(batch_features, features):
    """Which rows of `features` a batch holds (the toy data's rows are all different)."""
    features = np.asarray(features)
    return [int(np.flatnonzero((features == row).all(axis=1))[0]) for row in np.asarray(batch_features)]

# %% [markdown]
# ## The data and the network (sections A.5 and A.6)

# %%
# PyTorch (the book)
from torch.utils.data import DataLoader, Dataset

X_train = torch.tensor([[-1.2, 3.1], [-0.9, 2.9], [-0.5, 2.6], [2.3, -1.1], [2.7, -1.5]])
y_train = torch.tensor([0, 0, 0, 1, 1])
X_test = torch.tensor([[-0.8, 2.8], [2.6, -1.6]])
y_test = torch.tensor([0, 1])


class ToyDataset(Dataset):
    def __init__(self, X, y):
        self.features = X
        self.labels = y

    def __getitem__(self, index):
        return self.features[index], self.labels[index]

    def __len__(self):
        return self.labels.shape[0]


class NeuralNetwork(torch.nn.Module):
    def __init__(self, num_inputs, num_outputs):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(num_inputs, 30), torch.nn.ReLU(),
            torch.nn.Linear(30, 20), torch.nn.ReLU(),
            torch.nn.Linear(20, num_outputs),
        )

    def forward(self, x):
        return self.layers(x)


train_ds, test_ds = ToyDataset(X_train, y_train), ToyDataset(X_test, y_test)
torch.manual_seed(123)
train_loader = DataLoader(dataset=train_ds, batch_size=2, shuffle=True, num_workers=0, drop_last=True)
test_loader = DataLoader(dataset=test_ds, batch_size=2, shuffle=False, num_workers=0)

# %%
# JAX
X_train_np, y_train_np, X_test_np, y_test_np = fm.toy_data()
train_ds_jax, test_ds_jax = fm.ToyDataset(X_train_np, y_train_np), fm.ToyDataset(X_test_np, y_test_np)
train_loader_jax = fm.DataLoader(train_ds_jax, batch_size=2, shuffle=True, drop_last=True, seed=123)
test_loader_jax = fm.DataLoader(test_ds_jax, batch_size=2, shuffle=False)

# %%
# Check
assert_same(X_train_np, X_train)
assert_same(y_train_np, y_train)
assert len(train_loader) == len(train_loader_jax) == 2

# %% [markdown]
# ## Listing A.9: training in PyTorch
#
# The book's loop, with three lines added to keep the initial weights, the losses and the
# order of the rows in each batch.

# %%
# PyTorch (the book)
torch.manual_seed(123)
model = NeuralNetwork(num_inputs=2, num_outputs=2)
initial_state = copy.deepcopy(model.state_dict())  # (added: the JAX runs start from these)
optimizer = torch.optim.SGD(model.parameters(), lr=0.5)

num_epochs = 3
torch_losses, torch_orders = [], []  # (added)

for epoch in range(num_epochs):

    model.train()
    torch_orders.append([])  # (added)
    for batch_idx, (features, labels) in enumerate(train_loader):

        logits = model(features)

        loss = F.cross_entropy(logits, labels)  # Loss function

        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        ### LOGGING
        print(f"Epoch: {epoch+1:03d}/{num_epochs:03d}"
              f" | Batch {batch_idx:03d}/{len(train_loader):03d}"
              f" | Train Loss: {loss:.2f}")
        torch_losses.append(loss.item())  # (added)
        torch_orders[-1] += row_indices(features, X_train)  # (added)

    model.eval()
    # Optional model evaluation

# %%
# Check: the book's six losses
assert [round(value, 2) for value in torch_losses] == [0.75, 0.65, 0.44, 0.13, 0.03, 0.00]
print("batch rows per epoch:", torch_orders)

# %% [markdown]
# ## The same loop in JAX, written out
#
# `eqx.partition` splits the model into `params` (its floating-point arrays, what the
# optimizer changes) and `static` (the rest: the structure, the activation functions).
# `train_step` is a pure function: it takes parameters, optimizer state and a batch, and
# returns new parameters, new optimizer state and the loss. `jax.jit` compiles it on the first
# call; later calls run the compiled program as long as the arguments keep their shapes and
# dtypes (and static arguments their values). Anything else traces and compiles again: see
# the next section.
#
# The loss is Optax's `softmax_cross_entropy_with_integer_labels`, one value per example,
# averaged as `F.cross_entropy` does (`fm.cross_entropy` is the same with PyTorch's argument
# checks). The batches come from `fm.DataLoader` with a sampler that replays PyTorch's order.

# %%
# JAX
model_jax = fm.load_state_dict(fm.NeuralNetwork(2, 2, key=jax.random.key(123)), initial_state)
optimizer_jax = optax.sgd(learning_rate=0.5)

params, static = eqx.partition(model_jax, eqx.is_inexact_array)
opt_state = optimizer_jax.init(params)


def loss_fn(params, features, labels):
    logits = eqx.combine(params, static)(features)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()  # F.cross_entropy


@jax.jit
def train_step(params, opt_state, features, labels):
    loss, grads = jax.value_and_grad(loss_fn)(params, features, labels)  # loss.backward()
    updates, opt_state = optimizer_jax.update(grads, opt_state, params)  # optimizer.step() ...
    params = optax.apply_updates(params, updates)                        # ... returns new values
    return params, opt_state, loss


replay_loader = fm.DataLoader(train_ds_jax, batch_size=2, sampler=ReplaySampler(torch_orders), drop_last=True)
hand_losses = []
for epoch in range(num_epochs):
    replay_loader.sampler.set_epoch(epoch)
    for batch_idx, (features, labels) in enumerate(replay_loader):
        params, opt_state, loss = train_step(params, opt_state, features, labels)
        print(f"Epoch: {epoch+1:03d}/{num_epochs:03d}"
              f" | Batch {batch_idx:03d}/{len(replay_loader):03d}"
              f" | Train Loss: {loss:.2f}")
        hand_losses.append(float(loss))
model_hand = eqx.combine(params, static)

# %%
# Check: every loss and every trained weight agree with PyTorch's; Optax's loss is F.cross_entropy's and fm's
assert_same(hand_losses, torch_losses, same_dtype=False)  # Python floats on both sides
for key, value in fm.state_dict(model_hand).items():
    assert_same(value, model.state_dict()[key])
logits_np = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
labels_np = np.array([0, 2, 1, 1, 0])
optax_loss = optax.softmax_cross_entropy_with_integer_labels(logits_np, labels_np).mean()
assert_same(optax_loss, F.cross_entropy(torch.from_numpy(logits_np), torch.from_numpy(labels_np)))
assert_same(fm.cross_entropy(logits_np, labels_np), optax_loss)

# %% [markdown]
# ## What `jax.jit` does: tracing, recompiling, static arguments
#
# `jax.jit` does not run your Python function on every call. On the first call it *traces* it:
# runs the Python once with abstract arrays that have only a shape and a dtype, records the
# operations, and compiles them. A `print` inside therefore runs once, at trace time, and
# shows an abstract value, not numbers (`jax.debug.print` prints on every call). Later calls
# with arguments of the same shapes and dtypes reuse the compiled program. A new shape is a
# new program: without `drop_last`, the last batch of each epoch holds one row, and the step
# compiles a second time for it, once.

# %%
# JAX
traced_shapes = []


def noisy_train_step(params, opt_state, features, labels):
    print("tracing, features:", features)  # Python: runs only while tracing
    traced_shapes.append(features.shape)
    return train_step(params, opt_state, features, labels)


noisy_step = jax.jit(noisy_train_step)
ragged_loader = fm.DataLoader(train_ds_jax, batch_size=2, shuffle=True, seed=123)  # batches of 2, 2, 1
trace_params, trace_state = eqx.partition(model_jax, eqx.is_inexact_array)[0], opt_state
for epoch in range(2):
    print(f"epoch {epoch}:", [len(labels) for _, labels in ragged_loader])
    for features, labels in ragged_loader:
        trace_params, trace_state, _ = noisy_step(trace_params, trace_state, features, labels)

# %% [markdown]
# A value the program's *shape* depends on cannot be abstract: `jax.nn.one_hot(labels,
# num_classes)` needs `num_classes` as a Python int. Marking it static (`static_argnames`)
# makes it part of the compiled program's identity: each new value compiles again, so keep
# static arguments to a few values, and pass anything that changes every call (a step count,
# a learning rate) as an array.

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
    print(type(error).__name__, str(error).splitlines()[0][:90])
print(one_hot_value, "compiled for num_classes:", compiled_for)

# %%
# Check: one trace for batches of 2 and one for the last batch of 1, over two epochs; the
# static argument compiled once for three calls; the losses agree with PyTorch's
assert traced_shapes == [(2, 2), (1, 2)]
assert compiled_for == [3]
assert_same(one_hot_value, F.cross_entropy(torch.from_numpy(logits_np), torch.from_numpy(labels_np)))

# %% [markdown]
# ## The same training with `fm.fit`
#
# `fm.fit` is that loop in the library. It prints the book's log line (counting batches from 1
# where the book counts from 0) and returns the trained model and a history. It stacks the
# loader's batches into chunks and runs each chunk as one compiled `lax.scan` of the step (see
# the timing at the end); an in-memory `ArrayDataset` like this one stays on the device, and
# only the batch order crosses. The numbers are those of one call per step, bit for bit.

# %%
# JAX
model_jax = fm.load_state_dict(fm.NeuralNetwork(2, 2, key=jax.random.key(123)), initial_state)
model_jax, history = fm.fit(model_jax, optax.sgd(learning_rate=0.5), replay_loader, num_epochs=num_epochs)

# %%
# Check
assert_same(history["loss"], torch_losses, same_dtype=False)
for key, value in fm.state_dict(model_jax).items():
    assert_same(value, model.state_dict()[key])

# %% [markdown]
# ## Evaluating the trained model
#
# `model.eval()` and `torch.no_grad()` have no counterpart to call: the Equinox model has no
# mode (by Equinox's design), and nothing computes gradients unless asked. A model with dropout
# is switched off with `eqx.nn.inference_mode(model)`, which returns a new model; `fm.predict`
# and `fm.compute_accuracy` do that for you. (The next section trains with dropout.)

# %%
# PyTorch (the book)
model.eval()

with torch.no_grad():
    outputs = model(X_train)

print(outputs)

torch.set_printoptions(sci_mode=False)
probas = torch.softmax(outputs, dim=1)
print(probas)

predictions = torch.argmax(outputs, dim=1)
print(predictions)
print(torch.sum(predictions == y_train))


def compute_accuracy(model, dataloader):

    model = model.eval()
    correct = 0.0
    total_examples = 0

    for idx, (features, labels) in enumerate(dataloader):

        with torch.no_grad():
            logits = model(features)

        predictions = torch.argmax(logits, dim=1)
        compare = labels == predictions
        correct += torch.sum(compare)
        total_examples += len(compare)

    return (correct / total_examples).item()


print(compute_accuracy(model, train_loader))
print(compute_accuracy(model, test_loader))

# %%
# JAX
outputs_jax = model_jax(X_train_np)
print(outputs_jax)

probas_jax = fm.predict_proba(model_jax, X_train_np)
print(probas_jax)

predictions_jax = fm.predict(model_jax, X_train_np)
print(predictions_jax)
print(np.sum(predictions_jax == y_train_np))

print(fm.compute_accuracy(model_jax, fm.DataLoader(train_ds_jax, batch_size=2)))
print(fm.compute_accuracy(model_jax, test_loader_jax))

# %%
# Check: PyTorch, JAX and the numbers the book prints
assert_same(outputs_jax, outputs)
assert np.allclose(np.asarray(outputs_jax), [[2.8569, -4.1618], [2.5382, -3.7548], [2.0944, -3.1820],
                                             [-1.4814, 1.4816], [-1.7176, 1.7342]], atol=5e-5)
assert_same(probas_jax, probas)
assert_same(fm.predict_proba(model_jax, X_test_np), torch.softmax(model(X_test), dim=1))
assert_same(predictions_jax, predictions, same_dtype=False)  # JAX's int32 labels, PyTorch's int64
assert predictions_jax.tolist() == [0, 0, 0, 1, 1]
assert compute_accuracy(model, train_loader) == compute_accuracy(model, test_loader) == 1.0
assert fm.compute_accuracy(model_jax, fm.DataLoader(train_ds_jax, batch_size=2)) == 1.0
assert fm.compute_accuracy(model_jax, test_loader_jax) == 1.0

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
same_key = [dropout_jax(X_train_np, key=jax.random.fold_in(dropout_key, 0)) for _ in range(2)]
next_key = dropout_jax(X_train_np, key=jax.random.fold_in(dropout_key, 1))

# %%
# Check: one key, one mask; the next step's key, another mask; in inference mode the JAX
# model equals PyTorch's model in eval mode
assert np.array_equal(same_key[0], same_key[1]) and not np.array_equal(same_key[0], next_key)
assert_same(eqx.nn.inference_mode(dropout_jax)(X_train_np), dropout_eval)
assert len(dropout_losses) == 6 and all(np.isfinite(dropout_losses))

# %% [markdown]
# ## The losses on one plot
#
# PyTorch's six losses and `fm.fit`'s lie on top of each other. The dashed line is `fm.fit`
# with its own seeds (`key=jax.random.key(123)` for the weights, `seed=123` for the shuffle):
# other starting weights and another order, so other numbers, but the same kind of descent.

# %%
own_model, own_history = fm.fit(fm.NeuralNetwork(2, 2, key=jax.random.key(123)), optax.sgd(0.5),
                                train_loader_jax, num_epochs=num_epochs, log=None)
steps = np.arange(1, len(torch_losses) + 1)
fig, ax = plt.subplots(figsize=(6.5, 3.4))
ax.plot(steps, torch_losses, "o", markersize=10, color="#ee4c2c", label="PyTorch (the book)")
ax.plot(steps, history["loss"], "-", marker=".", color="#1d4ed8", label="fm.fit, PyTorch's weights and order")
ax.plot(steps, own_history["loss"], "--", color="#6b7280", label="fm.fit, its own seeds")
for epoch in range(1, num_epochs):
    ax.axvline(epoch * len(train_loader) + 0.5, color="#e5e7eb", zorder=0)
ax.set_xlabel("training step (2 per epoch)")
ax.set_ylabel("cross-entropy loss")
ax.set_xticks(steps)
ax.legend(frameon=False)
ax.set_title("Training loss, step by step")
plt.show()

# %%
# Check: the two replayed runs agree; the run with its own seeds differs but also learns
assert_same(history["loss"], torch_losses, same_dtype=False)
assert not np.allclose(own_history["loss"], torch_losses, atol=1e-3)
assert own_history["loss"][-1] < own_history["loss"][0]

# %% [markdown]
# ## The decision boundary
#
# The trained classifier over the plane: the colour is the probability of class 1 from
# `fm.predict_proba`, the black line where it crosses 0.5. Circles are the five training
# points, crosses the two test points, each coloured by its label (blue 0, red 1). PyTorch's
# trained model gives the same probabilities on every point of the grid.

# %%
grid_x, grid_y = np.meshgrid(np.linspace(-3, 4.5, 151), np.linspace(-3, 4.5, 151))
grid = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1).astype(np.float32)
proba_grid = fm.predict_proba(model_jax, grid)[:, 1].reshape(grid_x.shape)
with torch.no_grad():
    proba_grid_torch = torch.softmax(model(torch.from_numpy(grid)), dim=1)[:, 1].numpy().reshape(grid_x.shape)

fig, ax = plt.subplots(figsize=(5, 4.2))
filled = ax.contourf(grid_x, grid_y, proba_grid, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.45)
ax.contour(grid_x, grid_y, proba_grid, levels=[0.5], colors="black", linewidths=1.5)
colours = np.array(["#1d4ed8", "#b91c1c"])  # class 0, class 1
ax.scatter(X_train_np[:, 0], X_train_np[:, 1], c=colours[y_train_np], s=70, edgecolors="black")
ax.scatter(X_test_np[:, 0], X_test_np[:, 1], c=colours[y_test_np], s=110, marker="X", edgecolors="black")
fig.colorbar(filled, ax=ax, label="P(class 1)")
handles = [plt.Line2D([], [], marker="o", ls="", color="#9ca3af", mec="black", label="train"),
           plt.Line2D([], [], marker="X", ls="", color="#9ca3af", mec="black", ms=9, label="test")]
ax.legend(handles=handles, loc="upper right")
ax.set_xlabel("feature 1")
ax.set_ylabel("feature 2")
ax.set_title("fm.NeuralNetwork after fm.fit")
plt.show()

# %%
# Check: the same probabilities as PyTorch's trained model everywhere on the grid
assert_same(proba_grid, proba_grid_torch)

# %% [markdown]
# ## Optional: why compile, time per training step
#
# *The times in this section depend on the machine (its CPU or GPU, and what else runs on
# it); only the check that all three ways compute the same losses is part of the lesson.*
#
# The same training step three ways, on a larger version of the toy problem (1,024 points,
# batches of 8, 128 steps per epoch), all from PyTorch's initial weights and in the same order:
#
# - **PyTorch eager**: the book's loop body. Each operation is dispatched from Python, and
#   `backward()` walks the recorded graph.
# - **JAX, `jax.jit` per step**: `train_step` from above; one compiled call per batch.
# - **JAX, `lax.scan` per epoch**: the same step inside `jax.lax.scan`, so a whole epoch is one
#   compiled call and Python is out of the loop. This is what `fm.fit` runs.
#
# (JAX *without* `jit` dispatches every small operation on its own and is much slower than
# PyTorch eager on a model this size; it is left out.) The first call of a jitted function
# compiles it; the times below are measured after that, as the best of a few repeats. They
# are one run's numbers, not a benchmark (`fundamentals bench` is one).

# %%
rng = np.random.default_rng(0)
n, batch_size = 1024, 8
X_big = np.concatenate([rng.normal([-1.0, 3.0], 0.8, (n // 2, 2)),
                        rng.normal([2.5, -1.3], 0.8, (n // 2, 2))]).astype(np.float32)
y_big = np.repeat([0, 1], n // 2).astype(np.int64)
order = rng.permutation(n)
X_batches, y_batches = X_big[order].reshape(-1, batch_size, 2), y_big[order].reshape(-1, batch_size)
num_steps = len(X_batches)


def torch_epoch(model, optimizer):
    losses = []
    for features, labels in zip(torch.from_numpy(X_batches), torch.from_numpy(y_batches)):
        loss = F.cross_entropy(model(features), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses)


def jit_epoch(params, opt_state):
    losses = []
    for features, labels in zip(X_batches, y_batches):
        params, opt_state, loss = train_step(params, opt_state, features, labels)
        losses.append(loss)
    return jax.block_until_ready(jnp.stack(losses))  # JAX runs asynchronously: wait for the end


@jax.jit
def scan_epoch(params, opt_state, X_batches, y_batches):
    def body(carry, batch):
        params, opt_state, loss = train_step(*carry, *batch)
        return (params, opt_state), loss

    _, losses = jax.lax.scan(body, (params, opt_state), (X_batches, y_batches))
    return losses


def fresh():
    torch_model = NeuralNetwork(2, 2)
    torch_model.load_state_dict(initial_state)
    params = eqx.partition(fm.load_state_dict(model_hand, initial_state), eqx.is_inexact_array)[0]
    return torch_model, torch.optim.SGD(torch_model.parameters(), lr=0.5), params, optimizer_jax.init(params)


def best_time(run, repeat=5):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


torch_model, torch_optimizer, params0, opt_state0 = fresh()
start = time.perf_counter()
scan_losses = jax.block_until_ready(scan_epoch(params0, opt_state0, X_batches, y_batches))
print(f"first call of scan_epoch (tracing and compiling): {time.perf_counter() - start:.2f} s")
epoch_losses = {
    "PyTorch eager": torch_epoch(torch_model, torch_optimizer).numpy(),
    "JAX, jax.jit per step": np.asarray(jit_epoch(params0, opt_state0)),
    "JAX, lax.scan per epoch": np.asarray(scan_losses),
}
step_time = {
    "PyTorch eager": best_time(lambda: torch_epoch(torch_model, torch_optimizer)) / num_steps,
    "JAX, jax.jit per step": best_time(lambda: jit_epoch(params0, opt_state0)) / num_steps,
    "JAX, lax.scan per epoch": best_time(
        lambda: jax.block_until_ready(scan_epoch(params0, opt_state0, X_batches, y_batches))) / num_steps,
}
for name, seconds in step_time.items():
    print(f"{name:24s} {seconds * 1e6:8.1f} µs per step")

fig, ax = plt.subplots(figsize=(6.5, 2.4))
names = list(step_time)
micros = [step_time[name] * 1e6 for name in names]
ax.barh(names, micros, color=["#ee4c2c", "#60a5fa", "#1d4ed8"])
for i, value in enumerate(micros):
    ax.text(value * 1.08, i, f"{value:.0f} µs", va="center")
ax.set_xscale("log")
ax.set_xlim(min(micros) / 2, max(micros) * 4)
ax.invert_yaxis()
ax.set_xlabel("time per training step (log scale; lower is better)")
ax.set_title(f"One SGD step of NeuralNetwork(2, 2), batch {batch_size} (JAX on {jax.default_backend()})")
plt.show()

# %%
# Check: all three ways compute the same 128 losses (no check on the times)
for name in ("JAX, jax.jit per step", "JAX, lax.scan per epoch"):
    assert_same(epoch_losses[name], epoch_losses["PyTorch eager"])
