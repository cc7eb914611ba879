"""fundamentals: Appendix A of *Build a Large Language Model (From Scratch)*, in JAX.

Tensors are immutable `jax.Array`s, `jax.grad` replaces autograd, the network is an Equinox
module, Optax runs SGD, and a NumPy batch iterator reproduces `torch.utils.data.DataLoader`.
"""

__version__ = "0.1.0"

from . import _startup  # first: Ctrl-C while the command imports JAX exits with one line

from .tensors import default_float_dtype, default_int_dtype, from_numpy, tensor, to_numpy
from .autograd import (
    ComputationGraph,
    binary_cross_entropy,
    computation_graph,
    cross_entropy,
    logistic_regression_loss,
)
from .nn import NeuralNetwork, ReLU, count_parameters, load_state_dict, state_dict
from .data import (
    ArrayDataset,
    DataLoader,
    Dataset,
    DistributedSampler,
    SamplerIndexError,
    ToyDataset,
    default_collate,
    toy_data,
)
from .checkpoint import CheckpointError, load_model, save_model
from .train import TrainingDivergedError, compute_accuracy, fit, predict, predict_proba
from .parallel import (
    batch_sharding,
    check_batch_size,
    data_mesh,
    default_device,
    launch,
    replicated_sharding,
    shard_batch,
    to_device,
)
