# %% [markdown]
# # The appendix's exercises A.3 and A.4
#
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

torch.set_num_threads(1)  # steadier timings on this shared 2-core machine; XLA's CPU backend has its own threads
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
# The book's cells, with `%timeit`. For JAX we compile the multiplication with `jax.jit` once
# and wait for every result with `.block_until_ready()`. The last line leaves that out: then
# `%timeit` measures only how long it takes to *start* the computation, which is the mistake
# to avoid when timing JAX (or PyTorch on a GPU).

# %%
# PyTorch (the book)
torch.manual_seed(123)
a = torch.rand(100, 200)
b = torch.rand(200, 300)
# %timeit -n 200 -r 5 a @ b

# %%
# JAX
a_jax, b_jax = jnp.asarray(a.numpy()), jnp.asarray(b.numpy())  # the same matrices
matmul = jax.jit(jnp.matmul)
matmul(a_jax, b_jax).block_until_ready()  # the first call compiles
# %timeit -n 200 -r 5 matmul(a_jax, b_jax).block_until_ready()
# %timeit -n 200 -r 5 matmul(a_jax, b_jax)  # wrong: does not wait for the result

# %%
# Check: the same product. Each entry sums 200 products, in an order that differs between the
# libraries, so float32 rounding differs in the last bits: compare to 1e-5 *relative*.
assert_same(matmul(a_jax, b_jax), a @ b, atol=0.0, rtol=1e-5)
assert_same(a_jax @ b_jax, a @ b, atol=0.0, rtol=1e-5)

# %% [markdown]
# ## Exercise A.4 on a GPU
#
# With a GPU, the book moves `a` and `b` there and times again; the product then takes a few
# microseconds instead of tens. What changes:
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
#   is off). To compare them to 1e-5, run JAX with `jax.default_matmul_precision("highest")`.
# - **Size.** For a matrix this small the launch overhead (a few µs) is much of the GPU time;
#   the advantage grows with the size (next section).
#
# The cell below does all of this when a GPU is present. On this machine there is none, so it
# says so and skips the GPU timings.

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

if jax_gpu:
    gpu = jax.devices("gpu")[0]
    a_gpu_jax, b_gpu_jax = jax.device_put(a_jax, gpu), jax.device_put(b_jax, gpu)
    with jax.default_matmul_precision("highest"):
        matmul_gpu = jax.jit(jnp.matmul)
        gpu_times["JAX, GPU"] = seconds_per_call(lambda: matmul_gpu(a_gpu_jax, b_gpu_jax).block_until_ready())
        assert_same(matmul_gpu(a_gpu_jax, b_gpu_jax), a @ b, atol=0.0, rtol=1e-5)
else:
    print("JAX: no GPU backend here (jax.default_backend() is 'cpu'); GPU timing skipped")

for name, seconds in gpu_times.items():
    print(f"{name}: {seconds * 1e6:.1f} µs per (100 x 200) @ (200 x 300)")

# %% [markdown]
# ## Matrix multiplication time by size
#
# Square `n × n` products from n = 16 to 1024, timed as above (best of five, each an average
# over enough calls to last about 0.02 s). Small products are dominated by the fixed cost of a
# call, which on this CPU is larger for a jitted JAX call than for a PyTorch operation: one
# reason to compile a whole training step, or a whole epoch, into one call (notebook 05). Large
# products are dominated by arithmetic, where both libraries call optimised kernels. These are
# this machine's numbers (2 CPU cores shared with other work; PyTorch limited to one thread
# above, XLA using its own pool), not a benchmark.

# %%
sizes = [16, 32, 64, 128, 256, 512, 1024]
times = {"PyTorch, CPU": [], "JAX jit, CPU": []}
if torch_gpu:
    times["PyTorch, GPU"] = []
if jax_gpu:
    times["JAX jit, GPU"] = []
for n in sizes:
    torch.manual_seed(n)
    x, y = torch.rand(n, n), torch.rand(n, n)
    x_jax, y_jax = jnp.asarray(x.numpy()), jnp.asarray(y.numpy())
    assert_same(matmul(x_jax, y_jax), x @ y, atol=0.0, rtol=1e-5)  # the check, for every size
    times["PyTorch, CPU"].append(seconds_per_call(lambda: x @ y))
    times["JAX jit, CPU"].append(seconds_per_call(lambda: matmul(x_jax, y_jax).block_until_ready()))
    if torch_gpu:
        x_gpu, y_gpu = x.to("cuda"), y.to("cuda")
        times["PyTorch, GPU"].append(seconds_per_call(lambda: (x_gpu @ y_gpu, torch.cuda.synchronize())))
    if jax_gpu:
        x_gpu_jax, y_gpu_jax = jax.device_put(x_jax, gpu), jax.device_put(y_jax, gpu)
        times["JAX jit, GPU"].append(seconds_per_call(lambda: matmul_gpu(x_gpu_jax, y_gpu_jax).block_until_ready()))

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
fig.suptitle("Matrix multiplication on this machine" + ("" if torch_gpu or jax_gpu else " (CPU only: no GPU here)"))
fig.tight_layout()
plt.show()
