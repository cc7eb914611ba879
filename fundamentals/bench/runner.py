"""The benchmark's runner: each section's worker processes, the machine, the performance goals, the command.

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
from importlib import metadata
from typing import Any

from .._files import atomic_write_bytes, check_output_paths, describe
from .common import (
    CONFIG,
    SECTIONS,
    BenchError,
    count_parameters,
    gpu_peak_tflops,
    progress,
    run_worker,
)
from .plots import plot
from .report import format_report

__all__ = ["SECTIONS", "run_benchmarks", "run_command"]

# The JAX ecosystem's own loops (peers.py), each in its own process after ours and PyTorch's.
PEERS = {"equinox": "Equinox", "flax": "Flax NNX", "keras": "Keras 3 on JAX"}


def _training_section(kind: str, cfg: dict) -> dict:
    progress(f"{kind}: JAX")
    ours = run_worker(f"jax-{kind}", cfg)
    progress(f"{kind}: PyTorch")
    theirs = run_worker(f"torch-{kind}", cfg)
    section: dict[str, Any] = {"config": cfg, "jax": ours, "torch": None if "missing" in theirs else theirs}
    if kind == "tiny":
        # On a CPU each jitted call is handed to a worker thread; waking it costs more than this step's math.
        progress(f"{kind}: JAX, synchronous CPU dispatch")
        section["jax_sync"] = run_worker("jax-tiny-sync", cfg)
    for peer, name in PEERS.items():
        progress(f"{kind}: {name}")
        section[peer] = run_worker(f"{peer}-{kind}", cfg)
    figures: dict[str, dict[str, Any]] = {}
    for framework in ("jax", "jax_sync", "torch", *PEERS):
        if section.get(framework) is not None:
            for name, figure in section[framework].pop("figures").items():
                figures[name] = {**figure, "framework": framework}
    baseline = figures.get("eager_step", {}).get("seconds_per_step")
    for figure in figures.values():
        if "seconds_per_step" in figure:
            figure["speedup_vs_torch_eager"] = None if baseline is None else baseline / figure["seconds_per_step"]
    if "fit_book_class" in figures:
        # The same dataset class through each framework's loop: what a reader of the book gains.
        book_loop_seconds = figures.get("eager_loop_book_class", {}).get("seconds_per_step")
        figures["fit_book_class"]["speedup_vs_torch_book_loop"] = (
            None if book_loop_seconds is None else book_loop_seconds / figures["fit_book_class"]["seconds_per_step"]
        )
    if "fit_eval" in figures:
        # The book's chapter-5 loop, evaluation every N steps, in each framework.
        eval_loop_seconds = figures.get("eager_loop_eval", {}).get("seconds_per_step")
        fit_eval = figures["fit_eval"]
        fit_eval["speedup_vs_torch_eval_loop"] = (
            None if eval_loop_seconds is None else eval_loop_seconds / fit_eval["seconds_per_step"]
        )
        without = figures.get("fit_fused", {}).get("seconds_per_step")
        fit_eval["cost_vs_no_evaluation"] = None if without is None else fit_eval["seconds_per_step"] / without
    if kind == "wide":
        parameters = count_parameters([cfg["inputs"], *cfg["hidden"], cfg["outputs"]])
        flops = 6 * parameters * cfg["batch_size"]
        section.update(parameters=parameters, flops_per_step=flops)
        for figure in figures.values():
            if "seconds_per_step" not in figure:
                continue
            worker = section[figure["framework"]]
            # Equinox, Flax and Keras run on JAX: their share is of JAX's matmul rate.
            rate = (worker.get("matmul") or section["jax"]["matmul"])["gflops"]
            figure["samples_per_second"] = cfg["batch_size"] / figure["seconds_per_step"]
            figure["gflops"] = flops / figure["seconds_per_step"] / 1e9
            figure["percent_of_matmul_rate"] = 100 * figure["gflops"] / rate
            peak = gpu_peak_tflops(_device_kind(worker["info"]))
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


def _matmul_section(cfg: dict) -> dict:
    progress("matmul: JAX")
    ours = run_worker("jax-matmul", cfg)
    progress("matmul: PyTorch")
    theirs = run_worker("torch-matmul", cfg)
    section: dict[str, Any] = {
        "config": cfg,
        "jax": ours,
        "torch": None if "missing" in theirs else theirs,
        "gpu_wins_from": {},
    }
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
                progress(f"compile: {which} cache, fresh process ({pair + 1}/{cfg['pairs']})")
                start = time.perf_counter()
                result = run_worker("jax-compile", {"cache_dir": cache_dir})
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
    ran = [
        section["torch"] is not None for section in results.values() if isinstance(section, dict) and "torch" in section
    ]
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
        targets.append(
            {
                "target": name,
                "measured": value,
                "goal": goal,
                "unit": unit,
                "met": met,
                "higher_is_better": higher_is_better,
            }
        )

    tiny = results.get("tiny")
    if tiny and tiny["torch"]:
        figures = tiny["figures"]
        add("tiny: fit(fused=True) vs PyTorch eager step", figures["fit_fused"]["speedup_vs_torch_eager"], 60, "×")
        add("tiny: fit(fused=False) vs PyTorch eager step", figures["fit_per_step"]["speedup_vs_torch_eager"], 10, "×")
        add(
            "tiny: fit over the book's ToyDataset class vs the book's PyTorch loop over it",
            figures["fit_book_class"].get("speedup_vs_torch_book_loop"),
            10,
            "×",
        )
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
    files = results.get("files")
    if files and "ratio" in files:
        add("files: fm.torch_load time / torch.load(weights_only=True) time", files["ratio"], 1.5, "×", False)
    compiled = results.get("compile")
    if compiled:
        add("compile: warm-cache XLA compile (cache read)", compiled["warm"]["compile_seconds"], 0.05, "s", False)
    return targets


def run_benchmarks(sections, *, quick: bool = False, torch_compile: bool = False) -> dict:
    """Run the named sections (each in fresh processes) and return every figure, with the machine.

    **Arguments:**

    - `sections`: some of `"tiny"`, `"wide"`, `"matmul"`, `"loader"`, `"files"`, `"compile"`.
    - `quick`: tiny sizes and three repeats, for tests and CI (seconds, not minutes).
    - `torch_compile`: also time a `torch.compile`d PyTorch model (slow to compile).

    **Returns:**

    A dict with one entry per section, `"machine"` (CPU model, cores, versions, devices),
    `"targets"` (the performance goals against the measured figures) and `"seconds"` (wall time).
    """
    config = CONFIG["quick" if quick else "full"]
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
            progress("loader: fundamentals.DataLoader and torch.utils.data.DataLoader")
            results[section] = run_worker("loader", {"quick": quick})
        elif section == "files":
            progress("files: reading a .pth, fm.torch_load and torch.load(weights_only=True)")
            results[section] = run_worker("files", config["files"])
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


def _write_json(results: dict, path: str) -> None:
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
