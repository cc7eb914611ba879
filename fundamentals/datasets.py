"""Data sets for `fundamentals train`: the book's toy data, scikit-learn's digits, CSV and NPZ files.

Nothing here downloads anything: the toy data is in the book, the digits ship inside
scikit-learn (the `datasets` extra), and files are the user's own.
"""

from __future__ import annotations

import csv
import os
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import _limits

__all__ = ["toy_data", "Split", "load_dataset", "train_test_split"]


def toy_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The appendix's toy classification data: five training and two test points.

    Replaces the book's `X_train = torch.tensor([[-1.2, 3.1], ...])` and friends.

    **Returns:**

    `(X_train, y_train, X_test, y_test)` as NumPy arrays: features `float32` of shape `(5, 2)`
    and `(2, 2)`, labels `int64` of shape `(5,)` and `(2,)` (PyTorch's dtypes for the book's
    `torch.tensor` calls).
    """
    X_train = np.array([[-1.2, 3.1], [-0.9, 2.9], [-0.5, 2.6], [2.3, -1.1], [2.7, -1.5]], dtype=np.float32)
    y_train = np.array([0, 0, 0, 1, 1], dtype=np.int64)
    X_test = np.array([[-0.8, 2.8], [2.6, -1.6]], dtype=np.float32)
    y_test = np.array([0, 1], dtype=np.int64)
    return X_train, y_train, X_test, y_test


class Split(NamedTuple):
    """Features and integer labels of a training and a test set, as NumPy arrays."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    name: str


def train_test_split(
    X: np.ndarray, y: np.ndarray, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A seeded shuffle split, `sklearn.model_selection.train_test_split` without the dependency."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if len(X) < 2:
        raise ValueError(f"need at least 2 examples to split, got {len(X)}")
    order = np.random.default_rng(seed).permutation(len(X))
    n_test = min(len(X) - 1, max(1, int(round(len(X) * test_fraction))))
    test, train = order[:n_test], order[n_test:]
    return X[train], y[train], X[test], y[test]


def _labels(values: np.ndarray, source: str) -> np.ndarray:
    """Integer class labels 0..k-1 from numeric labels, at most `FUNDAMENTALS_MAX_CLASSES` classes."""
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{source}: labels must be a 1-D array (one per example), got shape {values.shape}")
    if len(values) == 0:
        raise ValueError(f"{source}: there are no labels")
    if values.dtype.kind not in "biuf":
        raise ValueError(
            f"{source}: labels must be numbers (class indices 0, 1, ...), got dtype {values.dtype} "
            f"(e.g. {values[:3].tolist()})"
        )
    limit = _limits.max_classes()
    # Checked in the labels' own dtype, before any cast: 1e300 would wrap to a negative int64.
    bad = (
        ~np.isfinite(values) | (values != np.round(values)) if values.dtype.kind == "f" else np.zeros(len(values), bool)
    )
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(
            f"{source}: labels must be whole numbers (class indices), got {values[row]!r} in data row {row + 1}"
        )
    if (values < 0).any():
        row = int(np.argmax(values < 0))
        raise ValueError(f"{source}: labels must be class indices >= 0, got {values[row]!r} in data row {row + 1}")
    if (values >= limit).any():
        row = int(np.argmax(values >= limit))
        value = int(values[row]) if values.dtype.kind in "iu" else f"{values[row]:g}"
        raise ValueError(
            f"{source}: label {value} in data row {row + 1} is over the limit of {limit:,} classes "
            f"(labels 0 to {limit - 1}); set FUNDAMENTALS_MAX_CLASSES to a larger number to allow more on purpose"
        )
    return values.astype(np.int64)


def _features(values: np.ndarray, source: str, columns: list[str] | None = None) -> np.ndarray:
    """Float32 features `(examples, features)`; refuses no columns, non-numbers and NaN or inf (naming where)."""
    values = np.asarray(values)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise ValueError(f"{source}: features must be a 2-D array (examples, features), got shape {values.shape}")
    if values.shape[1] == 0:
        raise ValueError(f"{source}: there are no feature columns (features have shape {values.shape})")
    if values.shape[0] == 0:
        raise ValueError(f"{source}: there are no examples (features have shape {values.shape})")
    if values.dtype.kind not in "biuf":
        raise ValueError(f"{source}: features must be numeric, got dtype {values.dtype}")
    with np.errstate(over="ignore"):  # too large for float32 becomes inf: reported just below
        converted = values.astype(np.float32)
    bad = ~np.isfinite(converted)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        name = repr(columns[column]) if columns else str(column + 1)
        original = values[row, column]
        what = original if not np.isfinite(original) else f"{original} (too large for float32)"
        raise ValueError(
            f"{source}: features must be finite; data row {row + 1}, column {name} is {what} "
            f"({int(bad.sum())} such value(s) in all)"
        )
    return converted


def _load_digits(seed: int) -> Split:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "--data digits needs scikit-learn (it ships the 8x8 digits): pip install -e '.[datasets]'"
        ) from None
    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32)  # pixels are 0..16: scale to [0, 1]
    y = digits.target.astype(np.int64)
    return Split(*train_test_split(X, y, test_fraction=0.2, seed=seed), name="digits")


def _load_csv(path: Path, target: str | None, seed: int) -> Split:
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:  # as Excel writes it: a BOM may lead
            rows = list(csv.reader(file))
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read CSV file {path}: {error}") from None
    rows = [row for row in rows if row and any(cell.strip() for cell in row)]
    if not rows:
        raise ValueError(f"CSV file {path} is empty")

    def is_number(cell: str) -> bool:
        try:
            float(cell)
            return True
        except ValueError:
            return False

    header = None if all(is_number(cell) for cell in rows[0]) else [cell.strip() for cell in rows[0]]
    body = rows[1:] if header else rows
    if len(body) < 2:
        raise ValueError(f"CSV file {path} needs at least 2 data rows, has {len(body)}")
    width = len(rows[0])
    for number, row in enumerate(body, start=2 if header else 1):
        if len(row) != width:
            raise ValueError(f"CSV file {path}, line {number}: expected {width} columns, got {len(row)}")
    if target is None:
        column = width - 1
    elif header is None:
        raise ValueError(
            f"--target {target!r} needs a header row in {path}; it has none (the label is the last column)"
        )
    elif target not in header:
        raise ValueError(f"--target {target!r} is not a column of {path}; columns: {', '.join(header)}")
    else:
        column = header.index(target)
    try:
        table = np.array([[float(cell) for cell in row] for row in body], dtype=np.float64)
    except ValueError as error:
        raise ValueError(f"CSV file {path} has a non-numeric value: {error}") from None
    if width < 2:
        raise ValueError(f"CSV file {path} has only {width} column; it needs feature columns and a label column")
    y = _labels(table[:, column], f"CSV file {path}")
    names = [name for i, name in enumerate(header) if i != column] if header else None
    X = _features(np.delete(table, column, axis=1), f"CSV file {path}", names)
    return Split(*train_test_split(X, y, seed=seed), name=path.name)


def _load_npz(path: Path, seed: int) -> Split:
    if not zipfile.is_zipfile(path):  # np.load would try it as a pickle and say so
        raise ValueError(f"cannot read NPZ file {path}: it is not a zip archive (an .npz is one, as np.savez writes)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as error:  # noqa: BLE001 - numpy raises several types for bad archives
        raise ValueError(f"cannot read NPZ file {path}: {error}") from None
    if "X" not in arrays or "y" not in arrays:
        raise ValueError(f"NPZ file {path} must hold arrays 'X' and 'y'; it has {sorted(arrays)}")
    X = _features(arrays["X"], f"NPZ file {path}")
    y = _labels(arrays["y"], f"NPZ file {path}")
    if len(X) != len(y):
        raise ValueError(f"NPZ file {path}: X has {len(X)} rows but y has {len(y)}")
    if ("X_test" in arrays) != ("y_test" in arrays):
        raise ValueError(f"NPZ file {path} has only one of 'X_test' and 'y_test'; give both or neither")
    if "X_test" in arrays:
        X_test = _features(arrays["X_test"], f"NPZ file {path} (X_test)")
        y_test = _labels(arrays["y_test"], f"NPZ file {path} (y_test)")
        if len(X_test) != len(y_test):
            raise ValueError(f"NPZ file {path}: X_test has {len(X_test)} rows but y_test has {len(y_test)}")
        if X_test.shape[1] != X.shape[1]:
            raise ValueError(f"NPZ file {path}: X_test has {X_test.shape[1]} columns but X has {X.shape[1]}")
        return Split(X, y, X_test, y_test, name=path.name)
    return Split(*train_test_split(X, y, seed=seed), name=path.name)


def load_dataset(spec: str, *, target: str | None = None, seed: int = 0) -> Split:
    """Load `toy`, `digits`, a CSV file or an NPZ file as a train/test `Split`.

    - `toy`: the appendix's 5 training and 2 test points (`toy_data()`).
    - `digits`: scikit-learn's bundled 8x8 digits (1797 images, 10 classes), pixels scaled
      to [0, 1], a seeded 80/20 split.
    - `FILE.csv`: numeric columns, the label in the last column or the column named `target`;
      an optional header row. A seeded 80/20 split.
    - `FILE.npz`: arrays `X` and `y` (and optionally `X_test`, `y_test`; else an 80/20 split).

    **Raises:** `FileNotFoundError` for a missing file, `ValueError` naming the file and the
    problem for anything unreadable, `ImportError` with the install command for `digits`
    without scikit-learn.
    """
    if spec == "toy":
        return Split(*toy_data(), name="toy")
    if spec == "digits":
        return _load_digits(seed)
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".npz"):
        raise ValueError(f"--data must be toy, digits, a .csv or a .npz file, got {spec!r}")
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {spec}")
    if not os.path.isfile(path):
        raise ValueError(f"data path is not a file: {spec}")
    return _load_csv(path, target, seed) if suffix == ".csv" else _load_npz(path, seed)
