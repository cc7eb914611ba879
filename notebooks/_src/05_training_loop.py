# %% [markdown]
# # A.7 A typical training loop
#
# The book trains its network on the toy data for three epochs with SGD and prints six losses:
# 0.75, 0.65, 0.44, 0.13, 0.03, 0.00. Here the same run happens in PyTorch (the book's listing
# A.9), then in JAX four ways: SGD by hand in plain JAX, with Optax, in Equinox's own idiom
# (`eqx.filter_jit`), and with `fm.fit`. The JAX runs start from PyTorch's initial weights and
# see PyTorch's batches in PyTorch's order, so every loss agrees to 1e-5.
#
# What changes in JAX: one pure function computes the loss and the gradients and applies the
# update, returning new parameters; `jax.jit` compiles that function. There is no
# `zero_grad()` (nothing accumulates), no `backward()` or `.grad` (the gradient is a return
# value), no `step()` (the update is a return value too) and no `model.train()` /
# `model.eval()` (an Equinox model has no mode; that is Equinox's design: Flax NNX models have
# `train()` / `eval()` and views, notebook 03). What `jax.jit` does when it compiles, and what
# makes it compile again, is notebook 05b.

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
# ## The same loop in plain JAX: SGD by hand
#
# `eqx.partition` splits the model into `params` (its arrays, what training changes) and
# `static` (the rest: the structure, the activation functions); `eqx.combine` joins them again.
# The loss is a function of `params`; `jax.value_and_grad` returns the loss and its gradient,
# a pytree of the same shape as `params` (PyTorch's `loss.backward()` and the `.grad` of every
# parameter). SGD is one line, `p - lr * g` for every leaf, which `jax.tree.map` applies over
# the two trees (PyTorch's `optimizer.step()`). `jax.jit` compiles the whole step.
#
# The loss is Optax's `softmax_cross_entropy_with_integer_labels`, one value per example,
# averaged as `F.cross_entropy` does. The batches come from `fm.DataLoader` with a sampler that
# replays PyTorch's order (notebook 04).

# %%
# JAX, plain: no optimizer library
model_jax = fm.load_state_dict(fm.NeuralNetwork(2, 2, key=jax.random.key(123)), initial_state)
params, static = eqx.partition(model_jax, eqx.is_array)


def loss_fn(params, features, labels):
    logits = eqx.combine(params, static)(features)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()  # F.cross_entropy


@jax.jit
def sgd_step(params, features, labels):
    loss, grads = jax.value_and_grad(loss_fn)(params, features, labels)  # loss.backward()
    params = jax.tree.map(lambda p, g: p - 0.5 * g, params, grads)      # optimizer.step(), lr=0.5
    return params, loss


replay_loader = fm.DataLoader(train_ds_jax, batch_size=2, sampler=ReplaySampler(torch_orders), drop_last=True)
sgd_losses = []
for epoch in range(num_epochs):
    replay_loader.sampler.set_epoch(epoch)
    for batch_idx, (features, labels) in enumerate(replay_loader):
        params, loss = sgd_step(params, features, labels)
        print(f"Epoch: {epoch+1:03d}/{num_epochs:03d}"
              f" | Batch {batch_idx:03d}/{len(replay_loader):03d}"
              f" | Train Loss: {loss:.2f}")
        sgd_losses.append(float(loss))

# %%
# Check: every loss and every trained weight agree with PyTorch's; Optax's loss is F.cross_entropy's and fm's
assert_same(sgd_losses, torch_losses, same_dtype=False)  # Python floats on both sides
for key, value in fm.state_dict(eqx.combine(params, static)).items():
    assert_same(value, model.state_dict()[key])
logits_np = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
labels_np = np.array([0, 2, 1, 1, 0])
optax_loss = optax.softmax_cross_entropy_with_integer_labels(logits_np, labels_np).mean()
assert_same(optax_loss, F.cross_entropy(torch.from_numpy(logits_np), torch.from_numpy(labels_np)))
assert_same(fm.cross_entropy(logits_np, labels_np), optax_loss)

# %% [markdown]
# ## With an Optax optimizer, and donated buffers
#
# Optax turns the hand-written update into an optimizer object: `optimizer.init(params)` makes
# its state (empty for plain SGD, the velocities for momentum, the moments for Adam) and
# `optimizer.update(grads, opt_state, params)` returns the updates and the new state, which
# `optax.apply_updates` adds to the parameters. Swapping SGD for Adam changes one line.
#
# The old parameters and optimizer state are not needed once the step has returned new ones,
# so the step *donates* them (`donate_argnums`, notebook 01): XLA may write the new values into
# their buffers instead of allocating new ones every step. The arrays passed in are then
# deleted; the loop only ever uses the returned ones. (So is the model they were partitioned
# from: `eqx.partition` does not copy, and `model_jax` shares the donated buffers.)

# %%
# JAX, with Optax
model_jax = fm.load_state_dict(fm.NeuralNetwork(2, 2, key=jax.random.key(123)), initial_state)
optimizer_jax = optax.sgd(learning_rate=0.5)  # torch.optim.SGD(model.parameters(), lr=0.5)

params, static = eqx.partition(model_jax, eqx.is_array)
opt_state = optimizer_jax.init(params)


def train_step(params, opt_state, features, labels):
    loss, grads = jax.value_and_grad(loss_fn)(params, features, labels)  # loss.backward()
    updates, opt_state = optimizer_jax.update(grads, opt_state, params)  # optimizer.step() ...
    params = optax.apply_updates(params, updates)                        # ... returns new values
    return params, opt_state, loss


train_step_jit = jax.jit(train_step, donate_argnums=(0, 1))  # params and opt_state are donated

hand_losses = []
for epoch in range(num_epochs):
    replay_loader.sampler.set_epoch(epoch)
    for features, labels in replay_loader:
        old_params = params
        params, opt_state, loss = train_step_jit(params, opt_state, features, labels)
        hand_losses.append(loss)  # an array: no waiting for the device here (next section)
hand_losses = [float(loss) for loss in hand_losses]
model_hand = eqx.combine(params, static)
print(np.round(hand_losses, 2))

# %%
# Check: the same losses and weights as PyTorch; the donated parameters are gone (the CPU
# and GPU reuse donated buffers; a backend that cannot only warns)
assert_same(hand_losses, torch_losses, same_dtype=False)
for key, value in fm.state_dict(model_hand).items():
    assert_same(value, model.state_dict()[key])
if jax.default_backend() in ("cpu", "gpu"):
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(old_params))
    assert model_jax.layers[0].weight.is_deleted()  # the partitioned model shared the first step's buffers

# %% [markdown]
# ### `float(loss)` waits for the device
#
# JAX dispatches a compiled call and returns at once, before the result exists: the loss is a
# `jax.Array` whose value is still being computed, and Python goes on to the next batch while
# the device works. `float(loss)`, `loss.item()`, `print(f"{loss:.2f}")` and `np.asarray(loss)`
# all wait for it. Called every step, as in the book's loop, they make the host and the device
# take turns, which costs most when steps are short or run on a GPU. The loop above kept the
# losses as arrays and converted them once, at the end. (PyTorch's `loss.item()` waits for a GPU
# the same way.)

# %% [markdown]
# ## Equinox's idiom: `eqx.filter_jit` and `eqx.filter_value_and_grad`
#
# Equinox's own documentation writes the step without splitting the model by hand: the model
# itself goes in and a new model comes out. `eqx.filter_value_and_grad` differentiates with
# respect to the model's floating-point arrays, `eqx.filter_jit` compiles with the array
# leaves traced and every other leaf static (notebook 03), and the optimizer sees only the
# arrays: `optimizer.init(eqx.filter(model, eqx.is_array))`. This is the first thing to write
# when you leave this library; it works for any Equinox model, function leaves included.

# %%
# JAX, Equinox's idiom
model_eqx = fm.load_state_dict(fm.NeuralNetwork(2, 2, key=jax.random.key(123)), initial_state)
opt_state_eqx = optimizer_jax.init(eqx.filter(model_eqx, eqx.is_array))


@eqx.filter_value_and_grad
def compute_loss(model, features, labels):
    logits = model(features)  # fm.NeuralNetwork takes a batch; a one-example model: jax.vmap(model)(features)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@eqx.filter_jit
def make_step(model, opt_state, features, labels):
    loss, grads = compute_loss(model, features, labels)
    updates, opt_state = optimizer_jax.update(grads, opt_state, eqx.filter(model, eqx.is_array))
    model = eqx.apply_updates(model, updates)
    return model, opt_state, loss


eqx_losses = []
for epoch in range(num_epochs):
    replay_loader.sampler.set_epoch(epoch)
    for features, labels in replay_loader:
        model_eqx, opt_state_eqx, loss = make_step(model_eqx, opt_state_eqx, features, labels)
        eqx_losses.append(loss)
print(np.round([float(loss) for loss in eqx_losses], 2))

# %%
# Check: the same losses and weights as PyTorch
assert_same([float(loss) for loss in eqx_losses], torch_losses, same_dtype=False)
for key, value in fm.state_dict(model_eqx).items():
    assert_same(value, model.state_dict()[key])

# %% [markdown]
# The two ways differ in cost, not in numbers. `eqx.filter_jit` splits the model into arrays
# and the rest on every call, in Python, and in Equinox 0.13 it waits for each call to finish
# (so that an error raised inside by `eqx.error_if` surfaces at that call); the partitioned
# `jax.jit` step splits once, outside the loop, and returns at once. On a step as small as the
# book's, that is a large part of the time per step (`fundamentals bench tiny` measures both).

# %% [markdown]
# ## The same training with `fm.fit`
#
# What `fm` does for you: `fm.fit` ([source](../fundamentals/train/)) is that loop in the
# library. It prints the book's log line (counting batches from 1 where the book counts from 0)
# and returns the trained model and a history. It stacks the loader's batches into chunks and
# runs each chunk as one compiled `lax.scan` of the step (see the timing at the end); an
# in-memory `ArrayDataset` like this one stays on the device, and only the batch order crosses.
# The losses and weights are those of one jitted call per step: bit for bit in the library's
# tests, which run on the CPU. XLA does not promise that a step inside a scan rounds exactly as
# the same step called alone on every backend, so on a GPU expect agreement to float32 rounding.

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
# and `fm.compute_accuracy` do that for you. (Notebook 05b trains with dropout.)

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
# - **JAX, `jax.jit` per step**: `train_step_jit` from above; one compiled call per batch.
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
    params, opt_state = jax.tree.map(jnp.copy, (params, opt_state))  # the step donates them: keep the originals
    losses = []
    for features, labels in zip(X_batches, y_batches):
        params, opt_state, loss = train_step_jit(params, opt_state, features, labels)
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
    params = eqx.partition(fm.load_state_dict(model_hand, initial_state), eqx.is_array)[0]
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
