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

# %%
import timeit

import matplotlib.pyplot as plt
import numpy as np
import torch
import jax
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
# ### The wrong way to time JAX
#
# Leave out `.block_until_ready()` and `%timeit` measures only how long it takes to *start*
# the computation: JAX returns at once and computes in the background, on the CPU as on a GPU.
# On a `(1000 × 1000) @ (1000 × 1000)` product, enough work to take milliseconds, the
# difference is plain: the second line below reports microseconds for work that takes far
# longer. (A few repetitions only: each unawaited call still queues a product to compute.)

# %%
# JAX
torch.manual_seed(123)
a_big, b_big = torch.rand(1000, 1000), torch.rand(1000, 1000)
a_big_jax, b_big_jax = jax.device_put(a_big.numpy(), cpu), jax.device_put(b_big.numpy(), cpu)
matmul(a_big_jax, b_big_jax).block_until_ready()  # compile for this shape first
# %timeit -n 5 -r 3 matmul(a_big_jax, b_big_jax).block_until_ready()
# %timeit -n 5 -r 3 matmul(a_big_jax, b_big_jax)  # wrong: does not wait for the result
jax.block_until_ready(matmul(a_big_jax, b_big_jax))  # let the queued products finish

# %%
# Check: the same product as PyTorch's, and the unawaited timing is far below the awaited one
assert_same(matmul(a_big_jax, b_big_jax), a_big @ b_big, atol=0.0, rtol=1e-5)
waited = min(timeit.repeat(lambda: matmul(a_big_jax, b_big_jax).block_until_ready(), number=3, repeat=3))
not_waited = min(timeit.repeat(lambda: matmul(a_big_jax, b_big_jax), number=3, repeat=3))
jax.block_until_ready(matmul(a_big_jax, b_big_jax))
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
#   `jax.default_matmul_precision("highest")` (this notebook also sets it globally in its
#   set-up); a function compiled outside that context keeps TF32.
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
