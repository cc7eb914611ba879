"""The benchmark's runner: each section's worker processes, the machine, the command.

`run_benchmarks` starts the workers (`common.run_worker`), merges the JAX and PyTorch figures of
a section and computes what compares them (speed-ups, FLOP rates, the GPU crossover);
`run_command` is `fundamentals bench`, called by `fundamentals.cli` with the arguments it parsed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from .._files import atomic_write_bytes, check_output_paths, describe
from .common import (
    CONFIG,
    SECTIONS,
    BenchError,
    gpu_peak_tflops,
    progress,
    run_worker,
)
from .plots import plot
from .records import (
    CompileMedians,
    CompileRun,
    CompileSection,
    Figure,
    JaxInfo,
    Machine,
    MatmulResult,
    MatmulSection,
    Results,
    TorchInfo,
    TrainingResult,
    TrainingSection,
)
from .report import format_report

__all__ = ["SECTIONS", "run_benchmarks", "run_command"]

# The JAX ecosystem's own loops (peers.py), each in its own process after ours and PyTorch's.
PEERS = {"equinox": "Equinox", "flax": "Flax NNX", "keras": "Keras 3 on JAX"}


def _training_section(kind: str, cfg: dict[str, Any]) -> TrainingSection:
    progress(f"{kind}: JAX")
    ours = run_worker(f"jax-{kind}", cfg)
    progress(f"{kind}: PyTorch")
    theirs = run_worker(f"torch-{kind}", cfg)
    section: TrainingSection = {"config": cfg, "jax": ours, "torch": None if "missing" in theirs else theirs}
    if kind == "tiny":
        # On a CPU each jitted call is handed to a worker thread; waking it costs more than this step's math.
        progress(f"{kind}: JAX, synchronous CPU dispatch")
        section["jax_sync"] = run_worker("jax-tiny-sync", cfg)
    workers: dict[str, TrainingResult | None] = {
        "jax": ours,
        "jax_sync": section.get("jax_sync"),
        "torch": section["torch"],
    }
    for peer, name in PEERS.items():
        progress(f"{kind}: {name}")
        workers[peer] = section[peer] = run_worker(f"{peer}-{kind}", cfg)  # type: ignore[literal-required]
    figures: dict[str, Figure] = {}
    for framework, worker in workers.items():
        if worker is not None:
            for name, figure in worker.pop("figures", {}).items():
                figures[name] = {**figure, "framework": framework}

    def seconds(name: str) -> float | None:
        figure = figures.get(name)
        return None if figure is None else figure.get("seconds_per_step")

    baseline = seconds("eager_step")
    for figure in figures.values():
        if "seconds_per_step" in figure:
            figure["speedup_vs_torch_eager"] = None if baseline is None else baseline / figure["seconds_per_step"]
    if "fit_book_class" in figures:
        # The same dataset class through each framework's loop: what a reader of the book gains.
        book_loop_seconds = seconds("eager_loop_book_class")
        figures["fit_book_class"]["speedup_vs_torch_book_loop"] = (
            None if book_loop_seconds is None else book_loop_seconds / figures["fit_book_class"]["seconds_per_step"]
        )
    if "fit_eval" in figures:
        # The book's chapter-5 loop, evaluation every N steps, in each framework.
        eval_loop_seconds = seconds("eager_loop_eval")
        fit_eval = figures["fit_eval"]
        fit_eval["speedup_vs_torch_eval_loop"] = (
            None if eval_loop_seconds is None else eval_loop_seconds / fit_eval["seconds_per_step"]
        )
        without = seconds("fit_fused")
        fit_eval["cost_vs_no_evaluation"] = None if without is None else fit_eval["seconds_per_step"] / without
    if kind == "wide":
        from ..nn import parameter_count  # the library's own count of the book's network

        parameters = parameter_count(cfg["inputs"], cfg["outputs"], cfg["hidden"])
        flops = 6 * parameters * cfg["batch_size"]
        section["parameters"], section["flops_per_step"] = parameters, flops
        for figure in figures.values():
            if "seconds_per_step" not in figure:
                continue
            worker = workers[figure["framework"]]
            assert worker is not None  # it printed this figure
            # Equinox, Flax and Keras run on JAX: their share is of JAX's matmul rate.
            rate = (worker.get("matmul") or ours["matmul"])["gflops"]
            figure["samples_per_second"] = cfg["batch_size"] / figure["seconds_per_step"]
            figure["gflops"] = flops / figure["seconds_per_step"] / 1e9
            figure["percent_of_matmul_rate"] = 100 * figure["gflops"] / rate
            peak = gpu_peak_tflops(_device_kind(worker["info"]))
            if peak:
                figure["percent_of_fp32_peak"] = 100 * figure["gflops"] / (peak * 1e3)
    section["figures"] = figures
    return section


def _device_kind(info: JaxInfo | TorchInfo) -> str | None:
    """The GPU model a worker ran on (JAX's `device_kind`, torch's device name), or None on a CPU."""
    devices = info.get("devices")
    if isinstance(devices, list):
        device = devices[0]
        return device["device_kind"] if device["platform"] == "gpu" else None
    kind = info.get("device_kind")
    return kind if isinstance(kind, str) else None


def _matmul_section(cfg: dict[str, Any]) -> MatmulSection:
    progress("matmul: JAX")
    ours: MatmulResult = run_worker("jax-matmul", cfg)
    progress("matmul: PyTorch")
    theirs = run_worker("torch-matmul", cfg)
    section: MatmulSection = {
        "config": cfg,
        "jax": ours,
        "torch": None if "missing" in theirs else theirs,
        "gpu_wins_from": {},
        "has_gpu": "gpu" in ours["platforms"],
    }
    results: tuple[tuple[str, MatmulResult | None], ...] = (("jax", ours), ("torch", section["torch"]))
    for name, result in results:
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
    return section


def _compile_section(cfg: dict[str, Any]) -> CompileSection:
    runs: dict[str, list[CompileRun]] = {"cold": [], "warm": []}
    for pair in range(cfg["pairs"]):
        with tempfile.TemporaryDirectory() as cache_dir:
            for which in ("cold", "warm"):
                progress(f"compile: {which} cache, fresh process ({pair + 1}/{cfg['pairs']})")
                start = time.perf_counter()
                result: CompileRun = run_worker("jax-compile", {"cache_dir": cache_dir})
                result["process_seconds"] = time.perf_counter() - start
                runs[which].append(result)

    def medians(results: list[CompileRun]) -> CompileMedians:
        def median(key: str) -> float:
            return statistics.median(float(r[key]) for r in results)  # type: ignore[literal-required]

        return {
            "process_seconds": median("process_seconds"),
            "trace_seconds": median("trace_seconds"),
            "lower_seconds": median("lower_seconds"),
            "compile_seconds": median("compile_seconds"),
            "first_step_seconds": median("first_step_seconds"),
            "cache_hits": min(r["cache_hits"] for r in results),
        }

    return {"config": cfg, "runs": runs, "cold": medians(runs["cold"]), "warm": medians(runs["warm"])}


def _machine(results: Results) -> Machine:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for package in ("jax", "jaxlib", "equinox", "optax", "numpy", "torch", "flax", "keras"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    machine: Machine = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }
    ran = []
    for name in ("tiny", "wide", "matmul"):
        section = results.get(name)
        if not isinstance(section, dict):
            continue
        jax_side, torch_side = section.get("jax"), section.get("torch")
        if isinstance(jax_side, dict) and "info" in jax_side:
            machine["jax_devices"] = jax_side["info"]["devices"]
        if isinstance(torch_side, dict) and "info" in torch_side:
            machine["torch_device"] = torch_side["info"]
        ran.append(torch_side is not None)
    if "compile" in results and "jax_devices" not in machine:
        machine["jax_devices"] = results["compile"]["runs"]["cold"][0]["info"]["devices"]
    if "loader" in results:
        ran.append(results["loader"]["torch_version"] is not None)
    # None: no benchmark tried to import torch (compile only).
    machine["torch_available"] = all(ran) if ran else None
    return machine


def run_benchmarks(sections: Sequence[str], *, quick: bool = False, torch_compile: bool = False) -> Results:
    """Run the named sections (each in fresh processes) and return every figure, with the machine.

    **Arguments:**

    - `sections`: some of `"tiny"`, `"wide"`, `"matmul"`, `"loader"`, `"files"`, `"compile"`.
    - `quick`: tiny sizes and three repeats, for tests and CI (seconds, not minutes).
    - `torch_compile`: also time a `torch.compile`d PyTorch model (slow to compile).

    **Returns:**

    A `records.Results`: one entry per section, `"machine"` (CPU model, cores, versions,
    devices) and `"seconds"` (wall time).
    """
    config = CONFIG["quick" if quick else "full"]
    repeats = config["repeats"]
    start = time.perf_counter()
    results: Results = {"quick": quick, "other_processes_cores": {}}
    for section in sections:
        before = _cpu_snapshot()
        if section in ("tiny", "wide"):
            cfg = {**config[section], "repeats": repeats, "torch_compile": torch_compile}
            if section == "tiny":
                results["tiny"] = _training_section(section, cfg)
            else:
                results["wide"] = _training_section(section, cfg)
        elif section == "matmul":
            results["matmul"] = _matmul_section({**config["matmul"], "repeats": repeats})
        elif section == "loader":
            progress("loader: fundamentals.DataLoader and torch.utils.data.DataLoader")
            results["loader"] = run_worker("loader", {"quick": quick})
        elif section == "files":
            progress("files: reading a .pth, fm.torch_load and torch.load(weights_only=True)")
            results["files"] = run_worker("files", config["files"])
        elif section == "compile":
            results["compile"] = _compile_section(config["compile"])
        else:
            raise BenchError(f"unknown benchmark {section!r}; choose from {', '.join(SECTIONS)}")
        # Other processes on the machine skew timings (PyTorch's spinning OpenMP threads most): keep the evidence.
        results["other_processes_cores"][section] = _cores_used_by_others(before, _cpu_snapshot())
    results["machine"] = _machine(results)
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


def _check_output_path(option: str, path: str, suffix: str | None = None) -> None:
    if suffix and not path.lower().endswith(suffix):
        raise BenchError(f"{option} must name a {suffix} file, got {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise BenchError(f"{option} folder does not exist: {folder}")
    try:  # a folder, a device or FIFO, or a folder we cannot write to: refused before the benchmark runs
        check_output_paths([(option, path, 0)])
    except (OSError, ValueError) as error:
        raise BenchError(describe(error)) from None


def _write_json(results: Results, path: str) -> None:
    atomic_write_bytes(path, json.dumps(results, indent=1).encode("utf-8"))


def run_command(args: argparse.Namespace) -> int:
    """`fundamentals bench [tiny|wide|matmul|loader|files|compile|all] [--quick] [--json F] [--plot F.png] [--torch-compile]`.

    `args` are what `fundamentals.cli`'s `bench` subcommand parsed. Prints a Markdown table on
    stdout and progress on stderr. **Returns:** the exit code (0, or 2 after a one-line error
    for a bad output path or a benchmark that could not run).
    """
    try:
        if args.json:
            _check_output_path("--json", args.json)
        if args.plot:
            _check_output_path("--plot", args.plot, ".png")
            try:
                import matplotlib  # noqa: F401 - only checks it is installed, before the benchmark runs
            except ImportError:
                raise BenchError("--plot needs matplotlib: pip install matplotlib") from None
        sections = SECTIONS if args.benchmark == "all" else (args.benchmark,)
        results = run_benchmarks(sections, quick=args.quick, torch_compile=args.torch_compile)
        print(format_report(results))
        for option, write in (("--json", _write_json), ("--plot", plot)):
            path = getattr(args, option[2:])
            if path:
                try:  # a full or read-only disk: one line; the report above is complete, the old file intact
                    write(results, path)
                except OSError as error:
                    raise BenchError(f"{option}: {describe(error)} (the report above is complete)") from None
                progress(f"wrote {path}")
    except BenchError as error:
        print(f"fundamentals bench: error: {error}", file=sys.stderr)
        return 2
    return 0
