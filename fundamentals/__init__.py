"""fundamentals: Appendix A of *Build a Large Language Model (From Scratch)*, in JAX.

Tensors are immutable `jax.Array`s, `jax.grad` replaces autograd, the network is an Equinox
module, Optax runs SGD, and a NumPy batch iterator reproduces `torch.utils.data.DataLoader`.
Public names are re-exported here; nothing is defined here.
"""

from . import _startup  # noqa: F401 - first: Ctrl-C while the command imports JAX exits with one line

# isort: split
from ._metadata import version as _version
from .autograd import (
    ComputationGraph,
    GraphLayout,
    computation_graph,
    graph_layout,
    logistic_regression_loss,
    plot_computation_graph,
)
from .checkpoint import CheckpointError, load_model, save_model
from .data import (
    ArrayDataset,
    DataLoader,
    Dataset,
    DevicePlan,
    IterableDataset,
    ToyDataset,
    WorkerInfo,
    default_collate,
    default_convert,
    get_worker_info,
)
from .datasets import toy_data
from .launch import init_distributed, launch
from .losses import binary_cross_entropy, check_labels, cross_entropy
from .nn import NeuralNetwork, ReLU, count_parameters, load_state_dict, state_dict
from .plotting import plot_history
from .samplers import (
    BatchSampler,
    DistributedSampler,
    RandomSampler,
    SamplerIndexError,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)
from .sharding import (
    batch_sharding,
    check_batch_size,
    data_mesh,
    default_device,
    replicated_sharding,
    shard_batch,
    to_device,
)
from .tensors import (
    default_float_dtype,
    default_int_dtype,
    from_numpy,
    tensor,
    to_numpy,
)
from .torchfile import TorchFileError, UnsafeFileError, torch_load, torch_save
from .train import (
    BestCheckpoint,
    Callback,
    EarlyStopping,
    TrainingDivergedError,
    TrainProgram,
    TrainState,
    compute_accuracy,
    fit,
    predict,
    predict_proba,
)

__version__ = _version()

__all__ = [
    "BestCheckpoint",
    "Callback",
    "EarlyStopping",
    "plot_history",
    "ArrayDataset",
    "BatchSampler",
    "CheckpointError",
    "ComputationGraph",
    "DataLoader",
    "DevicePlan",
    "Dataset",
    "DistributedSampler",
    "GraphLayout",
    "IterableDataset",
    "NeuralNetwork",
    "RandomSampler",
    "ReLU",
    "SamplerIndexError",
    "SequentialSampler",
    "SubsetRandomSampler",
    "TorchFileError",
    "ToyDataset",
    "TrainProgram",
    "TrainState",
    "TrainingDivergedError",
    "UnsafeFileError",
    "WeightedRandomSampler",
    "WorkerInfo",
    "batch_sharding",
    "binary_cross_entropy",
    "check_batch_size",
    "check_labels",
    "computation_graph",
    "compute_accuracy",
    "count_parameters",
    "cross_entropy",
    "data_mesh",
    "default_collate",
    "default_convert",
    "default_device",
    "default_float_dtype",
    "default_int_dtype",
    "fit",
    "from_numpy",
    "get_worker_info",
    "graph_layout",
    "init_distributed",
    "launch",
    "load_model",
    "load_state_dict",
    "logistic_regression_loss",
    "plot_computation_graph",
    "predict",
    "predict_proba",
    "replicated_sharding",
    "save_model",
    "shard_batch",
    "state_dict",
    "tensor",
    "to_device",
    "to_numpy",
    "toy_data",
    "torch_load",
    "torch_save",
]
