"""The benchmark's results as typed records: what each worker returns, what the runner adds, what `--json` writes.

Every figure crosses a process boundary as JSON (a worker prints it, the runner reads it), so
the records are `TypedDict`s: plain dicts at run time, JSON as they are, and checked by mypy
wherever the runner, the report and the plot read them. This module is the one place their
fields are written down; it imports nothing but `typing`, so the command can name the sections
without starting the benchmark.
"""

from __future__ import annotations

from typing import Any, NotRequired, Required, TypedDict

__all__ = [
    "SECTIONS",
    "Figure",
    "RerunCell",
    "DeviceInfo",
    "JaxInfo",
    "TorchInfo",
    "MatmulRate",
    "TrainingResult",
    "TrainingSection",
    "MatmulRow",
    "MatmulPlatform",
    "MatmulResult",
    "MatmulSection",
    "Missing",
    "CompileRun",
    "CompileMedians",
    "CompileSection",
    "EpochTiming",
    "PythonWorkResult",
    "LoaderResult",
    "TorchLoaderEpoch",
    "TorchPythonWork",
    "ReaderTiming",
    "FilesResult",
    "Machine",
    "Results",
]

# The sections of `fundamentals bench`, in the order they run and are reported.
SECTIONS = ("tiny", "wide", "matmul", "loader", "files", "compile")


# --- training: tiny and wide -----------------------------------------------------------------------


class Figure(TypedDict, total=False):
    """One timed variant of a training benchmark (a row of its table), in seconds a step.

    A worker writes `label`, `seconds_per_step`, `samples` (and `fixed_seconds` for `fit`); a
    row that could not run has `error` or `skipped` instead. The runner adds the rest.
    """

    label: Required[str]
    seconds_per_step: float  # the median of `samples`
    samples: list[float]  # seconds a step, one per timed block
    fixed_seconds: float  # what a fit() call takes beyond its epochs (trace, compile, set-up)
    error: str  # why the row failed (torch.compile's toolchain, say)
    skipped: str  # why the row did not run, with the command that installs what it needs
    framework: str  # which worker timed it: "jax", "jax_sync", "torch", "equinox", "flax", "keras"
    speedup_vs_torch_eager: float | None  # PyTorch's eager step time over this row's
    speedup_vs_torch_book_loop: float | None  # fit_book_class: the book's PyTorch loop over the same class
    speedup_vs_torch_eval_loop: float | None  # fit_eval: PyTorch's loop with the same evaluation
    cost_vs_no_evaluation: float | None  # fit_eval: its time over fit's without evaluation
    samples_per_second: float  # wide: examples a second
    gflops: float  # wide: 6 · parameters · batch FLOPs a step, a second
    percent_of_matmul_rate: float  # wide: of the framework's own measured matmul rate
    percent_of_fp32_peak: float  # wide, on a known GPU: of its float32 peak


class RerunCell(TypedDict):
    """The book's 3-epoch training cell run again in one process: a notebook's re-run."""

    label: str
    seconds: float  # the median re-run
    samples: list[float]
    first_seconds: float  # the first run in the process, compiling


class DeviceInfo(TypedDict):
    platform: str  # "cpu", "gpu", "tpu"
    device_kind: str
    id: int


class JaxInfo(TypedDict):
    """Where a JAX worker ran."""

    jax: str
    backend: str
    devices: list[DeviceInfo]


class TorchInfo(TypedDict):
    """Where a PyTorch worker ran."""

    torch: str
    device: str  # "cpu" or "cuda"
    threads: int
    device_kind: NotRequired[str]  # the GPU's name


class MatmulRate(TypedDict):
    """A framework's float32 matmul rate, measured in its own worker (the wide benchmark's reference)."""

    size: int
    seconds: float
    gflops: float


class TrainingResult(TypedDict, total=False):
    """What a training worker (ours, PyTorch's, or a JAX peer's) prints for `tiny` or `wide`."""

    info: JaxInfo | TorchInfo
    steps_per_epoch: int
    figures: dict[str, Figure]  # by variant: "fit_fused", "eager_step", "filter_jit", ...
    matmul: MatmulRate  # wide
    rerun_cell: RerunCell  # ours, tiny
    first_losses: list[float]  # Equinox and Flax: the first steps' losses, to check they train our problem
    final_losses: dict[str, float]  # Keras: each variant's last epoch's loss
    missing: str  # the package that is not installed (then only skipped figures, or none)


class TrainingSection(TypedDict, total=False):
    """The `tiny` or `wide` section: each worker's result, and every figure with the runner's ratios."""

    config: dict[str, Any]
    jax: TrainingResult
    jax_sync: TrainingResult  # tiny: JAX's CPU client without asynchronous dispatch
    torch: TrainingResult | None  # None without PyTorch
    equinox: TrainingResult
    flax: TrainingResult
    keras: TrainingResult
    figures: dict[str, Figure]  # every worker's figures, merged, each with its `framework`
    parameters: int  # wide
    flops_per_step: int  # wide


# --- matmul -------------------------------------------------------------------------------------------


class MatmulRow(TypedDict):
    shape: list[list[int]]  # [[m, k], [k, n]]
    seconds: float
    gflops: float


class MatmulPlatform(TypedDict):
    device: str
    rows: list[MatmulRow]


class MatmulResult(TypedDict):
    """What a matmul worker prints: a row per shape on each platform ("cpu", and "gpu" if any)."""

    info: JaxInfo | TorchInfo
    platforms: dict[str, MatmulPlatform]


class Missing(TypedDict):
    """What a worker prints when the package it times is not installed."""

    missing: str  # the package: "torch"


class MatmulSection(TypedDict):
    config: dict[str, Any]
    jax: MatmulResult
    torch: MatmulResult | None
    gpu_wins_from: dict[str, list[list[int]] | None]  # by framework: the smallest square shape the GPU wins from
    has_gpu: bool


# --- compile ----------------------------------------------------------------------------------------


class CompileRun(TypedDict):
    """One fresh process timing fit() to its first finished step (`process_seconds` added by the runner)."""

    info: JaxInfo
    first_step_seconds: float
    trace_seconds: float
    lower_seconds: float
    compile_seconds: float
    cache_hits: int
    process_seconds: NotRequired[float]


class CompileMedians(TypedDict):
    process_seconds: float
    trace_seconds: float
    lower_seconds: float
    compile_seconds: float
    first_step_seconds: float
    cache_hits: int  # the fewest over the runs


class CompileSection(TypedDict):
    config: dict[str, Any]
    runs: dict[str, list[CompileRun]]  # "cold", "warm"
    cold: CompileMedians
    warm: CompileMedians


# --- loader -----------------------------------------------------------------------------------------


class EpochTiming(TypedDict):
    epoch_ms: float  # the median epoch
    batches_per_s: float


class PythonWorkResult(TypedDict):
    """Epochs of a dataset doing Python work per item, with 0 and 2 workers, in both loaders."""

    num_items: int
    batch_size: int
    repeats: int
    epoch_ms: dict[str, float | None]  # "ours_0", "ours_2", "torch_0", "torch_2" (None without torch)
    speedup_2_workers: float | None  # PyTorch's epoch with 2 workers over ours with 2
    workers_speedup: float  # ours with 0 workers over ours with 2
    torch_version: str | None


class LoaderResult(TypedDict):
    """One shuffled epoch of `DataLoader`, of the bare gathers and of PyTorch's loader."""

    num_samples: int
    num_features: int
    batch_size: int
    repeats: int
    num_batches: int
    ours: EpochTiming
    ours_2_workers: EpochTiming
    floor: EpochTiming  # the bare np.take gathers
    torch: EpochTiming | None
    speedup_vs_torch: float | None  # PyTorch's epoch over ours
    ours_over_floor: float
    torch_version: str | None
    torch_threads: int | None
    python_work: PythonWorkResult


class TorchLoaderEpoch(TypedDict, total=False):
    """What the PyTorch loader worker prints."""

    seconds: float
    torch: str
    threads: int
    missing: str


class TorchPythonWork(TypedDict, total=False):
    """What the PyTorch worker of the Python-work rows prints: seconds an epoch with 0 and 2 workers."""

    torch: str
    torch_0: float
    torch_2: float
    missing: str


# --- files ------------------------------------------------------------------------------------------


class ReaderTiming(TypedDict):
    median_s: float
    times_s: list[float]


class FilesResult(TypedDict, total=False):
    """Reading one `.pth` file with `fm.torch_load` and with `torch.load(weights_only=True)`."""

    size_mb: float
    tensors: int
    repeats: int
    torch: ReaderTiming
    fundamentals: ReaderTiming
    ratio: float  # fundamentals' median over torch's
    missing: str  # "torch": nothing to compare with


# --- the whole run ------------------------------------------------------------------------------------


class Machine(TypedDict, total=False):
    cpu: str
    cores: int | None
    usable_cores: int | None
    platform: str
    python: str
    versions: dict[str, str | None]
    jax_devices: list[DeviceInfo]
    torch_device: TorchInfo
    torch_available: bool | None  # None: no section tried to import torch


class Results(TypedDict, total=False):
    """What `run_benchmarks` returns and `--json` writes: the sections that ran, the machine, the time taken."""

    quick: bool
    other_processes_cores: dict[str, float | None]  # by section: cores other processes kept busy
    tiny: TrainingSection
    wide: TrainingSection
    matmul: MatmulSection
    loader: LoaderResult
    files: FilesResult
    compile: CompileSection
    machine: Machine
    seconds: float
