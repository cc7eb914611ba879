# %% [markdown]
# # A.8 Saving and loading models
#
# PyTorch saves a model's `state_dict()` with `torch.save`, a pickle-based `.pth` file.
# `fm.save_model` writes a [safetensors](https://github.com/huggingface/safetensors) file with
# the same keys and shapes (`layers.0.weight`, ...), or a `.pth` file for a `.pth` name, so the
# file loads into the book's PyTorch model, and a PyTorch `state_dict` loads into
# `fm.NeuralNetwork`. This notebook moves trained
# weights both ways and checks that the outputs stay the same.
#
# The one difference in use: `model.load_state_dict(...)` fills a PyTorch model in place, while
# `fm.load_model` and `fm.load_state_dict` return a new, immutable model.

# %%
import os
import shutil
import tempfile

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
np.set_printoptions(precision=4, suppress=True)

start_dir, scratch = os.getcwd(), tempfile.mkdtemp(prefix="fundamentals-06-")
os.chdir(scratch)  # the files of this notebook go to a temporary folder, removed at the end


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
X_all = torch.from_numpy(np.concatenate([X_train_np, X_test_np]))  # inputs to compare outputs on

# %% [markdown]
# ## Two trained models
#
# One trained by the book's PyTorch loop (section A.7), one by `fm.fit` with its own seeds.
# They have different weights; what matters below is that each survives the trip to the other
# library unchanged.

# %%
# PyTorch (the book's training, without the printing)
torch.manual_seed(123)
model = NeuralNetwork(num_inputs=2, num_outputs=2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
train_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X_train, y_train),
                                           batch_size=2, shuffle=True, drop_last=True)
for epoch in range(3):
    for features, labels in train_loader:
        loss = F.cross_entropy(model(features), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
model.eval()
with torch.no_grad():
    print(model(X_all))

# %%
# JAX
train_loader_jax = fm.DataLoader(fm.ArrayDataset(X_train_np, y_train_np), batch_size=2, shuffle=True,
                                 drop_last=True, seed=123)
model_jax, _ = fm.fit(fm.NeuralNetwork(2, 2, key=jax.random.key(123)), optax.sgd(0.5), train_loader_jax,
                      num_epochs=3, log=None)
print(model_jax(X_all.numpy()))

# %%
# Check: both classify the five training and two test points correctly
with torch.no_grad():
    assert model(X_all).argmax(dim=1).tolist() == [0, 0, 0, 1, 1, 0, 1]
assert fm.predict(model_jax, X_all.numpy()).tolist() == [0, 0, 0, 1, 1, 0, 1]

# %% [markdown]
# ## Save and load in the same library
#
# Plain Equinox saves a model with `eqx.tree_serialise_leaves`: the arrays of the pytree in
# order, with no names, loaded back into a model of the same structure. `fm.save_model` writes
# PyTorch's names instead, so that the other library can read the file too.

# %%
# PyTorch (the book)
torch.save(model.state_dict(), "model.pth")

model_loaded = NeuralNetwork(2, 2)  # needs to match the original model exactly
model_loaded.load_state_dict(torch.load("model.pth", weights_only=True));  # ";": no "<All keys matched successfully>"

# %%
# JAX, plain Equinox: the leaves of the pytree, in order, into a file; loading fills a model of the same structure
eqx.tree_serialise_leaves("model.eqx", model_jax)
model_eqx_loaded = eqx.tree_deserialise_leaves("model.eqx", fm.NeuralNetwork(2, 2, key=jax.random.key(0)))

# JAX with fundamentals (source: fundamentals/checkpoint.py): PyTorch's keys, in a safetensors
# file that also records the architecture
fm.save_model(model_jax, "model.safetensors")
model_jax_loaded = fm.load_model("model.safetensors")  # no model to fill needed
print(model_jax_loaded)

# %%
# Check: bit-identical weights after the round trip, in both libraries
for key, value in model.state_dict().items():
    assert torch.equal(model_loaded.state_dict()[key], value)
saved, loaded = fm.state_dict(model_jax), fm.state_dict(model_jax_loaded)
assert list(saved) == list(loaded)
for key in saved:
    assert np.array_equal(saved[key], loaded[key]) and saved[key].dtype == loaded[key].dtype
    assert np.array_equal(saved[key], fm.state_dict(model_eqx_loaded)[key])

# %% [markdown]
# ## What the file holds
#
# A safetensors file is a small JSON header (names, dtypes, shapes, and free-form metadata)
# followed by the raw arrays, so loading it runs no code. The names and shapes are PyTorch's
# `state_dict` keys.
#
# A `.pth` file is a pickle, and unpickling an arbitrary pickle can call any function the file
# names. `torch.load(path, weights_only=True)`, the default since PyTorch 2.6, allows only
# tensors, containers and numbers, so it runs no code either; `fm.torch_load` reads the same
# format under the same rule without PyTorch (next sections). Below, a file that would call
# `print` when unpickled is refused by both.

# %%
# JAX
from safetensors import safe_open

with safe_open("model.safetensors", framework="numpy") as file:
    print(file.metadata())
    file_arrays = {key: file.get_tensor(key) for key in file.keys()}
for key, value in file_arrays.items():
    print(f"{key:16s} {str(value.dtype):8s} {value.shape}")

# %%
# Check: PyTorch's keys, shapes and dtypes
torch_state = model.state_dict()
assert sorted(file_arrays) == sorted(torch_state)
for key, value in torch_state.items():
    assert file_arrays[key].shape == tuple(value.shape) and file_arrays[key].dtype == np.float32

# %%
# PyTorch: a .pth whose pickle calls a function when loaded, refused with weights_only=True
class RunsCodeWhenUnpickled:
    def __reduce__(self):
        return (print, ("this ran while loading the file",))


torch.save({"layers.0.weight": torch.zeros(2), "payload": RunsCodeWhenUnpickled()}, "unsafe.pth")
try:
    torch.load("unsafe.pth", weights_only=True)
except Exception as error:
    torch_refusal = error
    print(type(error).__name__ + ":", str(error).split(".")[0])  # "Weights only load failed"

# %%
# JAX: fm.torch_load applies the same rule, without torch
try:
    fm.torch_load("unsafe.pth")
except fm.TorchFileError as error:
    jax_refusal = error
    print(type(error).__name__ + ":", str(error).split(" (")[0])  # the message without its advice

# %%
# Check: both refuse the file (and nothing was printed by the payload); both read the safe one alike
assert isinstance(torch_refusal, Exception) and "print" in str(jax_refusal)
for key, value in torch.load("model.pth", weights_only=True).items():
    assert_same(fm.torch_load("model.pth")[key], value)

# %% [markdown]
# ## From `fundamentals` to PyTorch
#
# `safetensors.torch.load_file` reads the file as a dict of PyTorch tensors, which the book's
# model loads as it is.

# %%
# PyTorch
from safetensors.torch import load_file

torch_model = NeuralNetwork(2, 2)
torch_model.load_state_dict(load_file("model.safetensors"))
torch_model.eval()
with torch.no_grad():
    outputs_from_jax = torch_model(X_all)
print(outputs_from_jax)

# %%
# Check: PyTorch's outputs with the weights JAX trained equal JAX's outputs
assert_same(model_jax(X_all.numpy()), outputs_from_jax)
assert_same(fm.predict_proba(model_jax, X_all.numpy()), torch.softmax(outputs_from_jax, dim=1))

# %% [markdown]
# ## From PyTorch to `fundamentals`
#
# Two ways: the `.pth` file's `state_dict` goes straight into `fm.load_state_dict` (PyTorch
# tensors are accepted as they are), or PyTorch writes a safetensors file with
# `safetensors.torch.save_file` and `fm.load_model` reads it. Such a file has no architecture
# in its metadata, so `fm.load_model` needs `like=`, a model of the right shape to fill.

# %%
# PyTorch
from safetensors.torch import save_file

save_file(model.state_dict(), "torch_model.safetensors")

# %%
# JAX
state = torch.load("model.pth", weights_only=True)
from_pth = fm.load_state_dict(fm.NeuralNetwork(2, 2, key=jax.random.key(0)), state)

from_safetensors = fm.load_model("torch_model.safetensors", like=fm.NeuralNetwork(2, 2, key=jax.random.key(0)))

try:
    fm.load_model("torch_model.safetensors")
except fm.CheckpointError as error:
    print("CheckpointError:", error)

# %%
# Check: JAX's outputs with PyTorch's trained weights equal PyTorch's outputs
with torch.no_grad():
    expected = model(X_all)
assert_same(from_pth(X_all.numpy()), expected)
assert_same(from_safetensors(X_all.numpy()), expected)

# %% [markdown]
# ## The book's `model.pth` without PyTorch
#
# `fm.torch_load` reads `torch.save`'s format with NumPy alone and as safely as
# `torch.load(weights_only=True)`: a file whose pickle names anything but tensors, containers,
# numbers and strings (`os.system`, `eval`, ...) is refused, and nothing in it runs.
# `fm.load_model` reads a `.pth` the same way, and `fm.save_model` writes one for a `.pth` name.
# Below, a fresh Python in which `import torch` fails reads the book's file and writes one back.

# %%
# JAX, in a process where torch cannot be imported
import subprocess
import sys
import textwrap

script = textwrap.dedent("""
    import sys
    sys.modules["torch"] = None  # from here on, `import torch` fails
    import jax
    import fundamentals as fm

    state = fm.torch_load("model.pth")
    for key, value in state.items():
        print(f"{key:16s} {str(value.dtype):8s} {value.shape}")
    model = fm.load_model("model.pth", like=fm.NeuralNetwork(2, 2, key=jax.random.key(0)))
    fm.save_model(model, "model_without_torch.pth")
""")
print(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)

# %%
# Check: the arrays read without torch are PyTorch's, and the file written without torch loads in the book's model
state_np = fm.torch_load("model.pth")
for key, value in model.state_dict().items():
    assert np.array_equal(state_np[key], value.numpy()) and state_np[key].dtype == np.float32
reloaded = NeuralNetwork(2, 2)
reloaded.load_state_dict(torch.load("model_without_torch.pth", weights_only=True))
with torch.no_grad():
    assert torch.equal(reloaded(X_all), model(X_all))

# %% [markdown]
# ## A file for another model is refused, by name
#
# Both libraries check every key and shape before loading anything.

# %%
# PyTorch
try:
    NeuralNetwork(3, 2).load_state_dict(torch.load("model.pth", weights_only=True))
except RuntimeError as error:
    torch_error = str(error)
    print(torch_error.splitlines()[1].strip())

# %%
# JAX
try:
    fm.load_model("model.safetensors", like=fm.NeuralNetwork(3, 2, key=jax.random.key(0)))
except fm.CheckpointError as error:
    jax_error = str(error)
    print(jax_error)

# %%
# Check: both refuse, naming the first layer's weight
assert "layers.0.weight" in torch_error and "layers.0.weight" in jax_error

# %% [markdown]
# ## Beyond the book: resuming training
#
# To continue an interrupted run exactly, a checkpoint needs more than the weights: the
# optimizer's state (here SGD's momentum) and the state of the random generator that shuffles
# the data. In PyTorch that generator is the global one, `torch.get_rng_state()`.
#
# In plain JAX the whole training state is one pytree, `(params, opt_state, step, key)`, and
# `eqx.tree_serialise_leaves` writes it as it writes a model; loading needs a pytree of the
# same structure to fill (a fresh `(params, optimizer.init(params), 0, key)` does). A typed
# key (`jax.random.key`) is not an array of numbers, so the file holds its `key_data`, and
# `jax.random.wrap_key_data` makes it a key again. The shuffle comes from the key as in
# notebook 04: `jax.random.fold_in(key, epoch)` for each epoch, so the resumed run draws the
# same orders. What `fm` does for you: `fm.fit(..., checkpoint=path)` writes such a state
# after every epoch (atomically, with the loader's own generator) and `resume=True` continues
# from it.
#
# Each run below trains three epochs in one go, then two epochs, "crashes", and resumes for
# the third; the resumed losses must equal the uninterrupted ones.

# %%
# PyTorch
def torch_run(epochs, start=None):
    torch.manual_seed(123)
    model = NeuralNetwork(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    if start is not None:  # resume
        model.load_state_dict(start["model"])
        optimizer.load_state_dict(start["optimizer"])
        torch.set_rng_state(start["rng"])
    losses = []
    for epoch in epochs:
        for features, labels in train_loader:
            loss = F.cross_entropy(model(features), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}
    return losses, checkpoint


torch_straight, _ = torch_run(range(3))
torch_first, checkpoint = torch_run(range(2))
torch.save(checkpoint, "checkpoint.pth")
torch_rest, _ = torch_run(range(2, 3), start=torch.load("checkpoint.pth", weights_only=True))
print(np.round(torch_straight, 4))
print(np.round(torch_first + torch_rest, 4))

# %%
# JAX, plain Equinox: the training state as one pytree, written with tree_serialise_leaves
optimizer_momentum = optax.sgd(0.1, momentum=0.9)  # torch.optim.SGD(..., lr=0.1, momentum=0.9)
params_start, static = eqx.partition(fm.NeuralNetwork(2, 2, key=jax.random.key(123)), eqx.is_array)


@jax.jit
def momentum_step(params, opt_state, features, labels):
    def loss_fn(params):
        logits = eqx.combine(params, static)(features)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer_momentum.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def plain_run(epochs, state):
    params, opt_state, step, key = state
    losses = []
    for epoch in epochs:
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), len(X_train_np)))
        for start in range(0, len(order) - 1, 2):  # batches of 2, drop_last
            rows = order[start:start + 2]
            params, opt_state, loss = momentum_step(params, opt_state, X_train_np[rows], y_train_np[rows])
            losses.append(float(loss))
            step = step + 1
    return losses, (params, opt_state, step, key)


def fresh_state():
    return params_start, optimizer_momentum.init(params_start), jnp.asarray(0), jax.random.key(123)


def save_state(path, state):
    params, opt_state, step, key = state
    eqx.tree_serialise_leaves(path, (params, opt_state, step, jax.random.key_data(key)))


def load_state(path):
    params, opt_state, step, key = fresh_state()  # the structure to fill
    params, opt_state, step, key_data = eqx.tree_deserialise_leaves(
        path, (params, opt_state, step, jax.random.key_data(key)))
    return params, opt_state, step, jax.random.wrap_key_data(key_data)


plain_straight, straight_state = plain_run(range(3), fresh_state())
plain_first, state_after_two = plain_run(range(2), fresh_state())
save_state("plain.eqx", state_after_two)
plain_rest, resumed_state = plain_run(range(2, 3), load_state("plain.eqx"))  # a new process could do this
print(np.round(plain_straight, 4))
print(np.round(plain_first + plain_rest, 4))

# %%
# JAX with fundamentals
def jax_run(num_epochs, **checkpointing):
    loader = fm.DataLoader(fm.ArrayDataset(X_train_np, y_train_np), batch_size=2, shuffle=True,
                           drop_last=True, seed=123)
    model = fm.NeuralNetwork(2, 2, key=jax.random.key(123))
    return fm.fit(model, optax.sgd(0.1, momentum=0.9), loader, num_epochs=num_epochs, log=None, **checkpointing)


model_straight, history_straight = jax_run(3)
jax_run(2, checkpoint="run.ckpt")                                           # stops after epoch 2
model_resumed, history_resumed = jax_run(3, checkpoint="run.ckpt", resume=True)  # a new process could do this
print(np.round(history_straight["loss"], 4))
print(np.round(history_resumed["loss"], 4))

# %%
# Check: resumed runs equal uninterrupted ones bit for bit: PyTorch's, plain JAX's (its whole
# state, step and key included) and fm.fit's
assert torch_first + torch_rest == torch_straight
assert plain_first + plain_rest == plain_straight
restored = load_state("plain.eqx")
for saved, loaded in zip(jax.tree.leaves(jax.tree.map(jax.random.key_data, state_after_two[3:]) + state_after_two[:3]),
                         jax.tree.leaves(jax.tree.map(jax.random.key_data, restored[3:]) + restored[:3])):
    assert np.array_equal(saved, loaded)
assert int(restored[2]) == 4 and int(resumed_state[2]) == int(straight_state[2]) == 6  # 2 steps an epoch
for resumed_leaf, straight_leaf in zip(jax.tree.leaves(resumed_state[:2]), jax.tree.leaves(straight_state[:2])):
    assert np.array_equal(resumed_leaf, straight_leaf)
assert history_resumed["loss"] == history_straight["loss"]
for key, value in fm.state_dict(model_straight).items():
    assert np.array_equal(fm.state_dict(model_resumed)[key], value)

# %% [markdown]
# ## Where to go next: Orbax
#
# [Orbax](https://github.com/google/orbax) is the checkpoint library of JAX's larger projects:
# it writes checkpoints in the background while training goes on, saves and restores arrays
# sharded across devices and machines (each process writing its own shards), keeps the last
# few checkpoints, and restores onto another mesh than the one that saved. `eqx.tree_serialise_leaves`
# and `fm.fit(checkpoint=)` write one file from one process, which is all the book's models need.

# %%
os.chdir(start_dir)
shutil.rmtree(scratch)
