"""`fundamentals train`: the book's run, digits, files, plots, resume and clear errors."""

import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

import fundamentals as fm
from fundamentals.cli import main

BOOK_LINE = re.compile(r"^Epoch: 00[1-3]/003 \| Batch 00[12]/002 \| Train Loss: \d+\.\d\d$")


def run(args, tmp_path, capsys):
    code = main(["train", "--no-cache", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_with_no_arguments_is_the_books_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run([], tmp_path, capsys)
    assert code == 0
    step_lines = [line for line in out.splitlines() if line.startswith("Epoch:")]
    assert len(step_lines) == 6 and all(BOOK_LINE.match(line) for line in step_lines)
    assert "Train accuracy: 1.0000" in out  # the book reaches 1.0 on both
    assert "Test accuracy: 1.0000" in out
    assert "Saved model to model.safetensors" in out
    model = fm.load_model(tmp_path / "model.safetensors")
    X_train, y_train, X_test, y_test = fm.toy_data()
    np.testing.assert_array_equal(fm.predict(model, X_test), y_test)


def test_digits_reaches_95_percent(tmp_path, capsys):
    code, out, _ = run(["--data", "digits", "--quiet", "--out", str(tmp_path / "digits.safetensors")], tmp_path, capsys)
    assert code == 0
    accuracy = float(re.search(r"Test accuracy: ([\d.]+)", out).group(1))
    assert accuracy >= 0.95
    # the saved model, on scikit-learn's digits read directly (train and test rows together)
    from sklearn.datasets import load_digits

    digits = load_digits()
    model = fm.load_model(tmp_path / "digits.safetensors")
    overall = np.mean(fm.predict(model, (digits.data / 16).astype(np.float32)) == digits.target)
    assert overall >= 0.95


def test_csv_with_target_column_and_npz(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    with open(tmp_path / "data.csv", "w") as file:
        file.write("label,a,b,c\n")
        for row, label in zip(X, y):
            file.write(f"{label},{row[0]},{row[1]},{row[2]}\n")
    code, out, _ = run(
        [
            "--data",
            str(tmp_path / "data.csv"),
            "--target",
            "label",
            "--quiet",
            "--out",
            str(tmp_path / "m.safetensors"),
        ],
        tmp_path,
        capsys,
    )
    assert code == 0 and "3 features, 2 classes" in out
    assert float(re.search(r"Test accuracy: ([\d.]+)", out).group(1)) >= 0.9

    np.savez(tmp_path / "data.npz", X=X, y=y)
    code, out, _ = run(
        [
            "--data",
            str(tmp_path / "data.npz"),
            "--quiet",
            "--epochs",
            "2",
            "--hidden",
            "8,4",
            "--out",
            str(tmp_path / "n.safetensors"),
        ],
        tmp_path,
        capsys,
    )
    assert code == 0 and "hidden=(8, 4)" in out
    assert fm.load_model(tmp_path / "n.safetensors").hidden == (8, 4)


def test_plot_and_progress(tmp_path, capsys):
    code, out, err = run(
        ["--out", str(tmp_path / "m.safetensors"), "--plot", str(tmp_path / "loss.png"), "--progress"], tmp_path, capsys
    )
    assert code == 0
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "6/6" in err  # the bar reached the last of the 6 steps


def test_checkpoint_and_resume(tmp_path, capsys):
    ckpt = str(tmp_path / "run.ckpt")
    code, out, _ = run(
        ["--epochs", "1", "--checkpoint", ckpt, "--out", str(tmp_path / "a.safetensors")], tmp_path, capsys
    )
    assert code == 0 and os.path.exists(ckpt)
    code, out, _ = run(
        ["--epochs", "3", "--checkpoint", ckpt, "--resume", "--out", str(tmp_path / "b.safetensors")], tmp_path, capsys
    )
    assert code == 0 and "Resumed from" in out
    assert [line for line in out.splitlines() if line.startswith("Epoch:")][0].startswith(
        "Epoch: 002/003 | Batch 001/002"
    )
    code, _, _ = run(["--out", str(tmp_path / "c.safetensors")], tmp_path, capsys)  # straight 3 epochs
    straight = fm.state_dict(fm.load_model(tmp_path / "c.safetensors"))
    resumed = fm.state_dict(fm.load_model(tmp_path / "b.safetensors"))
    for key in straight:
        np.testing.assert_array_equal(straight[key], resumed[key])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "missing.csv"], "data file not found: missing.csv"),
        (["--data", "file.txt"], "--data must be toy, digits"),
        (["--data", "BAD_CSV"], "non-numeric value"),
        (["--data", "RAGGED_CSV"], "line 3: expected 3 columns, got 2"),
        (["--data", "BAD_NPZ"], "must hold arrays 'X' and 'y'"),
        (["--data", "CSV", "--target", "nope"], "--target 'nope' is not a column"),
        (["--epochs", "0"], "--epochs: expected a positive integer"),
        (["--lr", "abc"], "--lr: expected a positive number"),
        (["--hidden", "30,x"], "--hidden: expected comma-separated layer sizes"),
        (["--resume"], "--resume needs --checkpoint"),
        (["--seed", "-1"], "--seed: expected a non-negative integer"),
        (["--out", "."], "--out . is a folder"),
        (["--checkpoint", "."], "--checkpoint . is a folder"),
        (["--plot", "loss.jpg"], "--plot must name a .png file"),
        (["--checkpoint", "NOT_A_CHECKPOINT", "--resume", "--out", "new.safetensors"], "not a training checkpoint"),
        (["--checkpoint", "model.safetensors"], "--checkpoint model.safetensors is the same file as --out"),
    ],
)
def test_bad_files_and_options_give_one_line_errors(tmp_path, args, message):
    (tmp_path / "bad.csv").write_text("a,b,label\n1,2,0\n3,x,1\n4,5,1\n")
    (tmp_path / "ragged.csv").write_text("a,b,label\n1,2,0\n3,1\n4,5,1\n")
    (tmp_path / "ok.csv").write_text("a,b,label\n1,2,0\n3,4,1\n4,5,1\n")
    np.savez(tmp_path / "bad.npz", features=np.zeros((3, 2)))
    fm.save_model(fm.NeuralNetwork(2, 2, key=jax.random.key(0)), tmp_path / "model.safetensors")
    replace = {
        "BAD_CSV": "bad.csv",
        "RAGGED_CSV": "ragged.csv",
        "BAD_NPZ": "bad.npz",
        "CSV": "ok.csv",
        "NOT_A_CHECKPOINT": "model.safetensors",
    }
    args = [replace.get(arg, arg) for arg in args]
    result = subprocess.run(
        [sys.executable, "-m", "fundamentals.cli", "train", "--no-cache", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_compilation_cache_is_written_and_can_be_turned_off(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    out = str(tmp_path / "m.safetensors")
    subprocess.run(
        [sys.executable, "-m", "fundamentals.cli", "train", "--quiet", "--no-cache", "--out", out],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
    )
    assert not (tmp_path / "cache").exists()
    subprocess.run(
        [sys.executable, "-m", "fundamentals.cli", "train", "--quiet", "--out", out],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
    )
    assert os.listdir(tmp_path / "cache" / "fundamentals" / "jax")


def test_train_with_two_processes_of_two_devices(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fundamentals.cli",
            "train",
            "--no-cache",
            "--num-processes",
            "2",
            "--devices-per-process",
            "2",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for rank in (0, 1):
        steps = [line for line in lines if line.startswith(f"[rank{rank}] Epoch:")]
        assert len(steps) == 3  # 5 rows padded to 6, 3 per rank: one batch of 2 per epoch
        assert all(BOOK_LINE.match(line.split("] ", 1)[1].replace("Batch 001/001", "Batch 001/002")) for line in steps)
        assert f"[rank{rank}] Data parallel: process {rank} of 2, 2 local / 4 devices" in result.stdout
    # the loss is reduced over the global batch, so both ranks print the same numbers
    rank_losses = [[line.split("Loss: ")[1] for line in lines if line.startswith(f"[rank{r}] Epoch:")] for r in (0, 1)]
    assert rank_losses[0] == rank_losses[1]
    saved = [line for line in lines if "Saved model to" in line]
    assert saved == ["[rank0] Saved model to model.safetensors"]  # only process 0 writes
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]
    assert fm.load_model(tmp_path / "model.safetensors").num_inputs == 2


def test_digits_without_scikit_learn_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now raises ImportError
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    code, out, err = run(["--data", "digits", "--out", str(tmp_path / "m.safetensors")], tmp_path, capsys)
    assert code == 2
    assert "pip install -e '.[datasets]'" in err and len(err.strip().splitlines()) == 1
