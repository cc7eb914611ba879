"""Bad, huge and hostile inputs to `fundamentals train` and the data loaders: one-line errors,
documented limits, outputs checked before training, and the inputs never overwritten."""

import os
import signal
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

import fundamentals as fm
from fundamentals.cli import main
from fundamentals.datasets import load_dataset


def train(args, capsys):
    try:
        code = main(["train", "--no-cache", "--quiet", *args])
    except SystemExit as exit:  # argparse's own one-line errors exit from inside main
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code, err, message):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


def write_csv(path, text):
    path.write_text(text)
    return str(path)


# --- sizes ------------------------------------------------------------------------------------


def test_a_huge_label_is_refused_with_the_way_past_the_limit(tmp_path, capsys, monkeypatch):
    data = write_csv(tmp_path / "d.csv", "1,2,0\n3,4,1\n5,6,10000000\n7,8,0\n9,1,1\n")
    code, out, err = train(["--data", data, "--out", str(tmp_path / "m.safetensors")], capsys)
    one_line_error(code, err, "label 1e+07 in data row 3")
    assert "FUNDAMENTALS_MAX_CLASSES" in err and "Epoch" not in out
    # Past the class limit on purpose, the network's size is still bounded: 2-30-20-(10^7 + 1 classes),
    # 210M parameters.
    monkeypatch.setenv("FUNDAMENTALS_MAX_CLASSES", str(10**8))
    code, out, err = train(["--data", data, "--out", str(tmp_path / "m.safetensors")], capsys)
    one_line_error(code, err, f"parameter count is {(2 + 1) * 30 + (30 + 1) * 20 + (20 + 1) * (10**7 + 1):,}")
    assert "FUNDAMENTALS_MAX_PARAMETERS" in err


def test_the_class_limit_can_be_raised_on_purpose(tmp_path, monkeypatch):
    data = write_csv(tmp_path / "d.csv", "1,2,0\n3,4,1\n5,6,150\n7,8,0\n")
    monkeypatch.setenv("FUNDAMENTALS_MAX_CLASSES", "100")
    with pytest.raises(ValueError, match="label 150 .* over the limit of 100 classes"):
        load_dataset(data)
    monkeypatch.setenv("FUNDAMENTALS_MAX_CLASSES", "1000")
    split = load_dataset(data)
    assert max(split.y_train.max(), split.y_test.max()) == 150


@pytest.mark.parametrize(
    "hidden, message",
    [
        ("1000000000", "a layer size is 1,000,000,000, above the limit of 1,000,000"),
        ("100000000000000000000", "FUNDAMENTALS_MAX_LAYER_SIZE"),
        ("100000,100000", "parameter count is 10,000,600,002"),
    ],
)
def test_huge_layers_are_refused_before_anything_is_allocated(tmp_path, capsys, hidden, message):
    code, out, err = train(["--hidden", hidden, "--out", str(tmp_path / "m.safetensors")], capsys)
    one_line_error(code, err, message)


def test_a_huge_seed_is_refused(tmp_path, capsys):
    code, _, err = train(["--seed", "99999999999999999999999", "--out", str(tmp_path / "m.safetensors")], capsys)
    one_line_error(code, err, "--seed: expected a non-negative integer up to 2**63-1")
    code, _, _ = train(["--seed", str(2**63 - 1), "--epochs", "1", "--out", str(tmp_path / "m.safetensors")], capsys)
    assert code == 0  # the largest seed JAX takes still trains


# --- outputs ----------------------------------------------------------------------------------


def test_outputs_that_cannot_be_written_are_refused_before_training(tmp_path, capsys):
    if os.geteuid() == 0:
        if not os.path.isdir("/proc"):
            pytest.skip("needs a folder root cannot write to")
        folder = "/proc"  # not even root can create a file there
    else:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o500)
    for option, name in [("--out", "m.safetensors"), ("--checkpoint", "run.ckpt"), ("--plot", "loss.png")]:
        args = [option, os.path.join(folder, name)]
        if option != "--out":
            args += ["--out", str(tmp_path / "m.safetensors")]
        code, out, err = train(args, capsys)
        one_line_error(code, err, f"{option}: cannot write")
        assert "Epoch" not in out and "Data:" not in out  # refused before the data was even read
    from fundamentals.cli import main

    assert main(["bench", "tiny", "--quick", "--json", os.path.join(folder, "b.json")]) == 2
    assert "--json: cannot write" in capsys.readouterr().err


def test_an_output_never_overwrites_the_data_or_another_output(tmp_path, capsys):
    data = tmp_path / "victim.csv"
    data.write_text("1,2,0\n3,4,1\n5,6,0\n7,8,1\n")
    before = data.read_bytes()
    (tmp_path / "alias.csv").symlink_to(data)
    for args, message in [
        (["--data", str(data), "--out", str(data)], "--out"),
        (["--data", str(data), "--out", str(tmp_path / "alias.csv")], "is the same file as --data"),
        (["--data", str(data), "--out", str(tmp_path / "m.safetensors"), "--checkpoint", str(data)], "--checkpoint"),
        (["--out", str(tmp_path / "a.safetensors"), "--checkpoint", str(tmp_path / "a.safetensors")], "--checkpoint"),
    ]:
        code, out, err = train(args, capsys)
        one_line_error(code, err, message)
        assert "is the same file as" in err
    assert data.read_bytes() == before


def test_a_ranks_own_reason_reaches_the_user(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fundamentals.cli",
            "train",
            "--no-cache",
            "--quiet",
            "--num-processes",
            "2",
            "--devices-per-process",
            "2",
            "--batch-size",
            "3",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("fundamentals train: error: launch: rank ")
    # the rank's own reason, on the same line: 2 processes x 3 rows do not split over 4 devices
    assert "does not split evenly across 4 devices" in last, result.stderr
    assert "Traceback" not in result.stderr


# --- data files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: write_csv(p / "d.csv", "label\n0\n1\n0\n1\n"), "has only 1 column"),
        (lambda p: np.savez(p / "d.npz", X=np.zeros((5, 0)), y=np.arange(5) % 2), "no feature columns"),
        (
            lambda p: np.savez(
                p / "d.npz", X=np.zeros((5, 2)), y=np.arange(5) % 2, X_test=np.zeros((3, 2)), y_test=np.zeros(2, int)
            ),
            "X_test has 3 rows but y_test has 2",
        ),
        (
            lambda p: np.savez(
                p / "d.npz", X=np.zeros((5, 2)), y=np.arange(5) % 2, X_test=np.zeros((3, 4)), y_test=np.zeros(3, int)
            ),
            "X_test has 4 columns but X has 2",
        ),
        (lambda p: write_csv(p / "d.csv", "a,b,c\n1,2,0\n3,nan,1\n5,6,0\n"), "data row 2, column 'b' is nan"),
        (
            lambda p: write_csv(p / "d.csv", "a,b,c\n1,2,0\n3,4e39,1\n5,6,0\n"),
            "column 'b' is 4e+39 (too large for float32)",
        ),
        (lambda p: write_csv(p / "d.csv", "1,2,0\n3,4,1e300\n5,6,0\n"), "label 1e+300 in data row 2"),
        (
            lambda p: np.savez(p / "d.npz", X=np.zeros((4, 2)), y=np.array(["cat", "dog", "cat", "dog"])),
            "labels must be numbers",
        ),
        (lambda p: (p / "d.npz").write_bytes(b"\x80\x04not a zip, looks like a pickle"), "not a zip archive"),
    ],
)
def test_bad_data_files_give_one_line_errors(tmp_path, capsys, make, message):
    make(tmp_path)
    data = str(next(tmp_path.glob("d.*")))
    code, out, err = train(["--data", data, "--out", str(tmp_path / "m.safetensors")], capsys)
    one_line_error(code, err, message)
    assert "negative" not in err and "pickle" not in err


def test_a_csv_with_a_byte_order_mark_reads_as_excel_writes_it(tmp_path):
    rows = "1.5,2,0\n3,4,1\n5,6,0\n7,8,1\n9,10,0\n"
    (tmp_path / "plain.csv").write_text(rows)
    (tmp_path / "bom.csv").write_bytes("\ufeff".encode("utf-8") + rows.encode())
    plain, bom = load_dataset(str(tmp_path / "plain.csv")), load_dataset(str(tmp_path / "bom.csv"))
    assert len(bom.X_train) + len(bom.X_test) == 5  # the first row is data, not a header
    np.testing.assert_array_equal(np.sort(np.concatenate([bom.X_train, bom.X_test])[:, 0]), [1.5, 3, 5, 7, 9])
    np.testing.assert_array_equal(bom.X_train, plain.X_train)

    (tmp_path / "header.csv").write_bytes("\ufeffa,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n9,10,0\n".encode("utf-8"))
    split = load_dataset(str(tmp_path / "header.csv"), target="a")  # the first column, by its name
    assert sorted(np.concatenate([split.y_train, split.y_test]).tolist()) == [1, 3, 5, 7, 9]


def test_non_finite_features_in_fit_name_the_row_not_the_learning_rate():
    X, y, _, _ = fm.toy_data()
    X = np.array(X)
    X[3, 1] = np.inf
    loader = fm.DataLoader(fm.ArrayDataset(X, y), batch_size=2)
    with pytest.raises(
        fm.TrainingDivergedError, match=r"epoch 1, step 2 .*features hold inf at row 3, column 1"
    ) as error:
        fm.fit(fm.NeuralNetwork(2, 2, key=jax.random.key(0)), optax.sgd(0.5), loader, num_epochs=1, log=None)
    assert "learning rate" not in str(error.value)


def test_ctrl_c_while_the_command_imports_is_one_line(tmp_path):
    # -X importtime reports each import as it finishes: the signal goes in right after the package's
    # first module, while JAX and the rest are still being imported.
    process = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "fundamentals.cli", "train", "--no-cache", "--quiet"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    for line in process.stderr:
        lines.append(line)
        if line.rstrip().endswith("fundamentals._startup"):
            process.send_signal(signal.SIGINT)
            break
    out, rest = process.communicate()
    messages = [line for line in lines + rest.splitlines(keepends=True) if not line.startswith("import time:")]
    assert process.returncode == 130
    assert "".join(messages).strip() == "interrupted"
    assert not (tmp_path / "model.safetensors").exists()
