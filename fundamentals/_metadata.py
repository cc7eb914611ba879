"""The package's own metadata: its version and the requirements it was installed with.

Read from the installed distribution (`importlib.metadata`), so `pyproject.toml` is the one
place they are written; a source checkout that was not installed reads `pyproject.toml` itself.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

__all__ = ["DISTRIBUTION", "version", "requirements", "requires_python"]

DISTRIBUTION = "jax-fundamentals"
_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def _pyproject() -> dict:
    try:
        with open(_PYPROJECT, "rb") as file:
            return tomllib.load(file).get("project", {})
    except OSError:
        return {}


def version() -> str:
    """The installed version, or the source tree's, or `0+unknown`."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return _pyproject().get("version", "0+unknown")


def requirements() -> list[Requirement]:
    """The core dependencies (no extras), as `packaging` requirements."""
    try:
        lines = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        lines = _pyproject().get("dependencies", [])
    parsed = [Requirement(line) for line in lines]
    return [r for r in parsed if r.marker is None or r.marker.evaluate({"extra": ""})]


def requires_python() -> str:
    """The `Requires-Python` specifier, e.g. `>=3.11`."""
    try:
        return importlib.metadata.metadata(DISTRIBUTION)["Requires-Python"] or ""
    except importlib.metadata.PackageNotFoundError:
        return _pyproject().get("requires-python", "")
