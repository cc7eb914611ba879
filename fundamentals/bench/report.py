"""The benchmark's report: `format_report` writes every section's figures as Markdown tables.

It reports what was measured and how the variants compare (ratios); the project's own goals
for these figures are written in the README's benchmark section, not here.
"""

from __future__ import annotations

from .common import gpu_peak_tflops
from .records import (
    SECTIONS,
    CompileSection,
    Figure,
    FilesResult,
    LoaderResult,
    MatmulSection,
    Results,
    TrainingSection,
)

__all__ = ["format_report", "format_number", "order_figures"]


def format_number(value: float | None, digits: int = 1) -> str:
    """`value` with `digits` decimals, or none from 100 on (with thousands separators); "n/a" for None."""
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else (f"{value:.2f}×" if value < 10 else f"{value:.0f}×")


def order_figures(figures: dict[str, Figure]) -> list[str]:
    """The names of `figures` in the order the tables and the plot show them: PyTorch first, then ours."""
    preferred = [
        "eager_step",
        "eager_loop",
        "eager_loop_book_class",
        "eager_loop_eval",
        "compiled_step",
        "filter_jit",
        "nnx_jit",
        "keras_fit",
        "keras_fit_steps",
        "fit_per_step",
        "jit_step",
        "jit_floor",
        "fit_per_step_sync",
        "jit_step_sync",
        "fit_book_class",
        "fit_fused",
        "fit_eval",
        "scan_epoch",
    ]
    return [name for name in preferred if name in figures]


def _machine_line(results: Results) -> str:
    machine = results["machine"]
    versions = machine["versions"]
    devices = machine.get("jax_devices")
    device = f"{devices[0]['platform']}: {devices[0]['device_kind']}" if devices else "devices not queried"
    if machine.get("torch_available") is False or not versions.get("torch"):
        torch = "PyTorch not installed (JAX figures only)"
    else:
        torch = f"PyTorch {versions['torch']}"
    if "torch_device" in machine:
        info = machine["torch_device"]
        torch += f" ({info.get('device_kind', info['device'])}, {info['threads']} threads)"
    peers = "".join(
        f", {name} {versions[key]}" for key, name in (("flax", "Flax"), ("keras", "Keras")) if versions.get(key)
    )
    return (
        f"Machine: {machine['cpu']}, {machine['usable_cores']} cores; JAX {versions['jax']} ({device}), "
        f"Equinox {versions['equinox']}, Optax {versions['optax']}{peers}; {torch}; Python {machine['python']}."
    )


def _load_line(results: Results) -> str:
    others = results.get("other_processes_cores", {})
    if not others or any(value is None for value in others.values()):
        return ""
    listed = ", ".join(f"{name} {value:.2f}" for name, value in others.items() if value is not None)
    return (
        f"Cores kept busy by other processes during each benchmark (of {results['machine']['usable_cores']}): "
        f"{listed}. Above about 0.1 the timings are skewed, PyTorch's most (its OpenMP threads spin)."
    )


def _not_run(figure: Figure) -> str:
    """Why a row has no figure: it failed, or its package is not installed (with the command that installs it)."""
    return f"failed: {figure['error']}" if "error" in figure else f"skipped: {figure.get('skipped', 'no figure')}"


def _tiny_rows(section: TrainingSection) -> list[str]:
    figures, cfg = section["figures"], section["config"]
    lines = [
        f"## tiny: the book's network 2→30→20→2, batch {cfg['batch_size']}, SGD lr 0.5",
        "",
        f"{cfg['rows']:,} rows of two-blob toy-like data, {section['jax']['steps_per_epoch']:,} steps an epoch.",
        "",
        "| variant | µs / step | × PyTorch eager step |",
        "|---|---:|---:|",
    ]
    for name in order_figures(figures):
        figure = figures[name]
        if "seconds_per_step" not in figure:
            lines.append(f"| {figure['label']} | {_not_run(figure)} | |")
            continue
        lines.append(
            f"| {figure['label']} | {format_number(figure['seconds_per_step'] * 1e6)} | "
            f"{_ratio(figure.get('speedup_vs_torch_eager'))} |"
        )
    return lines


def _wide_rows(section: TrainingSection) -> list[str]:
    figures, cfg = section["figures"], section["config"]
    hidden = ", ".join(str(h) for h in cfg["hidden"])
    lines = [
        f"## wide: NeuralNetwork({cfg['inputs']}, {cfg['outputs']}, hidden=({hidden})), batch {cfg['batch_size']}, SGD lr 0.1",
        "",
        f"{section['parameters']:,} parameters; FLOPs a step = 6 · parameters · batch = "
        f"{section['flops_per_step'] / 1e9:.2f} GFLOP (2 forward, 4 backward, per parameter and example; "
        "a slight over-count, as the first layer's input gradient is never computed).",
        "",
        "| variant | ms / step | samples / s | GFLOP/s | % of matmul rate | × PyTorch eager step |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in order_figures(figures):
        figure = figures[name]
        if "seconds_per_step" not in figure:
            lines.append(f"| {figure['label']} | {_not_run(figure)} | | | | |")
            continue
        peak = figure.get("percent_of_fp32_peak")
        percent = format_number(figure["percent_of_matmul_rate"], 0) + (f" ({peak:.0f}% of fp32 peak)" if peak else "")
        lines.append(
            f"| {figure['label']} | {figure['seconds_per_step'] * 1e3:.2f} | {format_number(figure['samples_per_second'])} | "
            f"{format_number(figure['gflops'])} | {percent} | {_ratio(figure.get('speedup_vs_torch_eager'))} |"
        )
    rates = [f"JAX {section['jax']['matmul']['gflops']:.0f} GFLOP/s"]
    if section["torch"]:
        rates.append(f"PyTorch {section['torch']['matmul']['gflops']:.0f} GFLOP/s")
    size = section["jax"]["matmul"]["size"]
    return [
        *lines,
        "",
        f"Matmul rate ({size}×{size} float32, measured in each framework's process): {', '.join(rates)}; "
        "each variant's percentage is of its own framework's rate.",
    ]


def _where_the_time_goes(figures: dict[str, Figure]) -> list[str]:
    """tiny: a step's time taken apart, from the rows that time its parts alone."""
    us = {
        name: figures[name]["seconds_per_step"] * 1e6
        for name in ("fit_per_step", "jit_step", "jit_floor", "fit_fused", "scan_epoch")
    }
    lines = [
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
            f'With `jax.config.update("jax_cpu_enable_async_dispatch", False)` before JAX starts, each call runs in '
            f"the calling thread: fit(fused=False) {sync_fit:.1f} µs, the step alone {sync_step:.1f} µs; the "
            f"difference, {us['fit_per_step'] - sync_fit:.1f} µs a step, is handing each call to XLA's worker thread "
            "and waking it."
        )
    return lines


def _training_notes(section: TrainingSection) -> list[str]:
    """The lines under a training table: the book's class, evaluation, the re-run cell, fit's fixed cost."""
    figures, lines = section["figures"], []
    if "fit_book_class" in figures:
        book = figures["fit_book_class"]
        lines += [
            "",
            f"The book's ToyDataset class through each loop: fit {book['seconds_per_step'] * 1e6:.1f} µs a step, "
            f"{_ratio(book.get('speedup_vs_torch_book_loop'))} the book's PyTorch loop over the same class.",
        ]
    if "fit_eval" in figures:
        evaluated = figures["fit_eval"]
        cost = evaluated.get("cost_vs_no_evaluation")
        lines += [
            "",
            f"With the validation loss every 100 steps (the book's chapter-5 loop): fit "
            f"{evaluated['seconds_per_step'] * 1e6:.1f} µs a step"
            + ("" if cost is None else f", {cost:.2f}× its time without evaluation")
            + f", {_ratio(evaluated.get('speedup_vs_torch_eval_loop'))} PyTorch's loop doing the same evaluation.",
        ]
    if "rerun_cell" in section["jax"]:
        cell = section["jax"]["rerun_cell"]
        lines += [
            "",
            f"The book's 3-epoch training cell (new model, new optax.sgd(0.5), 6 steps): "
            f"{cell['first_seconds'] * 1e3:.0f} ms the first time in a process (compiling), "
            f"{cell['seconds'] * 1e3:.1f} ms when re-run (the compiled program is reused).",
        ]
    fused, per_step = figures["fit_fused"], figures["fit_per_step"]
    lines += [
        "",
        "fit() rows: the median epoch after the first, over the steps an epoch; what a fit() call takes beyond "
        f"its epochs (trace, compile, set-up) is {fused['fixed_seconds'] * 1e3:.0f} ms fused, "
        f"{per_step['fixed_seconds'] * 1e3:.0f} ms per-step.",
    ]
    if section["torch"] is None:
        lines.append("PyTorch is not installed: JAX figures only.")
    return lines


def _training_table(section: TrainingSection, kind: str) -> list[str]:
    if kind == "tiny":
        return [*_tiny_rows(section), *_where_the_time_goes(section["figures"]), *_training_notes(section)]
    return [*_wide_rows(section), *_training_notes(section)]


def _matmul_table(section: MatmulSection) -> list[str]:
    ours, theirs = section["jax"]["platforms"], (section["torch"] or {"platforms": {}})["platforms"]
    columns = [("JAX CPU", ours.get("cpu")), ("PyTorch CPU", theirs.get("cpu"))]
    if section["has_gpu"] or "gpu" in theirs:
        columns += [
            (f"JAX GPU ({ours['gpu']['device']})" if "gpu" in ours else "JAX GPU", ours.get("gpu")),
            ("PyTorch GPU", theirs.get("gpu")),
        ]
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
        return lines
    for name, wins_from in section["gpu_wins_from"].items():
        framework = "JAX" if name == "jax" else "PyTorch"
        result = section["jax"] if name == "jax" else section["torch"]
        if result is None or "gpu" not in result["platforms"]:
            continue
        where = "never, up to the largest size" if wins_from is None else f"from {wins_from[0][0]}×{wins_from[0][1]} on"
        gpu = result["platforms"]["gpu"]
        peak = gpu_peak_tflops(gpu["device"])
        best = max(row["gflops"] for row in gpu["rows"])
        of_peak = f" ({100 * best / (peak * 1e3):.0f}% of its {peak:g} TFLOP/s float32 peak)" if peak else ""
        lines.append(f"{framework}: the GPU beats the CPU {where}; its best rate is {best:,.0f} GFLOP/s{of_peak}.")
    return lines


def _compile_table(section: CompileSection) -> list[str]:
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
        r = section["cold"] if which == "cold" else section["warm"]
        lines.append(
            f"| {which} | {r['trace_seconds']:.3f} | {r['lower_seconds']:.3f} | {r['compile_seconds']:.3f} | "
            f"{r['first_step_seconds']:.3f} | {r['process_seconds']:.2f} |"
        )
    cold, warm = section["cold"]["compile_seconds"], section["warm"]["compile_seconds"]
    if cold > 0:
        lines += ["", f"The warm cache reads the compiled step in {warm / cold:.3f}× the time XLA takes to compile it."]
    return lines


def _python_work_table(result: LoaderResult) -> list[str]:
    """The Python-work rows of `bench_loader`'s result as Markdown."""
    work = result["python_work"]

    def ms(key: str) -> str:
        value = work["epoch_ms"].get(key)
        return "n/a" if value is None else f"{value:.1f}"

    lines = [
        f"A dataset doing about 0.3 ms of Python work per item, {work['num_items']} items, batch "
        f"{work['batch_size']}, shuffled, median of {work['repeats']} epochs (each starting its workers):",
        "",
        "| loader | num_workers=0 (ms) | num_workers=2 (ms) |",
        "|---|---:|---:|",
        f"| fundamentals.DataLoader (worker processes) | {ms('ours_0')} | {ms('ours_2')} |",
        f"| torch.utils.data.DataLoader ({work['torch_version'] or 'not installed'}) | "
        f"{ms('torch_0')} | {ms('torch_2')} |",
        "",
    ]
    if work["speedup_2_workers"] is not None:
        lines += [f"With 2 workers, fundamentals takes {1 / work['speedup_2_workers']:.2f}× PyTorch's time.", ""]
    return lines


def format_loader_table(result: LoaderResult) -> list[str]:
    """The figures of `loader.bench_loader` as Markdown."""
    rows = [
        ("fundamentals.DataLoader", result["ours"]),
        ("fundamentals.DataLoader, num_workers=2", result["ours_2_workers"]),
        ("floor: bare np.take gathers", result["floor"]),
        (f"torch.utils.data.DataLoader ({result['torch_version'] or 'not installed'})", result["torch"]),
    ]
    lines = [
        f"One shuffled epoch of {result['num_samples']:,} × {result['num_features']} float32, "
        f"batch {result['batch_size']} ({result['num_batches']} batches), median of {result['repeats']} epochs:",
        "",
        "| loader | epoch (ms) | batches/s |",
        "|---|---:|---:|",
    ]
    for label, timing in rows:
        if timing is None:
            lines.append(f"| {label} | n/a | n/a |")
        else:
            lines.append(f"| {label} | {timing['epoch_ms']:.1f} | {timing['batches_per_s']:,.0f} |")
    lines.append("")
    if result["speedup_vs_torch"] is not None:
        lines.append(f"Speed-up over PyTorch: {result['speedup_vs_torch']:.1f}×. ")
    lines.append(f"Ours / floor: {result['ours_over_floor']:.2f}.")
    return [*lines, *_python_work_table(result)]


def format_files_table(result: FilesResult) -> list[str]:
    """`files.bench_torch_load`'s result as Markdown."""
    if "missing" in result:
        return ["PyTorch is not installed: nothing to compare with."]
    lines = [
        f"Reading a {result['size_mb']:.0f} MB state dict ({result['tensors']} float32 tensors), "
        f"median of {result['repeats']}:",
        "",
        "| reader | median (ms) | MB/s |",
        "|---|---:|---:|",
    ]
    for timing, label in (
        (result["torch"], "torch.load(path, weights_only=True)"),
        (result["fundamentals"], "fm.torch_load(path)"),
    ):
        median = timing["median_s"]
        lines.append(f"| `{label}` | {median * 1e3:.1f} | {result['size_mb'] / median:.0f} |")
    return [*lines, "", f"fm.torch_load / torch.load: {result['ratio']:.2f}×"]


def format_report(results: Results) -> str:
    """Every section of `run_benchmarks`' result as Markdown: the measurements and how the variants compare."""
    lines = [
        "# fundamentals bench" + (" (--quick: tiny sizes, not for comparison)" if results.get("quick") else ""),
        "",
        _machine_line(results),
        "Each framework runs in its own process; figures are medians of timed blocks after a warm-up.",
        _load_line(results),
        "",
    ]
    for name in SECTIONS:
        if name == "tiny" and "tiny" in results:
            lines += _training_table(results["tiny"], "tiny")
        elif name == "wide" and "wide" in results:
            lines += _training_table(results["wide"], "wide")
        elif name == "matmul" and "matmul" in results:
            lines += _matmul_table(results["matmul"])
        elif name == "loader" and "loader" in results:
            lines += ["## loader", "", *format_loader_table(results["loader"])]
        elif name == "files" and "files" in results:
            lines += ["## files: reading a .pth without torch", "", *format_files_table(results["files"])]
        elif name == "compile" and "compile" in results:
            lines += _compile_table(results["compile"])
        else:
            continue
        lines.append("")
    lines.append(f"Total benchmark time: {results['seconds']:.0f} s.")
    return "\n".join(lines)
