"""Read .pth files with fundamentals.torch_load in a process where `import torch` fails.

    python torch_blocked.py OUT_DIR FILE...

Writes OUT_DIR/result.json (each file's object, arrays replaced by references) and
OUT_DIR/arrays.npz (each array's raw bytes), and OUT_DIR/saved.pth written by fm.torch_save.
"""

import json
import sys


class BlockTorch:
    """A meta-path finder that makes `import torch` (and any torch submodule) fail."""

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"{name} is blocked in this process")
        return None


sys.meta_path.insert(0, BlockTorch())

import numpy as np  # noqa: E402

import fundamentals as fm  # noqa: E402


def describe(obj, arrays):
    if isinstance(obj, np.ndarray):
        arrays.append(obj)
        return {
            "array": len(arrays) - 1,
            "dtype": str(obj.dtype),
            "shape": list(obj.shape),
            "strides": [s // obj.itemsize for s in obj.strides] if obj.size else None,
        }
    if isinstance(obj, dict):
        return {
            "dict": [[describe(k, arrays), describe(v, arrays)] for k, v in obj.items()],
            "type": type(obj).__name__,
        }
    if isinstance(obj, (list, tuple)):
        return {type(obj).__name__: [describe(v, arrays) for v in obj]}
    if isinstance(obj, bytes):
        return {"bytes": obj.decode("latin-1")}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"value": obj, "type": type(obj).__name__}
    raise TypeError(f"unexpected {type(obj).__name__}")


def main(out_dir, paths):
    results, arrays = {}, []
    for path in paths:
        start = len(arrays)
        described = describe(fm.torch_load(path), arrays)
        loaded = arrays[start:]
        shared = [
            [i + start, j + start]
            for i in range(len(loaded))
            for j in range(i + 1, len(loaded))
            if np.shares_memory(loaded[i], loaded[j])
        ]
        results[path] = {"object": described, "shared": shared}
    fm.torch_save({"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": [1, None, "x"]}, f"{out_dir}/saved.pth")
    np.savez(f"{out_dir}/arrays.npz", *[np.ascontiguousarray(a).reshape(-1).view(np.uint8) for a in arrays])
    with open(f"{out_dir}/result.json", "w") as file:
        json.dump({"results": results, "torch_imported": "torch" in sys.modules}, file)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
