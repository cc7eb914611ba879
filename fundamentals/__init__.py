"""fundamentals: Appendix A of *Build a Large Language Model (From Scratch)*, in JAX.

Tensors are immutable `jax.Array`s, `jax.grad` replaces autograd, the network is an Equinox
module, Optax runs SGD, and a NumPy batch iterator reproduces `torch.utils.data.DataLoader`.
Public names are re-exported here; nothing else is defined here.

Each name is imported from its module the first time it is used (`fundamentals.fit` imports
`fundamentals.train`, and JAX with it), as NumPy and SciPy import their submodules: so
`import fundamentals` is quick, and `fundamentals doctor` can name what is missing from an
installation that lacks a dependency instead of failing to import it.
"""

import sys
import types
from typing import TYPE_CHECKING

from . import _startup  # noqa: F401 - first: Ctrl-C while the command imports JAX exits with one line

# Each public name, by the module that defines it (the imports below, for type checkers, say the same).
_EXPORTS = {
    "ComputationGraph": "autograd",
    "GraphLayout": "autograd",
    "GraphNode": "autograd",
    "computation_graph": "autograd",
    "graph_layout": "autograd",
    "logistic_regression_loss": "autograd",
    "plot_computation_graph": "autograd",
    "CheckpointError": "checkpoint",
    "load_model": "checkpoint",
    "save_model": "checkpoint",
    "ArrayDataset": "data",
    "DataLoader": "data",
    "Dataset": "data",
    "DevicePlan": "data",
    "IterableDataset": "data",
    "ToyDataset": "data",
    "WorkerInfo": "data",
    "default_collate": "data",
    "default_convert": "data",
    "get_worker_info": "data",
    "toy_data": "datasets",
    "init_distributed": "distributed",
    "launch": "launch",
    "binary_cross_entropy": "losses",
    "check_labels": "losses",
    "cross_entropy": "losses",
    "NeuralNetwork": "nn",
    "ReLU": "nn",
    "count_parameters": "nn",
    "load_state_dict": "nn",
    "state_dict": "nn",
    "plot_history": "plotting",
    "BatchSampler": "samplers",
    "DistributedSampler": "samplers",
    "RandomSampler": "samplers",
    "SamplerIndexError": "samplers",
    "SequentialSampler": "samplers",
    "SubsetRandomSampler": "samplers",
    "WeightedRandomSampler": "samplers",
    "batch_sharding": "sharding",
    "check_batch_size": "sharding",
    "data_mesh": "sharding",
    "default_device": "sharding",
    "replicated_sharding": "sharding",
    "shard_batch": "sharding",
    "to_device": "sharding",
    "default_float_dtype": "tensors",
    "default_int_dtype": "tensors",
    "from_numpy": "tensors",
    "tensor": "tensors",
    "to_numpy": "tensors",
    "TorchFileError": "torchfile",
    "UnsafeFileError": "torchfile",
    "torch_load": "torchfile",
    "torch_save": "torchfile",
    "BestCheckpoint": "train",
    "Callback": "train",
    "EarlyStopping": "train",
    "TrainingDivergedError": "train",
    "TrainProgram": "train",
    "TrainState": "train",
    "compute_accuracy": "train",
    "fit": "train.fit",  # the function, not its module (a type checker would read `train`'s `fit` as the module)
    "predict": "train",
    "predict_proba": "train",
}

if TYPE_CHECKING:
    from .autograd import (
        ComputationGraph as ComputationGraph,
        GraphLayout as GraphLayout,
        GraphNode as GraphNode,
        computation_graph as computation_graph,
        graph_layout as graph_layout,
        logistic_regression_loss as logistic_regression_loss,
        plot_computation_graph as plot_computation_graph,
    )
    from .checkpoint import (
        CheckpointError as CheckpointError,
        load_model as load_model,
        save_model as save_model,
    )
    from .data import (
        ArrayDataset as ArrayDataset,
        DataLoader as DataLoader,
        Dataset as Dataset,
        DevicePlan as DevicePlan,
        IterableDataset as IterableDataset,
        ToyDataset as ToyDataset,
        WorkerInfo as WorkerInfo,
        default_collate as default_collate,
        default_convert as default_convert,
        get_worker_info as get_worker_info,
    )
    from .datasets import (
        toy_data as toy_data,
    )
    from .distributed import (
        init_distributed as init_distributed,
    )
    from .launch import (
        launch as launch,
    )
    from .losses import (
        binary_cross_entropy as binary_cross_entropy,
        check_labels as check_labels,
        cross_entropy as cross_entropy,
    )
    from .nn import (
        NeuralNetwork as NeuralNetwork,
        ReLU as ReLU,
        count_parameters as count_parameters,
        load_state_dict as load_state_dict,
        state_dict as state_dict,
    )
    from .plotting import (
        plot_history as plot_history,
    )
    from .samplers import (
        BatchSampler as BatchSampler,
        DistributedSampler as DistributedSampler,
        RandomSampler as RandomSampler,
        SamplerIndexError as SamplerIndexError,
        SequentialSampler as SequentialSampler,
        SubsetRandomSampler as SubsetRandomSampler,
        WeightedRandomSampler as WeightedRandomSampler,
    )
    from .sharding import (
        batch_sharding as batch_sharding,
        check_batch_size as check_batch_size,
        data_mesh as data_mesh,
        default_device as default_device,
        replicated_sharding as replicated_sharding,
        shard_batch as shard_batch,
        to_device as to_device,
    )
    from .tensors import (
        default_float_dtype as default_float_dtype,
        default_int_dtype as default_int_dtype,
        from_numpy as from_numpy,
        tensor as tensor,
        to_numpy as to_numpy,
    )
    from .torchfile import (
        TorchFileError as TorchFileError,
        UnsafeFileError as UnsafeFileError,
        torch_load as torch_load,
        torch_save as torch_save,
    )
    from .train import (
        BestCheckpoint as BestCheckpoint,
        Callback as Callback,
        EarlyStopping as EarlyStopping,
        TrainingDivergedError as TrainingDivergedError,
        TrainProgram as TrainProgram,
        TrainState as TrainState,
        compute_accuracy as compute_accuracy,
        predict as predict,
        predict_proba as predict_proba,
    )
    from .train.fit import fit as fit

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    """Import a public name from its module on first use (PEP 562); `__version__` from the metadata."""
    if name == "__version__":
        from ._metadata import version

        value: object = version()
    elif name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif not name.startswith("_") and _is_submodule(name):  # fm.train.Run, fm.nn.state_dict: as after an import
        import importlib

        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # the next look-up finds it without coming here
    return value


class _Package(types.ModuleType):
    """The package's module type: a public name stays the function when its module of the same name is imported.

    `import fundamentals.launch` makes Python set the package's attribute `launch` to the module
    `fundamentals/launch.py`; `fm.launch` is the function `launch` all the same.
    """

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def _is_submodule(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(f"{__name__}.{name}") is not None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | {"__version__"})
