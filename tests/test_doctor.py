"""`fundamentals doctor`: the environment check prints versions and devices and names what is broken, with its fix."""

import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import jax
from packaging.requirements import Requirement

from fundamentals import doctor as doctor_module
from fundamentals.cli import main

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "workers" / "doctor_blocked.py"
# The core requirements as pyproject.toml declares them, read by packaging: name -> specifier.
DECLARED = {
    Requirement(line).name: str(Requirement(line).specifier)
    for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
}


def _doctor(
    *blocked: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, list[str], list[str]]:
    """`fundamentals doctor` in a fresh process with `blocked` packages failing to import: (run, output lines, modules)."""
    completed = subprocess.run(
        [sys.executable, str(WORKER), *blocked], capture_output=True, text=True, env=env, cwd=ROOT
    )
    lines = completed.stdout.strip().splitlines()
    return completed, lines[:-1], json.loads(lines[-1])


def test_doctor_reports_versions_and_devices(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for name in ("jax", "jaxlib", "equinox", "optax", "numpy", "safetensors"):
        assert f"[OK] {name} {importlib.metadata.version(name)} ({DECLARED[name]})" in out
    assert f"JAX backend: {jax.default_backend()}" in out
    for device in jax.devices():
        assert f"{device.platform}:{device.id}" in out
    has_gpu = any(d.platform == "gpu" for d in jax.devices())
    assert f"GPU available (torch.cuda.is_available()): {has_gpu}" in out


def test_a_package_that_cannot_be_imported_is_named_with_the_command_that_installs_it():
    completed, lines, _ = _doctor("optax")
    assert completed.returncode == 1, completed.stderr
    assert "Traceback" not in completed.stderr
    optax = [line for line in lines if " optax " in f"{line} "]
    assert len(optax) == 1
    assert optax[0].startswith(
        f"[FAIL] optax {importlib.metadata.version('optax')} is installed but cannot be imported"
    )
    assert optax[0].endswith(f"pip install --force-reinstall 'optax{DECLARED['optax']}'")
    # everything else is still checked, JAX's devices too
    for name in DECLARED.keys() - {"optax"}:
        assert f"[OK] {name} {importlib.metadata.version(name)}" in "\n".join(lines), name
    assert any(line.startswith("[OK] JAX backend:") for line in lines)


def test_doctor_imports_only_what_it_checks():
    # The command's own modules, the benchmark's section names (its parser lists them; `records`
    # imports only `typing`) and the metadata; not the library (which imports optax, equinox, ...).
    _, _, modules = _doctor()
    assert set(modules) <= {
        "fundamentals",
        "fundamentals._startup",
        "fundamentals.cli",
        "fundamentals.bench",
        "fundamentals.bench.records",
        "fundamentals.doctor",
        "fundamentals._metadata",
    }, modules
    # with JAX itself blocked there is nothing to list devices with: said in one line, no traceback
    completed, lines, _ = _doctor("jax", "jaxlib")
    assert completed.returncode == 1 and "Traceback" not in completed.stderr
    assert [line.split(" is ")[0] for line in lines if line.startswith("[FAIL]")] == [
        f"[FAIL] jax {importlib.metadata.version('jax')}",
        f"[FAIL] jaxlib {importlib.metadata.version('jaxlib')}",
    ]
    # the packages that fail only because they import JAX are named so, not as more to reinstall
    for name in ("equinox", "optax"):
        assert f"[----] {name} {importlib.metadata.version(name)}: not checked, it imports jax, " in "\n".join(lines)
    assert "JAX's devices: not listed, JAX is not usable (see above)" in lines


def test_a_package_too_old_is_named_with_the_command_that_upgrades_it(tmp_path):
    # A distribution's metadata claiming optax 0.1.0, ahead of the real one on the path.
    info = tmp_path / "optax-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: optax\nVersion: 0.1.0\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    completed, lines, _ = _doctor(env=env)
    assert completed.returncode == 1, completed.stderr
    assert (
        f"[FAIL] optax 0.1.0 is too old (needs {DECLARED['optax']}): pip install --upgrade 'optax{DECLARED['optax']}'"
        in lines
    )


def test_a_package_not_installed_is_named_with_the_command_that_installs_it(monkeypatch, capsys):
    monkeypatch.setitem(doctor_module.MINIMUM_VERSIONS, "numpy", "999.0")
    monkeypatch.setitem(doctor_module.MINIMUM_VERSIONS, "not_a_real_package_xyz", ">=1.0")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    numpy = importlib.metadata.version("numpy")
    assert f"[FAIL] numpy {numpy} is too old (needs 999.0): pip install --upgrade 'numpy>=999.0'" in out
    assert (
        "[FAIL] not_a_real_package_xyz is not installed (needs >=1.0): pip install 'not_a_real_package_xyz>=1.0'" in out
    )


def test_versions_come_from_pyproject():
    import fundamentals

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert fundamentals.__version__ == project["version"]
    assert doctor_module.MINIMUM_VERSIONS == DECLARED
