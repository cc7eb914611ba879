"""Checkpoint and model files from outside: long histories, lying headers, other optimizers,
hand-edited state, and what is not a model."""

import json
import struct

import jax
import numpy as np
import optax
import pytest
from safetensors.numpy import load_file, save

import fundamentals as fm
from fundamentals import checkpoint
from fundamentals.checkpoint import load_checkpoint, save_checkpoint


def _header(path) -> dict:
    """The safetensors header, read by the format's definition: 8 bytes of length, then JSON."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length])


def _rewrite(path, **metadata_changes):
    """The file with its tensors and some header fields replaced, written by safetensors itself."""
    metadata = _header(path)["__metadata__"]
    metadata.update(metadata_changes)
    path.write_bytes(save(load_file(str(path)), metadata={k: v for k, v in metadata.items() if v is not None}))


@pytest.fixture
def model():
    return fm.NeuralNetwork(2, 2, key=jax.random.key(0))


def test_the_header_stays_small_however_long_the_history(tmp_path, model):
    rng = np.random.default_rng(0)
    losses = rng.random(200_000).astype(np.float32).tolist()  # float32 values, as fit records them
    epoch_losses = [float(np.mean(losses))]  # a float64 mean: kept exactly too
    path = tmp_path / "run.ckpt"
    save_checkpoint(
        path,
        params=model,
        opt_state=optax.sgd(0.1).init(model),
        metadata={
            "epoch": 1,
            "global_step": 200_000,
            "seed": 0,
            "history": {"loss": losses, "epoch_loss": epoch_losses, "compilations": 2},
        },
    )
    header_bytes = struct.unpack("<Q", path.read_bytes()[:8])[0]
    assert header_bytes < 8192  # JSON history would be about 4 MB here, and 100 MB (safetensors' limit) at 5M steps
    _, _, state = load_checkpoint(path, params=model, opt_state=optax.sgd(0.1).init(model))
    assert state["history"]["loss"] == losses and state["history"]["epoch_loss"] == epoch_losses
    assert state["history"]["compilations"] == 2


def test_a_checkpoint_with_the_history_in_its_header_still_loads(tmp_path, model):
    # The earlier format, written here with safetensors directly: every loss in the JSON state.
    tensors = {k: np.asarray(v) for k, v in fm.state_dict(model).items()}
    state = {
        "epoch": 2,
        "global_step": 4,
        "seed": 0,
        "history": {"loss": [0.5, 0.25, 0.125, 0.0625], "epoch_loss": [0.375, 0.09375]},
    }
    path = tmp_path / "old.ckpt"
    path.write_bytes(save(tensors, metadata={"format": "fundamentals.checkpoint/1", "state": json.dumps(state)}))
    _, _, loaded = load_checkpoint(path, params=model, opt_state=optax.sgd(0.1).init(model))
    assert loaded["epoch"] == 2 and loaded["history"] == state["history"]


def test_a_header_claiming_a_huge_network_is_refused_before_building_it(tmp_path, model, monkeypatch):
    path = fm.save_model(model, tmp_path / "m.safetensors")
    _rewrite(path, architecture=json.dumps({"num_inputs": 2, "num_outputs": 2, "hidden": [10**8, 20], "dropout": 0.0}))
    assert path.stat().st_size < 10_000

    def built(*args, **kwargs):
        raise AssertionError("the network was built before its shapes were checked")

    monkeypatch.setattr(checkpoint, "NeuralNetwork", built)
    with pytest.raises(fm.CheckpointError, match=r"layers\.0\.weight.*\(100000000, 2\).*\(30, 2\)"):
        fm.load_model(path)
    _rewrite(path, architecture=json.dumps({"num_inputs": 2, "num_outputs": 2, "hidden": [30] * 10**6}))
    with pytest.raises(fm.CheckpointError, match="1000001 layers"):
        fm.load_model(path)
    _rewrite(path, architecture=json.dumps({"num_inputs": 2, "num_outputs": 2, "hidden": "30,20"}))
    with pytest.raises(fm.CheckpointError, match="'hidden' must be a list"):
        fm.load_model(path)


def test_save_model_refuses_what_is_not_a_model(tmp_path, torch):
    for thing in (torch.nn.Linear(2, 2), {"weights": "none"}, {}):
        with pytest.raises(TypeError, match="expected an Equinox model"):
            fm.save_model(thing, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()
    with pytest.raises(TypeError, match="torch.save"):
        fm.save_model(torch.nn.Linear(2, 2), tmp_path / "m.safetensors")


def test_resuming_with_another_optimizer_names_both(tmp_path, model):
    path = tmp_path / "run.ckpt"
    momentum = optax.sgd(0.1, momentum=0.9)
    save_checkpoint(
        path,
        params=model,
        opt_state=momentum.init(model),
        metadata={"epoch": 1, "global_step": 3, "history": {"loss": [1.0, 0.5, 0.25]}},
    )
    load_checkpoint(path, params=model, opt_state=momentum.init(model))  # the same optimizer loads
    rmsprop = optax.rmsprop(0.1)  # one array per parameter too: the arrays alone cannot tell them apart
    assert [np.shape(x) for x in jax.tree_util.tree_leaves(rmsprop.init(model))] == [
        np.shape(x) for x in jax.tree_util.tree_leaves(momentum.init(model))
    ]
    with pytest.raises(fm.CheckpointError, match="another optimizer.*TraceState.*ScaleByRmsState"):
        load_checkpoint(path, params=model, opt_state=rmsprop.init(model))


@pytest.mark.parametrize(
    "state, field",
    [
        ({"global_step": 3, "history": {}}, "'epoch'"),
        ({"epoch": 1, "history": {}}, "'global_step'"),
        ({"epoch": "1", "global_step": 3}, "'epoch'"),
        ({"epoch": 1, "global_step": 3, "history": None}, "'history'"),
        ({"epoch": 1, "global_step": 3, "history": [1.0, 2.0]}, "'history'"),
        ({"epoch": 1, "global_step": 3, "history": {"loss": 5}}, "'history.loss'"),
        ({"epoch": 1, "global_step": 3, "loader": [1]}, "'loader'"),
        ([1, 2], "JSON object"),
    ],
)
def test_a_hand_edited_state_names_the_field(tmp_path, model, state, field):
    path = tmp_path / "run.ckpt"
    opt_state = optax.sgd(0.1).init(model)
    save_checkpoint(path, params=model, opt_state=opt_state, metadata={"epoch": 1, "global_step": 3, "history": {}})
    _rewrite(path, state=json.dumps(state))
    with pytest.raises(fm.CheckpointError, match=field):
        load_checkpoint(path, params=model, opt_state=opt_state)


def test_load_state_dict_refuses_complex_and_string_values(model):
    state = fm.state_dict(model)
    for bad in (state["layers.0.weight"] + 1j, np.full(state["layers.0.weight"].shape, "x")):
        with pytest.raises(TypeError, match="layers.0.weight"):
            fm.load_state_dict(model, {**state, "layers.0.weight": bad})
    loaded = fm.load_state_dict(model, {**state, "layers.4.bias": np.array([1, 2])})  # integers: exact in float32
    np.testing.assert_array_equal(np.asarray(loaded.layers[4].bias), [1.0, 2.0])


def test_an_optimizer_state_of_other_dtypes_names_the_array(tmp_path, model):
    path = tmp_path / "run.ckpt"
    adam = optax.adam(1e-3)
    state = adam.init(model)
    save_checkpoint(path, params=model, opt_state=state, metadata={"epoch": 1, "global_step": 1, "history": {}})
    count_as_float = jax.tree_util.tree_map(lambda leaf: leaf.astype("float32") if leaf.ndim == 0 else leaf, state)
    with pytest.raises(fm.CheckpointError, match=r"its array 0 is int32 \(\), this optimizer's is float32 \(\)"):
        load_checkpoint(path, params=model, opt_state=count_as_float)


DEEP = "[" * 100_000 + "]" * 100_000  # JSON nested past Python's recursion limit


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("state", json.dumps({"epoch": 1, "global_step": 2**31, "history": {}}), "'global_step' must be an integer"),
        ("state", json.dumps({"epoch": 10**30, "global_step": 2, "history": {}}), "'epoch' must be an integer"),
        ("state", '{"epoch": 1, "global_step": 2, "history": ' + DEEP + "}", "nested too deeply"),
        ("optimizer", DEEP, "invalid optimizer metadata: its JSON is nested too deeply"),
    ],
)
def test_a_hand_edited_checkpoint_never_escapes_as_recursion_or_overflow(tmp_path, capsys, field, value, message):
    from fundamentals.cli import main

    path = tmp_path / "run.ckpt"
    out = ["--out", str(tmp_path / "m.safetensors")]
    assert main(["train", "--no-cache", "--quiet", "--epochs", "1", "--checkpoint", str(path), *out]) == 0
    _rewrite(path, **{field: value})
    capsys.readouterr()
    code = main(["train", "--no-cache", "--quiet", "--epochs", "2", "--checkpoint", str(path), "--resume", *out])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert len(err) < 500


def test_a_model_file_with_deeply_nested_architecture_is_a_checkpoint_error(tmp_path, model):
    fm.save_model(model, tmp_path / "m.safetensors")
    _rewrite(tmp_path / "m.safetensors", architecture=DEEP)
    with pytest.raises(fm.CheckpointError, match="invalid architecture metadata: its JSON is nested too deeply"):
        fm.load_model(tmp_path / "m.safetensors")
