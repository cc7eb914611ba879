"""The compare-with-torch notebooks: each runs top to bottom on a fresh kernel and its checks pass.

Every notebook is executed from a temporary copy (the stored notebooks and their outputs are
never rewritten here) by an IPython kernel of this interpreter. A failing cell, including a
failed `assert` comparing PyTorch with JAX, fails the test. The per-cell timeout only keeps a
broken notebook from hanging the suite; it is not a check on speed.
"""

import importlib.util
import shutil
from pathlib import Path

import pytest

from .helpers import TORCH_MISSING

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")
pytest.importorskip("torch", reason=TORCH_MISSING)

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = [
    "01_tensors",
    "02_autograd",
    "03_multilayer_networks",
    "04_data_loaders",
    "05_training_loop",
    "05b_jit_vmap_and_debugging",
    "06_saving_and_loading",
    "07_gpus_and_data_parallel",
    "08_exercises",
]


def load_build():
    """notebooks/_build.py, which turns the sources into notebooks and runs them."""
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOKS / "_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = load_build()


def test_every_notebook_is_listed():
    assert sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]*.ipynb")) == NAMES
    assert [p.stem for p in build.sources()] == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_stored_notebook_matches_its_source_and_was_run_top_to_bottom(name):
    stored = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert [(cell.cell_type, cell.source) for cell in stored.cells] == build.parse(build.SOURCES / f"{name}.py"), (
        f"{name}.ipynb is out of date: run `python notebooks/_build.py {name[:2]}`"
    )
    code_cells = [cell for cell in stored.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code_cells] == list(range(1, len(code_cells) + 1))
    errors = [output for cell in code_cells for output in cell.outputs if output.output_type == "error"]
    assert not errors


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_and_its_checks_pass(name, tmp_path):
    copy = shutil.copy(NOTEBOOKS / f"{name}.ipynb", tmp_path / f"{name}.ipynb")
    notebook = nbformat.read(copy, as_version=4)
    build.execute(notebook, cwd=tmp_path)  # raises nbclient's CellExecutionError if a cell fails
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code_cells)
