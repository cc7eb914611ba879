"""The PyTorch side of the benchmark: the workers that time PyTorch's training, matmuls and DataLoader.

Each function here runs in its own worker process (see `__main__.py`) and returns JSON-ready
figures, or `{"missing": "torch"}` when PyTorch cannot be imported. torch is imported inside the
functions only: the library never imports it at module level.
"""

from __future__ import annotations

import functools
import operator
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np

from ..testing import book_toy_dataset, torch_network
from .common import (
    EVAL_BATCH,
    EVAL_EVERY,
    epoch_order,
    figure,
    held_out_data,
    matmul_blocks,
    matmul_shapes,
    time_blocks,
    training_problem,
    wide_data,
)
from .records import (
    Figure,
    MatmulPlatform,
    MatmulResult,
    MatmulRow,
    Missing,
    TorchInfo,
    TorchLoaderEpoch,
    TrainingResult,
)


def _import_torch() -> Any:
    """The `torch` module, or None where it cannot be imported."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def _info(torch: Any, device: Any) -> TorchInfo:
    info: TorchInfo = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["device_kind"] = torch.cuda.get_device_name(device)
    return info


def _device(torch: Any) -> Any:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync(torch: Any, device: Any) -> Callable[..., None]:
    if device.type == "cuda":
        return lambda *_: torch.cuda.synchronize(device)
    return lambda *_: None


def training(cfg: dict[str, Any], kind: str) -> TrainingResult:
    """PyTorch's variants of one training benchmark (`kind` is "tiny" or "wide"): eager steps, the book's loop."""
    torch = _import_torch()
    if torch is None:
        return {"missing": "torch"}
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    device = _device(torch)
    sync = _sync(torch, device)
    repeats = cfg["repeats"]
    X, y, inputs, outputs, hidden, lr = training_problem(cfg, kind)
    batch_size = cfg["batch_size"]
    batches = epoch_order(len(X), batch_size)
    X_cpu, y_cpu = torch.from_numpy(X), torch.from_numpy(y)
    on_device = [(X_cpu[i].to(device), y_cpu[i].to(device)) for i in (torch.from_numpy(b) for b in batches)]

    torch.manual_seed(123)
    model = torch_network(torch, inputs, outputs, hidden).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)

    def steps(net: Any) -> Callable[[], None]:
        def run() -> None:
            for features, labels in on_device:
                logits = net(features)
                loss = F.cross_entropy(logits, labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            sync()

        return run

    def book_loop(loader: Any) -> Callable[[], None]:
        def run() -> None:
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

    def book_loop_with_evaluation(loader: Any, val_loader: Any) -> Callable[[], None]:
        """The book's chapter-5 loop (train_model_simple): the validation loss every EVAL_EVERY steps."""

        def run() -> None:
            losses: list[float] = []
            val_losses: list[float] = []
            step = 0
            model.train()
            for features, labels in loader:
                features, labels = features.to(device), labels.to(device)
                loss = F.cross_entropy(model(features), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                step += 1
                if step % EVAL_EVERY == 0:  # evaluate_model / calc_loss_loader
                    model.eval()
                    with torch.no_grad():
                        total = 0.0
                        for val_features, val_labels in val_loader:
                            val_features, val_labels = val_features.to(device), val_labels.to(device)
                            total += F.cross_entropy(model(val_features), val_labels).item()
                        val_losses.append(total / len(val_loader))
                    model.train()
            sync()

        return run

    tensor_loader = DataLoader(TensorDataset(X_cpu, y_cpu), batch_size=batch_size, shuffle=True, drop_last=True)
    book_dataset = book_toy_dataset(torch.utils.data.Dataset)(X_cpu, y_cpu)
    book_loader = DataLoader(book_dataset, batch_size=batch_size, shuffle=True, drop_last=True)

    n = len(batches)
    figures: dict[str, Figure] = {
        "eager_step": figure(
            "PyTorch eager step (zero_grad/backward/step), pre-made batches", time_blocks(steps(model), repeats), per=n
        ),
        "eager_loop": figure(
            "PyTorch eager, the book's loop (TensorDataset, DataLoader, loss.item())",
            time_blocks(book_loop(tensor_loader), repeats),
            per=n,
        ),
    }
    if kind == "tiny":
        figures["eager_loop_book_class"] = figure(
            "PyTorch eager, the book's loop over the book's ToyDataset class",
            time_blocks(book_loop(book_loader), repeats),
            per=n,
        )
        Xv, yv = held_out_data(cfg)
        val_loader = DataLoader(TensorDataset(torch.from_numpy(Xv), torch.from_numpy(yv)), batch_size=EVAL_BATCH)
        figures["eager_loop_eval"] = figure(
            f"PyTorch eager, the book's loop with the validation loss every {EVAL_EVERY} steps (chapter 5)",
            time_blocks(book_loop_with_evaluation(tensor_loader, val_loader), repeats),
            per=n,
        )
    if cfg.get("torch_compile"):
        try:
            compiled = torch.compile(model)
            figures["compiled_step"] = figure(
                "torch.compile(model) step, pre-made batches", time_blocks(steps(compiled), repeats), per=n
            )
        except Exception as error:  # noqa: BLE001 - dynamo, inductor, triton or the C++ toolchain: report why
            figures["compiled_step"] = {"label": "torch.compile(model) step", "error": str(error).splitlines()[0][:200]}
    result: TrainingResult = {"info": _info(torch, device), "steps_per_epoch": n, "figures": figures}
    if kind == "wide":
        size = cfg["matmul_size"]
        a = torch.randn(size, size, device=device)
        b = torch.randn(size, size, device=device)
        seconds = matmul_blocks(lambda: a @ b, sync, cfg["matmul_block_seconds"], repeats)
        result["matmul"] = {"size": size, "seconds": seconds, "gflops": 2 * size**3 / seconds / 1e9}
    return result


def matmuls(cfg: dict[str, Any]) -> MatmulResult | Missing:
    """Exercise A.4 and square matmuls on the CPU, and on the GPU if PyTorch sees one."""
    torch = _import_torch()
    if torch is None:
        return {"missing": "torch"}
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    results: dict[str, MatmulPlatform] = {}
    for device in devices:
        sync = _sync(torch, device)
        rows: list[MatmulRow] = []
        for shape in matmul_shapes(cfg["sizes"]):
            (m, k), (_, n) = shape
            a = torch.from_numpy(np.random.default_rng(0).standard_normal((m, k), dtype=np.float32)).to(device)
            b = torch.from_numpy(np.random.default_rng(1).standard_normal((k, n), dtype=np.float32)).to(device)
            seconds = matmul_blocks(
                functools.partial(operator.matmul, a, b), sync, cfg["block_seconds"], cfg["repeats"]
            )
            rows.append({"shape": shape, "seconds": seconds, "gflops": 2 * m * k * n / seconds / 1e9})
        name = "gpu" if device.type == "cuda" else "cpu"
        kind = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        results[name] = {"device": kind, "rows": rows}
    return {"info": _info(torch, _device(torch)), "platforms": results}


def loader_epoch(cfg: dict[str, Any]) -> TorchLoaderEpoch:
    """The median shuffled epoch of `torch.utils.data.DataLoader(TensorDataset(X, y))`, on the
    same arrays as `loader.bench_loader` times ours on."""
    torch = _import_torch()
    if torch is None:
        return {"missing": "torch"}
    from torch.utils.data import DataLoader, TensorDataset

    X, y = wide_data(cfg["num_samples"], cfg["num_features"], 10)
    torch.manual_seed(0)
    loader = DataLoader(
        TensorDataset(torch.from_numpy(X), torch.from_numpy(y)),
        batch_size=cfg["batch_size"],
        shuffle=True,
        num_workers=0,
    )

    def run_epoch() -> None:
        for _batch in loader:
            pass

    seconds = statistics.median(time_blocks(run_epoch, cfg["repeats"]))
    return {"seconds": seconds, "torch": torch.__version__, "threads": torch.get_num_threads()}
