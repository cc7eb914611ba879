"""Shared test set-up: torch is imported lazily and kept to one thread per test process."""

import pytest

from .helpers import TORCH_MISSING


@pytest.fixture(scope="session")
def torch():
    torch = pytest.importorskip("torch", reason=TORCH_MISSING)
    torch.set_num_threads(1)
    return torch
