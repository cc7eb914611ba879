"""Build the compare-with-torch notebooks from their sources, run them, and save them with outputs.

Each notebook is written as a jupytext percent-format script in `notebooks/_src/`, valid
Python: a line `# %%` starts a code cell, `# %% [markdown]` a markdown cell whose lines start
with `# `, and IPython magics are commented the way jupytext writes them (`# %timeit ...`).
This script reads a source with jupytext, executes it top to bottom on a fresh kernel of this
Python, and writes `notebooks/<name>.ipynb` with its outputs. To edit a notebook in Jupyter
and keep its source in step: `jupytext --sync` or `jupytext --to py:percent`.

```
python notebooks/_build.py            # build and run every notebook
python notebooks/_build.py 02 05      # only the notebooks whose names start with these (05: 05 and 05b)
python notebooks/_build.py --check    # exit 1 if a stored notebook's cells differ from its source
```

`tests/test_notebooks.py` runs the stored notebooks and checks that they match their sources.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "_src"
CELL_TIMEOUT = 600  # seconds; only so a broken cell cannot hang, never a limit on speed

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


NAME = re.compile(r"\d\d[a-z]?_\w+")  # 05_training_loop, and 05b_... for a notebook that continues 05


def sources() -> list[Path]:
    """The notebook sources, in order (05_..., then 05b_..., then 06_...)."""
    return sorted(path for path in SOURCES.glob("[0-9][0-9]*.py") if NAME.fullmatch(path.stem))


def parse(path: Path) -> list[tuple[str, str]]:
    """The cells of a percent-format source as `(cell_type, source)` pairs, as jupytext reads them."""
    notebook = jupytext.read(path, fmt="py:percent")
    return [(cell.cell_type, cell.source) for cell in notebook.cells]


def build(path: Path) -> nbformat.NotebookNode:
    """A notebook (without outputs) from a source; cell ids are stable so rebuilds diff cleanly."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    for index, (cell_type, source) in enumerate(parse(path)):
        make = nbformat.v4.new_markdown_cell if cell_type == "markdown" else nbformat.v4.new_code_cell
        cell = make(source)
        cell["id"] = f"cell-{index:02d}"
        notebook.cells.append(cell)
    return notebook


def kernel_manager(spec_dir: Path):
    """A kernel manager for an IPython kernel of *this* interpreter, whatever kernelspecs exist.

    `kernel_name="python3"` alone resolves through the Jupyter search path, where a user-level
    spec may point at another Python; a spec written here always runs `sys.executable`.
    """
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    write_kernel_spec(path=str(spec_dir / "python3"))
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir)], ensure_native_kernel=False)
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)


def execute(notebook: nbformat.NotebookNode, cwd: Path) -> nbformat.NotebookNode:
    """Run every cell on a fresh kernel in `cwd`; raises `CellExecutionError` if a cell fails."""
    from nbclient import NotebookClient

    with tempfile.TemporaryDirectory(prefix="fundamentals-kernelspec-") as spec_dir:
        client = NotebookClient(
            notebook,
            km=kernel_manager(Path(spec_dir)),
            timeout=CELL_TIMEOUT,
            record_timing=False,
            resources={"metadata": {"path": str(cwd)}},
        )
        client.execute(cleanup_kc=True)
    return notebook


def check() -> int:
    """Compare every stored notebook's cells with its source; print what differs."""
    stale = []
    for path in sources():
        stored_path = HERE / f"{path.stem}.ipynb"
        if not stored_path.exists():
            stale.append(f"{stored_path.name}: missing")
            continue
        stored = nbformat.read(stored_path, as_version=4)
        if [(c.cell_type, c.source) for c in stored.cells] != parse(path):
            stale.append(f"{stored_path.name}: cells differ from _src/{path.name}")
    for line in stale:
        print(line)
    return 1 if stale else 0


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        return check()
    chosen = [p for p in sources() if not argv or any(p.name.startswith(prefix) for prefix in argv)]
    if not chosen:
        print(f"no notebook source matches {argv}", file=sys.stderr)
        return 1
    for path in chosen:
        start = time.perf_counter()
        notebook = execute(build(path), HERE)
        nbformat.write(notebook, HERE / f"{path.stem}.ipynb")
        print(f"{path.stem}.ipynb: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
