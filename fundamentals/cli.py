"""The `fundamentals` command: `fundamentals train | convert | bench | doctor`."""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

from ._startup import restore_default_handler

# The library is imported by the subcommand that needs it, inside its function: `fundamentals
# doctor` must run, and name what is missing, on an installation where JAX or Optax cannot be imported.

__all__ = ["main", "build_parser"]


class CLIError(Exception):
    """A user error: printed as one line, exit code 2, no traceback."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _TrainDefaults(NamedTuple):
    epochs: int
    lr: float
    batch_size: int
    drop_last: bool


# Per data set: the book's settings for its toy data, and ones that train the others in seconds.
_DEFAULTS = {
    "toy": _TrainDefaults(epochs=3, lr=0.5, batch_size=2, drop_last=True),
    "other": _TrainDefaults(epochs=20, lr=0.1, batch_size=32, drop_last=False),
}


def _number(kind: type, minimum: float, description: str, *, above: bool = False):
    """An argparse `type` that parses `kind` and refuses values below `minimum` (or equal to it
    with `above`), NaN and infinity."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}") from None
        if not (value > minimum if above else value >= minimum) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected {description}, got {text}")
        return value

    return parse


_positive_int = _number(int, 1, "a positive integer")
_positive_float = _number(float, 0, "a positive number", above=True)
_SEED_LIMIT = 2**63 - 1  # jax.random.key takes a 64-bit signed integer


def _seed(text: str) -> int:
    value = _number(int, 0, "a non-negative integer")(text)
    if value > _SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer up to 2**63-1 ({_SEED_LIMIT}), got {text}")
    return value


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes like 30,20, got {text!r}") from None
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"layer sizes must be positive, got {text!r}")
    return _bounded_layers(sizes)


def _bounded_layers(sizes: tuple[int, ...]) -> tuple[int, ...]:
    from . import _limits

    try:
        limit = _limits.max_layer_size()
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    for size in sizes:
        if size > limit:
            raise argparse.ArgumentTypeError(_limits.over("a layer size", size, limit, "FUNDAMENTALS_MAX_LAYER_SIZE"))
    return sizes


def build_parser() -> argparse.ArgumentParser:
    from .bench.records import SECTIONS

    parser = _Parser(
        prog="fundamentals",
        description="Appendix A of 'Build a Large Language Model (From Scratch)', in JAX.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{train,convert,bench,doctor}", parser_class=_Parser)
    commands.required = True

    train = commands.add_parser(
        "train",
        help="train the book's network (by default: the book's toy data, 3 epochs, SGD lr 0.5)",
        description="Train the book's NeuralNetwork. With no options: the appendix's run on its toy data.",
    )
    train.add_argument("--data", default="toy", help="toy (default), digits, FILE.csv or FILE.npz")
    train.add_argument("--target", help="CSV: the label column's name (default: the last column)")
    train.add_argument("--epochs", type=_positive_int, help="epochs (toy: 3, others: 20)")
    train.add_argument("--lr", type=_positive_float, help="SGD learning rate (toy: 0.5, others: 0.1)")
    train.add_argument("--batch-size", type=_positive_int, help="batch size (toy: 2, others: 32)")
    train.add_argument("--hidden", type=_hidden, default=(30, 20), help="hidden layer sizes (default 30,20)")
    train.add_argument("--seed", type=_seed, default=123, help="seed for the parameters and the batch order (123)")
    train.add_argument("--out", default="model.safetensors", help="where to save the model (model.safetensors)")
    train.add_argument("--checkpoint", help="save training state here after every epoch")
    train.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    train.add_argument("--plot", help="save the loss curve to this PNG file (needs matplotlib)")
    train.add_argument("--progress", action="store_true", help="show a progress bar")
    train.add_argument("--quiet", action="store_true", help="no per-step log lines")
    train.add_argument("--no-cache", action="store_true", help="do not use the persistent compilation cache")
    train.add_argument(
        "--num-processes",
        type=_positive_int,
        default=1,
        help="data-parallel processes on this machine (mp.spawn's nprocs)",
    )
    train.add_argument(
        "--devices-per-process", type=_positive_int, default=1, help="devices each process drives (CPU: simulated)"
    )
    train.set_defaults(handler=_run_train)

    convert = commands.add_parser(
        "convert",
        help="convert a model file between PyTorch's .pth and safetensors",
        description="Convert a state dict between PyTorch's .pth format and safetensors, by DST's suffix "
        "(.pth or .pt: PyTorch's format; anything else: safetensors). Keys, dtypes and values are unchanged. "
        "A .pth file is read without torch and as safely as torch.load(weights_only=True).",
    )
    convert.add_argument("source", metavar="SRC", help="the file to read (its format is read from its content)")
    convert.add_argument("destination", metavar="DST", help="the file to write")
    convert.set_defaults(handler=_run_convert)

    bench = commands.add_parser(
        "bench",
        help="benchmark jit-compiled JAX training against PyTorch (fundamentals bench --help)",
        description="Benchmark jit-compiled JAX training against PyTorch, each framework in its own process.",
    )
    bench.add_argument(
        "benchmark", nargs="?", default="all", choices=(*SECTIONS, "all"), help="which benchmark (default: all)"
    )
    bench.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (tests, CI)")
    bench.add_argument("--json", metavar="FILE", help="write every figure and the machine to FILE")
    bench.add_argument("--plot", metavar="FILE.png", help="plot per-step time by variant to a PNG")
    bench.add_argument("--torch-compile", action="store_true", help="also time torch.compile (slow to compile)")
    bench.set_defaults(handler=_run_bench)

    doctor = commands.add_parser("doctor", help="check the installation and list JAX devices")
    doctor.set_defaults(handler=_run_doctor)
    return parser


def _run_train(args: argparse.Namespace) -> int:
    from .launch import launch

    if args.resume and not args.checkpoint:
        raise CLIError("--resume needs --checkpoint PATH")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise CLIError(f"--plot must name a .png file, got {args.plot!r}")
    for option, path in (("--out", args.out), ("--checkpoint", args.checkpoint), ("--plot", args.plot)):
        if path is None:
            continue
        if os.path.isdir(path):
            raise CLIError(f"{option} {path} is a folder; give a file name")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise CLIError(f"{option} folder does not exist: {folder}")
    _check_outputs(args)
    split = _load_split(args)  # read once, here, before any process starts: a bad file fails now
    _check_sizes(args, split)
    _check_room(args, split)

    if args.num_processes * args.devices_per_process == 1:
        return _train(0, args, split)
    # Like the book's mp.spawn(main, nprocs=world_size): each process runs _train with its rank.
    # The parent starts no JAX backend itself, so on a GPU machine the devices stay free; the
    # data it read travels to the processes with the arguments.
    try:
        launch(_train, args.num_processes, args, split, devices_per_process=args.devices_per_process)
    except RuntimeError as error:
        raise CLIError(_rank_reason(str(error))) from None
    return 0


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before training, outputs that could not be written or that would overwrite an input."""
    from ._files import check_output_paths, describe

    outputs = [
        (option, path)
        for option, path in (("--out", args.out), ("--checkpoint", args.checkpoint), ("--plot", args.plot))
        if path is not None
    ]
    try:
        check_output_paths([(option, path, 0) for option, path in outputs])
    except (OSError, ValueError) as error:
        raise CLIError(describe(error)) from None
    files = ([("--data", args.data)] if args.data not in ("toy", "digits") else []) + outputs
    for i, (first, first_path) in enumerate(files):
        for second, second_path in files[i + 1 :]:
            if _same_file(first_path, second_path):
                raise CLIError(f"{second} {second_path} is the same file as {first}; give each its own file")


def _same_file(first: str, second: str) -> bool:
    if os.path.realpath(first) == os.path.realpath(second):
        return True
    try:
        return os.path.samefile(first, second)  # hard links
    except OSError:
        return False


def _check_sizes(args: argparse.Namespace, split) -> None:
    """Refuse, before anything is allocated, a network over the documented size limits."""
    from . import _limits
    from .nn import parameter_count

    num_classes = int(max(split.y_train.max(), split.y_test.max())) + 1
    try:
        _limits.check_parameter_count(parameter_count(split.X_train.shape[1], num_classes, args.hidden), "the network")
    except ValueError as error:
        raise CLIError(str(error)) from None


def _settings(args: argparse.Namespace) -> tuple[int, float, int, bool]:
    """Epochs, learning rate, batch size (per process) and drop_last: the options, else the data's defaults."""
    defaults = _DEFAULTS["toy" if args.data == "toy" else "other"]
    return (
        args.epochs or defaults.epochs,
        args.lr or defaults.lr,
        args.batch_size or defaults.batch_size,
        defaults.drop_last,
    )


# What an output may take on disk beyond its arrays: a safetensors header or a .pth's zip records
# and pickle (per tensor), a checkpoint's JSON state; and a loss curve's PNG.
_HEADER_BYTES, _PER_TENSOR_BYTES, _STATE_BYTES, _PLOT_BYTES = 4096, 512, 65536, 1 << 20


def _output_sizes(args: argparse.Namespace, split) -> dict[str, int]:
    """An upper bound of the bytes each output takes on disk, from the data's and the network's sizes."""
    from .nn import parameter_count

    num_classes = int(max(split.y_train.max(), split.y_test.max())) + 1
    parameters = parameter_count(split.X_train.shape[1], num_classes, args.hidden)
    model = 4 * parameters + _HEADER_BYTES + _PER_TENSOR_BYTES * 2 * (len(args.hidden) + 1)  # float32 arrays
    epochs, _, batch_size, _ = _settings(args)
    steps = epochs * -(-len(split.X_train) // batch_size)
    # The history's per-step and per-epoch numbers (8 bytes at most each), and while a checkpoint is
    # replaced, the old one and the new one both exist.
    checkpoint = 2 * (model + 8 * (steps + 4 * epochs) + _STATE_BYTES)
    return {"--out": model, "--checkpoint": checkpoint, "--plot": _PLOT_BYTES}


def _check_room(args: argparse.Namespace, split) -> None:
    """Prove, before training, that the disks have room for every output at once (space is allocated, not guessed)."""
    from ._files import check_output_paths, describe

    sizes = _output_sizes(args, split)
    outputs = [
        (option, path, sizes[option])
        for option, path in (("--out", args.out), ("--checkpoint", args.checkpoint), ("--plot", args.plot))
        if path is not None
    ]
    try:
        check_output_paths(outputs)
    except (OSError, ValueError) as error:
        raise CLIError(describe(error)) from None


def _rank_reason(message: str) -> str:
    """One line from `launch`'s error: the rank, and its exception's own message (not the traceback)."""
    lines = [line for line in message.strip().splitlines() if line.strip()]
    if len(lines) < 2 or "raised an exception" not in lines[0]:
        return lines[0].removesuffix("; its last output:") if lines else message
    reason = lines[-1].strip()  # a traceback ends with "module.Type: message"
    reason = re.sub(r"^[\w.]*CLIError: ", "", reason)  # our own errors: the message is the reason
    reason = re.sub(r"^(?:[A-Za-z_]\w*\.)+(?=\w+: )", "", reason)  # "fundamentals.x.SomeError: " -> "SomeError: "
    return f"{lines[0].rstrip(':')}: {reason}"


def _load_split(args: argparse.Namespace):
    from ._files import describe
    from .datasets import load_dataset

    try:
        return load_dataset(args.data, target=args.target, seed=args.seed, log=_progress_line)
    except (OSError, ValueError, ImportError) as error:
        raise CLIError(describe(error)) from None


def _progress_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _train(rank: int, args: argparse.Namespace, split) -> int:
    """One process of `fundamentals train` (the only one, or rank `rank` of a launched run), on the data read once."""
    import jax
    import optax

    from . import checkpoint as checkpoint_module
    from ._compilation_cache import enable_compilation_cache
    from ._files import describe, interrupts_held
    from .data import ArrayDataset, DataLoader
    from .nn import NeuralNetwork, count_parameters
    from .samplers import DistributedSampler
    from .sharding import data_mesh
    from .train import TrainingDivergedError, compute_accuracy, fit

    if not args.no_cache:
        enable_compilation_cache()
    distributed = jax.process_count() > 1 or args.devices_per_process > 1
    epochs, lr, batch_size, drop_last = _settings(args)  # the batch size is per process, as in PyTorch's DDP
    num_classes = int(max(split.y_train.max(), split.y_test.max())) + 1
    num_features = split.X_train.shape[1]
    if split.X_test.shape[1] != num_features:
        raise CLIError(f"test features have {split.X_test.shape[1]} columns, training features {num_features}")
    per_process = -(-len(split.X_train) // jax.process_count())
    drop_last = drop_last and per_process >= batch_size

    # The same key on every process: the replicas start from the same parameters.
    model = NeuralNetwork(num_features, num_classes, hidden=args.hidden, key=jax.random.key(args.seed))
    train_set = ArrayDataset(split.X_train, split.y_train)
    mesh = None
    if distributed:
        mesh = data_mesh()
        sampler = DistributedSampler(train_set, shuffle=True, seed=args.seed)
        train_loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler, drop_last=drop_last)
    else:
        train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=drop_last, seed=args.seed)
    print(
        f"Data: {split.name}, {len(split.X_train)} train / {len(split.X_test)} test examples, "
        f"{num_features} features, {num_classes} classes"
    )
    print(
        f"Model: NeuralNetwork({num_features}, {num_classes}, hidden={args.hidden}), "
        f"{count_parameters(model)} parameters; SGD lr {lr}, batch {batch_size}, {epochs} epochs, seed {args.seed}"
    )
    if mesh is not None:
        print(
            f"Data parallel: process {jax.process_index()} of {jax.process_count()}, "
            f"{len(jax.local_devices())} local / {len(jax.devices())} devices in the mesh, "
            f"global batch {batch_size * jax.process_count()}"
        )
    try:
        model, history = fit(
            model,
            optax.sgd(lr),
            train_loader,
            num_epochs=epochs,
            log=None if args.quiet else print,
            progress=args.progress and rank == 0,
            checkpoint=args.checkpoint,
            resume=args.resume,
            mesh=mesh,
            seed=args.seed,
        )
    except (TrainingDivergedError, checkpoint_module.CheckpointError, ValueError) as error:
        raise CLIError(str(error)) from None
    except OSError as error:  # a checkpoint that could not be written: the one before it is intact
        raise CLIError(f"{describe(error)} (the checkpoint written before, if any, is intact)") from None

    for name, (X, y) in {"Train": (split.X_train, split.y_train), "Test": (split.X_test, split.y_test)}.items():
        dataset = ArrayDataset(X, y)
        # Each process evaluates its shard; compute_accuracy sums the counts over processes.
        eval_sampler = DistributedSampler(dataset, shuffle=False) if distributed else None
        loader = DataLoader(dataset, batch_size=max(batch_size, 256), sampler=eval_sampler)
        accuracy = compute_accuracy(model, loader, mesh=mesh)
        print(f"{name} accuracy: {accuracy:.4f}")
    if jax.process_index() == 0:  # only process 0 writes files
        # Ctrl-C while the outputs are written is held back until they are: then the run has succeeded.
        with interrupts_held(deliver=False) as interrupted:
            _save_outputs(model, history, split.name, args)
        if interrupted:  # nothing is left to stop
            print("Ctrl-C came while the outputs were written; they are complete", file=sys.stderr)
    return 0


def _save_outputs(model, history: dict, name: str, args: argparse.Namespace) -> None:
    """Write the model, and the loss curve if asked; a model the disk refuses is saved elsewhere and named."""
    from . import checkpoint as checkpoint_module
    from ._files import describe

    try:
        saved = checkpoint_module.save_model(model, args.out)
    except OSError as error:
        raise CLIError(f"{describe(error)}; {_save_elsewhere(model, args.out)}") from None
    print(f"Saved model to {saved}")
    if args.plot:
        try:
            _plot_loss(history, args.plot, title=f"{name}: training run")
        except OSError as error:
            raise CLIError(f"{describe(error)} (the model was saved to {saved})") from None
        print(f"Saved loss curve to {args.plot}")


def _save_elsewhere(model, out: str) -> str:
    """Save the trained model in the temporary folder, else the home folder; say where (or that it could not be)."""
    from . import checkpoint as checkpoint_module
    from ._files import describe

    reasons = []
    for folder in dict.fromkeys([tempfile.gettempdir(), os.path.expanduser("~")]):
        spare = None
        try:
            handle, spare = tempfile.mkstemp(prefix="fundamentals-model-", suffix=f"-{Path(out).name}", dir=folder)
            os.close(handle)
            checkpoint_module.save_model(model, spare)
        except OSError as error:
            if spare is not None and os.path.lexists(spare):
                os.unlink(spare)
            reasons.append(f"{folder}: {describe(error)}")
            continue
        return f"the trained model was saved to {spare} instead"
    return f"the trained model could not be saved elsewhere either ({'; '.join(reasons)})"


def _plot_loss(history: dict, path: str, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        raise CLIError("--plot needs matplotlib: pip install matplotlib") from None
    import matplotlib.pyplot as plt

    from .plotting import plot_history

    plt.close(plot_history(history, path, title=title))


def _run_convert(args: argparse.Namespace) -> int:
    from ._files import describe
    from .checkpoint import CheckpointError, convert

    try:
        count, written = convert(args.source, args.destination)
    except (OSError, CheckpointError, TypeError, ValueError) as error:
        raise CLIError(describe(error)) from None
    kind = "PyTorch .pth" if Path(written).suffix.lower() in (".pth", ".pt") else "safetensors"
    print(f"Wrote {count} tensors to {written} ({kind})")
    return 0


def _run_bench(args: argparse.Namespace) -> int:
    from .bench.runner import run_command

    return run_command(args)


def _run_doctor(args: argparse.Namespace) -> int:
    from .doctor import doctor

    return doctor()


def main(argv: list[str] | None = None) -> int:
    restore_default_handler()  # from here on, Ctrl-C is a KeyboardInterrupt, handled below
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:  # named by the subcommand that was given them, which lists its options in its --help
            _Parser(prog=f"{parser.prog} {args.command}").error(f"unrecognized arguments: {' '.join(extras)}")
    except SystemExit as exit:  # argparse's one-line error or --help, as a return code
        return int(exit.code or 0)
    try:
        return int(args.handler(args) or 0)
    except CLIError as error:
        from ._checks import one_line

        print(f"fundamentals {args.command}: error: {one_line(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
