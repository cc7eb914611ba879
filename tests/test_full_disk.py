"""Full, read-only and interrupted disks: nothing trained is lost, every failure is one line and exit code 2,
and the file that was there before stays as it was.

The faults are injected by `tests/workers/faulty_disk.py` (the file system calls a full or
read-only disk fails, for files in one folder only), and, where this machine allows it, by a real
tmpfs of a few kilobytes in a private mount namespace.
"""

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

import fundamentals as fm
import fundamentals._files as files
from fundamentals.checkpoint import load_checkpoint
from fundamentals.cli import main

HERE = Path(__file__).resolve().parent
FAULTY = HERE / "workers" / "faulty_disk.py"
HANG_GUARD = 300  # seconds; only so a broken build cannot hang the suite, never an assertion


def faulty_train(tmp_path, kind, name, *args, after=0):
    """`fundamentals train ARGS` in a child whose disk fails as `kind` for `name` in `tmp_path / "disk"`."""
    env = dict(
        os.environ,
        FAULT_DIR=str(tmp_path / "disk"),
        FAULT_NAME=name,
        FAULT_KIND=kind,
        FAULT_AFTER=str(after),
        TMPDIR=str(tmp_path / "spare"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")])),
    )
    (tmp_path / "disk").mkdir(exist_ok=True)
    (tmp_path / "spare").mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, str(FAULTY), "train", "--no-cache", "--quiet", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def book_model(tmp_path_factory):
    """The book's run written by a healthy disk: what a failed final write must not lose."""
    path = tmp_path_factory.mktemp("healthy") / "model.safetensors"
    assert main(["train", "--no-cache", "--quiet", "--out", str(path)]) == 0
    return fm.state_dict(fm.load_model(path))


def test_a_full_disk_at_the_final_write_keeps_the_model_where_it_says(tmp_path, book_model):
    out = tmp_path / "disk" / "model.safetensors"
    out.parent.mkdir()
    out.write_bytes(b"the previous model")
    result = faulty_train(tmp_path, "enospc-fsync", "model.safetensors", "--out", str(out))
    line = assert_one_line_error(result, "No space left on device", str(out))
    assert out.read_bytes() == b"the previous model"  # the file that was there is intact
    assert not [name for name in os.listdir(out.parent) if name.endswith(".tmp")]
    kept = [tmp_path / "spare" / name for name in os.listdir(tmp_path / "spare")]
    assert len(kept) == 1 and str(kept[0]) in line  # saved elsewhere, and the line says where
    for key, value in fm.state_dict(fm.load_model(kept[0])).items():
        np.testing.assert_array_equal(value, book_model[key])  # the trained model, bit for bit


def test_no_room_for_the_model_is_refused_before_training(tmp_path):
    out = tmp_path / "disk" / "model.safetensors"
    result = faulty_train(tmp_path, "enospc-fallocate", "model.safetensors", "--out", str(out))
    assert_one_line_error(result, "--out", "No space left on device")
    assert "Epoch" not in result.stdout and "Data:" not in result.stdout
    assert os.listdir(tmp_path / "disk") == []


@pytest.mark.parametrize("kind, after", [("enospc-fsync", 1), ("erofs-create", 0)])
def test_a_checkpoint_that_cannot_be_written_is_one_line_and_the_last_one_stays(tmp_path, kind, after):
    checkpoint = tmp_path / "disk" / "run.ckpt"
    result = faulty_train(
        tmp_path,
        kind,
        "run.ckpt",
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(tmp_path / "model.safetensors"),
        after=after,
    )
    message = "No space left on device" if kind == "enospc-fsync" else "Read-only file system"
    assert_one_line_error(result, message, str(checkpoint))
    model = fm.NeuralNetwork(2, 2, key=jax.random.key(0))
    _, _, state = load_checkpoint(checkpoint, params=model, opt_state=optax.sgd(0.5).init(model))
    assert len(state["history"]["loss"]) == 2  # the checkpoint of epoch 1 (two batches), whole
    assert not [name for name in os.listdir(checkpoint.parent) if name.endswith(".tmp")]


def test_ctrl_c_after_the_model_is_in_place_is_not_a_failure(tmp_path, book_model):
    out = tmp_path / "disk" / "model.safetensors"
    result = faulty_train(tmp_path, "sigint-folder-fsync", "model.safetensors", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for key, value in fm.state_dict(fm.load_model(out)).items():
        np.testing.assert_array_equal(value, book_model[key])


def _private_tmpfs_works() -> bool:
    if not shutil.which("unshare") or not sys.platform.startswith("linux"):
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=16k tmpfs /mnt && df /mnt"],
        capture_output=True,
        text=True,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _private_tmpfs_works(), reason="needs unprivileged mount namespaces (unshare -rm)")
def test_a_really_full_tmpfs_is_refused_before_training(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (
        f"mount -t tmpfs -o size=16k tmpfs {disk} && head -c 16384 /dev/zero > {disk}/filler; "
        f'exec "$0" -m fundamentals.cli train --no-cache --quiet --out {disk}/model.safetensors'
    )
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, sys.executable],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )
    assert_one_line_error(result, "--out", "No space left on device")
    assert "Epoch" not in result.stdout


# --- the other writers ---------------------------------------------------------------------------


def _enospc_on_regular_files(monkeypatch, folder):
    real_fsync = os.fsync

    def fsync(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode) and os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_bench_json_on_a_full_disk_is_one_line_and_the_old_file_stays(tmp_path, monkeypatch, capsys):
    from fundamentals.bench import runner

    monkeypatch.setattr(runner, "run_benchmarks", lambda *args, **kwargs: {"machine": {}})
    monkeypatch.setattr(runner, "format_report", lambda results: "report")
    path = tmp_path / "bench.json"
    path.write_text('{"old": true}')
    _enospc_on_regular_files(monkeypatch, tmp_path)
    assert main(["bench", "tiny", "--quick", "--json", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "No space left on device" in err and str(path) in err
    assert json.loads(path.read_text()) == {"old": True}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
def test_convert_to_a_full_disk_fifo_or_read_only_folder_is_one_line(tmp_path, monkeypatch, capsys):
    source = tmp_path / "model.safetensors"
    fm.save_model(fm.NeuralNetwork(2, 2, key=jax.random.key(0)), source)
    fifo = tmp_path / "pipe.pth"
    os.mkfifo(fifo)
    if os.geteuid() == 0:
        read_only = Path("/proc/model.pth")  # not even root can create a file there
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        read_only = tmp_path / "ro" / "model.pth"
    cases = [(fifo, "FIFO"), (read_only, "cannot write"), (Path("/dev/null"), "character device")]
    for destination, message in cases:
        assert main(["convert", str(source), str(destination)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    full = tmp_path / "full"
    full.mkdir()
    (full / "model.pth").write_bytes(b"old")
    _enospc_on_regular_files(monkeypatch, full)
    assert main(["convert", str(source), str(full / "model.pth")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err
    assert os.listdir(full) == ["model.pth"] and (full / "model.pth").read_bytes() == b"old"


# --- the atomic writer itself ----------------------------------------------------------------------


def test_the_writer_syncs_the_file_and_then_its_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        info = os.fstat(fd)
        synced.append(("folder" if stat.S_ISDIR(info.st_mode) else "file", info.st_ino))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "f.bin"
    files.atomic_write_bytes(path, b"data")
    assert synced == [("file", os.stat(path).st_ino), ("folder", os.stat(tmp_path).st_ino)]


def test_a_write_that_fails_midway_names_the_file_and_leaves_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    real_write, written = os.write, []

    def write(fd, data):
        if written:  # the first chunk goes through, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(len(data))
        return real_write(fd, bytes(data[: 1 << 16]))

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(OSError) as info:
        files.atomic_write_bytes(path, b"x" * (1 << 20))
    assert info.value.errno == errno.ENOSPC
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]
