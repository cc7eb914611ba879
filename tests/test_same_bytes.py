"""Identical runs write identical files, byte for byte: `sha256sum` of two runs of `fundamentals train`, and of a
resumed run and an uninterrupted one, agree."""

import hashlib
import json
import os
import struct
import subprocess
import sys

import pytest

HANG_GUARD = 300  # seconds; only so a broken build cannot hang the suite, never an assertion


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train(folder, *args):
    """`fundamentals train` in its own process (each process hashes differently, as two runs would)."""
    subprocess.run(
        [sys.executable, "-m", "fundamentals.cli", "train", "--no-cache", "--quiet", *args],
        cwd=folder,
        check=True,
        capture_output=True,
        timeout=HANG_GUARD,
        env={k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"},
    )


def metadata_keys(path) -> list[str]:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return list(json.loads(data[8 : 8 + length])["__metadata__"])


@pytest.mark.slow
def test_two_runs_and_a_resumed_run_write_the_same_bytes(tmp_path):
    for name in ("first", "second"):
        train(tmp_path, "--epochs", "3", "--checkpoint", f"{name}.ckpt", "--out", f"{name}.safetensors")
    train(tmp_path, "--epochs", "1", "--checkpoint", "resumed.ckpt", "--out", "partial.safetensors")
    train(tmp_path, "--epochs", "3", "--checkpoint", "resumed.ckpt", "--resume", "--out", "resumed.safetensors")
    for suffix in ("safetensors", "ckpt"):
        digests = {name: sha256(tmp_path / f"{name}.{suffix}") for name in ("first", "second", "resumed")}
        assert len(set(digests.values())) == 1, digests
        keys = metadata_keys(tmp_path / f"first.{suffix}")
        assert keys == sorted(keys) and len(keys) >= 2
