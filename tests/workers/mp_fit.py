"""Run by tests/test_train_parallel.py through fm.launch: one rank of a data-parallel fit."""

import jax
import numpy as np
import optax

import fundamentals as fm


def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)).astype(np.float32)
    y = (X[:, 0] - X[:, 2] > 0).astype(np.int64)
    return X, y


def train(rank, num_epochs, fused):
    X, y = data()
    dataset = fm.ArrayDataset(X, y)
    sampler = fm.DistributedSampler(dataset, shuffle=True, seed=5)  # rank and size from jax.distributed
    loader = fm.DataLoader(dataset, batch_size=4, sampler=sampler, drop_last=True)
    model = fm.NeuralNetwork(3, 2, key=jax.random.key(1))
    model, history = fm.fit(
        model,
        optax.sgd(0.2, momentum=0.9),
        loader,
        num_epochs=num_epochs,
        log=None,
        mesh=fm.data_mesh(),
        fused=fused,
        val_loader=fm.DataLoader(dataset, batch_size=8, sampler=fm.DistributedSampler(dataset, shuffle=False)),
    )
    return {
        "rank": rank,
        "process_count": jax.process_count(),
        "devices": len(jax.devices()),
        "loss": history["loss"],
        "val_accuracy": history["val_accuracy"],
        "params": {k: v.tolist() for k, v in fm.state_dict(model).items()},
    }


def train_preempted(rank, mode, checkpoint):
    """A 2-process run; with mode "interrupt", rank 1 gets SIGTERM as its sampler starts epoch 2.

    Items take a few milliseconds to load (the book's Dataset class, with a pause), so that the
    run lasts long enough for the processes to agree on where to stop.
    """
    import os
    import signal
    import time

    class Slow:
        def __init__(self, X, y):
            self.X, self.y = X, y

        def __getitem__(self, index):
            time.sleep(0.004)
            return self.X[index], self.y[index]

        def __len__(self):
            return len(self.y)

    class Signalling(fm.DistributedSampler):
        def __iter__(self):
            if mode == "interrupt" and rank == 1 and self.epoch == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().__iter__()

    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 3)).astype(np.float32)
    y = (X[:, 0] - X[:, 2] > 0).astype(np.int64)
    dataset = Slow(X, y)
    loader = fm.DataLoader(dataset, batch_size=4, sampler=Signalling(dataset, shuffle=True, seed=5), drop_last=True)
    model, history = fm.fit(
        fm.NeuralNetwork(3, 2, key=jax.random.key(1)),
        optax.sgd(0.05, momentum=0.9),
        loader,
        num_epochs=4,
        mesh=fm.data_mesh(),
        fused=False,
        checkpoint=None if mode == "straight" else checkpoint,
        resume=mode == "resume",
        log=None,
    )
    return {"loss": history["loss"], "params": {k: v.tolist() for k, v in fm.state_dict(model).items()}}
