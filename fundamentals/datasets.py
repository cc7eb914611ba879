"""Data sets for `fundamentals train`: the book's toy data, scikit-learn's digits, CSV and NPZ files.

Nothing here downloads anything: the toy data is in the book, the digits ship inside
scikit-learn (the `datasets` extra), and files are the user's own.
"""

from __future__ import annotations

import csv
import io
import os
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import _limits
from ._files import open_regular

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


def _features(values: np.ndarray, source: str, columns: list[str] | None = None, first_row: int = 0) -> np.ndarray:
    """Float32 features `(examples, features)`; refuses no columns, non-numbers and NaN or inf (naming where).

    `first_row`: the data row number of `values[0]` minus one, for messages about a chunk of a file.
    """
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
            f"{source}: features must be finite; data row {first_row + row + 1}, column {name} is {what} "
            f"({int(bad.sum())} such value(s) in this part of the data)"
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


_CSV_CELLS_PER_CHUNK = 1 << 16  # cells parsed at a time: the text of one chunk is all that is held as strings
_PROGRESS_BYTES = 64 << 20  # files larger than this report their progress


def _is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


class _CsvTable:
    """A CSV file's numeric rows, parsed a chunk at a time into float32 features and float64 labels."""

    def __init__(self, path: Path, width: int, column: int, names: list[str] | None):
        self.path, self.width, self.column, self.names = path, width, column, names
        self.features: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.rows = 0

    def add(self, chunk: list[list[str]], lines: list[int]) -> None:
        try:
            table = np.array(chunk, dtype=np.float64)
        except ValueError:
            raise ValueError(self._non_number(chunk, lines)) from None
        self.labels.append(table[:, self.column])
        self.features.append(
            _features(np.delete(table, self.column, axis=1), f"CSV file {self.path}", self.names, self.rows)
        )
        self.rows += len(chunk)

    def _non_number(self, chunk: list[list[str]], lines: list[int]) -> str:
        for row, line in zip(chunk, lines):
            for index, cell in enumerate(row):
                if not _is_number(cell):
                    header = self.names_with_label()
                    column = repr(header[index]) if header else str(index + 1)
                    return (
                        f"CSV file {self.path} has a non-numeric value: line {line}, column {column} is "
                        f"{cell[:40]!r}{'...' if len(cell) > 40 else ''}"
                    )
        return f"CSV file {self.path} has a non-numeric value"

    def names_with_label(self) -> list[str] | None:
        if self.names is None:
            return None
        return [*self.names[: self.column], "(label)", *self.names[self.column :]]


def _load_csv(path: Path, target: str | None, seed: int, log=None) -> Split:
    size = os.path.getsize(path)
    progress = _Progress(path, size, log)
    try:
        with open_regular(path) as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
            reader = csv.reader(text)  # as Excel writes it: a byte-order mark may lead
            table, pending, lines, header = None, [], [], None
            for row in reader:
                if not row or not any(cell.strip() for cell in row):
                    continue
                if table is None:  # the first row: a header, or already data
                    table, header = _csv_layout(path, row, target)
                    if header is not None:
                        continue
                if len(row) != table.width:
                    raise ValueError(
                        f"CSV file {path}, line {reader.line_num}: expected {table.width} columns, got {len(row)}"
                    )
                pending.append(row)
                lines.append(reader.line_num)
                if len(pending) * table.width >= _CSV_CELLS_PER_CHUNK:
                    table.add(pending, lines)
                    pending, lines = [], []
                    progress.update(raw.tell())
            if table is not None and pending:
                table.add(pending, lines)
    except csv.Error as error:  # a stray quote that runs past the field size limit, a NUL byte
        raise ValueError(f"CSV file {path}, line {reader.line_num}: {error} (an unclosed quote?)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read CSV file {path}: {error}") from None
    progress.update(size)
    if table is None:
        raise ValueError(f"CSV file {path} is empty")
    if table.rows < 2:
        raise ValueError(f"CSV file {path} needs at least 2 data rows, has {table.rows}")
    y = _labels(np.concatenate(table.labels), f"CSV file {path}")
    X = np.concatenate(table.features)
    table.features.clear()
    return Split(*train_test_split(X, y, seed=seed), name=path.name)


def _csv_layout(path: Path, first: list[str], target: str | None) -> tuple[_CsvTable, list[str] | None]:
    """From the first row: the header (None if it is data), the label's column and the feature names."""
    header = None if all(_is_number(cell) for cell in first) else [cell.strip() for cell in first]
    width = len(first)
    if target is None:
        column = width - 1
    elif header is None:
        raise ValueError(
            f"--target {target!r} needs a header row in {path}; it has none (the label is the last column)"
        )
    elif target not in header:
        raise ValueError(f"--target {target!r} is not a column of {path}; columns: {', '.join(header)}"[:400])
    else:
        column = header.index(target)
    if width < 2:
        raise ValueError(f"CSV file {path} has only {width} column; it needs feature columns and a label column")
    names = [name for i, name in enumerate(header) if i != column] if header else None
    return _CsvTable(path, width, column, names), header


class _Progress:
    """Progress lines while a large file is read (every tenth of it), through `log`."""

    def __init__(self, path: Path, size: int, log):
        self.path, self.size, self.log, self.shown = path, size, log, 0
        if log is not None and size > _PROGRESS_BYTES:
            log(f"Reading {path.name} ({size / 2**20:,.0f} MiB) ...")
        else:
            self.log = None

    def update(self, done: int) -> None:
        if self.log is None:
            return
        tenth = min(10, 10 * done // max(self.size, 1))
        if tenth > self.shown:
            self.shown = tenth
            self.log(f"Reading {self.path.name}: {10 * tenth}%")


def _npz_limit(path: Path) -> int:
    return _limits.max_data_bytes(os.path.getsize(path))


def _read_npz(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays `names` of an NPZ file (those it has), each size checked against its record and a limit first."""
    limit = _npz_limit(path)
    arrays: dict[str, np.ndarray] = {}
    with open_regular(path) as raw, zipfile.ZipFile(raw) as archive:
        members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
        arrays_in_file = sorted(members)
        if "X" not in members or "y" not in members:
            raise ValueError(f"NPZ file {path} must hold arrays 'X' and 'y'; it has {arrays_in_file}"[:400])
        wanted = [name for name in names if name in members]
        total = sum(members[name].file_size for name in wanted)
        if total > limit:
            raise ValueError(
                f"NPZ file {path}: its arrays {wanted} take {total:,} bytes once decompressed, above the limit of "
                f"{limit:,} (100 times the file's size, at least 256 MiB; set FUNDAMENTALS_MAX_DATA_BYTES={total} "
                "to allow it on purpose)"
            )
        for name in wanted:
            with archive.open(members[name]) as member:
                shape, _, dtype = _npy_header(member)
                if dtype.hasobject:
                    raise ValueError(f"NPZ file {path}: array {name!r} holds Python objects, which are never unpickled")
                header = member.tell()
                needed = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if header + needed != members[name].file_size:
                    raise ValueError(
                        f"NPZ file {path}: array {name!r} claims shape {shape} of {dtype} ({needed:,} bytes), but its "
                        f"record holds {members[name].file_size - header:,} bytes"[:400]
                    )
            with archive.open(members[name]) as member:
                arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
    return arrays


def _npy_header(member) -> tuple[tuple[int, ...], bool, np.dtype]:
    """An .npy record's shape, Fortran order and dtype, read from its header alone."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(member)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(member)
    return np.lib.format._read_array_header(member, version)  # type: ignore[attr-defined]  # (3, 0): only privately


def _load_npz(path: Path, seed: int) -> Split:
    if not zipfile.is_zipfile(path):  # np.load would try it as a pickle and say so
        raise ValueError(f"cannot read NPZ file {path}: it is not a zip archive (an .npz is one, as np.savez writes)")
    try:
        arrays = _read_npz(path, ("X", "y", "X_test", "y_test"))
    except ValueError:
        raise
    except Exception as error:  # noqa: BLE001 - zipfile and numpy raise several types for bad archives
        raise ValueError(f"cannot read NPZ file {path}: {error}"[:400]) from None
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


def load_dataset(spec: str, *, target: str | None = None, seed: int = 0, log=None) -> Split:
    """Load `toy`, `digits`, a CSV file or an NPZ file as a train/test `Split`.

    - `toy`: the appendix's 5 training and 2 test points (`toy_data()`).
    - `digits`: scikit-learn's bundled 8x8 digits (1797 images, 10 classes), pixels scaled
      to [0, 1], a seeded 80/20 split.
    - `FILE.csv`: numeric columns, the label in the last column or the column named `target`;
      an optional header row. A seeded 80/20 split.
    - `FILE.npz`: arrays `X` and `y` (and optionally `X_test`, `y_test`; else an 80/20 split).

    A CSV file is read once, a chunk of rows at a time, straight into float32 features: the
    memory it takes is a small multiple of its arrays, not of its text. An NPZ file's arrays are
    checked against their records' sizes and a limit before they are read (see `_limits`).

    **Arguments:**

    - `spec`: `"toy"`, `"digits"`, or a path ending in `.csv` or `.npz`.
    - `target`: a CSV's label column, by its header name (default: the last column).
    - `seed`: the seed of the 80/20 split.
    - `log`: called with a progress line every tenth of a file larger than 64 MiB (`None`: quiet).

    **Raises:** `FileNotFoundError` for a missing file, `ValueError` naming the file and the
    problem for anything unreadable (a FIFO or device is refused, never read), `ImportError`
    with the install command for `digits` without scikit-learn.
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
        raise ValueError(f"data path is not a regular file: {spec}")
    return _load_csv(path, target, seed, log) if suffix == ".csv" else _load_npz(path, seed)
