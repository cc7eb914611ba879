"""Run by tests/test_train_parallel.py in a fresh process with 8 simulated CPU devices."""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import fundamentals as fm
from fundamentals.testing import book_toy_dataset  # noqa: E402


def main() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(203, 5)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    mesh = fm.data_mesh()
    report = {"devices": len(jax.devices()), "mesh": int(mesh.size), "runs": {}}

    def run(name, dataset, m, fused=None):
        loader = fm.DataLoader(dataset, batch_size=16, shuffle=True, drop_last=True, seed=1)
        model = fm.NeuralNetwork(5, 3, key=jax.random.key(0))
        model, history = fm.fit(
            model, optax.sgd(0.1, momentum=0.9), loader, num_epochs=2, log=None, mesh=m, fused=fused
        )
        report["runs"][name] = {
            "loss": history["loss"],
            "params": {k: v.tolist() for k, v in fm.state_dict(model).items()},
        }

    for fused in (True, False):
        for name, m in (("single", None), ("mesh", mesh)):
            run(f"{name}-{'fused' if fused else 'step'}", fm.ArrayDataset(X, y), m, fused)
    # the book's class, one example at a time: its batches reach the mesh as host chunks
    run("mesh-book-fused", book_toy_dataset()(X, y), mesh)
    try:
        fm.fit(
            fm.NeuralNetwork(5, 3, key=jax.random.key(0)),
            optax.sgd(0.1),
            fm.DataLoader(fm.ArrayDataset(X, y), batch_size=12),
            num_epochs=1,
            log=None,
            mesh=mesh,
        )
    except ValueError as error:
        report["error"] = str(error)
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
