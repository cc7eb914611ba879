"""The benchmark suite behind `fundamentals bench`: jit-compiled JAX training against PyTorch.

```
fundamentals bench [tiny|wide|matmul|loader|compile|all] [--quick] [--json FILE] [--plot FILE.png] [--torch-compile]
```

- `tiny`: the book's network (2→30→20→2), batch 2, SGD lr 0.5, on a larger two-blob data set
  like the book's toy data: PyTorch eager (the training step alone, and the book's whole loop
  with its `DataLoader`, over a `TensorDataset` and over the book's own `ToyDataset` class),
  optionally `torch.compile`, an `eqx.filter_jit` step, and ours: `fit(..., fused=False)` (one
  `jax.jit` call a step), `fit` over an `ArrayDataset` (on the device, chunks of `lax.scan`) and
  over the book's `ToyDataset` class (host chunks), the compiled step and scan alone, so the
  loop's own overhead is visible, and a re-run of the book's 3-epoch training cell.
- `wide`: `NeuralNetwork(784, 10, hidden=(1024, 1024))`, batch 256: milliseconds a step,
  samples a second, achieved GFLOP/s (6 · parameters · batch FLOPs a step) and the share of
  the float32 matmul rate measured in the same process.
- `matmul`: exercise A.4, `(100×200) @ (200×300)`, then square matrices up to 4096, on the CPU
  and on the GPU when there is one, and the size from which the GPU wins.
- `loader`: `fundamentals.bench_loader` (one shuffled MNIST-sized epoch against PyTorch's).
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
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from ._files import atomic_write_bytes, check_output_path

__all__ = ["main", "run_benchmarks", "format_report"]

SECTIONS = ("tiny", "wide", "matmul", "loader", "compile")

# float32 peak without tensor cores (dense, boost clock), by a substring of the device name;
# the first match wins, so more specific names come first.
_GPU_FP32_PEAK_TFLOPS = (
    ("GH200", 67.0),
    ("H200", 67.0),
    ("H100 PCIe", 51.2),
    ("H100 NVL", 60.0),
    ("H100", 67.0),
    ("A100", 19.5),
    ("L40S", 91.6),
    ("L40", 90.5),
    ("L4", 30.3),
    ("A10G", 31.2),
    ("A10", 31.2),
    ("T4", 8.1),
    ("V100", 15.7),
    ("RTX 4090", 82.6),
    ("RTX 3090", 35.6),
)

# Sizes of every section, full and --quick (tiny sizes and few repeats, for tests and CI).
_CONFIG = {
    "full": {
        "repeats": 5,
        "tiny": {"rows": 2000, "batch_size": 2, "epochs": {"fused": 40, "per_step": 8}},
        "wide": {"inputs": 784, "hidden": [1024, 1024], "outputs": 10, "batch_size": 256, "rows": 4096,
                 "epochs": {"fused": 5, "per_step": 5}, "matmul_size": 2048, "matmul_block_seconds": 0.2},
        "matmul": {"sizes": [128, 256, 512, 1024, 2048, 4096], "block_seconds": 0.05},
        "compile": {"pairs": 3},
    },
    "quick": {
        "repeats": 3,
        "tiny": {"rows": 200, "batch_size": 2, "epochs": {"fused": 3, "per_step": 2}},
        "wide": {"inputs": 64, "hidden": [128, 128], "outputs": 10, "batch_size": 32, "rows": 128,
                 "epochs": {"fused": 2, "per_step": 2}, "matmul_size": 256, "matmul_block_seconds": 0.01},
        "matmul": {"sizes": [64, 128], "block_seconds": 0.002},
        "compile": {"pairs": 1},
    },
}


class BenchError(Exception):
    """A benchmark could not run: printed as one line, no traceback."""


# --- data and models shared by the JAX and PyTorch workers -----------------------------------


def _toy_like_data(num_rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian blobs in 2-D where the book's toy classes sit, `float32` features, `int64` labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=num_rows)
    centers = np.array([[-1.0, 2.7], [2.5, -1.1]])
    X = centers[y] + 0.3 * rng.standard_normal((num_rows, 2))
    return X.astype(np.float32), y.astype(np.int64)


def _wide_data(num_rows: int, num_features: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((num_rows, num_features), dtype=np.float32)
    return X, rng.integers(0, num_classes, size=num_rows, dtype=np.int64)


def _epoch_order(num_rows: int, batch_size: int, seed: int = 123) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(num_rows)
    return [order[i : i + batch_size] for i in range(0, num_rows - batch_size + 1, batch_size)]


def _book_toy_dataset(base=object):
    """The book's `ToyDataset` (listing A.6): one example per `__getitem__`, as every reader writes it."""

    class ToyDataset(base):
        def __init__(self, X, y):
            self.features = X
            self.labels = y

        def __getitem__(self, index):
            one_x = self.features[index]
            one_y = self.labels[index]
            return one_x, one_y

        def __len__(self):
            return self.labels.shape[0]

    return ToyDataset


def _count_parameters(sizes: list[int]) -> int:
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))


def _time_blocks(run_block, repeats: int) -> list[float]:
    """Seconds of `repeats` calls of `run_block` (which must wait for its work), after a warm-up."""
    run_block()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_block()
        samples.append(time.perf_counter() - start)
    return samples


def _figure(label: str, samples: list[float], per: int = 1, **extra) -> dict:
    """A timing: its median and every sample, in seconds per step (`per` steps a sample)."""
    per_step = [s / per for s in samples]
    return {"label": label, "seconds_per_step": statistics.median(per_step), "samples": per_step, **extra}


def _matmul_blocks(matmul, wait, block_seconds: float, repeats: int) -> float:
    """Median seconds of one `matmul()`, timed in blocks of calls lasting about `block_seconds`."""
    wait(matmul())
    start = time.perf_counter()
    wait(matmul())
    once = time.perf_counter() - start
    calls = max(1, min(10_000, int(block_seconds / max(once, 1e-7))))

    def block():
        out = None
        for _ in range(calls):
            out = matmul()
        wait(out)

    return statistics.median(_time_blocks(block, repeats)) / calls


# --- JAX workers -------------------------------------------------------------------------------


def _jax_info() -> dict:
    import jax

    return {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [{"platform": d.platform, "device_kind": d.device_kind, "id": d.id} for d in jax.devices()],
    }


def _jax_setup() -> None:
    import jax

    # Full float32 matmuls on a GPU (no TF32), as PyTorch's default; no effect on a CPU.
    jax.config.update("jax_default_matmul_precision", "highest")


def _epoch_clock(dataset, seed: int = 123):
    """A shuffling sampler that notes when `fit` starts each epoch (fit calls its `set_epoch`).

    It shuffles like `DataLoader(shuffle=True)` and keeps fit on its fused path, so one `fit`
    call gives every epoch's wall time: the first holds the compilation, the rest are steady.
    """
    from .samplers import DistributedSampler

    class EpochClock(DistributedSampler):
        def set_epoch(self, epoch: int) -> None:
            self.starts.append(time.perf_counter())
            super().set_epoch(epoch)

    clock = EpochClock(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)
    clock.starts = []
    return clock


def _jax_training(cfg: dict, kind: str, sync_dispatch: bool = False) -> dict:
    """Our variants of one training benchmark (`kind` is "tiny" or "wide").

    With `sync_dispatch`, only the one-call-a-step variants, with JAX's CPU client built to run
    each call in the calling thread instead of handing it to a worker thread (CPU only).
    """
    import equinox as eqx
    import jax
    import optax

    if sync_dispatch:
        # A property of the CPU client, read when it is created: set before any JAX work.
        jax.config.update("jax_cpu_enable_async_dispatch", False)
        if jax.default_backend() != "cpu":
            return {"info": _jax_info(), "figures": {}}
    suffix, note = ("_sync", ", synchronous CPU dispatch") if sync_dispatch else ("", "")

    from . import train
    from .losses import cross_entropy
    from .data import ArrayDataset, DataLoader
    from .nn import NeuralNetwork

    _jax_setup()
    repeats = cfg["repeats"]
    if kind == "tiny":
        X, y = _toy_like_data(cfg["rows"])
        inputs, outputs, hidden, lr = 2, 2, (30, 20), 0.5
    else:
        X, y = _wide_data(cfg["rows"], cfg["inputs"], cfg["outputs"])
        inputs, outputs, hidden, lr = cfg["inputs"], cfg["outputs"], tuple(cfg["hidden"]), 0.1
    batch_size = cfg["batch_size"]
    optimizer = optax.sgd(lr)
    batches = _epoch_order(len(X), batch_size)
    steps_per_epoch = len(batches)

    def new_model():
        return NeuralNetwork(inputs, outputs, hidden=hidden, key=jax.random.key(123))

    figures = {}
    variants = [("fit_per_step", False, ArrayDataset, "fit(fused=False): one jax.jit call a step")]
    if not sync_dispatch:
        variants.append(("fit_fused", True, ArrayDataset, "fit: ArrayDataset on the device, chunks of lax.scan"))
    if kind == "tiny" and not sync_dispatch:
        variants.append(("fit_book_class", True, _book_toy_dataset(),
                         "fit: the book's ToyDataset class (per-item __getitem__), host chunks"))
    for name, fused, dataset_class, label in variants:
        dataset = dataset_class(X, y)
        clock = _epoch_clock(dataset)
        loader = DataLoader(dataset, batch_size=batch_size, sampler=clock, drop_last=True)
        num_epochs = 1 + cfg["epochs"]["per_step" if name == "fit_per_step" else "fused"]
        model = jax.block_until_ready(new_model())
        start = time.perf_counter()
        trained, _ = train.fit(model, optimizer, loader, num_epochs=num_epochs, log=None, fused=fused)
        jax.block_until_ready(trained)
        end = time.perf_counter()
        epochs = np.diff([*clock.starts, end])
        steady = epochs[1:]  # the first epoch also traces and compiles
        fixed = (end - start) - num_epochs * float(np.median(steady))
        figures[name + suffix] = _figure(label + note, steady.tolist(), per=steps_per_epoch, fixed_seconds=fixed)

    # The compiled step and scan alone, on batches gathered beforehand: fit() minus its loop.
    model = new_model()
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    steps = train.TrainProgram.create(model, optimizer)
    param_leaves, opt_leaves = steps.init(model)
    step_batches = [(X[i], y[i]) for i in batches]
    Xs, ys = X[np.stack(batches)], y[np.stack(batches)]
    step_ids = np.arange(steps_per_epoch, dtype=np.int32)
    seed = np.uint32(0)

    def raw_steps():
        p, o = param_leaves, opt_leaves
        for i, (features, labels) in enumerate(step_batches):
            p, o, loss = steps.step(p, o, features, labels, step_ids[i], seed)
        jax.block_until_ready((p, loss))

    def raw_scan():
        jax.block_until_ready(steps.chunk(param_leaves, opt_leaves, Xs, ys, step_ids, seed))

    figures["jit_step" + suffix] = _figure("jitted step alone, pre-made batches" + note,
                                           _time_blocks(raw_steps, repeats), per=steps_per_epoch)
    if kind == "tiny" and not sync_dispatch:
        # The same arguments and results as the step, and no math: what one jax.jit call costs here.
        floor = jax.jit(lambda p, o, features, labels, step, seed: ([x + 1 for x in p], o, features[0, 0]))

        def floor_calls():
            p, o = param_leaves, opt_leaves
            for i, (features, labels) in enumerate(step_batches):
                p, o, loss = floor(p, o, features, labels, step_ids[i], seed)
            jax.block_until_ready((p, loss))

        figures["jit_floor"] = _figure("jax.jit call floor: the step's arguments and results, no math",
                                       _time_blocks(floor_calls, repeats), per=steps_per_epoch)
        figures["scan_epoch"] = _figure("lax.scan epoch alone, pre-stacked batches", _time_blocks(raw_scan, repeats),
                                        per=steps_per_epoch)

        # The idiomatic Equinox step: filter_jit over the whole model, as its tutorials write it.
        @eqx.filter_jit
        def filter_step(model, opt_state, features, labels):
            loss, grads = eqx.filter_value_and_grad(lambda m: cross_entropy(m(features), labels))(model)
            updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
            return eqx.apply_updates(model, updates), opt_state, loss

        def filter_steps():
            m, o = model, opt_state
            for features, labels in step_batches:
                m, o, loss = filter_step(m, o, features, labels)
            jax.block_until_ready(loss)

        figures["filter_jit"] = _figure("eqx.filter_jit step, pre-made batches", _time_blocks(filter_steps, repeats),
                                        per=steps_per_epoch)

    if kind == "tiny" and not sync_dispatch:
        figures["rerun_cell"] = _rerun_cell(repeats)
    result = {"info": _jax_info(), "steps_per_epoch": steps_per_epoch, "figures": figures}
    if kind == "wide":
        result["matmul"] = _jax_matmul_rate(cfg["matmul_size"], cfg["matmul_block_seconds"], repeats)
    return result


def _rerun_cell(repeats: int) -> dict:
    """The book's 3-epoch training cell run again, as a notebook re-runs it: new loader, model, optimizer."""
    import jax
    import optax

    from .data import DataLoader, ToyDataset
    from .datasets import toy_data
    from .nn import NeuralNetwork
    from .train import fit

    X_train, y_train, _, _ = toy_data()

    def cell():
        lines: list[str] = []  # the book prints its six log lines; collected here to keep stdout for the JSON
        loader = DataLoader(ToyDataset(X_train, y_train), batch_size=2, shuffle=True, seed=123, drop_last=True)
        model = NeuralNetwork(num_inputs=2, num_outputs=2, key=jax.random.key(123))
        model, _ = fit(model, optax.sgd(learning_rate=0.5), loader, num_epochs=3, log=lines.append)
        jax.block_until_ready(model)

    start = time.perf_counter()
    cell()
    first = time.perf_counter() - start
    samples = _time_blocks(cell, repeats)
    return {"label": "re-run of the book's 3-epoch fit cell (new model, new optax.sgd)", "seconds": statistics.median(samples),
            "samples": samples, "first_seconds": first}


def _jax_matmul_rate(n: int, block_seconds: float, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    seconds = _matmul_blocks(lambda: matmul(a, b), jax.block_until_ready, block_seconds, repeats)
    return {"size": n, "seconds": seconds, "gflops": 2 * n**3 / seconds / 1e9}


def _jax_matmul(cfg: dict) -> dict:
    """Exercise A.4 and square matmuls on every platform JAX has here (cpu, and gpu if any)."""
    import jax
    import jax.numpy as jnp

    _jax_setup()
    matmul = jax.jit(jnp.matmul)
    platforms = ["cpu"] + [p for p in ("gpu",) if _jax_has(p)]
    results: dict = {}
    for platform_name in platforms:
        device = jax.devices(platform_name)[0]
        rows = []
        for shape in _matmul_shapes(cfg["sizes"]):
            (m, k), (_, n) = shape
            a = jax.device_put(np.random.default_rng(0).standard_normal((m, k), dtype=np.float32), device)
            b = jax.device_put(np.random.default_rng(1).standard_normal((k, n), dtype=np.float32), device)
            seconds = _matmul_blocks(lambda: matmul(a, b), jax.block_until_ready, cfg["block_seconds"], cfg["repeats"])
            rows.append({"shape": shape, "seconds": seconds, "gflops": 2 * m * k * n / seconds / 1e9})
        results[platform_name] = {"device": device.device_kind, "rows": rows}
    return {"info": _jax_info(), "platforms": results}


def _jax_has(platform_name: str) -> bool:
    import jax

    try:
        return len(jax.devices(platform_name)) > 0
    except RuntimeError:
        return False


def _matmul_shapes(sizes: list[int]) -> list[list[list[int]]]:
    return [[[100, 200], [200, 300]]] + [[[n, n], [n, n]] for n in sizes]


def _jax_compile(cfg: dict) -> dict:
    """Time fit() to its first finished step in this fresh process, with the given cache folder."""
    import jax
    import optax

    from .data import ArrayDataset, DataLoader
    from .nn import NeuralNetwork
    from .train import enable_compilation_cache, fit

    enable_compilation_cache(cfg["cache_dir"])
    durations: dict[str, float] = {}
    hits: list[str] = []

    def on_duration(event: str, seconds: float, **kwargs) -> None:
        durations[event] = durations.get(event, 0.0) + seconds

    def on_event(event: str, **kwargs) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            hits.append(event)

    X, y = _toy_like_data(2)
    loader = DataLoader(ArrayDataset(X, y), batch_size=2)
    model = NeuralNetwork(2, 2, key=jax.random.key(123))
    jax.block_until_ready(model)
    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)
    start = time.perf_counter()
    model, history = fit(model, optax.sgd(0.5), loader, num_epochs=1, log=None, fused=False)
    jax.block_until_ready(model)
    total = time.perf_counter() - start
    return {
        "info": _jax_info(),
        "first_step_seconds": total,
        "trace_seconds": durations.get("/jax/core/compile/jaxpr_trace_duration", 0.0),
        "lower_seconds": durations.get("/jax/core/compile/jaxpr_to_mlir_module_duration", 0.0),
        "compile_seconds": durations.get("/jax/core/compile/backend_compile_duration", 0.0),
        "cache_hits": len(hits),
    }


def _loader(cfg: dict) -> dict:
    from .bench_loader import bench_loader

    return bench_loader(quick=cfg["quick"])


# --- PyTorch workers ---------------------------------------------------------------------------


def _import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _torch_info(torch, device) -> dict:
    info = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["device_kind"] = torch.cuda.get_device_name(device)
    return info


def _torch_device(torch):
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _torch_sync(torch, device):
    if device.type == "cuda":
        return lambda *_: torch.cuda.synchronize(device)
    return lambda *_: None


def _torch_network(torch, num_inputs: int, num_outputs: int, hidden: tuple[int, ...]):
    """The book's `NeuralNetwork` (listing A.4), with configurable hidden sizes."""

    class NeuralNetwork(torch.nn.Module):
        def __init__(self, num_inputs, num_outputs):
            super().__init__()
            sizes = (num_inputs, *hidden)
            layers = []
            for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
                layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
            layers.append(torch.nn.Linear(sizes[-1], num_outputs))
            self.layers = torch.nn.Sequential(*layers)

        def forward(self, x):
            return self.layers(x)

    return NeuralNetwork(num_inputs, num_outputs)


def _torch_training(cfg: dict, kind: str) -> dict:
    torch = _import_torch()
    if torch is None:
        return {"missing": "torch"}
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    device = _torch_device(torch)
    sync = _torch_sync(torch, device)
    repeats = cfg["repeats"]
    if kind == "tiny":
        X, y = _toy_like_data(cfg["rows"])
        inputs, outputs, hidden, lr = 2, 2, (30, 20), 0.5
    else:
        X, y = _wide_data(cfg["rows"], cfg["inputs"], cfg["outputs"])
        inputs, outputs, hidden, lr = cfg["inputs"], cfg["outputs"], tuple(cfg["hidden"]), 0.1
    batch_size = cfg["batch_size"]
    batches = _epoch_order(len(X), batch_size)
    X_cpu, y_cpu = torch.from_numpy(X), torch.from_numpy(y)
    on_device = [(X_cpu[i].to(device), y_cpu[i].to(device)) for i in (torch.from_numpy(b) for b in batches)]

    torch.manual_seed(123)
    model = _torch_network(torch, inputs, outputs, hidden).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)

    def steps(net):
        def run():
            for features, labels in on_device:
                logits = net(features)
                loss = F.cross_entropy(logits, labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            sync()

        return run

    def book_loop(loader):
        def run():
            losses = []
            model.train()
            for features, labels in loader:
                features, labels = features.to(device), labels.to(device)
                logits = model(features)
                loss = F.cross_entropy(logits, labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())  # what the book's log line reads every step (and fit's history)
            sync()

        return run

    tensor_loader = DataLoader(TensorDataset(X_cpu, y_cpu), batch_size=batch_size, shuffle=True, drop_last=True)
    book_dataset = _book_toy_dataset(torch.utils.data.Dataset)(X_cpu, y_cpu)
    book_loader = DataLoader(book_dataset, batch_size=batch_size, shuffle=True, drop_last=True)

    n = len(batches)
    figures = {
        "eager_step": _figure("PyTorch eager step (zero_grad/backward/step), pre-made batches",
                              _time_blocks(steps(model), repeats), per=n),
        "eager_loop": _figure("PyTorch eager, the book's loop (TensorDataset, DataLoader, loss.item())",
                              _time_blocks(book_loop(tensor_loader), repeats), per=n),
    }
    if kind == "tiny":
        figures["eager_loop_book_class"] = _figure(
            "PyTorch eager, the book's loop over the book's ToyDataset class", _time_blocks(book_loop(book_loader), repeats),
            per=n)
    if cfg.get("torch_compile"):
        try:
            compiled = torch.compile(model)
            figures["compiled_step"] = _figure("torch.compile(model) step, pre-made batches",
                                               _time_blocks(steps(compiled), repeats), per=n)
        except Exception as error:  # inductor needs a C++ compiler; report why instead of failing
            figures["compiled_step"] = {"label": "torch.compile(model) step", "error": str(error).splitlines()[0][:200]}
    result = {"info": _torch_info(torch, device), "steps_per_epoch": n, "figures": figures}
    if kind == "wide":
        size = cfg["matmul_size"]
        a = torch.randn(size, size, device=device)
        b = torch.randn(size, size, device=device)
        seconds = _matmul_blocks(lambda: a @ b, sync, cfg["matmul_block_seconds"], repeats)
        result["matmul"] = {"size": size, "seconds": seconds, "gflops": 2 * size**3 / seconds / 1e9}
    return result


def _torch_matmul(cfg: dict) -> dict:
    torch = _import_torch()
    if torch is None:
        return {"missing": "torch"}
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    results = {}
    for device in devices:
        sync = _torch_sync(torch, device)
        rows = []
        for shape in _matmul_shapes(cfg["sizes"]):
            (m, k), (_, n) = shape
            a = torch.from_numpy(np.random.default_rng(0).standard_normal((m, k), dtype=np.float32)).to(device)
            b = torch.from_numpy(np.random.default_rng(1).standard_normal((k, n), dtype=np.float32)).to(device)
            seconds = _matmul_blocks(lambda: a @ b, sync, cfg["block_seconds"], cfg["repeats"])
            rows.append({"shape": shape, "seconds": seconds, "gflops": 2 * m * k * n / seconds / 1e9})
        name = "gpu" if device.type == "cuda" else "cpu"
        kind = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        results[name] = {"device": kind, "rows": rows}
    return {"info": _torch_info(torch, _torch_device(torch)), "platforms": results}


_WORKERS = {
    "jax-tiny": lambda cfg: _jax_training(cfg, "tiny"),
    "jax-tiny-sync": lambda cfg: _jax_training(cfg, "tiny", sync_dispatch=True),
    "jax-wide": lambda cfg: _jax_training(cfg, "wide"),
    "jax-matmul": _jax_matmul,
    "jax-compile": _jax_compile,
    "torch-tiny": lambda cfg: _torch_training(cfg, "tiny"),
    "torch-wide": lambda cfg: _torch_training(cfg, "wide"),
    "torch-matmul": _torch_matmul,
    "loader": _loader,
}


def _worker_main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in _WORKERS:
        print(f"fundamentals bench: error: --worker takes one of {', '.join(_WORKERS)} and a JSON config "
              "(it is how the benchmark starts its own processes)", file=sys.stderr)
        return 2
    print(json.dumps(_WORKERS[argv[0]](json.loads(argv[1]))))
    return 0


def _run_worker(name: str, config: dict) -> dict:
    """Run one worker in a fresh interpreter and return the JSON it prints."""
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    completed = subprocess.run(
        [sys.executable, "-m", "fundamentals.bench", "--worker", name, json.dumps(config)],
        capture_output=True,
        text=True,
        env=env,
    )
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        detail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"the {name} benchmark process failed (exit {completed.returncode}): {detail}")
    return json.loads(lines[-1])


# --- the sections ------------------------------------------------------------------------------


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _training_section(kind: str, cfg: dict) -> dict:
    _progress(f"{kind}: JAX")
    ours = _run_worker(f"jax-{kind}", cfg)
    _progress(f"{kind}: PyTorch")
    theirs = _run_worker(f"torch-{kind}", cfg)
    section = {"config": cfg, "jax": ours, "torch": None if "missing" in theirs else theirs}
    if kind == "tiny":
        # On a CPU each jitted call is handed to a worker thread; waking it costs more than this step's math.
        _progress(f"{kind}: JAX, synchronous CPU dispatch")
        section["jax_sync"] = _run_worker("jax-tiny-sync", cfg)
    figures = {}
    for framework in ("jax", "jax_sync", "torch"):
        if section.get(framework) is not None:
            for name, figure in section[framework].pop("figures").items():
                figures[name] = {**figure, "framework": framework}
    baseline = figures.get("eager_step", {}).get("seconds_per_step")
    for figure in figures.values():
        if "seconds_per_step" in figure:
            figure["speedup_vs_torch_eager"] = None if baseline is None else baseline / figure["seconds_per_step"]
    if "fit_book_class" in figures:
        # The same dataset class through each framework's loop: what a reader of the book gains.
        theirs = figures.get("eager_loop_book_class", {}).get("seconds_per_step")
        figures["fit_book_class"]["speedup_vs_torch_book_loop"] = (
            None if theirs is None else theirs / figures["fit_book_class"]["seconds_per_step"])
    if kind == "wide":
        parameters = _count_parameters([cfg["inputs"], *cfg["hidden"], cfg["outputs"]])
        flops = 6 * parameters * cfg["batch_size"]
        section.update(parameters=parameters, flops_per_step=flops)
        for name, figure in figures.items():
            if "seconds_per_step" not in figure:
                continue
            worker = section[figure["framework"]]
            figure["samples_per_second"] = cfg["batch_size"] / figure["seconds_per_step"]
            figure["gflops"] = flops / figure["seconds_per_step"] / 1e9
            figure["percent_of_matmul_rate"] = 100 * figure["gflops"] / worker["matmul"]["gflops"]
            peak = _gpu_peak_tflops(_device_kind(worker["info"]))
            if peak:
                figure["percent_of_fp32_peak"] = 100 * figure["gflops"] / (peak * 1e3)
    section["figures"] = figures
    return section


def _device_kind(info: dict) -> str | None:
    """The GPU model a worker ran on (JAX's `device_kind`, torch's device name), or None on a CPU."""
    if "devices" in info:
        device = info["devices"][0]
        return device["device_kind"] if device["platform"] == "gpu" else None
    return info.get("device_kind")


def _gpu_peak_tflops(device_kind: str | None) -> float | None:
    for name, peak in _GPU_FP32_PEAK_TFLOPS if device_kind else ():
        if name.lower() in device_kind.lower():
            return peak
    return None


def _matmul_section(cfg: dict) -> dict:
    _progress("matmul: JAX")
    ours = _run_worker("jax-matmul", cfg)
    _progress("matmul: PyTorch")
    theirs = _run_worker("torch-matmul", cfg)
    section = {"config": cfg, "jax": ours, "torch": None if "missing" in theirs else theirs, "gpu_wins_from": {}}
    for name, result in (("jax", ours), ("torch", section["torch"])):
        if result is None or "gpu" not in result["platforms"]:
            section["gpu_wins_from"][name] = None
            continue
        # Over the square sizes (rows[0] is A.4's product): the smallest from which the GPU always wins.
        cpu, gpu = result["platforms"]["cpu"]["rows"][1:], result["platforms"]["gpu"]["rows"][1:]
        wins_from = None
        for row_cpu, row_gpu in reversed(list(zip(cpu, gpu))):
            if row_gpu["seconds"] >= row_cpu["seconds"]:
                break
            wins_from = row_gpu["shape"]
        section["gpu_wins_from"][name] = wins_from
    section["has_gpu"] = "gpu" in ours["platforms"]
    return section


def _compile_section(cfg: dict) -> dict:
    runs: dict[str, list[dict]] = {"cold": [], "warm": []}
    for pair in range(cfg["pairs"]):
        with tempfile.TemporaryDirectory() as cache_dir:
            for which in ("cold", "warm"):
                _progress(f"compile: {which} cache, fresh process ({pair + 1}/{cfg['pairs']})")
                start = time.perf_counter()
                result = _run_worker("jax-compile", {"cache_dir": cache_dir})
                result["process_seconds"] = time.perf_counter() - start
                runs[which].append(result)
    section: dict = {"config": cfg, "runs": runs}
    for which, results in runs.items():
        section[which] = {
            key: statistics.median(r[key] for r in results)
            for key in ("process_seconds", "trace_seconds", "lower_seconds", "compile_seconds", "first_step_seconds")
        }
        section[which]["cache_hits"] = min(r["cache_hits"] for r in results)
    return section


def _machine(results: dict) -> dict:
    from importlib import metadata

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for package in ("jax", "jaxlib", "equinox", "optax", "numpy", "torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    machine = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }
    for section in results.values():
        if isinstance(section, dict) and isinstance(section.get("jax"), dict) and "info" in section["jax"]:
            machine["jax_devices"] = section["jax"]["info"]["devices"]
        if isinstance(section, dict) and isinstance(section.get("torch"), dict) and "info" in section["torch"]:
            machine["torch_device"] = section["torch"]["info"]
    if "compile" in results and "jax_devices" not in machine:
        machine["jax_devices"] = results["compile"]["runs"]["cold"][0]["info"]["devices"]
    ran = [section["torch"] is not None for section in results.values() if isinstance(section, dict) and "torch" in section]
    if "loader" in results:
        ran.append(results["loader"]["torch_version"] is not None)
    # None: no benchmark tried to import torch (compile only).
    machine["torch_available"] = all(ran) if ran else None
    return machine


def _targets(results: dict) -> list[dict]:
    """The project's performance goals (set for a 2-core CPU), each with the figure it was checked against."""
    targets = []

    def add(name: str, value, goal: float, unit: str, higher_is_better: bool = True):
        if value is None:
            return
        met = value >= goal if higher_is_better else value <= goal
        targets.append({"target": name, "measured": value, "goal": goal, "unit": unit, "met": met})

    tiny = results.get("tiny")
    if tiny and tiny["torch"]:
        figures = tiny["figures"]
        add("tiny: fit(fused=True) vs PyTorch eager step", figures["fit_fused"]["speedup_vs_torch_eager"], 60, "×")
        add("tiny: fit(fused=False) vs PyTorch eager step", figures["fit_per_step"]["speedup_vs_torch_eager"], 10, "×")
        add("tiny: fit over the book's ToyDataset class vs the book's PyTorch loop over it",
            figures["fit_book_class"].get("speedup_vs_torch_book_loop"), 10, "×")
    if tiny and "rerun_cell" in tiny["figures"]:
        add("tiny: re-run of the book's 3-epoch fit cell", tiny["figures"]["rerun_cell"]["seconds"], 0.1, "s", False)
    wide = results.get("wide")
    if wide:
        figures = wide["figures"]
        if wide["torch"]:
            add("wide: fit vs PyTorch eager step", figures["fit_per_step"]["speedup_vs_torch_eager"], 1.4, "×")
        add("wide: fit, % of JAX's measured matmul rate", figures["fit_per_step"]["percent_of_matmul_rate"], 80, "%")
    loader = results.get("loader")
    if loader and loader.get("speedup_vs_torch") is not None:
        add("loader: epoch vs torch.utils.data.DataLoader", loader["speedup_vs_torch"], 10, "×")
    compiled = results.get("compile")
    if compiled:
        add("compile: warm-cache XLA compile (cache read)", compiled["warm"]["compile_seconds"], 0.05, "s", False)
    return targets


def run_benchmarks(sections, *, quick: bool = False, torch_compile: bool = False) -> dict:
    """Run the named sections (each in fresh processes) and return every figure, with the machine.

    **Arguments:**

    - `sections`: some of `"tiny"`, `"wide"`, `"matmul"`, `"loader"`, `"compile"`.
    - `quick`: tiny sizes and three repeats, for tests and CI (seconds, not minutes).
    - `torch_compile`: also time a `torch.compile`d PyTorch model (slow to compile).

    **Returns:**

    A dict with one entry per section, `"machine"` (CPU model, cores, versions, devices),
    `"targets"` (the performance goals against the measured figures) and `"seconds"` (wall time).
    """
    config = _CONFIG["quick" if quick else "full"]
    repeats = config["repeats"]
    start = time.perf_counter()
    results: dict = {"quick": quick, "other_processes_cores": {}}
    for section in sections:
        before = _cpu_snapshot()
        if section in ("tiny", "wide"):
            cfg = {**config[section], "repeats": repeats, "torch_compile": torch_compile}
            results[section] = _training_section(section, cfg)
        elif section == "matmul":
            results[section] = _matmul_section({**config["matmul"], "repeats": repeats})
        elif section == "loader":
            _progress("loader: fundamentals.DataLoader and torch.utils.data.DataLoader")
            results[section] = _run_worker("loader", {"quick": quick})
        elif section == "compile":
            results[section] = _compile_section(config["compile"])
        else:
            raise BenchError(f"unknown benchmark {section!r}; choose from {', '.join(SECTIONS)}")
        # Other processes on the machine skew timings (PyTorch's spinning OpenMP threads most): keep the evidence.
        results["other_processes_cores"][section] = _cores_used_by_others(before, _cpu_snapshot())
    results["machine"] = _machine(results)
    results["targets"] = _targets(results)
    results["seconds"] = time.perf_counter() - start
    return results


def _cpu_snapshot() -> tuple[float, float, float] | None:
    """(CPU seconds busy on the whole machine, CPU seconds of this process and its finished workers, wall time)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # without guest time, counted in user already
    own = os.times()
    return busy, own.user + own.system + own.children_user + own.children_system, time.perf_counter()


def _cores_used_by_others(before, after) -> float | None:
    """How many cores other processes kept busy, on average, between two snapshots."""
    if before is None or after is None or after[2] <= before[2]:
        return None
    others = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, others / (after[2] - before[2]))


# --- the report --------------------------------------------------------------------------------


def _number(value, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _ratio(value) -> str:
    return "n/a" if value is None else (f"{value:.2f}×" if value < 10 else f"{value:.0f}×")


def _order(figures: dict) -> list[str]:
    preferred = ["eager_step", "eager_loop", "eager_loop_book_class", "compiled_step", "filter_jit", "fit_per_step",
                 "jit_step", "jit_floor", "fit_per_step_sync", "jit_step_sync", "fit_book_class", "fit_fused", "scan_epoch"]
    return [name for name in preferred if name in figures]


def _machine_line(results: dict) -> str:
    machine = results["machine"]
    versions = machine["versions"]
    devices = machine.get("jax_devices")
    device = f"{devices[0]['platform']}: {devices[0]['device_kind']}" if devices else "devices not queried"
    if machine.get("torch_available") is False or not versions.get("torch"):
        torch = "PyTorch not installed (JAX figures only)"
    else:
        torch = f"PyTorch {versions['torch']}"
    if machine.get("torch_device"):
        info = machine["torch_device"]
        torch += f" ({info.get('device_kind', info['device'])}, {info['threads']} threads)"
    return (
        f"Machine: {machine['cpu']}, {machine['usable_cores']} cores; JAX {versions['jax']} ({device}), "
        f"Equinox {versions['equinox']}, Optax {versions['optax']}; {torch}; Python {machine['python']}."
    )


def _load_line(results: dict) -> str:
    others = results.get("other_processes_cores", {})
    if not others or None in others.values():
        return ""
    listed = ", ".join(f"{name} {value:.2f}" for name, value in others.items())
    return (f"Cores kept busy by other processes during each benchmark (of {results['machine']['usable_cores']}): "
            f"{listed}. Above about 0.1 the timings are skewed, PyTorch's most (its OpenMP threads spin).")


def _training_table(section: dict, kind: str) -> list[str]:
    figures = section["figures"]
    cfg = section["config"]
    lines = []
    if kind == "tiny":
        lines += [
            f"## tiny: the book's network 2→30→20→2, batch {cfg['batch_size']}, SGD lr 0.5",
            "",
            f"{cfg['rows']:,} rows of two-blob toy-like data, {section['jax']['steps_per_epoch']:,} steps an epoch.",
            "",
            "| variant | µs / step | × PyTorch eager step |",
            "|---|---:|---:|",
        ]
        for name in _order(figures):
            figure = figures[name]
            if "error" in figure:
                lines.append(f"| {figure['label']} | failed: {figure['error']} | |")
                continue
            lines.append(f"| {figure['label']} | {_number(figure['seconds_per_step'] * 1e6)} | "
                         f"{_ratio(figure['speedup_vs_torch_eager'])} |")
    else:
        hidden = ", ".join(str(h) for h in cfg["hidden"])
        lines += [
            f"## wide: NeuralNetwork({cfg['inputs']}, {cfg['outputs']}, hidden=({hidden})), batch {cfg['batch_size']}, SGD lr 0.1",
            "",
            f"{section['parameters']:,} parameters; FLOPs a step = 6 · parameters · batch = "
            f"{section['flops_per_step'] / 1e9:.2f} GFLOP (2 forward, 4 backward, per parameter and example; "
            "a slight over-count, as the first layer's input gradient is never computed).",
            "",
            "| variant | ms / step | samples / s | GFLOP/s | % of matmul rate | × PyTorch eager step |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name in _order(figures):
            figure = figures[name]
            if "error" in figure:
                lines.append(f"| {figure['label']} | failed: {figure['error']} | | | | |")
                continue
            peak = figure.get("percent_of_fp32_peak")
            percent = _number(figure["percent_of_matmul_rate"], 0) + (f" ({peak:.0f}% of fp32 peak)" if peak else "")
            lines.append(
                f"| {figure['label']} | {figure['seconds_per_step'] * 1e3:.2f} | {_number(figure['samples_per_second'])} | "
                f"{_number(figure['gflops'])} | {percent} | {_ratio(figure['speedup_vs_torch_eager'])} |"
            )
        rates = [f"JAX {section['jax']['matmul']['gflops']:.0f} GFLOP/s"]
        if section["torch"]:
            rates.append(f"PyTorch {section['torch']['matmul']['gflops']:.0f} GFLOP/s")
        size = section["jax"]["matmul"]["size"]
        lines += ["", f"Matmul rate ({size}×{size} float32, measured in each framework's process): {', '.join(rates)}; "
                  "each variant's percentage is of its own framework's rate."]
    fused, per_step = figures["fit_fused"], figures["fit_per_step"]
    if kind == "tiny":
        us = {name: figures[name]["seconds_per_step"] * 1e6 for name in ("fit_per_step", "jit_step", "jit_floor",
                                                                         "fit_fused", "scan_epoch")}
        lines += [
            "",
            f"Where a step's time goes. fit(fused=False), {us['fit_per_step']:.1f} µs: calling a jitted function with "
            f"these arguments and results {us['jit_floor']:.1f}, the step's math and its execution "
            f"{us['jit_step'] - us['jit_floor']:.1f}, fit's loop around it (DataLoader batches, fetching losses) "
            f"{us['fit_per_step'] - us['jit_step']:.1f}. fit(fused=True), {us['fit_fused']:.1f} µs: the scan "
            f"{us['scan_epoch']:.1f}, host work (batch order, gathers, loss reports) {us['fit_fused'] - us['scan_epoch']:.1f}.",
        ]
        if "fit_per_step_sync" in figures:
            sync_fit, sync_step = (figures[n]["seconds_per_step"] * 1e6 for n in ("fit_per_step_sync", "jit_step_sync"))
            lines.append(
                f"With `jax.config.update(\"jax_cpu_enable_async_dispatch\", False)` before JAX starts, each call runs in "
                f"the calling thread: fit(fused=False) {sync_fit:.1f} µs, the step alone {sync_step:.1f} µs; the "
                f"difference, {us['fit_per_step'] - sync_fit:.1f} µs a step, is handing each call to XLA's worker thread "
                "and waking it."
            )
    if "fit_book_class" in figures:
        book = figures["fit_book_class"]
        lines += ["", f"The book's ToyDataset class through each loop: fit {book['seconds_per_step'] * 1e6:.1f} µs a step, "
                  f"{_ratio(book.get('speedup_vs_torch_book_loop'))} the book's PyTorch loop over the same class."]
    if "rerun_cell" in figures:
        cell = figures["rerun_cell"]
        lines += ["", f"The book's 3-epoch training cell (new model, new optax.sgd(0.5), 6 steps): "
                  f"{cell['first_seconds'] * 1e3:.0f} ms the first time in a process (compiling), "
                  f"{cell['seconds'] * 1e3:.1f} ms when re-run (the compiled program is reused)."]
    lines += [
        "",
        "fit() rows: the median epoch after the first, over the steps an epoch; what a fit() call takes beyond "
        f"its epochs (trace, compile, set-up) is {fused['fixed_seconds'] * 1e3:.0f} ms fused, "
        f"{per_step['fixed_seconds'] * 1e3:.0f} ms per-step.",
    ]
    if section["torch"] is None:
        lines.append("PyTorch is not installed: JAX figures only.")
    return lines


def _matmul_table(section: dict) -> list[str]:
    ours, theirs = section["jax"]["platforms"], (section["torch"] or {}).get("platforms", {})
    columns = [("JAX CPU", ours.get("cpu")), ("PyTorch CPU", theirs.get("cpu"))]
    if section["has_gpu"] or "gpu" in theirs:
        columns += [(f"JAX GPU ({ours['gpu']['device']})" if "gpu" in ours else "JAX GPU", ours.get("gpu")),
                    ("PyTorch GPU", theirs.get("gpu"))]
    lines = [
        "## matmul: exercise A.4, float32, ms (GFLOP/s)",
        "",
        "| shape | " + " | ".join(name for name, _ in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    shapes = [row["shape"] for row in ours["cpu"]["rows"]]
    for i, shape in enumerate(shapes):
        (m, k), (_, n) = shape
        cells = []
        for _, column in columns:
            if column is None:
                cells.append("n/a")
            else:
                row = column["rows"][i]
                cells.append(f"{row['seconds'] * 1e3:.3g} ({row['gflops']:.0f})")
        lines.append(f"| ({m}×{k}) @ ({k}×{n}) | " + " | ".join(cells) + " |")
    lines.append("")
    if not section["has_gpu"] and "gpu" not in theirs:
        lines.append("No GPU on this machine: no CPU/GPU crossover to report.")
    else:
        for name, shape in section["gpu_wins_from"].items():
            framework = "JAX" if name == "jax" else "PyTorch"
            result = section[name]
            if result is None or "gpu" not in result["platforms"]:
                continue
            where = "never, up to the largest size" if shape is None else f"from {shape[0][0]}×{shape[0][1]} on"
            gpu = result["platforms"]["gpu"]
            peak = _gpu_peak_tflops(gpu["device"])
            best = max(row["gflops"] for row in gpu["rows"])
            of_peak = f" ({100 * best / (peak * 1e3):.0f}% of its {peak:g} TFLOP/s float32 peak)" if peak else ""
            lines.append(f"{framework}: the GPU beats the CPU {where}; its best rate is {best:,.0f} GFLOP/s{of_peak}.")
    return lines


def _compile_table(section: dict) -> list[str]:
    lines = [
        "## compile: fit() to its first finished step, book's network, fresh process each",
        "",
        f"Pairs of processes ({section['config']['pairs']}, medians shown) sharing a new temporary "
        "persistent-cache folder: the first finds it empty (cold), the second reads what the first wrote (warm). "
        "First finished step: from calling fit() to its first step's result. Whole process: interpreter start, "
        "imports, fit and exit.",
        "",
        "| persistent cache | trace (s) | lower (s) | XLA compile or cache read (s) | first finished step (s) | whole process (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for which in ("cold", "warm"):
        r = section[which]
        lines.append(f"| {which} | {r['trace_seconds']:.3f} | {r['lower_seconds']:.3f} | {r['compile_seconds']:.3f} | "
                     f"{r['first_step_seconds']:.3f} | {r['process_seconds']:.2f} |")
    return lines


def format_report(results: dict) -> str:
    """Every section of `run_benchmarks`' result as Markdown."""
    from .bench_loader import format_table

    lines = ["# fundamentals bench" + (" (--quick: tiny sizes, not for comparison)" if results.get("quick") else ""), "",
             _machine_line(results),
             "Each framework runs in its own process; figures are medians of timed blocks after a warm-up.",
             _load_line(results), ""]
    for name in SECTIONS:
        if name not in results:
            continue
        if name in ("tiny", "wide"):
            lines += _training_table(results[name], name)
        elif name == "matmul":
            lines += _matmul_table(results[name])
        elif name == "loader":
            lines += ["## loader", "", format_table(results[name])]
        elif name == "compile":
            lines += _compile_table(results[name])
        lines.append("")
    if results["targets"]:
        lines += ["## performance goals (set for a 2-core CPU)", "", "| target | goal | measured | met |", "|---|---:|---:|---|"]
        for t in results["targets"]:
            sign = "≥" if t["unit"] != "s" else "≤"
            value = f"{t['measured']:.3f} s" if t["unit"] == "s" else f"{t['measured']:.1f}{t['unit']}"
            lines.append(f"| {t['target']} | {sign} {t['goal']}{' ' if t['unit'] == 's' else ''}{t['unit']} | "
                         f"{value} | {'yes' if t['met'] else 'no'} |")
        lines.append("")
    lines.append(f"Total benchmark time: {results['seconds']:.0f} s.")
    return "\n".join(lines)


def _plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for name, unit, scale in (("tiny", "µs", 1e6), ("wide", "ms", 1e3)):
        if name in results:
            figures = results[name]["figures"]
            bars = [(figures[k]["label"], figures[k]["seconds_per_step"] * scale) for k in _order(figures)
                    if "seconds_per_step" in figures[k]]
            panels.append((f"{name}: {unit} per step, shorter is faster (log scale)", bars))
    if not panels and "matmul" in results:
        rows = results["matmul"]["jax"]["platforms"]["cpu"]["rows"]
        panels.append(("matmul, JAX CPU: ms (log scale)",
                       [(f"{r['shape'][0][0]}×{r['shape'][0][1]}·{r['shape'][1][1]}", r["seconds"] * 1e3) for r in rows]))
    if not panels:
        raise BenchError("--plot needs the tiny, wide or matmul benchmark")
    figure, axes = plt.subplots(len(panels), 1, figsize=(9, 1.2 + 0.45 * sum(len(b) for _, b in panels) + 0.6 * len(panels)),
                                squeeze=False)
    for axis, (title, bars) in zip(axes[:, 0], panels):
        labels, values = zip(*bars)
        positions = np.arange(len(bars))
        axis.barh(positions, values, color=["#d95f02" if "PyTorch" in l or "torch" in l else "#1b9e77" for l in labels])
        axis.set_yticks(positions, labels, fontsize=8)
        axis.invert_yaxis()
        axis.set_xscale("log")
        # Bars on a log axis start at its left edge: fix the edges so lengths compare fairly.
        axis.set_xlim(min(values) / 3, max(values) * 4)
        axis.set_title(title, fontsize=10)
        for position, value in zip(positions, values):
            axis.text(value, position, f" {_number(value, 2)}", va="center", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()  # rendered in memory, then written atomically like every other output
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


# --- the command -------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fundamentals bench",
        description="Benchmark jit-compiled JAX training against PyTorch, each framework in its own process.",
    )
    parser.add_argument("benchmark", nargs="?", default="all", choices=(*SECTIONS, "all"),
                        help="which benchmark (default: all)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (tests, CI)")
    parser.add_argument("--json", metavar="FILE", help="write every figure and the machine to FILE")
    parser.add_argument("--plot", metavar="FILE.png", help="plot per-step time by variant to a PNG")
    parser.add_argument("--torch-compile", action="store_true", help="also time torch.compile (slow to compile)")
    return parser


def _check_output_path(option: str, path: str, suffix: str | None = None) -> None:
    if suffix and not path.lower().endswith(suffix):
        raise BenchError(f"{option} must name a {suffix} file, got {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise BenchError(f"{option} folder does not exist: {folder}")
    try:  # a folder, a device or FIFO, or a folder we cannot write to: refused before the benchmark runs
        check_output_path(path)
    except (OSError, ValueError) as error:
        raise BenchError(f"{option}: {error}") from None


def main(argv: list[str] | None = None) -> int:
    """`fundamentals bench [tiny|wide|matmul|loader|compile|all] [--quick] [--json F] [--plot F.png] [--torch-compile]`.

    Prints a Markdown table on stdout and progress on stderr. **Returns:** the exit code
    (0, or 2 after a one-line error for bad arguments or a benchmark that could not run).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        return _worker_main(argv[1:])
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit:  # argparse's one-line error or --help, as a return code
        return int(exit.code or 0)
    try:
        if args.json:
            _check_output_path("--json", args.json)
        if args.plot:
            _check_output_path("--plot", args.plot, ".png")
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise BenchError("--plot needs matplotlib: pip install matplotlib") from None
        sections = SECTIONS if args.benchmark == "all" else (args.benchmark,)
        results = run_benchmarks(sections, quick=args.quick, torch_compile=args.torch_compile)
        print(format_report(results))
        if args.json:
            atomic_write_bytes(args.json, json.dumps(results, indent=1).encode("utf-8"))
            _progress(f"wrote {args.json}")
        if args.plot:
            _plot(results, args.plot)
            _progress(f"wrote {args.plot}")
    except BenchError as error:
        print(f"fundamentals bench: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
