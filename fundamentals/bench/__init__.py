"""The benchmark suite behind `fundamentals bench`: jit-compiled JAX training against PyTorch.

```
fundamentals bench [tiny|wide|matmul|loader|files|compile|all] [--quick] [--json FILE] [--plot FILE.png] [--torch-compile]
```

- `tiny`: the book's network (2→30→20→2), batch 2, SGD lr 0.5, on a larger two-blob data set
  like the book's toy data: PyTorch eager (the training step alone, and the book's whole loop
  with its `DataLoader`, over a `TensorDataset` and over the book's own `ToyDataset` class),
  optionally `torch.compile`, the JAX ecosystem's loops (Equinox's `eqx.filter_jit` step, Flax
  NNX's `nnx.jit` step, Keras 3's `model.fit` on JAX), and ours: `fit(..., fused=False)` (one
  `jax.jit` call a step), `fit` over an `ArrayDataset` (on the device, chunks of `lax.scan`) and
  over the book's `ToyDataset` class (host chunks), the compiled step and scan alone, so the
  loop's own overhead is visible, and a re-run of the book's 3-epoch training cell.
- `wide`: `NeuralNetwork(784, 10, hidden=(1024, 1024))`, batch 256: milliseconds a step,
  samples a second, achieved GFLOP/s (6 · parameters · batch FLOPs a step) and the share of
  the float32 matmul rate measured in the same process; the same PyTorch and JAX-ecosystem rows.
- `matmul`: exercise A.4, `(100×200) @ (200×300)`, then square matrices up to 4096, on the CPU
  and on the GPU when there is one, and the size from which the GPU wins.
- `loader`: `loader.bench_loader`, one shuffled MNIST-sized epoch of `DataLoader` against PyTorch's.
- `files`: reading a 100 MB `.pth` state dict with `fm.torch_load` against PyTorch's own
  `torch.load(path, weights_only=True)`, alternating in one process (needs torch).
- `compile`: the time to the first finished step of `fit` in a fresh process, with an empty
  persistent compilation cache (cold) and again with the cache it left (warm).

How it measures: every framework runs in its own Python process (`python -m
fundamentals.bench --worker ...`, printing JSON), so their thread pools never compete; each
figure is the median of several timed blocks after a warm-up; blocks end with
`jax.block_until_ready` or `torch.cuda.synchronize`, so GPU times are the work, not its
dispatch. On a GPU each framework uses its default device (`jax.devices()[0]`, `"cuda"`), and
JAX's float32 matmuls run at full precision (`jax_default_matmul_precision="highest"`), as
PyTorch's do by default (`allow_tf32=False`). Without PyTorch the JAX figures are reported
alone. `fit`'s per-step figure is the median of its epochs after the first, divided by the
steps an epoch (one `fit` call, timed epoch by epoch through its sampler's `set_epoch`); what
the call takes beyond its epochs at that pace (tracing, compiling, set-up) is its fixed cost.
The report gives measurements and how the variants compare; the goals the project set for
them are in the README's benchmark section.

The package, one job a module: `records` (the results' typed records, and the sections),
`common` (sizes, data, timing, starting a worker), `__main__` (the worker entry point),
`jax_side`, `torch_side` and `peers` (the workers; `peers` times Equinox, Flax NNX and Keras,
a skipped row where one is not installed), `loader` (the loader benchmark), `files` (reading a
`.pth` file against `torch.load`), `runner` (sections, machine, the command), `report`
(Markdown) and `plots` (PNG). Importing this package imports only `records`: the command lists
the sections without loading the benchmark.
"""

from .records import SECTIONS

__all__ = ["SECTIONS"]
