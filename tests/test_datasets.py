"""Data files for `fundamentals train`: a CSV read once, in chunks, into float32, with progress on large files and
one-line errors; an NPZ whose arrays are bounded before they are decompressed."""

import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import fundamentals.datasets as datasets
from fundamentals.cli import main
from fundamentals.datasets import load_dataset

HERE = Path(__file__).resolve().parent
PEAK = HERE / "workers" / "peak_memory.py"
HANG_GUARD = 300  # seconds; only so a broken build cannot hang the suite, never an assertion


def write_table(path, rows: int, seed: int = 0, header: bool = True):
    """A CSV of 6 features and a label, written with Python's csv module; returns what it holds."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=rows)
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        if header:
            writer.writerow(["a", "b", "c", "d", "e", "f", "label"])
        for features, label in zip(X, y):
            writer.writerow([repr(float(v)) for v in features] + [int(label)])
    return X, y


def rows_sorted(X, y):
    table = np.column_stack([X.astype(np.float64), y])
    return table[np.lexsort(table.T[::-1])]


def test_a_large_csv_reads_as_pythons_csv_module_reads_it(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_CSV_CELLS_PER_CHUNK", 7 * 1000)  # many chunks, and a last short one
    X, y = write_table(tmp_path / "d.csv", 4321)
    split = load_dataset(str(tmp_path / "d.csv"), seed=5)
    assert split.X_train.dtype == np.float32 and split.y_train.dtype == np.int64
    got = rows_sorted(np.concatenate([split.X_train, split.X_test]), np.concatenate([split.y_train, split.y_test]))
    np.testing.assert_array_equal(got, rows_sorted(X, y))


def test_train_reads_the_data_once(tmp_path, monkeypatch, capsys):
    write_table(tmp_path / "d.csv", 50)
    calls = []
    import fundamentals.datasets as datasets

    real = datasets.load_dataset

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", counting)  # what the command imports when it runs
    args = ["train", "--no-cache", "--quiet", "--epochs", "1", "--data", str(tmp_path / "d.csv")]
    assert main([*args, "--out", str(tmp_path / "m.safetensors")]) == 0
    assert len(calls) == 1


def peak(path):
    """`load_dataset(path)` in a fresh process: its error (or None) and how much its peak memory grew."""
    result = subprocess.run(
        [sys.executable, str(PEAK), "load_dataset", str(path)],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        cwd=HERE.parent,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report["error"], report["grown"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak memory from /proc")
def test_reading_a_csv_takes_a_small_multiple_of_the_file_in_memory(tmp_path):
    write_table(tmp_path / "big.csv", 300_000)  # about 37 MB of text
    size = os.path.getsize(tmp_path / "big.csv")
    error, grown = peak(tmp_path / "big.csv")
    assert error is None
    # The arrays: float32 features (4 bytes a value against about 18 bytes of text), held twice while the
    # 80/20 split copies them, and the labels. Lists of strings, parsed twice, took about 9 times the file.
    assert grown < 2 * size, f"peak memory grew by {grown / 2**20:.0f} MiB reading a {size / 2**20:.0f} MiB file"


def test_a_large_csv_reports_its_progress(tmp_path, monkeypatch, capsys):
    write_table(tmp_path / "d.csv", 3000)
    monkeypatch.setattr(datasets, "_PROGRESS_BYTES", 1000)
    monkeypatch.setattr(datasets, "_CSV_CELLS_PER_CHUNK", 7 * 100)
    lines = []
    load_dataset(str(tmp_path / "d.csv"), log=lines.append)
    assert lines[0].startswith("Reading d.csv (") and lines[-1] == "Reading d.csv: 100%"
    percents = [int(line.rsplit(" ", 1)[1].rstrip("%")) for line in lines[1:]]
    assert percents == sorted(set(percents)) and len(percents) >= 5
    assert main(["train", "--no-cache", "--quiet", "--epochs", "1", "--data", str(tmp_path / "d.csv")]) == 0
    assert "Reading d.csv: 100%" in capsys.readouterr().err  # the command shows it on stderr


def test_a_stray_quote_is_a_one_line_error_naming_the_line(tmp_path, capsys):
    with open(tmp_path / "d.csv", "w") as file:
        file.write('a,b,label\n1,2,0\n3,"4,1\n')  # a quote opened on line 3, never closed
        for i in range(30000):
            file.write(f"{i},{i},1\n")
    code = main(["train", "--no-cache", "--quiet", "--data", str(tmp_path / "d.csv")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "d.csv" in err and "line" in err and "quote" in err


def test_a_non_numeric_cell_is_named_by_line_and_column(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,label\n1,2,0\n\n3,x,1\n4,5,1\n")
    with pytest.raises(ValueError, match=r"non-numeric value: line 4, column 'b' is 'x'"):
        load_dataset(str(tmp_path / "d.csv"))


# --- NPZ ----------------------------------------------------------------------------------------


def write_zeros_npz(path, rows: int):
    """An NPZ of `rows` x 2 float64 zeros, compressed, written without ever holding the array."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (rows, 2)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("X.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            block = bytes(1 << 20)
            left = rows * 16
            while left:
                member.write(block[: min(left, len(block))])
                left -= min(left, len(block))
        buffer = io.BytesIO()
        np.save(buffer, np.arange(rows) % 2)
        archive.writestr("y.npy", buffer.getvalue())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak memory from /proc")
def test_an_npz_of_zeros_is_refused_before_it_is_decompressed(tmp_path):
    write_zeros_npz(tmp_path / "zeros.npz", 20_000_000)  # 320 MB of zeros in about 0.3 MB
    assert os.path.getsize(tmp_path / "zeros.npz") < 2 << 20
    error, grown = peak(tmp_path / "zeros.npz")
    assert "FUNDAMENTALS_MAX_DATA_BYTES" in error and "zeros.npz" in error
    assert grown < 64 << 20  # nothing near the 320 MB was allocated


def test_the_npz_limit_can_be_raised_or_lowered_on_purpose(tmp_path, monkeypatch):
    X = np.random.default_rng(0).normal(size=(100, 3))
    np.savez(tmp_path / "d.npz", X=X, y=np.arange(100) % 2)
    monkeypatch.setenv("FUNDAMENTALS_MAX_DATA_BYTES", "1000")
    with pytest.raises(ValueError, match="above the limit of 1,000"):
        load_dataset(str(tmp_path / "d.npz"))
    monkeypatch.setenv("FUNDAMENTALS_MAX_DATA_BYTES", str(10**6))
    split = load_dataset(str(tmp_path / "d.npz"))
    np.testing.assert_array_equal(
        np.sort(np.concatenate([split.X_train, split.X_test]), axis=0), np.sort(X.astype(np.float32), axis=0)
    )


def test_an_npz_whose_header_claims_more_than_its_record_holds_is_refused(tmp_path):
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((4, 2)))
    data = buffer.getvalue().replace(b"'shape': (4, 2), ", b"'shape': (9999999999, 2), ")
    with zipfile.ZipFile(tmp_path / "lie.npz", "w") as archive:
        archive.writestr("X.npy", data)
        buffer = io.BytesIO()
        np.save(buffer, np.arange(4) % 2)
        archive.writestr("y.npy", buffer.getvalue())
    with pytest.raises(ValueError, match=r"'X' claims shape \(9999999999, 2\)"):
        load_dataset(str(tmp_path / "lie.npz"))


def test_an_error_line_never_carries_a_huge_value_from_the_file(tmp_path, capsys):
    (tmp_path / "d.csv").write_text("a" * 100_000 + ",b,label\n1,2,0\n3,4,1\n")
    code = main(["train", "--no-cache", "--quiet", "--data", str(tmp_path / "d.csv"), "--target", "nope"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and len(err) < 500, err[:300]
    assert "'nope' is not a column" in err
