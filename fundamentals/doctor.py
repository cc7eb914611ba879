"""`fundamentals doctor`: check the installation, importing only what it checks, and say how to fix it.

The book checks its set-up with `torch.__version__` and `torch.cuda.is_available()`. This
prints `[OK]` or `[FAIL]` for Python and for each package the library needs, with its version
against the minimum; a package that is missing, too old or cannot be imported is named with the
pip command that installs it. Then, if JAX imports, its backend and every device it sees.

Nothing of the library is imported here but its metadata, and each package only when its line
is checked, so a broken installation gets its report instead of a traceback.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
from collections.abc import Callable
from types import ModuleType

from ._metadata import requirements, requires_python

__all__ = ["MINIMUM_VERSIONS", "doctor"]

# From the package's own requirements (pyproject.toml): name -> specifier, e.g. "jax" -> ">=0.7".
MINIMUM_VERSIONS = {requirement.name: requirement.specifier for requirement in requirements()}


def _specifier(specifier: str) -> str:
    """A bare version means at least that version: `"0.7"` -> `">=0.7"`."""
    return f">={specifier}" if specifier and specifier[0].isdigit() else specifier


def _satisfies(version: str, specifier: str) -> bool | None:
    """Whether `version` meets `specifier`; None when `packaging`, which compares them, is missing."""
    try:
        from packaging.specifiers import SpecifierSet
        from packaging.version import InvalidVersion, Version
    except ImportError:
        return None
    try:
        return SpecifierSet(_specifier(specifier)).contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def _install_command(name: str, specifier: str, flag: str = "") -> str:
    return f"pip install {flag}'{name}{_specifier(specifier)}'"


def _import_name(distribution: str) -> str:
    """The module a distribution installs: its `top_level.txt` if it has one, else its normalised name."""
    try:
        top_level = (importlib.metadata.distribution(distribution).read_text("top_level.txt") or "").split()
    except importlib.metadata.PackageNotFoundError:
        top_level = []
    return top_level[0] if len(top_level) == 1 else distribution.replace("-", "_").lower()


def _check_package(
    name: str, specifier: str, print_fn: Callable[[str], None], unusable: set[str] | None = None
) -> ModuleType | None:
    """Print one package's line; return the imported module if the package is usable.

    `unusable` holds the modules of the packages already found unusable (this one's is added when
    it is): a package that fails only because it imports one of them is named as such, not as a
    second thing to reinstall.
    """
    unusable = set() if unusable is None else unusable
    wanted = specifier or "any version"
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        print_fn(f"[FAIL] {name} is not installed (needs {wanted}): {_install_command(name, specifier)}")
        return None
    satisfied = _satisfies(version, specifier)
    if satisfied is False:
        command = _install_command(name, specifier, "--upgrade ")
        print_fn(f"[FAIL] {name} {version} is too old (needs {wanted}): {command}")
        return None
    import_name = _import_name(name)
    try:
        module = importlib.import_module(import_name)
    except Exception as error:  # noqa: BLE001 - any failure to import is this package's FAIL line
        unusable.add(import_name)
        needed = (getattr(error, "name", None) or "").split(".")[0] if isinstance(error, ImportError) else ""
        if needed in unusable and needed != import_name:
            print_fn(f"[----] {name} {version}: not checked, it imports {needed}, which cannot be imported (see above)")
            return None
        command = _install_command(name, specifier, "--force-reinstall ")
        print_fn(
            f"[FAIL] {name} {version} is installed but cannot be imported ({type(error).__name__}: {error}): {command}"
        )
        return None
    compared = "" if satisfied else "; not compared: packaging is missing"
    print_fn(f"[OK] {name} {version} ({wanted}{compared})")
    return module


def _report_devices(jax: ModuleType, print_fn: Callable[[str], None]) -> bool:
    """Print JAX's backend and devices, and whether there is a GPU; False if the backend cannot start."""
    try:
        backend = jax.default_backend()
        devices = jax.devices()
    except Exception as error:  # noqa: BLE001 - any backend failure is a FAIL line
        print_fn(f"[FAIL] JAX backend could not start: {type(error).__name__}: {error}")
        return False
    print_fn(f"[OK] JAX backend: {backend} ({len(devices)} device{'s' if len(devices) != 1 else ''})")
    for device in devices:
        print_fn(f"     {device.platform}:{device.id} {device.device_kind}")
    gpus = [d for d in devices if d.platform == "gpu"]
    print_fn(f"GPU available (torch.cuda.is_available()): {bool(gpus)}")
    if not gpus:
        print_fn("     no GPU: training runs on the CPU. With an NVIDIA GPU: pip install -e '.[cuda]'")
    return True


def doctor(print_fn: Callable[[str], None] = print) -> int:
    """Print the environment check and return the exit code: 0 if everything is OK, else 1.

    ```python
    # PyTorch                                      # JAX
    print(torch.__version__)                       fundamentals.doctor.doctor()   # or: fundamentals doctor
    print(torch.cuda.is_available())
    ```

    **Arguments:**

    - `print_fn`: where each line goes (`print` by default).

    **Returns:**

    0 if Python, every required package and JAX's backend are fine, else 1.
    """
    python_spec = requires_python()
    python_ok = _satisfies(platform.python_version(), python_spec) is not False
    print_fn(f"[{'OK' if python_ok else 'FAIL'}] Python {platform.python_version()} ({python_spec or 'any'})")
    unusable: set[str] = set()
    modules = {
        name: _check_package(name, specifier, print_fn, unusable) for name, specifier in MINIMUM_VERSIONS.items()
    }
    failures = (not python_ok) + sum(module is None for module in modules.values())
    jax = modules.get("jax")
    if jax is None:
        print_fn("JAX's devices: not listed, JAX is not usable (see above)")
        return 1
    return 1 if not _report_devices(jax, print_fn) or failures else 0
