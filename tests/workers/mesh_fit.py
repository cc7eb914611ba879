"""Run by tests/test_train_parallel.py in a fresh process with 8 simulated CPU devices."""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import fundamentals as fm  # noqa: E402


def main() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(203, 5)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    mesh = fm.data_mesh()
    report = {"devices": len(jax.devices()), "mesh": int(mesh.size), "runs": {}}
    for fused in (True, False):
        for name, m in (("single", None), ("mesh", mesh)):
            loader = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=16, shuffle=True, drop_last=True, seed=1)
            model, history = fm.fit(
                fm.NeuralNetwork(5, 3, key=jax.random.key(0)),
                optax.sgd(0.1, momentum=0.9),
                loader,
                num_epochs=2,
                log=None,
                mesh=m,
                fused=fused,
            )
            report["runs"][f"{name}-{'fused' if fused else 'step'}"] = {
                "loss": history["loss"],
                "params": {k: v.tolist() for k, v in fm.state_dict(model).items()},
            }

    class BookDataset:  # one example at a time: its batches reach the mesh as host chunks
        def __len__(self):
            return len(X)

        def __getitem__(self, index):
            return X[index], y[index]

    loader = fm.DataLoader(BookDataset(), batch_size=16, shuffle=True, drop_last=True, seed=1)
    model, history = fm.fit(
        fm.NeuralNetwork(5, 3, key=jax.random.key(0)),
        optax.sgd(0.1, momentum=0.9),
        loader,
        num_epochs=2,
        log=None,
        mesh=mesh,
    )
    report["runs"]["mesh-book-fused"] = {
        "loss": history["loss"],
        "params": {k: v.tolist() for k, v in fm.state_dict(model).items()},
    }
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
