"""`fundamentals doctor`: the book's environment check, for JAX.

The book checks its set-up with `torch.__version__` and `torch.cuda.is_available()`. This
prints `[OK]` or `[FAIL]` for each package the library needs, with its version against the
minimum, then the JAX backend and every device it sees.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
from collections.abc import Callable

import jax
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from ._metadata import requirements, requires_python

__all__ = ["MINIMUM_VERSIONS", "doctor"]

# From the package's own requirements (pyproject.toml): name -> specifier, e.g. "jax" -> ">=0.7".
MINIMUM_VERSIONS = {r.name: str(r.specifier) for r in requirements()}


def _satisfies(version: str, specifier: str) -> bool:
    """Whether `version` meets `specifier` (a bare version means at least that version)."""
    if specifier and specifier[0].isdigit():
        specifier = f">={specifier}"
    try:
        return SpecifierSet(specifier).contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def doctor(print_fn: Callable[[str], None] = print) -> int:
    """Print the environment check and return the exit code: 0 if everything is OK, else 1.

    Replaces the book's `torch.__version__` / `torch.cuda.is_available()` checks.
    """
    failures = 0
    python_spec = requires_python()
    python_ok = _satisfies(platform.python_version(), python_spec)
    failures += not python_ok
    print_fn(f"[{'OK' if python_ok else 'FAIL'}] Python {platform.python_version()} ({python_spec or 'any'})")
    for name, minimum in MINIMUM_VERSIONS.items():
        try:
            importlib.import_module(name)
            version = importlib.metadata.version(name)
        except Exception as error:  # noqa: BLE001 - any import failure is a FAIL line
            failures += 1
            print_fn(f"[FAIL] {name} not importable ({type(error).__name__}: {error}); need {minimum}")
            continue
        ok = _satisfies(version, minimum)
        failures += not ok
        print_fn(f"[{'OK' if ok else 'FAIL'}] {name} {version} ({minimum or 'any version'})")

    try:
        backend = jax.default_backend()
        devices = jax.devices()
    except Exception as error:  # noqa: BLE001 - any backend failure is a FAIL line
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
