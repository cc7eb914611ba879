"""SIGTERM during training: stop at the next chunk boundary (in every process at the same one), then exit.

SIGTERM is what torchrun, SLURM and Kubernetes send before they kill a job. PyTorch's loop
dies where it is; `fit` instead finishes the chunk that is running, lets the caller write its
checkpoint, and then ends the process with SIGTERM's own status (143 in a shell), so launchers
see what happened.

- One process: a Python handler for SIGTERM, installed for the duration of `fit` when the
  process has none of its own, records the signal; the loop asks `requested()` after each
  chunk.
- Several processes (after `jax.distributed.initialize`): JAX's preemption service already
  catches SIGTERM in any process and agrees on a step at which all of them stop
  (`multihost_utils.reached_preemption_sync_point`); the loop asks it after each chunk, with
  the chunk's number, which is the same in every process.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import jax
from jax.experimental import multihost_utils

__all__ = ["StopOnSigterm"]


class StopOnSigterm:
    """A context manager: `requested()` after each chunk says whether to stop; `exit()` ends the process."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.chunks = 0
        self._previous: Any = None
        self._installed = False
        self._processes = 1

    def __enter__(self) -> StopOnSigterm:
        self._processes = jax.process_count()
        if (
            self._processes == 1
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        ):
            self._previous = signal.signal(signal.SIGTERM, self._record)
            self._installed = True
        return self

    def _record(self, signum: int, frame: Any) -> None:
        self.received = signum

    def requested(self) -> bool:
        """Whether to stop now: SIGTERM arrived (in any process, all of them agreeing on this chunk)."""
        self.chunks += 1
        if self._processes > 1:
            try:
                return bool(multihost_utils.reached_preemption_sync_point(self.chunks))
            except RuntimeError:  # the preemption service is off: SIGTERM then ends the process as usual
                return False
        return self.received is not None

    def __exit__(self, *exc_info: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False

    def exit(self) -> None:
        """End this process as SIGTERM would have (status 143 in a shell), after flushing its output."""
        self.__exit__()
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pause()  # the signal ends the process; never returns
