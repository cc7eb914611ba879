"""Shared test set-up: torch is imported lazily and kept to one thread per test process."""

import pytest


@pytest.fixture(scope="session")
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch
