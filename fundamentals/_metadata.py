"""The package's own metadata: its version and the requirements it was installed with.

Read from the installed distribution (`importlib.metadata`), so `pyproject.toml` is the one
place they are written; a source checkout that was not installed reads `pyproject.toml` itself.
Only the standard library is imported here: `fundamentals doctor` reads the requirements on an
installation that may lack any of them, `packaging` included.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["DISTRIBUTION", "Requirement", "version", "requirements", "requires_python"]

DISTRIBUTION = "jax-fundamentals"
_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

# PEP 508, as far as the package's own requirements use it: a name, extras, a specifier, a marker.
_REQUIREMENT = re.compile(
    r"\s*(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[[^\]]*\])?"
    r"\s*\(?(?P<specifier>[^;()]*)\)?\s*(?:;(?P<marker>.*))?"
)


class Requirement(NamedTuple):
    """One requirement of the package: `Requirement("jax", ">=0.7")`."""

    name: str  # the distribution's name, as written
    specifier: str  # ">=0.7", or "" for any version

    def __str__(self) -> str:  # what pip installs: jax>=0.7
        return f"{self.name}{self.specifier}"


def _pyproject() -> dict[str, Any]:
    try:
        with open(_PYPROJECT, "rb") as file:
            project: dict[str, Any] = tomllib.load(file).get("project", {})
            return project
    except OSError:
        return {}


def version() -> str:
    """The installed version, or the source tree's, or `0+unknown`."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return str(_pyproject().get("version", "0+unknown"))


def _applies(marker: str) -> bool:
    """Whether a requirement's environment marker holds here, for the core requirements (no extra)."""
    if "extra" in marker:
        return False  # an optional extra's requirement
    try:
        from packaging.markers import Marker
    except ImportError:  # without packaging, a requirement for some platforms only counts everywhere
        return True
    return Marker(marker).evaluate({"extra": ""})


def requirements() -> list[Requirement]:
    """The core dependencies (no extras), as declared: `[Requirement("jax", ">=0.7"), ...]`."""
    try:
        lines = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        lines = _pyproject().get("dependencies", [])
    parsed = []
    for line in lines:
        match = _REQUIREMENT.fullmatch(line)
        if match is None:
            raise ValueError(f"cannot read the requirement {line!r} of {DISTRIBUTION}")
        if match["marker"] is None or _applies(match["marker"]):
            parsed.append(Requirement(match["name"], "".join(match["specifier"].split())))
    return parsed


def requires_python() -> str:
    """The `Requires-Python` specifier, e.g. `>=3.11`."""
    try:
        return importlib.metadata.metadata(DISTRIBUTION)["Requires-Python"] or ""
    except importlib.metadata.PackageNotFoundError:
        return str(_pyproject().get("requires-python", ""))
