"""Started by torchrun in tests/test_examples.py: joins through fm.init_distributed, then rank 1 dies."""

import os
import signal
import sys
import time

import fundamentals as fm

rank, world_size = fm.init_distributed(heartbeat_timeout_seconds=int(os.environ.get("TEST_HEARTBEAT", "10")))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

mesh = fm.data_mesh()
total = jax.jit(jnp.sum)(fm.shard_batch(np.ones((1, 1), np.float32), mesh))
print(f"rank {rank} of {world_size}: sum over ranks {float(total.addressable_data(0))}", flush=True)
if sys.argv[1:] == ["die"]:
    if rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(300)  # the survivors: they must be ended, not left waiting
