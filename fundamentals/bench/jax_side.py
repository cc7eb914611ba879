"""The JAX side of the benchmark: the workers that time our training, matmuls and compilation.

Each function here runs in its own worker process (see `__main__.py`) and returns JSON-ready
figures. Importing JAX starts no backend: a worker may still set configuration that must come
before the first JAX computation (`jax_cpu_enable_async_dispatch`).
"""

from __future__ import annotations

import functools
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._compilation_cache import enable_compilation_cache
from ..data import ArrayDataset, DataLoader, ToyDataset
from ..datasets import toy_data
from ..nn import NeuralNetwork
from ..samplers import DistributedSampler
from ..testing import book_toy_dataset
from ..train import TrainProgram, fit
from .common import (
    EVAL_BATCH,
    EVAL_EVERY,
    epoch_order,
    figure,
    held_out_data,
    matmul_blocks,
    matmul_shapes,
    time_blocks,
    toy_like_data,
    training_problem,
)
from .records import (
    CompileRun,
    Figure,
    JaxInfo,
    MatmulPlatform,
    MatmulRate,
    MatmulResult,
    MatmulRow,
    RerunCell,
    TrainingResult,
)


def _info() -> JaxInfo:
    return {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [{"platform": d.platform, "device_kind": d.device_kind, "id": d.id} for d in jax.devices()],
    }


def _setup() -> None:
    # Full float32 matmuls on a GPU (no TF32), as PyTorch's default; no effect on a CPU.
    jax.config.update("jax_default_matmul_precision", "highest")


def _epoch_clock(dataset: Any, seed: int = 123) -> Any:
    """A shuffling sampler that notes when `fit` starts each epoch (fit calls its `set_epoch`).

    It shuffles like `DataLoader(shuffle=True)` and keeps fit on its fused path, so one `fit`
    call gives every epoch's wall time: the first holds the compilation, the rest are steady.
    """

    class EpochClock(DistributedSampler):
        starts: list[float]

        def set_epoch(self, epoch: int) -> None:
            self.starts.append(time.perf_counter())
            super().set_epoch(epoch)

    clock = EpochClock(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)
    clock.starts = []
    return clock


def training(cfg: dict[str, Any], kind: str, sync_dispatch: bool = False) -> TrainingResult:
    """Our variants of one training benchmark (`kind` is "tiny" or "wide").

    With `sync_dispatch`, only the one-call-a-step variants, with JAX's CPU client built to run
    each call in the calling thread instead of handing it to a worker thread (CPU only).
    """
    if sync_dispatch:
        # A property of the CPU client, read when it is created: set before any JAX work.
        jax.config.update("jax_cpu_enable_async_dispatch", False)
        if jax.default_backend() != "cpu":
            return {"info": _info(), "figures": {}}  # nothing to time: the option is the CPU client's
    suffix, note = ("_sync", ", synchronous CPU dispatch") if sync_dispatch else ("", "")

    _setup()
    repeats = cfg["repeats"]
    X, y, inputs, outputs, hidden, lr = training_problem(cfg, kind)
    batch_size = cfg["batch_size"]
    optimizer = optax.sgd(lr)
    batches = epoch_order(len(X), batch_size)
    steps_per_epoch = len(batches)

    def new_model() -> NeuralNetwork:
        return NeuralNetwork(inputs, outputs, hidden=hidden, key=jax.random.key(123))

    figures: dict[str, Figure] = {}
    variants: list[tuple[str, bool, Any, str]] = [
        ("fit_per_step", False, ArrayDataset, "fit(fused=False): one jax.jit call a step")
    ]
    if not sync_dispatch:
        variants.append(("fit_fused", True, ArrayDataset, "fit: ArrayDataset on the device, chunks of lax.scan"))
    if kind == "tiny" and not sync_dispatch:
        variants.append(
            (
                "fit_book_class",
                True,
                book_toy_dataset(),
                "fit: the book's ToyDataset class (per-item __getitem__), host chunks",
            )
        )
        Xv, yv = held_out_data(cfg)
        evaluation: dict[str, Any] = {
            "val_loader": DataLoader(ArrayDataset(Xv, yv), batch_size=EVAL_BATCH),
            "eval_every": EVAL_EVERY,
        }
        variants.append(
            ("fit_eval", True, ArrayDataset, f"fit: the same, with the validation loss every {EVAL_EVERY} steps")
        )
    for name, fused, dataset_class, label in variants:
        dataset = dataset_class(X, y)
        clock = _epoch_clock(dataset)
        loader = DataLoader(dataset, batch_size=batch_size, sampler=clock, drop_last=True)
        num_epochs = 1 + cfg["epochs"]["per_step" if name == "fit_per_step" else "fused"]
        model = jax.block_until_ready(new_model())
        options = evaluation if name == "fit_eval" else {}
        start = time.perf_counter()
        trained, _ = fit(model, optimizer, loader, num_epochs=num_epochs, log=None, fused=fused, **options)
        jax.block_until_ready(trained)
        end = time.perf_counter()
        epochs = np.diff([*clock.starts, end])
        steady = epochs[1:]  # the first epoch also traces and compiles
        fixed = (end - start) - num_epochs * float(np.median(steady))
        figures[name + suffix] = figure(label + note, steady.tolist(), per=steps_per_epoch, fixed_seconds=fixed)

    # The compiled step and scan alone, on batches gathered beforehand: fit() minus its loop.
    model = new_model()
    program = TrainProgram.create(model, optimizer)
    initial = program.init(model)
    step_batches = [(X[i], y[i]) for i in batches]
    Xs, ys = X[np.stack(batches)], y[np.stack(batches)]

    def raw_steps() -> None:
        state = initial
        for batch in step_batches:
            state, loss = program.step(state, batch)
        jax.block_until_ready((state, loss))

    def raw_scan() -> None:
        jax.block_until_ready(program.chunk(initial, (Xs, ys)))

    figures["jit_step" + suffix] = figure(
        "jitted step alone, pre-made batches" + note, time_blocks(raw_steps, repeats), per=steps_per_epoch
    )
    if kind == "tiny" and not sync_dispatch:
        # The same arguments and results as the step, and no math: what one jax.jit call costs here.
        floor = jax.jit(lambda state, batch: (state._replace(params=[x + 1 for x in state.params]), batch[0][0, 0]))

        def floor_calls() -> None:
            state = initial
            for batch in step_batches:
                state, loss = floor(state, batch)
            jax.block_until_ready((state, loss))

        figures["jit_floor"] = figure(
            "jax.jit call floor: the step's arguments and results, no math",
            time_blocks(floor_calls, repeats),
            per=steps_per_epoch,
        )
        figures["scan_epoch"] = figure(
            "lax.scan epoch alone, pre-stacked batches", time_blocks(raw_scan, repeats), per=steps_per_epoch
        )

    result: TrainingResult = {"info": _info(), "steps_per_epoch": steps_per_epoch, "figures": figures}
    if kind == "tiny" and not sync_dispatch:
        result["rerun_cell"] = _rerun_cell(repeats)
    if kind == "wide":
        result["matmul"] = _matmul_rate(cfg["matmul_size"], cfg["matmul_block_seconds"], repeats)
    return result


def _rerun_cell(repeats: int) -> RerunCell:
    """The book's 3-epoch training cell run again, as a notebook re-runs it: new loader, model, optimizer."""
    X_train, y_train, _, _ = toy_data()

    def cell() -> None:
        lines: list[str] = []  # the book prints its six log lines; collected here to keep stdout for the JSON
        loader = DataLoader(ToyDataset(X_train, y_train), batch_size=2, shuffle=True, seed=123, drop_last=True)
        model = NeuralNetwork(num_inputs=2, num_outputs=2, key=jax.random.key(123))
        model, _ = fit(model, optax.sgd(learning_rate=0.5), loader, num_epochs=3, log=lines.append)
        jax.block_until_ready(model)

    start = time.perf_counter()
    cell()
    first = time.perf_counter() - start
    samples = time_blocks(cell, repeats)
    return {
        "label": "re-run of the book's 3-epoch fit cell (new model, new optax.sgd)",
        "seconds": statistics.median(samples),
        "samples": samples,
        "first_seconds": first,
    }


def _matmul_rate(n: int, block_seconds: float, repeats: int) -> MatmulRate:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    seconds = matmul_blocks(lambda: matmul(a, b), jax.block_until_ready, block_seconds, repeats)
    return {"size": n, "seconds": seconds, "gflops": 2 * n**3 / seconds / 1e9}


def matmuls(cfg: dict[str, Any]) -> MatmulResult:
    """Exercise A.4 and square matmuls on every platform JAX has here (cpu, and gpu if any)."""
    _setup()
    matmul = jax.jit(jnp.matmul)
    platforms = ["cpu"] + [p for p in ("gpu",) if _has_platform(p)]
    results: dict[str, MatmulPlatform] = {}
    for platform_name in platforms:
        device = jax.devices(platform_name)[0]
        rows: list[MatmulRow] = []
        for shape in matmul_shapes(cfg["sizes"]):
            (m, k), (_, n) = shape
            a = jax.device_put(np.random.default_rng(0).standard_normal((m, k), dtype=np.float32), device)
            b = jax.device_put(np.random.default_rng(1).standard_normal((k, n), dtype=np.float32), device)
            # a and b bound now: the call is timed within this iteration, not after the loop moves on.
            call = functools.partial(matmul, a, b)
            seconds = matmul_blocks(call, jax.block_until_ready, cfg["block_seconds"], cfg["repeats"])
            rows.append({"shape": shape, "seconds": seconds, "gflops": 2 * m * k * n / seconds / 1e9})
        results[platform_name] = {"device": device.device_kind, "rows": rows}
    return {"info": _info(), "platforms": results}


def _has_platform(platform_name: str) -> bool:
    try:
        return len(jax.devices(platform_name)) > 0
    except RuntimeError:
        return False


def compile_first_step(cfg: dict[str, Any]) -> CompileRun:
    """Time fit() to its first finished step in this fresh process, with the given cache folder."""
    enable_compilation_cache(cfg["cache_dir"])
    durations: dict[str, float] = {}
    hits: list[str] = []

    def on_duration(event: str, duration_secs: float, **kwargs: str | int) -> None:
        durations[event] = durations.get(event, 0.0) + duration_secs

    def on_event(event: str, **kwargs: str | int) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            hits.append(event)

    X, y = toy_like_data(2)
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
        "info": _info(),
        "first_step_seconds": total,
        "trace_seconds": durations.get("/jax/core/compile/jaxpr_trace_duration", 0.0),
        "lower_seconds": durations.get("/jax/core/compile/jaxpr_to_mlir_module_duration", 0.0),
        "compile_seconds": durations.get("/jax/core/compile/backend_compile_duration", 0.0),
        "cache_hits": len(hits),
    }
