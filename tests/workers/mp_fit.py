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
