# %% [markdown]
# # A.9 Optimizing training performance with GPUs
#
# The book moves tensors and the model to a GPU with `.to(device)`, then trains on several GPUs
# with `DistributedDataParallel` (DDP): one process per GPU, each with a copy of the model and
# its own share of the data, gradients averaged across processes after every `backward()`.
#
# JAX does the first with `jax.device_put` (`fm.to_device`), and the second inside one process:
# a *mesh* of devices, the batch split across it, the parameters copied to every device, and
# the same compiled train step. The compiler inserts the averaging of the gradients itself.
# Processes are only needed for several machines (`jax.distributed`, `fm.launch`).
#
# So that the multi-device part runs on any machine, the notebook asks XLA to split the CPU
# into 8 devices. That has to happen before JAX starts its CPU backend, so it is the very
# first thing we do. Where JAX finds GPUs they stay its default devices, and the cells below
# follow their number: with one GPU the "mesh" has one device and there is nothing to average.

# %%
import jax

# Must run before anything asks JAX for a device. On a GPU machine it changes only the CPU
# backend; JAX still picks the GPUs first.
jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_default_matmul_precision", "highest")  # full float32 on GPUs too (not TF32)

# %%
import contextlib
import copy
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import types

import equinox as eqx
import numpy as np
import optax
import torch
import torch.nn.functional as F
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import fundamentals as fm
from fundamentals.testing import assert_same, ReplaySampler

torch.set_num_threads(1)
np.set_printoptions(precision=4, suppress=True)
start_dir, scratch = os.getcwd(), tempfile.mkdtemp(prefix="fundamentals-07-")
os.chdir(scratch)  # the scripts and files of this notebook go to a temporary folder, removed at the end


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

# %% [markdown]
# ## A.9.1 Computations on a device
#
# `torch.device("cuda" if torch.cuda.is_available() else "cpu")` becomes `fm.default_device()`:
# the first device of JAX's default backend (a GPU if JAX has one, else the CPU). `.to(device)`
# is `jax.device_put(x, device)` in plain JAX, which returns a new array (or pytree, such as a
# model) on that device; `fm.to_device` is the same with the argument checks.

# %%
# PyTorch (the book)
print(torch.cuda.is_available())

tensor_1 = torch.tensor([1., 2., 3.])
tensor_2 = torch.tensor([4., 5., 6.])
print(tensor_1 + tensor_2)

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
tensor_1 = tensor_1.to(device)
tensor_2 = tensor_2.to(device)
print(tensor_1 + tensor_2)

# %%
# JAX, plain
device_jax = jax.devices()[0]  # the default backend's first device
print(device_jax, "of", jax.devices())
plain_sum = jax.device_put(jnp.array([1., 2., 3.]), device_jax) + jax.device_put(jnp.array([4., 5., 6.]), device_jax)
print(plain_sum, plain_sum.devices())

# %%
# JAX with fundamentals
device_jax = fm.default_device()
tensor_1_jax = fm.to_device(fm.tensor([1., 2., 3.]), device_jax)
tensor_2_jax = fm.to_device(fm.tensor([4., 5., 6.]), device_jax)
result_jax = tensor_1_jax + tensor_2_jax
print(result_jax, result_jax.devices())

# %%
# Check: the same sums; the JAX result lives on the chosen device
result = tensor_1 + tensor_2
assert_same(result_jax, result)
assert_same(plain_sum, result)
assert result_jax.devices() == plain_sum.devices() == {device_jax} and device_jax == jax.devices()[0]
assert result.device.type == device.type

# %% [markdown]
# ### Arrays on different devices
#
# PyTorch refuses to add a CPU tensor to a GPU tensor ("Expected all tensors to be on the same
# device"). JAX refuses too, for arrays *committed* to different devices (put there with
# `device_put` / `fm.to_device`), and says which devices. Arrays created without a device
# (`jnp.ones(3)`, NumPy arrays) are uncommitted and simply follow the array they meet. With 8
# simulated CPU devices we can see this without a GPU; PyTorch needs one.

# %%
# PyTorch
if torch.cuda.is_available():
    try:
        torch.tensor([1., 2., 3.]) + torch.tensor([4., 5., 6.]).to("cuda")
    except RuntimeError as error:
        print("RuntimeError:", error)
else:
    print("no GPU: PyTorch has only one device here, so it cannot show the error")

# %%
# JAX
cpu0, cpu1 = jax.devices("cpu")[:2]
a = fm.to_device(fm.tensor([1., 2., 3.]), cpu0)
b = fm.to_device(fm.tensor([4., 5., 6.]), cpu1)
try:
    a + b
except ValueError as error:
    mixed_error = str(error)
    print(type(error).__name__ + ":", mixed_error.splitlines()[0])
print((jnp.ones(3) + b).devices())     # an uncommitted array follows b
print((fm.to_device(a, cpu1) + b).devices())  # move one side, as in PyTorch

# %%
# Check
assert "incompatible devices" in mixed_error
assert (jnp.ones(3) + b).devices() == {cpu1}
assert_same(fm.to_device(a, cpu1) + b, torch.tensor([5., 7., 9.]))

# %% [markdown]
# ## A.9.2 Single-GPU training
#
# The book adds `model = model.to(device)` and `features, labels = features.to(device),
# labels.to(device)` to its loop. With `fm.fit` the model is moved once with `fm.to_device`
# and each batch goes to the step's device as its input; nothing else changes. Both runs start
# from the same weights and see the same batches (PyTorch's order, replayed).

# %%
# PyTorch (the book, with .to(device))
X_train_np, y_train_np, X_test_np, y_test_np = fm.toy_data()
X_train, y_train = torch.from_numpy(X_train_np), torch.from_numpy(y_train_np)
torch.manual_seed(123)
train_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X_train, y_train, torch.arange(5)),
                                           batch_size=2, shuffle=True, drop_last=True)
torch.manual_seed(123)
model = NeuralNetwork(num_inputs=2, num_outputs=2)
initial_state = copy.deepcopy(model.state_dict())
model = model.to(device)
optimizer = torch.optim.SGD(model.parameters(), lr=0.5)

torch_losses, torch_orders = [], []
for epoch in range(3):
    model.train()
    torch_orders.append([])
    for features, labels, index in train_loader:  # (index: added, to replay the order)
        features, labels = features.to(device), labels.to(device)
        loss = F.cross_entropy(model(features), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        torch_losses.append(loss.item())
        torch_orders[-1] += index.tolist()
print(np.round(torch_losses, 2))

# %%
# JAX
model_jax = fm.load_state_dict(fm.NeuralNetwork(2, 2, key=jax.random.key(123)), initial_state)
model_jax = fm.to_device(model_jax, device_jax)
loader_jax = fm.DataLoader(fm.ArrayDataset(X_train_np, y_train_np), batch_size=2,
                           sampler=ReplaySampler(torch_orders), drop_last=True)
model_jax, history = fm.fit(model_jax, optax.sgd(0.5), loader_jax, num_epochs=3, log=None)
print(np.round(history["loss"], 2))
print(model_jax.layers[0].weight.devices())

# %%
# Check: the book's losses in both, to 1e-5; the trained model stays on the device
assert [round(value, 2) for value in torch_losses] == [0.75, 0.65, 0.44, 0.13, 0.03, 0.00]
assert_same(history["loss"], torch_losses, same_dtype=False)
assert model_jax.layers[0].weight.devices() == {device_jax}

# %% [markdown]
# ## A.9.3 Training with multiple GPUs: DDP
#
# The book's DDP script cannot run in a notebook: `mp.spawn` starts new Python processes that
# must import the training function from a file. So we write it to a file, with three changes
# to run on a CPU: the `gloo` backend instead of `nccl`, no `.to(rank)` / `device_ids`, and a
# free port. The data is a larger version of the toy data (64 points in two clusters), so that
# each of the two processes gets batches of 8 (a global batch of 16). Each process records its
# losses and its sampler's order, and rank 0 saves the weights before and after training.

# %%
rng = np.random.default_rng(0)
X_blobs = np.concatenate([rng.normal([-1.0, 3.0], 0.8, (32, 2)),  # the toy data's two clusters, 32 points each
                          rng.normal([2.5, -1.3], 0.8, (32, 2))]).astype(np.float32)
y_blobs = np.repeat([0, 1], 32).astype(np.int64)
np.savez(os.path.join(scratch, "blobs.npz"), X=X_blobs, y=y_blobs)
with socket.socket() as probe:  # a free port for the process group
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]

# %%
# %%writefile ddp_book.py
import os
import sys  # noqa: F811 - this cell is its own script, written to a file

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import torch.multiprocessing as mp
from torch.utils.data.distributed import DistributedSampler
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.distributed import init_process_group, destroy_process_group


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


def ddp_setup(rank, world_size, port):
    os.environ["MASTER_ADDR"] = "localhost"
    os.environ["MASTER_PORT"] = str(port)  # CPU run: a free port chosen by the notebook
    init_process_group(backend="gloo", rank=rank, world_size=world_size)  # CPU: gloo, not nccl


def prepare_dataset(folder):
    data = np.load(os.path.join(folder, "blobs.npz"))
    train_ds = TensorDataset(torch.from_numpy(data["X"]), torch.from_numpy(data["y"]))
    train_loader = DataLoader(
        dataset=train_ds,
        batch_size=8,  # per process
        shuffle=False,  # False because of DistributedSampler below
        drop_last=True,
        sampler=DistributedSampler(train_ds),  # chunk batches across processes without overlap
    )
    return train_loader


def main(rank, world_size, num_epochs, port, folder):
    torch.set_num_threads(1)
    ddp_setup(rank, world_size, port)
    train_loader = prepare_dataset(folder)
    torch.manual_seed(123)  # here: a seed set before mp.spawn does not reach the new processes
    model = NeuralNetwork(num_inputs=2, num_outputs=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model = DDP(model)  # CPU: no device_ids; DDP copies rank 0's weights to every process
    if rank == 0:
        torch.save(model.module.state_dict(), os.path.join(folder, "ddp_initial.pth"))

    losses, orders = [], []
    for epoch in range(num_epochs):
        train_loader.sampler.set_epoch(epoch)  # a different shuffle each epoch
        orders.append(list(train_loader.sampler))  # (recorded for the notebook)
        model.train()
        for features, labels in train_loader:
            logits = model(features)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad()
            loss.backward()  # DDP averages the gradients of all processes here
            optimizer.step()
            losses.append(loss.item())
            print(f"[rank{rank}] Epoch: {epoch+1:03d}/{num_epochs:03d}"
                  f" | Batchsize {labels.shape[0]:03d}"
                  f" | Train Loss: {loss:.2f}\n", end="", flush=True)  # one write: lines of the ranks don't mix

    np.savez(os.path.join(folder, f"ddp_rank{rank}.npz"), losses=np.array(losses), orders=np.array(orders))
    if rank == 0:
        torch.save(model.module.state_dict(), os.path.join(folder, "ddp_final.pth"))
    destroy_process_group()
    # CPU run: leave without the interpreter's shutdown, where Gloo's threads now and then abort
    # a finished process (SIGABRT, "terminate called without an active exception").
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    port, folder = int(sys.argv[1]), sys.argv[2]
    world_size, num_epochs = 2, 3  # two processes ("GPUs")
    mp.spawn(main, args=(world_size, num_epochs, port, folder), nprocs=world_size)

# %%
# PyTorch: run the script; 300 s only guards against a hang
completed = subprocess.run([sys.executable, os.path.join(scratch, "ddp_book.py"), str(port), scratch],
                           capture_output=True, text=True, timeout=300)
assert completed.returncode == 0, completed.stderr[-2000:]
print("\n".join(sorted(completed.stdout.split("\n")[:-1], key=lambda line: line[:7])))  # by rank

ranks = [np.load(os.path.join(scratch, f"ddp_rank{rank}.npz")) for rank in range(2)]
ddp_losses = (ranks[0]["losses"] + ranks[1]["losses"]) / 2  # the loss of the global batch of 16
ddp_initial = torch.load(os.path.join(scratch, "ddp_initial.pth"), weights_only=True)
ddp_final = torch.load(os.path.join(scratch, "ddp_final.pth"), weights_only=True)

# %% [markdown]
# ## The same training in one JAX process: a mesh
#
# In plain JAX, data parallelism takes three pieces of `jax.sharding`:
#
# - a **mesh**, the devices arranged along named axes: `jax.make_mesh((n,), ("data",))`;
# - a **sharding** for each array, which says how it is laid out on the mesh:
#   `NamedSharding(mesh, P("data"))` splits an array's first axis (the batch's rows) across the
#   `"data"` axis, `NamedSharding(mesh, P())` puts a full copy on every device;
# - `jax.device_put(x, sharding)` to place the arrays. Then the *same* jitted step as on one
#   device runs on the whole mesh: `jax.jit` compiles it for the shardings of its inputs.
#
# One argument needs a word: `axis_types=(AxisType.Auto,)`. In the JAX versions this notebook
# runs on (0.10 and 0.12), `jax.make_mesh` makes *explicit* axes by default, where the sharding
# is part of every array's type and some operations must be told the sharding of their result
# (the gradient of Optax's cross-entropy, for one, on JAX 0.12). With `Auto` axes the compiler works the
# shardings out by itself from the inputs', which is all data parallelism needs.
#
# To compare with DDP, the batches replay DDP's global batches: batch *k* is rank 0's batch *k*
# followed by rank 1's. Rank 0 and rank 1 each computed the mean loss of their 8 rows and DDP
# averaged their gradients, which is exactly the gradient of the mean loss over all 16 rows,
# what the JAX step computes.

# %%
# JAX, plain
def mesh_size(num_devices, global_batch=16):
    """The most devices, at most `num_devices`, that split a global batch evenly."""
    return max(n for n in range(1, num_devices + 1) if global_batch % n == 0)


def global_orders(rank_orders, per_rank=8):
    """Each epoch's order as the global batches see it: rank 0's batch k, then rank 1's batch k."""
    orders = []
    for epoch in range(len(rank_orders[0])):
        order = []
        for start in range(0, len(rank_orders[0][epoch]) - per_rank + 1, per_rank):
            for rank_order in rank_orders:
                order += list(rank_order[epoch][start:start + per_rank])
        orders.append(order)
    return orders


num_devices = mesh_size(jax.device_count())  # 8 CPU devices here; 1, 2, 4 or 8 GPUs elsewhere
mesh = jax.make_mesh((num_devices,), ("data",), axis_types=(AxisType.Auto,), devices=jax.devices()[:num_devices])
data_sharding = NamedSharding(mesh, P("data"))  # rows split across the devices
replicated = NamedSharding(mesh, P())           # a full copy on each device
print(mesh)

start_model = fm.load_state_dict(fm.NeuralNetwork(2, 2, key=jax.random.key(0)), ddp_initial)
params, static = eqx.partition(start_model, eqx.is_array)
optimizer = optax.sgd(0.5)
params = jax.device_put(params, replicated)                      # DDP(model): the same weights everywhere
opt_state = jax.device_put(optimizer.init(params), replicated)


def loss_fn(params, X, y):
    logits = eqx.combine(params, static)(X)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@jax.jit  # the step of notebook 05, unchanged
def train_step(params, opt_state, X, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, X, y)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


orders = global_orders([ranks[0]["orders"], ranks[1]["orders"]])
plain_losses = []
for order in orders:
    for start in range(0, len(order) - 15, 16):
        rows = order[start:start + 16]
        X = jax.device_put(X_blobs[rows], data_sharding)  # DistributedSampler: each device gets its rows
        y = jax.device_put(y_blobs[rows], data_sharding)
        params, opt_state, loss = train_step(params, opt_state, X, y)
        plain_losses.append(float(loss))  # waits for each step (on simulated CPU devices, safer)
print("DDP, 2 processes:        ", np.round(ddp_losses, 4))
print(f"plain JAX, {mesh.size}-device mesh:", np.round(plain_losses, 4))

# %% [markdown]
# Where each array lives, drawn by `jax.debug.visualize_array_sharding` (it needs the `rich`
# package): a batch of 16 rows split in blocks of 16 / n rows, one per device, and a weight
# matrix held whole by every device. The same layout as data is
# `sharding.devices_indices_map(shape)`: for each device, the slice of the array it holds.

# %%
# JAX, plain
for name, array in [("a batch, P('data')", X), ("layers[0].weight, P()", params.layers[0].weight)]:
    print(f"{name}: shape {array.shape}")
    try:
        jax.debug.visualize_array_sharding(array)
    except (ImportError, ValueError) as error:  # ValueError: JAX's "requires `rich` to be installed"
        print(f"  (no picture: {error}; pip install rich)")
    layout = {device.id: index[0] for device, index in array.sharding.devices_indices_map(array.shape).items()}
    print("  rows held by each device:",
          {device: (rows.start or 0, rows.stop or array.shape[0]) for device, rows in sorted(layout.items())})

# %%
# Check: the plain mesh gives DDP's losses and weights, to 1e-5; each device holds 16 / n rows
# of a batch, in order, and the whole weight
assert_same(plain_losses, ddp_losses, same_dtype=False)
plain_state = fm.state_dict(eqx.combine(params, static))
for key, value in ddp_final.items():
    assert_same(plain_state[key], value)
rows_per_device = 16 // mesh.size
assert [(index[0].start or 0, index[0].stop or 16) for index in data_sharding.devices_indices_map((16, 2)).values()] == [
    (k * rows_per_device, (k + 1) * rows_per_device) for k in range(mesh.size)]
assert all(index == (slice(None), slice(None)) for index in replicated.devices_indices_map((30, 2)).values())
assert [mesh_size(n) for n in (1, 2, 3, 4, 6, 8, 12)] == [1, 2, 2, 4, 4, 8, 8]

# %% [markdown]
# ### What `fm` does for you
#
# `fm.data_mesh()` is that `jax.make_mesh` call over every device, `fm.batch_sharding(mesh)`
# and `fm.replicated_sharding(mesh)` are the two `NamedSharding`s
# ([source](../fundamentals/sharding.py)), and `fm.fit(..., mesh=mesh)` places the parameters,
# the optimizer state and each batch for you, checks that the batch size divides over the
# devices, and runs its compiled chunks on the mesh.

# %%
# JAX with fundamentals
fm_mesh = fm.data_mesh(num_devices)
dataset = fm.ArrayDataset(X_blobs, y_blobs)
mesh_model, mesh_history = fm.fit(
    start_model, optax.sgd(0.5),
    fm.DataLoader(dataset, batch_size=16, sampler=ReplaySampler(orders), drop_last=True),
    num_epochs=3, mesh=fm_mesh, log=None)
single_model, single_history = fm.fit(
    start_model, optax.sgd(0.5),
    fm.DataLoader(dataset, batch_size=16, sampler=ReplaySampler(orders), drop_last=True),
    num_epochs=3, log=None)
print("DDP, 2 processes:   ", np.round(ddp_losses, 4))
print(f"JAX, {fm_mesh.size}-device mesh: ", np.round(mesh_history["loss"], 4))
print("JAX, one device:    ", np.round(single_history["loss"], 4))
print(mesh_model.layers[0].weight.sharding)

# %%
# Check: DDP, the fm mesh, the plain mesh and one JAX device agree on every loss and every weight, to 1e-5
assert fm.batch_sharding(fm_mesh).spec == data_sharding.spec and fm.replicated_sharding(fm_mesh).spec == replicated.spec
assert fm_mesh.shape == mesh.shape and list(fm_mesh.devices.flat) == list(mesh.devices.flat)
assert_same(mesh_history["loss"], ddp_losses, same_dtype=False)
assert_same(single_history["loss"], mesh_history["loss"], same_dtype=False)
for key, value in ddp_final.items():
    assert_same(fm.state_dict(mesh_model)[key], value)
    assert_same(fm.state_dict(single_model)[key], fm.state_dict(mesh_model)[key])

# %% [markdown]
# ### Where did the gradient averaging go?
#
# DDP averages gradients with hooks that run during `backward()`. In JAX nobody wrote an
# averaging step: when the compiler partitions the step for the mesh, it sees that the
# gradient sums over the batch axis, which is split across devices, and inserts an
# `all-reduce` into the compiled program. We can find it there (on a mesh of one device there
# is nothing to average, and no all-reduce).

# %%
start_params = eqx.partition(start_model, eqx.is_array)[0]
X_sharded = jax.device_put(X_blobs[:16], data_sharding)
y_sharded = jax.device_put(y_blobs[:16], data_sharding)
replicated_params = jax.device_put(start_params, replicated)
compiled = jax.jit(jax.grad(loss_fn)).lower(replicated_params, X_sharded, y_sharded).compile()
all_reduces = [line.strip() for line in compiled.as_text().splitlines() if "all-reduce(" in line]
print(len(all_reduces), f"all-reduce instruction(s) on a {mesh.size}-device mesh")
for line in all_reduces:
    print("  all-reduce of", ", ".join(re.findall(r"f32\[[\d,]*\]", line.split(" all-reduce(")[0])))

# %%
# Check: the compiled gradient has an all-reduce when the batch is split, and equals the gradient on one device
assert bool(all_reduces) == (mesh.size > 1)
sharded_grads = jax.jit(jax.grad(loss_fn))(replicated_params, X_sharded, y_sharded)
single_grads = jax.grad(loss_fn)(start_params, X_blobs[:16], y_blobs[:16])
for sharded, single in zip(jax.tree_util.tree_leaves(sharded_grads), jax.tree_util.tree_leaves(single_grads)):
    assert_same(sharded, single)

# %% [markdown]
# ## Several processes: `jax.distributed` and `fm.launch`
#
# One JAX process can drive all the GPUs of one machine, so DDP's process-per-GPU is not
# needed there. For several machines, each runs one process and they join with
# `jax.distributed.initialize`; then `jax.devices()` lists the devices of *every* process, the
# mesh spans them all, and each process feeds only its own rows of each global batch.
# `fm.launch(fn, num_processes, ...)` does this on one machine, as `mp.spawn` does for DDP: it
# starts the processes, initialises `jax.distributed` in each, and calls `fn(rank, ...)`.
#
# As with `mp.spawn`, the function must live in a file. Here two processes form one mesh; each
# process replays *its* DDP rank's batches, so rank 0 feeds rows 1–8 and rank 1 rows 9–16 of
# every global batch. On a machine with two or more GPUs each process takes its share of them;
# elsewhere each takes 4 simulated CPU devices (`launch_plan` below decides).

# %%
# %%writefile jax_ddp.py
import jax
import numpy as np
import optax

import fundamentals as fm
from fundamentals.testing import ReplaySampler



def main(rank, folder, initial_state, num_epochs):
    # jax.distributed is initialised: this process sees every process's devices, some of them its own
    data = np.load(f"{folder}/blobs.npz")
    my_orders = np.load(f"{folder}/ddp_rank{rank}.npz")["orders"]
    loader = fm.DataLoader(fm.ArrayDataset(data["X"], data["y"]), batch_size=8,  # this process's rows
                           sampler=ReplaySampler(my_orders), drop_last=True)
    model = fm.load_state_dict(fm.NeuralNetwork(2, 2, key=jax.random.key(0)), initial_state)
    model, history = fm.fit(model, optax.sgd(0.5), loader, num_epochs=num_epochs, mesh=fm.data_mesh(), log=None)
    print(f"process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} local devices,"
          f" {jax.device_count()} in the mesh")
    return history["loss"], fm.state_dict(model)

# %%
# JAX: two processes
def launch_plan(devices, per_process_batch=8):
    """(devices_per_process, extra environment) for two processes on this machine's `devices`."""
    accelerators = [d for d in devices if d.platform != "cpu"]
    if len(accelerators) >= 2:  # share the GPUs: 1, 2 or 4 each, dividing the 8 rows of a process
        return max(n for n in (1, 2, 4, 8) if n <= len(accelerators) // 2 and per_process_batch % n == 0), {}
    return 4, {"JAX_PLATFORMS": "cpu"}  # no GPUs, or one that two processes cannot share


devices_per_process, launch_env = launch_plan(jax.devices())
print("devices per process:", devices_per_process, launch_env)

sys.path.insert(0, scratch)
import jax_ddp

initial_numpy = {key: value.numpy() for key, value in ddp_initial.items()}
output = io.StringIO()
with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
    results = fm.launch(jax_ddp.main, 2, scratch, initial_numpy, 3, devices_per_process=devices_per_process,
                        env=launch_env)
print("\n".join(line for line in output.getvalue().splitlines() if "process " in line))
for rank, (losses, _) in enumerate(results):
    print(f"rank {rank}:", np.round(losses, 4))

# %%
# Check: both processes report the global losses, equal to DDP's and to the one-process mesh;
# the plan fits 0, 1 or several GPUs (checked here with stand-ins for GPU devices)
gpus = [types.SimpleNamespace(platform="gpu")] * 8
assert [launch_plan(gpus[:n])[0] for n in (2, 3, 4, 8)] == [1, 1, 2, 4]
assert launch_plan(gpus[:1]) == launch_plan(jax.devices("cpu")) == (4, {"JAX_PLATFORMS": "cpu"})
for losses, state in results:
    assert_same(losses, ddp_losses, same_dtype=False)
    for key, value in ddp_final.items():
        assert_same(state[key], value)

# %% [markdown]
# ## Summary
#
# | PyTorch | JAX with `fundamentals` |
# |---|---|
# | `torch.device("cuda" if torch.cuda.is_available() else "cpu")` | `fm.default_device()` |
# | `tensor.to(device)`, `model.to(device)` (in place for a model) | `fm.to_device(x, device)` (a new array or model) |
# | "Expected all tensors to be on the same device" | `ValueError: ... incompatible devices ...` (committed arrays only) |
# | one process per GPU, `mp.spawn`, `init_process_group` | one process for all local devices; `fm.launch` / `jax.distributed.initialize` across machines |
# | `DistributedSampler`: each process loads its rows | the batch sharded over the mesh: `jax.device_put(X, NamedSharding(mesh, P("data")))` (`fm.batch_sharding(mesh)`) |
# | `DDP(model)`: a copy per GPU, kept equal | parameters replicated: `NamedSharding(mesh, P())` (`fm.replicated_sharding(mesh)`) |
# | the devices, `world_size` | `jax.make_mesh((n,), ("data",), axis_types=(AxisType.Auto,))` (`fm.data_mesh()`) |
# | the same training step in every process | the same `jax.jit` step, compiled for the shardings of its inputs |
# | gradients all-reduced by DDP's hooks in `backward()` | an `all-reduce` the compiler inserts into the jitted step |
# | `destroy_process_group()` | `jax.distributed.shutdown()` (run at exit; `fm.launch`'s processes need no call) |

# %%
sys.path.remove(scratch)
os.chdir(start_dir)
shutil.rmtree(scratch)
