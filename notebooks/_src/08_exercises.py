# %% [markdown]
# # The appendix's exercises
#
# - **A.1, A.2**: set up the environment and check it (versions, a GPU);
# - **A.3**: how many parameters does the network of section A.7, `NeuralNetwork(2, 2)`, have?
# - **A.4**: time a `(100 × 200) @ (200 × 300)` matrix multiplication on the CPU and on a GPU.
#
# Timing asynchronous libraries needs care: PyTorch on a GPU, and JAX everywhere (on the CPU
# too), return from a call *before* the result is computed. A timer must wait for the result:
# `torch.cuda.synchronize()` in PyTorch, `.block_until_ready()` in JAX.
#
# The notebook ends with the five things a reader of notebooks 01 to 07 can now write without
# this library, each checked against PyTorch.

# %%
import timeit

import jax

# Four simulated CPU devices for the data-parallel step at the end; this must come before
# anything asks JAX for a device. (Where JAX finds GPUs, they stay its default devices.)
jax.config.update("jax_num_cpu_devices", 4)

import matplotlib.pyplot as plt
import numpy as np
import torch
import jax.numpy as jnp
import fundamentals as fm
from fundamentals.testing import assert_same

torch.set_num_threads(1)  # steadier timings; XLA's CPU backend has its own threads
# Full float32 matrix products on every backend: GPUs default to TF32 in JAX (about 3 decimal
# digits), which would break the 1e-5 agreement with PyTorch checked below.
jax.config.update("jax_default_matmul_precision", "highest")
# %config InlineBackend.figure_formats = ["png"]
plt.rcParams["figure.dpi"] = 80


def seconds_per_call(run, target=0.02, repeat=5):
    """The best of `repeat` timings of `run()`, each averaged over enough calls to last about `target` seconds."""
    run()  # warm up: compilation, caches, the first CUDA call
    once = min(timeit.repeat(run, number=1, repeat=3))
    number = max(1, int(target / max(once, 1e-7)))
    return min(timeit.repeat(run, number=number, repeat=repeat)) / number


torch_gpu = torch.cuda.is_available()
jax_gpu = jax.default_backend() == "gpu"
print("PyTorch sees a GPU:", torch_gpu, "| JAX's backend:", jax.default_backend(), jax.devices())

# %% [markdown]
# ## Exercises A.1 and A.2: the environment
#
# The book checks its set-up with `torch.__version__` and `torch.cuda.is_available()`. The JAX
# twin is `fundamentals doctor` on the command line, or `doctor()` from Python: every package
# the library needs with its version against the minimum, then JAX's backend and devices.

# %%
# PyTorch (the book)
print(torch.__version__)
print(torch.cuda.is_available())

# %%
# JAX
from fundamentals.doctor import doctor

doctor_status = doctor()

# %%
# Check: every requirement is met (doctor returns 0); what each library sees
assert doctor_status == 0
assert torch.__version__.startswith("2.13.0")
print("PyTorch GPU:", torch_gpu, "| JAX GPU:", jax_gpu)

# %% [markdown]
# ## Exercise A.3: the parameters of `NeuralNetwork(2, 2)`
#
# (2 × 30 + 30) + (30 × 20 + 20) + (20 × 2 + 2) = 90 + 620 + 42 = 752.

# %%
# PyTorch
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


model = NeuralNetwork(2, 2)
num_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
print("Total number of trainable model parameters:", num_params)
for name, parameter in model.named_parameters():
    print(f"  {name:16s} {tuple(parameter.shape)}")

# %%
# JAX
model_jax = fm.NeuralNetwork(2, 2, key=jax.random.key(123))
num_params_jax = fm.count_parameters(model_jax)
print("Total number of trainable model parameters:", num_params_jax)
for name, array in fm.state_dict(model_jax).items():
    print(f"  {name:16s} {array.shape}")

# %%
# Check: 752 in both, layer by layer
assert num_params == num_params_jax == 752
torch_shapes = {name: tuple(parameter.shape) for name, parameter in model.named_parameters()}
assert torch_shapes == {name: array.shape for name, array in fm.state_dict(model_jax).items()}

# %% [markdown]
# ## Exercise A.4: a matrix multiplication on the CPU
#
# *The times printed in this and the following sections depend on the machine; only the
# checks of the products are part of the lesson.*
#
# The book's cells, with `%timeit`. For JAX we compile the multiplication with `jax.jit` once
# and wait for every result with `.block_until_ready()`.

# %%
# PyTorch (the book)
torch.manual_seed(123)
a = torch.rand(100, 200)
b = torch.rand(200, 300)
# %timeit -n 200 -r 5 a @ b

# %%
# JAX
cpu = jax.devices("cpu")[0]
a_jax, b_jax = jax.device_put(a.numpy(), cpu), jax.device_put(b.numpy(), cpu)  # the same matrices, on the CPU
matmul = jax.jit(jnp.matmul)
matmul(a_jax, b_jax).block_until_ready()  # the first call compiles
# %timeit -n 200 -r 5 matmul(a_jax, b_jax).block_until_ready()

# %%
# Check: the same product. Each entry sums 200 products, in an order that differs between the
# libraries, so float32 rounding differs in the last bits: compare to 1e-5 *relative*.
assert_same(matmul(a_jax, b_jax), a @ b, atol=0.0, rtol=1e-5)
assert_same(a_jax @ b_jax, a @ b, atol=0.0, rtol=1e-5)

# %% [markdown]
# Which of the two is faster at this size depends on the machine and on what else runs on it,
# so the two `%timeit` lines above may rank them either way from one run to the next. Three
# things make up the difference. PyTorch computes here on one thread (set in the set-up, for
# steadier numbers), with its own CPU kernels. XLA computes with its own kernels on a pool of
# threads, which on a machine with few cores, busy with other work, can wait for a free one.
# And every call of a compiled JAX function pays a fixed cost to dispatch it and wait for it,
# which a trivial function shows on its own; the cell below measures all three side by side.

# %%
# PyTorch and JAX, side by side: the product, and JAX's fixed cost of one call
identity = jax.jit(lambda x: x)
one = jnp.ones(1)
identity(one).block_until_ready()  # compile
side_by_side = {
    "PyTorch a @ b (1 thread)": seconds_per_call(lambda: a @ b),
    "JAX matmul(a, b), waited": seconds_per_call(lambda: matmul(a_jax, b_jax).block_until_ready()),
    "JAX: calling a jitted identity, waited": seconds_per_call(lambda: identity(one).block_until_ready()),
}
for name, seconds in side_by_side.items():
    print(f"{name:40s} {seconds * 1e6:8.1f} µs")

# %%
# Check: the fixed cost of a call is part of every JAX call, so it is below the product's time
assert side_by_side["JAX: calling a jitted identity, waited"] < side_by_side["JAX matmul(a, b), waited"]

# %% [markdown]
# ### The wrong way to time JAX
#
# Leave out `.block_until_ready()` and `%timeit` measures only how long it takes to *start*
# the computation: JAX returns at once and computes in the background, on the CPU as on a GPU.
# On a `(1000 × 1000) @ (1000 × 1000)` product, enough work to take milliseconds, the
# difference is plain: the second time below is a small fraction of the first, for the same
# work. (A few repetitions only: each unawaited call still queues a product to compute.)

# %%
# JAX
torch.manual_seed(123)
a_big, b_big = torch.rand(1000, 1000), torch.rand(1000, 1000)
a_big_jax, b_big_jax = jax.device_put(a_big.numpy(), cpu), jax.device_put(b_big.numpy(), cpu)
matmul(a_big_jax, b_big_jax).block_until_ready()  # compile for this shape first
waited = min(timeit.repeat(lambda: matmul(a_big_jax, b_big_jax).block_until_ready(), number=3, repeat=3)) / 3
not_waited = min(timeit.repeat(lambda: matmul(a_big_jax, b_big_jax), number=3, repeat=3)) / 3  # wrong
_ = jax.block_until_ready(matmul(a_big_jax, b_big_jax))  # let the queued products finish
print(f"waiting for the result:      {waited * 1e3:8.3f} ms per product")
print(f"not waiting (the wrong way): {not_waited * 1e3:8.3f} ms per product")

# %%
# Check: the same product as PyTorch's, and the unawaited timing is far below the awaited one
assert_same(matmul(a_big_jax, b_big_jax), a_big @ b_big, atol=0.0, rtol=1e-5)
assert not_waited < waited / 5, (not_waited, waited)

# %% [markdown]
# ## Exercise A.4 on a GPU
#
# With a GPU, the book moves `a` and `b` there and times again. What changes:
#
# - **Synchronisation.** A GPU call returns as soon as the work is queued. Time with
#   `torch.cuda.synchronize()` after the call in PyTorch, `.block_until_ready()` in JAX;
#   otherwise you measure the queueing.
# - **Warm-up.** The first call creates the CUDA context and loads cuBLAS (and in JAX compiles
#   the function). Time only after a first call.
# - **Transfers.** `a.to("cuda")` and `jax.device_put(a, gpu)` copy over PCIe; keep the data on
#   the GPU and time the copies separately.
# - **Precision.** On recent NVIDIA GPUs JAX multiplies float32 matrices with TF32 by default,
#   which keeps about 3 decimal digits; PyTorch does not (`torch.backends.cuda.matmul.allow_tf32`
#   is off). To compare them to 1e-5, JAX must *compile* the product under
#   `jax.default_matmul_precision("highest")`, or with the global setting this notebook makes
#   in its set-up (`jax_default_matmul_precision`); without either, it compiles with TF32.
# - **Size.** For a matrix this small the launch overhead (a few µs) is much of the GPU time;
#   the advantage grows with the size (next section).
#
# `jax_matmul` below does all of this for any device it is given: it moves the matrices there,
# compiles and times the product inside the precision context, and returns the product to
# check. The CPU timings use it too, so the code that times a GPU is the code that runs
# everywhere. Without a GPU the GPU timings are skipped.

# %%
def jax_matmul(x, y, device):
    """`x @ y` on `device`, compiled and timed under full float32 precision: (product, seconds per call)."""
    x_device, y_device = jax.device_put(np.asarray(x), device), jax.device_put(np.asarray(y), device)
    with jax.default_matmul_precision("highest"):
        product = matmul(x_device, y_device)  # compiles here, for this shape, device and precision
        seconds = seconds_per_call(lambda: matmul(x_device, y_device).block_until_ready())
    return product, seconds


jax_devices = {"CPU": jax.devices("cpu")[0]}
if jax_gpu:
    jax_devices["GPU"] = jax.devices("gpu")[0]

# %%
# PyTorch and JAX on a GPU, if there is one
gpu_times = {}
if torch_gpu:
    a_gpu, b_gpu = a.to("cuda"), b.to("cuda")

    def torch_gpu_matmul():
        a_gpu @ b_gpu
        torch.cuda.synchronize()

    gpu_times["PyTorch, GPU"] = seconds_per_call(torch_gpu_matmul)
    torch_gpu_product = (a_gpu @ b_gpu).cpu()
    assert_same(torch_gpu_product, a @ b, atol=0.0, rtol=1e-5)
else:
    print("PyTorch: no CUDA GPU here (torch.cuda.is_available() is False); GPU timing skipped")

for name, device in jax_devices.items():
    product, seconds = jax_matmul(a, b, device)
    assert_same(product, a @ b, atol=0.0, rtol=1e-5)
    assert product.devices() == {device}
    if name == "GPU":
        gpu_times["JAX, GPU"] = seconds
if not jax_gpu:
    print("JAX: no GPU backend here (jax.default_backend() is 'cpu'); GPU timing skipped")

for name, seconds in gpu_times.items():
    print(f"{name}: {seconds * 1e6:.1f} µs per (100 x 200) @ (200 x 300)")

# %% [markdown]
# ## Matrix multiplication time by size
#
# *Optional, and machine-dependent: the times and the plot show one run on whatever machine
# executes the notebook (PyTorch limited to one CPU thread above, XLA using its own pool); they
# are not a benchmark (`fundamentals bench matmul` is one). The product is checked for every size.*
#
# Square `n × n` products from n = 16 to 1024, timed as above (best of five, each an average
# over enough calls to last about 0.02 s). Small products are dominated by the fixed cost of a
# call, which on a CPU is typically larger for a jitted JAX call than for a PyTorch operation:
# one reason to compile a whole training step, or a whole epoch, into one call (notebook 05).
# Large products are dominated by arithmetic, where both libraries call optimised kernels.

# %%
sizes = [16, 32, 64, 128, 256, 512, 1024]
times = {"PyTorch, CPU": []}
if torch_gpu:
    times["PyTorch, GPU"] = []
times.update({f"JAX jit, {name}": [] for name in jax_devices})
for n in sizes:
    torch.manual_seed(n)
    x, y = torch.rand(n, n), torch.rand(n, n)
    times["PyTorch, CPU"].append(seconds_per_call(lambda: x @ y))
    if torch_gpu:
        x_gpu, y_gpu = x.to("cuda"), y.to("cuda")
        times["PyTorch, GPU"].append(seconds_per_call(lambda: (x_gpu @ y_gpu, torch.cuda.synchronize())))
    for name, device in jax_devices.items():
        product, seconds = jax_matmul(x, y, device)
        assert_same(product, x @ y, atol=0.0, rtol=1e-5)  # the check, for every size and device
        times[f"JAX jit, {name}"].append(seconds)

print("n      " + "".join(f"{name:>16s}" for name in times))
for i, n in enumerate(sizes):
    print(f"{n:<7d}" + "".join(f"{times[name][i] * 1e6:13.1f} µs" for name in times))

fig, (ax_time, ax_rate) = plt.subplots(1, 2, figsize=(10, 3.6))
styles = {"PyTorch, CPU": ("#ee4c2c", "o-"), "JAX jit, CPU": ("#1d4ed8", "s-"),
          "PyTorch, GPU": ("#ee4c2c", "o--"), "JAX jit, GPU": ("#1d4ed8", "s--")}
for name, values in times.items():
    colour, style = styles[name]
    seconds = np.array(values)
    ax_time.loglog(sizes, seconds * 1e6, style, color=colour, label=name)
    ax_rate.semilogx(sizes, 2 * np.array(sizes, dtype=float) ** 3 / seconds / 1e9, style, color=colour, label=name)
ax_time.set_xlabel("n")
ax_time.set_ylabel("µs per n × n product")
ax_time.set_title("Time (log-log)")
ax_rate.set_xlabel("n")
ax_rate.set_ylabel("GFLOP/s  (2n³ / time)")
ax_rate.set_title("Throughput")
for ax in (ax_time, ax_rate):
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
ax_time.legend(frameon=False)
fig.suptitle("Matrix multiplication, one run" + ("" if torch_gpu or jax_gpu else " (CPU only: no GPU found)"))
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Without the library: five things you can now write
#
# Each cell below uses only JAX, Equinox and Optax (`fundamentals` is not used from here on),
# trains or differentiates the book's network from PyTorch's initial weights on PyTorch's
# batches, and checks the result against PyTorch:
#
# 1. a training step compiled with `eqx.filter_jit` (notebooks 03 and 05);
# 2. a data-parallel step over a batch sharded with `NamedSharding` (notebook 07);
# 3. per-example gradients with `jax.vmap` (notebook 05b);
# 4. a checkpoint written with `eqx.tree_serialise_leaves` and resumed (notebook 06);
# 5. the reason for a recompilation, from JAX itself (notebook 05b).
#
# First the book's training run in PyTorch, recording its batches.

# %%
# PyTorch (the book's listing A.9, with the batches recorded)
import torch.nn.functional as F

X_toy = np.array([[-1.2, 3.1], [-0.9, 2.9], [-0.5, 2.6], [2.3, -1.1], [2.7, -1.5]], dtype=np.float32)
y_toy = np.array([0, 0, 0, 1, 1])
torch.manual_seed(123)
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(X_toy), torch.from_numpy(y_toy),
                                                                    torch.arange(5)),
                                     batch_size=2, shuffle=True, drop_last=True)
torch.manual_seed(123)
book_model = NeuralNetwork(2, 2)
initial_state = {key: value.clone() for key, value in book_model.state_dict().items()}
optimizer = torch.optim.SGD(book_model.parameters(), lr=0.5)
book_losses, book_batches = [], []
for epoch in range(3):
    for features, labels, rows in loader:
        loss = F.cross_entropy(book_model(features), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        book_losses.append(loss.item())
        book_batches.append(rows.numpy())
print(np.round(book_losses, 2))
assert [round(value, 2) for value in book_losses] == [0.75, 0.65, 0.44, 0.13, 0.03, 0.00]  # as the book prints

# %%
# 1. A jitted Equinox training step with eqx.filter_jit
import equinox as eqx
import optax


class Net(eqx.Module):
    layers: tuple

    def __init__(self, key):
        key1, key2, key3 = jax.random.split(key, 3)
        self.layers = (eqx.nn.Linear(2, 30, key=key1), eqx.nn.Lambda(jax.nn.relu),
                       eqx.nn.Linear(30, 20, key=key2), eqx.nn.Lambda(jax.nn.relu),
                       eqx.nn.Linear(20, 2, key=key3))

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def from_torch(state):
    """A Net holding PyTorch's weights (layers.0.weight, layers.0.bias, ...)."""
    return eqx.tree_at(lambda net: [x for i in (0, 2, 4) for x in (net.layers[i].weight, net.layers[i].bias)],
                       Net(jax.random.key(0)), [jnp.asarray(value.numpy()) for value in state.values()])


sgd = optax.sgd(0.5)


@eqx.filter_value_and_grad
def compute_loss(net, X, y):
    return optax.softmax_cross_entropy_with_integer_labels(jax.vmap(net)(X), y).mean()


@eqx.filter_jit
def make_step(net, opt_state, X, y):
    loss, grads = compute_loss(net, X, y)
    updates, opt_state = sgd.update(grads, opt_state, eqx.filter(net, eqx.is_array))
    return eqx.apply_updates(net, updates), opt_state, loss


net = from_torch(initial_state)
opt_state = sgd.init(eqx.filter(net, eqx.is_array))
step_losses = []
for rows in book_batches:
    net, opt_state, loss = make_step(net, opt_state, X_toy[rows], y_toy[rows])
    step_losses.append(loss)
print(np.round([float(loss) for loss in step_losses], 2))

# %%
# Check: the book's losses and PyTorch's trained weights, to 1e-5
assert_same([float(loss) for loss in step_losses], book_losses, same_dtype=False)
trained = [x for i in (0, 2, 4) for x in (net.layers[i].weight, net.layers[i].bias)]
for ours, theirs in zip(trained, book_model.state_dict().values()):
    assert_same(ours, theirs)

# %%
# 2. A sharded data-parallel step with NamedSharding (each batch of 2 split over 2 devices, if there are 2)
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

mesh = jax.make_mesh((min(2, jax.device_count()),), ("data",), axis_types=(AxisType.Auto,),
                     devices=jax.devices()[:min(2, jax.device_count())])
rows_sharded, everywhere = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
params, static = eqx.partition(from_torch(initial_state), eqx.is_array)
params = jax.device_put(params, everywhere)
opt_state = jax.device_put(sgd.init(params), everywhere)


@jax.jit
def sharded_step(params, opt_state, X, y):
    loss, grads = compute_loss(eqx.combine(params, static), X, y)
    updates, opt_state = sgd.update(eqx.filter(grads, eqx.is_array), opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


sharded_losses = []
for rows in book_batches:
    X, y = jax.device_put(X_toy[rows], rows_sharded), jax.device_put(y_toy[rows], rows_sharded)
    params, opt_state, loss = sharded_step(params, opt_state, X, y)
    sharded_losses.append(float(loss))
print(mesh, "| a batch:", [(shard.device.id, shard.data.shape) for shard in X.addressable_shards])
print(np.round(sharded_losses, 2))

# %%
# Check: the same losses and weights as PyTorch on one device; each device held its share of every batch
assert_same(sharded_losses, book_losses, same_dtype=False)
for ours, theirs in zip(jax.tree.leaves(params), book_model.state_dict().values()):
    assert_same(ours, theirs)
assert all(shard.data.shape == (2 // mesh.size, 2) for shard in X.addressable_shards)

# %%
# 3. Per-example gradients with jax.vmap, on the first batch and PyTorch's initial weights
first_rows = book_batches[0]
params0, static = eqx.partition(from_torch(initial_state), eqx.is_array)


def example_loss(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(eqx.combine(params, static)(x), y)


per_example_grad = jax.jit(jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0)))
per_example = per_example_grad(params0, X_toy[first_rows], y_toy[first_rows])

# PyTorch: one backward pass per example
torch.manual_seed(0)
torch_net = NeuralNetwork(2, 2)
torch_net.load_state_dict(initial_state)
per_example_torch = []
for row in first_rows:
    torch_net.zero_grad()
    F.cross_entropy(torch_net(torch.from_numpy(X_toy[row:row + 1])), torch.from_numpy(y_toy[row:row + 1])).backward()
    per_example_torch.append([parameter.grad.clone() for parameter in torch_net.parameters()])
print([leaf.shape for leaf in jax.tree.leaves(per_example)])

# %%
# Check: each example's gradient is PyTorch's, for every parameter
for k, leaf in enumerate(jax.tree.leaves(per_example)):
    for example in range(len(first_rows)):
        assert_same(leaf[example], per_example_torch[example][k])

# %%
# 4. A checkpoint with eqx.tree_serialise_leaves: two epochs, save, load into a fresh state, the third epoch
import os
import tempfile

net, opt_state, step = from_torch(initial_state), sgd.init(eqx.filter(from_torch(initial_state), eqx.is_array)), 0
for rows in book_batches[:4]:  # epochs 1 and 2
    net, opt_state, loss = make_step(net, opt_state, X_toy[rows], y_toy[rows])
    step += 1
with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "checkpoint.eqx")
    eqx.tree_serialise_leaves(path, (net, opt_state, jnp.asarray(step)))
    like = (Net(jax.random.key(0)), sgd.init(eqx.filter(Net(jax.random.key(0)), eqx.is_array)), jnp.asarray(0))
    net, opt_state, step = eqx.tree_deserialise_leaves(path, like)  # a new process could do this
resumed_losses = []
for rows in book_batches[int(step):]:  # epoch 3
    net, opt_state, loss = make_step(net, opt_state, X_toy[rows], y_toy[rows])
    resumed_losses.append(float(loss))
print("resumed at step", int(step), "->", np.round(resumed_losses, 2))

# %%
# Check: the resumed epoch gives PyTorch's last two losses and its trained weights
assert int(step) == 4
assert_same(resumed_losses, book_losses[4:], same_dtype=False)
for ours, theirs in zip([x for i in (0, 2, 4) for x in (net.layers[i].weight, net.layers[i].bias)],
                        book_model.state_dict().values()):
    assert_same(ours, theirs)

# %%
# 5. Why did it compile again? JAX explains a cache miss (here: the last batch of 1 row, without drop_last)
import io
import logging
import re

loss_of = jax.jit(lambda params, X, y: compute_loss(eqx.combine(params, static), X, y)[0])
log, logger = io.StringIO(), logging.getLogger("jax")
handler, logger.propagate = logging.StreamHandler(log), False
logger.addHandler(handler)
jax.config.update("jax_explain_cache_misses", True)
try:
    full_batch_loss = loss_of(params0, X_toy[:2], y_toy[:2])
    last_batch_loss = loss_of(params0, X_toy[4:], y_toy[4:])  # 5 rows in batches of 2: the last has 1
finally:
    jax.config.update("jax_explain_cache_misses", False)
    logger.removeHandler(handler)
    logger.propagate = True
reasons = [line.strip() for line in log.getvalue().splitlines() if re.match(r"\s*\* at ", line)]
print(*reasons, sep="\n")

# %%
# Check: JAX names the changed shape of X (and y) as the reason; both losses are PyTorch's
assert any(reason.startswith("* at X, now f32[1,2] and before f32[2,2]") for reason in reasons)
for rows, value in ((slice(0, 2), full_batch_loss), (slice(4, 5), last_batch_loss)):
    with torch.no_grad():
        torch_net.load_state_dict(initial_state)
        assert_same(value, F.cross_entropy(torch_net(torch.from_numpy(X_toy[rows])), torch.from_numpy(y_toy[rows])))
