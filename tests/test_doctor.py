"""`fundamentals doctor`: the environment check prints versions and devices and fails loudly."""

import importlib.metadata

import jax

from fundamentals import doctor as doctor_module
from fundamentals.cli import main


def test_doctor_reports_versions_and_devices(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for name in ("jax", "jaxlib", "equinox", "optax", "numpy", "safetensors"):
        assert f"[OK] {name} {importlib.metadata.version(name)}" in out
    assert f"JAX backend: {jax.default_backend()}" in out
    for device in jax.devices():
        assert f"{device.platform}:{device.id}" in out
    has_gpu = any(d.platform == "gpu" for d in jax.devices())
    assert f"GPU available (torch.cuda.is_available()): {has_gpu}" in out


def test_doctor_fails_when_a_minimum_is_not_met(monkeypatch, capsys):
    monkeypatch.setitem(doctor_module.MINIMUM_VERSIONS, "numpy", "999.0")
    monkeypatch.setitem(doctor_module.MINIMUM_VERSIONS, "not_a_real_package_xyz", "1.0")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] numpy" in out and "999.0" in out
    assert "[FAIL] not_a_real_package_xyz not importable" in out


def test_versions_come_from_pyproject():
    import tomllib
    from pathlib import Path

    import fundamentals

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
    assert fundamentals.__version__ == project["version"]
    from packaging.requirements import Requirement

    declared = {Requirement(line).name: str(Requirement(line).specifier) for line in project["dependencies"]}
    assert doctor_module.MINIMUM_VERSIONS == declared
