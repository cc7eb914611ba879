"""fundamentals: Appendix A of *Build a Large Language Model (From Scratch)*, in JAX.

Tensors are immutable `jax.Array`s, `jax.grad` replaces autograd, the network is an Equinox
module, Optax runs SGD, and a NumPy batch iterator reproduces `torch.utils.data.DataLoader`.
"""

from ._metadata import version as _version

__version__ = _version()

from . import _startup  # first: Ctrl-C while the command imports JAX exits with one line

from .tensors import default_float_dtype, default_int_dtype, from_numpy, tensor, to_numpy
from .losses import binary_cross_entropy, check_labels, cross_entropy
from .autograd import ComputationGraph, computation_graph, logistic_regression_loss
from .nn import NeuralNetwork, ReLU, count_parameters, load_state_dict, state_dict
from .data import ArrayDataset, DataLoader, Dataset, ToyDataset, default_collate
from .samplers import DistributedSampler, SamplerIndexError
from .datasets import toy_data
from .checkpoint import CheckpointError, load_model, save_model
from .torchfile import TorchFileError, UnsafeFileError, torch_load, torch_save
from .train import TrainingDivergedError, TrainProgram, compute_accuracy, fit, predict, predict_proba
from .sharding import (
    batch_sharding,
    check_batch_size,
    data_mesh,
    default_device,
    replicated_sharding,
    shard_batch,
    to_device,
)
from .launch import init_distributed, launch
