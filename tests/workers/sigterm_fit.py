"""A training run that SIGTERM interrupts (python tests/workers/sigterm_fit.py KIND MODE CHECKPOINT OUT).

KIND: "device" (an ArrayDataset: its epochs run from the device), "host" (the book's Dataset
class: batches stacked on the host) or "per_step" (the same, one compiled call a step, so the
signal lands mid-epoch). MODE: "straight" (no signal), "interrupt" (the process
sends itself SIGTERM while epoch 2 is being loaded) or "resume" (continue from CHECKPOINT).
The trained parameters and every step's loss go to OUT (.npz) when the run finishes.
"""

import os
import signal
import sys

import jax
import numpy as np
import optax

import fundamentals as fm
from fundamentals.testing import book_toy_dataset

kind, mode, checkpoint, out = sys.argv[1:5]
rng = np.random.default_rng(0)
X = rng.normal(size=(96, 3)).astype(np.float32)
y = (X[:, 0] > 0).astype(np.int64)


class Signalling(fm.DistributedSampler):
    """Sends SIGTERM to its own process when epoch 2's order is drawn (only in "interrupt" mode)."""

    def __iter__(self):
        if mode == "interrupt" and self.epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().__iter__()


dataset = fm.ArrayDataset(X, y) if kind == "device" else book_toy_dataset()(X, y)
sampler = Signalling(dataset, num_replicas=1, rank=0, shuffle=True, seed=5)
loader = fm.DataLoader(dataset, batch_size=8, sampler=sampler)
model = fm.NeuralNetwork(3, 2, key=jax.random.key(0))
trained, history = fm.fit(
    model,
    optax.sgd(0.1, momentum=0.9),
    loader,
    num_epochs=4,
    checkpoint=None if mode == "straight" else checkpoint,
    resume=mode == "resume",
    log=print,
    fused=kind != "per_step",
)
np.savez(out, loss=np.asarray(history["loss"]), **fm.state_dict(trained))
