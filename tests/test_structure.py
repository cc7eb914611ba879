"""The house's rules, checked on the source: imports point one way, each module imports alone, functions stay short.

- No import cycle among the package's modules: the graph of every `import` in `fundamentals/`
  (at module level and inside functions) has no cycle, and no module reaches a public name
  through the package's `__init__` (it imports it from the module that defines it).
- Each module imports on its own, first thing in a fresh interpreter.
- No function body (its docstring aside) is over 120 lines.
- Every module's docstring opens with a one-line summary of its one job.
- `fundamentals/__init__.py` re-exports, and its type checkers' imports say the same as what it imports at run time.
"""

import ast
import concurrent.futures
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "fundamentals"
MAX_BODY_LINES = 120


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path) -> set[str]:
    """The package's modules that `name` imports, anywhere in its source (the package itself excluded)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from . import x` imports the module x when there is one, else a name of the package
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # `import fundamentals.bench.common` -> that module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_the_import_graph_walk_finds_what_a_module_imports():
    # Worked out by hand from the sources: the walk itself must see these edges.
    assert {"fundamentals.bench.common", "fundamentals.bench.records", "fundamentals.data"} <= GRAPH[
        "fundamentals.bench.loader"
    ]
    assert "fundamentals.train.fit" in GRAPH["fundamentals.train"]
    assert "fundamentals._checks" in GRAPH["fundamentals.nn"]


def test_no_module_imports_the_public_names_through_the_package():
    # `from .. import fit` inside the package would make every module depend on all the others.
    offenders = {name for name, imports in GRAPH.items() if "fundamentals" in imports and name != "fundamentals"}
    assert not offenders


def test_the_package_has_no_import_cycle():
    graph = {name: imports - {"fundamentals"} for name, imports in GRAPH.items() if name != "fundamentals"}
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = "open"
        path.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycle = path[path.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_the_benchmark_does_not_import_the_command():
    bench = {name for name in MODULES if name.startswith("fundamentals.bench")}
    assert not {name for name in bench if "fundamentals.cli" in GRAPH[name]}


def _import_alone(name: str) -> tuple[str, int, str]:
    completed = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True)
    return name, completed.returncode, completed.stderr[-1500:]


def test_each_module_imports_alone_in_a_fresh_interpreter():
    names = [name for name in MODULES if not name.endswith("__main__")]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        failures = [(name, err) for name, code, err in pool.map(_import_alone, names) if code != 0]
    assert not failures


def _function_bodies():
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                if ast.get_docstring(node) is not None:
                    body = body[1:]
                if body:
                    yield f"{name}.{node.name}", node.end_lineno - body[0].lineno + 1


def test_no_function_body_is_over_120_lines():
    lengths = dict(_function_bodies())
    assert len(lengths) > 500  # the walk found the package's functions
    assert {name: lines for name, lines in lengths.items() if lines > MAX_BODY_LINES} == {}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_opens_with_a_one_line_summary_of_its_job(name):
    docstring = ast.get_docstring(ast.parse(MODULES[name].read_text()))
    assert docstring, f"{name} has no docstring"
    lines = docstring.splitlines()
    assert lines[0].strip() and lines[0].rstrip().endswith("."), f"{name}: {lines[0]!r}"
    assert len(lines) == 1 or not lines[1].strip(), f"{name}: the summary is one line, then a blank line"


def test_the_package_re_exports_what_its_type_checker_imports_say():
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    checked = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom) and statement.level == 1
                for alias in statement.names:
                    assert alias.asname == alias.name  # `X as X`: re-exported for type checkers too
                    checked[alias.name] = statement.module

    import fundamentals

    assert checked == fundamentals._EXPORTS
    assert fundamentals.__all__ == sorted(checked)
    for name, module in checked.items():
        defining = __import__(f"fundamentals.{module}", fromlist=[name])
        assert getattr(fundamentals, name) is getattr(defining, name), name


def test_a_public_name_is_the_function_even_after_its_module_of_the_same_name_is_imported():
    # `fundamentals.launch` is a module and `fm.launch` a function: importing the module first must not
    # replace the function (the import system sets the package's attribute to the module it loads).
    code = "import fundamentals.launch, fundamentals as fm; print(callable(fm.launch), fm.launch.__module__)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.stdout.split() == ["True", "fundamentals.launch"], completed.stderr


def test_a_submodule_is_an_attribute_of_the_package_without_importing_it_first():
    # `fm.train.Run`, `fm.nn.state_dict` work after `import fundamentals as fm` alone, as after
    # `import fundamentals.train`; a name that is neither a public name nor a module is an AttributeError.
    code = (
        "import fundamentals as fm\n"
        "from fundamentals.train.callbacks import Run\n"
        "from fundamentals.nn import state_dict\n"
        "assert fm.train.Run is Run and fm.nn.state_dict is state_dict\n"
        "try:\n    fm.no_such_module\nexcept AttributeError as e:\n    print(e)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.stdout.strip() == "module 'fundamentals' has no attribute 'no_such_module'", completed.stderr
