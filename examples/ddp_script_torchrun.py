# JAX twin of the book's DDP-script-torchrun.py (appendix A), to read side by side with it.
# Adapted from rasbt/LLMs-from-scratch, Copyright (c) Sebastian Raschka, Apache License 2.0
# (see NOTICE). Source for "Build a Large Language Model From Scratch"
#   - https://www.manning.com/books/build-a-large-language-model-from-scratch
#
# Run: torchrun --standalone --nproc_per_node=2 examples/ddp_script_torchrun.py   (N from 1 to 4)
#      python examples/ddp_script_torchrun.py                                       (1 process)

# Appendix A: Introduction to PyTorch (Part 3), in JAX

import argparse

import equinox as eqx
import jax
import numpy as np
import optax

import fundamentals as fm
from fundamentals import DataLoader, NeuralNetwork, ToyDataset

# isort: split
# NEW imports:
from fundamentals import DistributedSampler


# NEW: function to initialize a distributed process group (1 process / device)
# this allows communication among processes
def ddp_setup(rank, world_size):
    """
    Arguments:
        rank: a unique process ID
        world_size: total number of processes in the group
    """
    # torchrun set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; init_distributed()
    # read them in __main__ below and joined this process to the others (JAX's coordinator
    # listens on MASTER_PORT + 1, since torchrun's own store holds MASTER_PORT). Calling it
    # again just returns (rank, world_size).
    # On CPUs the processes all-reduce through gloo, as the book's Windows branch does.
    assert fm.init_distributed() == (rank, world_size)


# ToyDataset (listing A.5) and NeuralNetwork (listing A.4) come from fundamentals:
# ToyDataset(X, y) is fm.ArrayDataset, NeuralNetwork(num_inputs, num_outputs, key=...) is an
# Equinox module with the same layers (2 -> 30 -> 20 -> num_outputs, ReLU between).


def prepare_dataset():
    X_train = np.array([[-1.2, 3.1], [-0.9, 2.9], [-0.5, 2.6], [2.3, -1.1], [2.7, -1.5]], dtype=np.float32)
    y_train = np.array([0, 0, 0, 1, 1])

    X_test = np.array(
        [
            [-0.8, 2.8],
            [2.6, -1.6],
        ],
        dtype=np.float32,
    )
    y_test = np.array([0, 1])

    train_ds = ToyDataset(X_train, y_train)
    test_ds = ToyDataset(X_test, y_test)

    train_loader = DataLoader(
        dataset=train_ds,
        batch_size=2,
        shuffle=False,  # NEW: False because of DistributedSampler below
        pin_memory=True,  # accepted, and a no-op: JAX places batches on the device itself
        drop_last=True,
        # NEW: chunk batches across processes without overlapping samples:
        sampler=DistributedSampler(train_ds),  # NEW: rank and world size from jax.distributed
    )
    test_loader = DataLoader(
        dataset=test_ds,
        batch_size=2,
        shuffle=False,
    )
    return train_loader, test_loader


# NEW: wrapper
def main(rank, world_size, num_epochs, save_path=None):

    ddp_setup(rank, world_size)  # NEW: initialize process groups

    train_loader, test_loader = prepare_dataset()
    # torch.manual_seed(123) in the book: the same key gives the same model on every rank
    model = NeuralNetwork(num_inputs=2, num_outputs=2, key=jax.random.key(123))
    optimizer = optax.sgd(learning_rate=0.5)

    # NEW: the JAX counterpart of DDP(model): a mesh over the devices of every process,
    # the parameters replicated on each, every global batch split across them
    mesh = fm.data_mesh()
    params, static = eqx.partition(model, eqx.is_array)
    params = fm.to_device(params, fm.replicated_sharding(mesh))
    opt_state = optimizer.init(params)

    @jax.jit
    def train_step(params, opt_state, features, labels):
        def compute_loss(params):
            logits = eqx.combine(params, static)(features)
            return fm.cross_entropy(logits, labels)  # Loss function

        # loss.backward(): the gradient of the mean loss over the global batch; the
        # all-reduce DDP's hooks run is inserted here by XLA
        loss, grads = jax.value_and_grad(compute_loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)  # optimizer.step()
        params = optax.apply_updates(params, updates)
        return params, opt_state, loss

    device = fm.default_device().platform.upper()  # "GPU" or "CPU"
    for epoch in range(num_epochs):
        # NEW: Set sampler to ensure each epoch has a different shuffle order
        train_loader.sampler.set_epoch(epoch)

        for features, labels in train_loader:
            batch_size = labels.shape[0]  # this rank's rows
            # NEW: this rank's rows become its part of one global batch (features.to(rank))
            features, labels = fm.shard_batch((features, labels), mesh)
            params, opt_state, loss = train_step(params, opt_state, features, labels)

            # LOGGING (the loss is the global batch's, the same on every rank)
            print(
                f"[{device}{rank}] Epoch: {epoch + 1:03d}/{num_epochs:03d}"
                f" | Batchsize {batch_size:03d}"
                f" | Train/Val Loss: {float(loss.addressable_data(0)):.2f}"
            )

    # the core model, as model.module in the book: this process's copy of the parameters
    model = eqx.combine(jax.tree.map(lambda p: p.addressable_data(0), params), static)

    try:
        train_acc = fm.compute_accuracy(model, train_loader)  # this rank's shard, as in the book
        print(f"[{device}{rank}] Training accuracy {train_acc}")  # one write: ranks share the terminal
        test_acc = fm.compute_accuracy(model, test_loader)
        print(f"[{device}{rank}] Test accuracy {test_acc}")  # one write: ranks share the terminal

    ####################################################
    # NEW (not in the book): the book's ZeroDivisionError is a ValueError here
    except ValueError as e:
        raise ValueError(
            f"{e}\n\nThis script is designed for 2 processes. You can run it as:\n"
            "torchrun --standalone --nproc_per_node=2 examples/ddp_script_torchrun.py\n"
            "Each rank needs at least one batch of the 5 training examples: up to 4 processes."
        ) from None
    ####################################################

    if save_path is not None and rank == 0:  # for the tests: the trained parameters
        fm.save_model(model, save_path)
    # destroy_process_group(): nothing to do, JAX shuts down at exit


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The book's DDP-script-torchrun.py, in JAX")
    parser.add_argument("--save", metavar="PATH", help="rank 0 saves the trained model here (safetensors)")
    args = parser.parse_args()

    # NEW: Use environment variables set by torchrun if available, otherwise default to single-process.
    # (SLURM, Open MPI and Kubernetes jobs are found too; call this before any other JAX code.)
    rank, world_size = fm.init_distributed()

    # Only print on rank 0 to avoid duplicate prints from each process
    if rank == 0:
        print("JAX version:", jax.__version__)
        print("Default backend:", jax.default_backend())
        print("Number of devices available:", jax.device_count())

    num_epochs = 3
    main(rank, world_size, num_epochs, args.save)
