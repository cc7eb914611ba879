"""`fundamentals doctor`: the book's environment check, for JAX.

The book checks its set-up with `torch.__version__` and `torch.cuda.is_available()`. This
prints `[OK]` or `[FAIL]` for each package the library needs, with its version against the
minimum, then the JAX backend and every device it sees.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
import sys
from typing import Callable

__all__ = ["MINIMUM_VERSIONS", "doctor"]

# Kept in step with pyproject.toml's dependencies.
MINIMUM_VERSIONS = {
    "jax": "0.7",
    "jaxlib": "0.7",
    "equinox": "0.13",
    "optax": "0.2.4",
    "numpy": "1.26",
    "safetensors": "0.4",
}
MINIMUM_PYTHON = (3, 11)


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def doctor(print_fn: Callable[[str], None] = print) -> int:
    """Print the environment check and return the exit code: 0 if everything is OK, else 1.

    Replaces the book's `torch.__version__` / `torch.cuda.is_available()` checks.
    """
    failures = 0
    python_ok = sys.version_info[:2] >= MINIMUM_PYTHON
    failures += not python_ok
    minimum_python = ".".join(map(str, MINIMUM_PYTHON))
    print_fn(f"[{'OK' if python_ok else 'FAIL'}] Python {platform.python_version()} (>= {minimum_python})")
    for name, minimum in MINIMUM_VERSIONS.items():
        try:
            importlib.import_module(name)
            version = importlib.metadata.version(name)
        except Exception as error:  # noqa: BLE001 - any import failure is a FAIL line
            failures += 1
            print_fn(f"[FAIL] {name} not importable ({type(error).__name__}: {error}); need >= {minimum}")
            continue
        ok = _version_tuple(version) >= _version_tuple(minimum)
        failures += not ok
        print_fn(f"[{'OK' if ok else 'FAIL'}] {name} {version} (>= {minimum})")

    try:
        import jax

        backend = jax.default_backend()
        devices = jax.devices()
    except Exception as error:  # noqa: BLE001
        print_fn(f"[FAIL] JAX backend could not start: {type(error).__name__}: {error}")
        return 1
    print_fn(f"[OK] JAX backend: {backend} ({len(devices)} device{'s' if len(devices) != 1 else ''})")
    for device in devices:
        print_fn(f"     {device.platform}:{device.id} {device.device_kind}")
    gpus = [d for d in devices if d.platform == "gpu"]
    print_fn(f"GPU available (torch.cuda.is_available()): {bool(gpus)}")
    if not gpus:
        print_fn("     no GPU: training runs on the CPU. With an NVIDIA GPU: pip install -e '.[cuda]'")
    return 1 if failures else 0
