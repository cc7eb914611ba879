"""A.8: model files round trip, load into PyTorch, fail clearly, and are written atomically."""

import os

import jax
import numpy as np
import pytest

import fundamentals as fm

from .helpers import torch_network


def test_round_trip_is_exact_and_rebuilds_the_architecture(tmp_path):
    model = fm.NeuralNetwork(4, 3, key=jax.random.key(5), hidden=(8, 6))
    path = fm.save_model(model, tmp_path / "model.safetensors")
    loaded = fm.load_model(path)
    assert loaded.hidden == (8, 6) and loaded.num_inputs == 4 and loaded.num_outputs == 3
    original, restored = fm.state_dict(model), fm.state_dict(loaded)
    assert original.keys() == restored.keys()
    for key in original:
        np.testing.assert_array_equal(original[key], restored[key])
    like = fm.load_model(path, like=fm.NeuralNetwork(4, 3, key=jax.random.key(0), hidden=(8, 6)))
    np.testing.assert_array_equal(fm.state_dict(like)["layers.4.bias"], original["layers.4.bias"])


def test_file_loads_into_the_books_torch_model(torch, tmp_path):
    from safetensors.torch import load_file

    model = fm.NeuralNetwork(2, 2, key=jax.random.key(3))
    fm.save_model(model, tmp_path / "model.safetensors")
    network = torch_network(torch, 2, 2)
    network.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    X = np.random.default_rng(0).normal(size=(6, 2)).astype(np.float32)
    with torch.no_grad():
        expected = network(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(np.asarray(model(X)), expected, atol=1e-6)


def test_torch_saved_safetensors_loads_here(torch, tmp_path):
    from safetensors.torch import save_file

    network = torch_network(torch, 2, 2)
    save_file(network.state_dict(), str(tmp_path / "torch.safetensors"))
    with pytest.raises(fm.CheckpointError, match="like="):
        fm.load_model(tmp_path / "torch.safetensors")  # no architecture in a torch-written file
    model = fm.load_model(tmp_path / "torch.safetensors", like=fm.NeuralNetwork(2, 2, key=jax.random.key(0)))
    X = np.ones((1, 2), np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(np.asarray(model(X)), network(torch.from_numpy(X)).numpy(), atol=1e-6)


def test_bad_files_give_clear_errors(tmp_path):
    model = fm.NeuralNetwork(2, 2, key=jax.random.key(0))
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        fm.load_model(tmp_path / "missing.safetensors")
    path = fm.save_model(model, tmp_path / "model.safetensors")
    data = path.read_bytes()

    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(fm.CheckpointError, match="truncated, corrupted"):
        fm.load_model(tmp_path / "truncated.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00\x01not a model at all" * 10)
    with pytest.raises(fm.CheckpointError, match="truncated, corrupted"):
        fm.load_model(tmp_path / "garbage.safetensors")

    other = fm.NeuralNetwork(3, 2, key=jax.random.key(0))
    with pytest.raises(fm.CheckpointError, match=r"layers\.0\.weight.*\(30, 2\).*\(30, 3\)"):
        fm.load_model(path, like=other)
    assert isinstance(fm.CheckpointError("x"), ValueError)


def test_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    first = fm.NeuralNetwork(2, 2, key=jax.random.key(1))
    fm.save_model(first, path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        fm.save_model(fm.NeuralNetwork(2, 2, key=jax.random.key(2)), path)
    assert path.read_bytes() == before  # the saved model survived the failed save
    assert os.listdir(tmp_path) == ["model.safetensors"]  # and no temporary file was left


def test_saving_onto_a_folder_names_it_and_writes_nothing(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder"):
        fm.save_model(fm.NeuralNetwork(2, 2, key=jax.random.key(0)), tmp_path)
    assert os.listdir(tmp_path) == []
