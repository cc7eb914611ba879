"""SIGTERM during `fit`: the run stops at a chunk boundary, writes its checkpoint, exits with SIGTERM's
status, and resuming gives the bits of a run that was never interrupted."""

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = str(Path(__file__).parent / "workers" / "sigterm_fit.py")


def run(kind, mode, tmp_path, name):
    out = tmp_path / f"{name}.npz"
    result = subprocess.run(
        [sys.executable, WORKER, kind, mode, str(tmp_path / "run.ckpt"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    return result, out


@pytest.mark.parametrize("kind", ["device", "host", "per_step"])
def test_sigterm_stops_at_a_chunk_boundary_and_resume_is_bit_identical(kind, tmp_path):
    straight, straight_out = run(kind, "straight", tmp_path, "straight")
    assert straight.returncode == 0, straight.stderr
    interrupted, interrupted_out = run(kind, "interrupt", tmp_path, "interrupted")
    assert interrupted.returncode == -signal.SIGTERM, interrupted.stderr
    assert not interrupted_out.exists()  # it stopped before the end of the run
    assert "Stopped by SIGTERM at epoch 002" in interrupted.stdout
    assert "Epoch: 004/004" not in interrupted.stdout
    assert (tmp_path / "run.ckpt").exists()
    if kind == "per_step":  # one step a chunk: it stops within epoch 2, one or two steps after the signal
        assert "Epoch: 002/004 | Batch 012/012" not in interrupted.stdout
    resumed, resumed_out = run(kind, "resume", tmp_path, "resumed")
    assert resumed.returncode == 0, resumed.stderr
    assert "Resumed from" in resumed.stdout
    expected, got = np.load(straight_out), np.load(resumed_out)
    assert sorted(expected.files) == sorted(got.files)
    for name in expected.files:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    assert len(got["loss"]) == 4 * 12


def test_sigterm_in_one_rank_stops_every_rank_at_the_same_step_and_resume_is_bit_identical(tmp_path):
    import fundamentals as fm

    from .workers import mp_fit

    checkpoint = str(tmp_path / "run.ckpt")
    straight = fm.launch(mp_fit.train_preempted, 2, "straight", checkpoint, timeout=300)
    with pytest.raises(RuntimeError, match=r"rank \d") as stopped:
        fm.launch(mp_fit.train_preempted, 2, "interrupt", checkpoint, timeout=300)
    assert "SIGTERM" in str(stopped.value)
    assert Path(checkpoint).exists()
    resumed = fm.launch(mp_fit.train_preempted, 2, "resume", checkpoint, timeout=300)
    for rank in (0, 1):
        assert resumed[rank]["loss"] == straight[rank]["loss"]
        assert resumed[rank]["params"] == straight[rank]["params"]
