"""Reads one file the way `WHAT` says, and prints how much the process's peak memory grew doing it, as JSON.

python peak_memory.py torch_load FILE | convert FILE DST | load_dataset FILE

The peak is Linux's high-water mark of resident memory (`VmHWM`), reset just before (writing 5
to `/proc/self/clear_refs`), so what the imports took before cannot hide what the read takes.
"""

import json
import sys


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise KeyError(field)


def measure(read) -> dict:
    """Run `read()`; its error (or None) and how far the resident memory's peak rose above where it was."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the current resident size
    before = _status("VmRSS")
    error = None
    try:
        read()
    except Exception as caught:  # noqa: BLE001 - reported to the test, which decides
        error = f"{type(caught).__name__}: {caught}"
    return {"error": error, "grown": _status("VmHWM") - before}


if __name__ == "__main__":
    import fundamentals as fm
    from fundamentals.checkpoint import convert
    from fundamentals.datasets import load_dataset

    what, path, *rest = sys.argv[1:]
    readers = {
        "torch_load": lambda: fm.torch_load(path),
        "convert": lambda: convert(path, rest[0]),
        "load_dataset": lambda: load_dataset(path),
    }
    print(json.dumps(measure(readers[what])))
