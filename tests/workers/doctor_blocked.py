"""Run `fundamentals doctor` (the command, through `python -m fundamentals`) with some packages blocked.

    python doctor_blocked.py PACKAGE...

Each named package (and its submodules) fails to import, as on an installation where it is
broken or was removed without pip knowing. Prints the command's output, then, as the last line,
the JSON list of the library's own modules the command imported.
"""

import json
import runpy
import sys

BLOCKED = set(sys.argv[1:])


class Block:
    """A meta-path finder that makes `import PACKAGE` (and any submodule) fail."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked in this process)", name=name)
        return None


sys.meta_path.insert(0, Block())
sys.argv = ["fundamentals", "doctor"]
try:
    runpy.run_module("fundamentals", run_name="__main__", alter_sys=True)
except SystemExit as exit:
    code = exit.code
else:
    code = 0
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] == "fundamentals")))
sys.exit(code)
