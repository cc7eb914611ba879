"""PyTorch's .pth files without PyTorch: fm.torch_load against torch.load(weights_only=True), fm.torch_save
against torch.load, and files that try to run code or lie about their sizes."""

import collections
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fundamentals as fm

from .helpers import torch_network

WORKER = Path(__file__).resolve().parent / "workers" / "torch_blocked.py"
DTYPES = ["float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"]


# --- what torch.save writes, per case -------------------------------------------------------------


def _book_state_dict(torch):
    torch.manual_seed(123)
    return torch_network(torch, 2, 2).state_dict()


def _views(torch):
    base = torch.arange(40, dtype=torch.float32).reshape(5, 8)
    return {"base": base, "transposed": base.t(), "sliced": base[2:5, ::3], "expanded": torch.ones(3).expand(4, 3)}


def _small(torch):
    return {
        "zero_dim": torch.tensor(3.5),
        "empty": torch.empty(0, 3),
        "empty_int": torch.zeros(2, 0, 4, dtype=torch.int64),
    }


def _dtypes(torch):
    generator = torch.Generator().manual_seed(0)
    out = {}
    for name in DTYPES:
        dtype = getattr(torch, name)
        if dtype.is_floating_point:
            out[name] = torch.randn(3, 4, generator=generator).to(dtype)
        elif dtype == torch.bool:
            out[name] = torch.rand(3, 4, generator=generator) > 0.5
        else:
            out[name] = torch.randint(0, 100, (3, 4), generator=generator).to(dtype)
    return out


def _training_checkpoint(torch):
    torch.manual_seed(0)
    model = torch_network(torch, 2, 2)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    adam = torch.optim.Adam(model.parameters(), lr=1e-3)
    for optimizer in (sgd, adam):
        for _ in range(2):
            loss = model(torch.randn(4, 2)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return {
        "model_state_dict": model.state_dict(),
        "optimizer_state_dict": sgd.state_dict(),
        "adam": adam.state_dict(),
        "epoch": 3,
    }


def _containers(torch):
    return {
        "list": [torch.ones(2), 1, 2.5, "text", None, True],
        "tuple": (torch.zeros(1), (1, (2,))),
        "nested": {"a": {"b": [torch.arange(3)]}},
        "bytes": b"\x00\xff",
        7: "int key",
    }


CASES = {
    "book_state_dict": (_book_state_dict, {}),
    "views": (_views, {}),
    "small": (_small, {}),
    "dtypes": (_dtypes, {}),
    "training_checkpoint": (_training_checkpoint, {}),
    "containers": (_containers, {}),
    "legacy_format": (_views, {"_use_new_zipfile_serialization": False}),
    "legacy_dtypes": (_dtypes, {"_use_new_zipfile_serialization": False}),
}


@pytest.fixture(scope="module")
def blocked(torch, tmp_path_factory):
    """Every case written by torch.save, read by fm.torch_load in a process where torch cannot be imported."""
    folder = tmp_path_factory.mktemp("pth")
    paths = {}
    for name, (build, options) in CASES.items():
        paths[name] = str(folder / f"{name}.pth")
        torch.save(build(torch), paths[name], **options)
    subprocess.run(
        [sys.executable, str(WORKER), str(folder), *paths.values()],
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    result = json.loads((folder / "result.json").read_text())
    with np.load(folder / "arrays.npz") as npz:
        raw = [npz[f"arr_{i}"] for i in range(len(npz.files))]
    return paths, result, raw, folder


def _rebuild(desc, raw):
    if "array" in desc:
        dtype = np.dtype(ml_dtypes.bfloat16) if desc["dtype"] == "bfloat16" else np.dtype(desc["dtype"])
        return raw[desc["array"]].view(dtype).reshape(desc["shape"]), desc
    if "dict" in desc:
        return {_rebuild(k, raw)[0]: _rebuild(v, raw) for k, v in desc["dict"]}, desc
    if "list" in desc:
        return [_rebuild(v, raw) for v in desc["list"]], desc
    if "tuple" in desc:
        return tuple(_rebuild(v, raw) for v in desc["tuple"]), desc
    if "bytes" in desc:
        return desc["bytes"].encode("latin-1"), desc
    return desc["value"], desc


def assert_same_as_torch(torch, ours, theirs, where="object"):
    """`ours` (as rebuilt from the worker, with descriptions) equals torch's object, tensor by tensor."""
    value, desc = ours
    if isinstance(theirs, torch.Tensor):
        assert "array" in desc, f"{where}: expected a tensor, got {desc}"
        assert desc["dtype"] == str(theirs.dtype).removeprefix("torch."), where
        assert tuple(desc["shape"]) == tuple(theirs.shape), where
        if theirs.numel():
            assert tuple(desc["strides"]) == theirs.stride(), where
        if theirs.dtype == torch.bfloat16:
            np.testing.assert_array_equal(value.view(np.int16), theirs.view(torch.int16).numpy(), err_msg=where)
        else:
            np.testing.assert_array_equal(value, theirs.numpy(), err_msg=where)
    elif isinstance(theirs, dict):
        assert desc["type"] == type(theirs).__name__, where
        assert list(value) == list(theirs), where
        for key in theirs:
            assert_same_as_torch(torch, value[key], theirs[key], f"{where}[{key!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert type(theirs).__name__ in desc and len(value) == len(theirs), where
        for i, (a, b) in enumerate(zip(value, theirs)):
            assert_same_as_torch(torch, a, b, f"{where}[{i}]")
    else:
        assert value == theirs and type(value) is type(theirs), where


@pytest.mark.parametrize("case", list(CASES))
def test_torch_load_without_torch_equals_torch_load(torch, blocked, case):
    paths, result, raw, _ = blocked
    assert result["torch_imported"] is False
    theirs = torch.load(paths[case], weights_only=True)
    assert_same_as_torch(torch, _rebuild(result["results"][paths[case]]["object"], raw), theirs)


@pytest.mark.parametrize("case", ["views", "legacy_format"])
def test_views_share_memory_as_in_torch(blocked, case):
    paths, result, _, _ = blocked
    described = result["results"][paths[case]]
    index = {k["value"]: v["array"] for k, v in described["object"]["dict"]}
    shared = {tuple(pair) for pair in described["shared"]}
    assert (index["base"], index["transposed"]) in shared and (index["base"], index["sliced"]) in shared
    assert not any(index["expanded"] in pair for pair in shared)


def test_file_written_without_torch_loads_in_torch(torch, blocked):
    _, _, _, folder = blocked
    loaded = torch.load(folder / "saved.pth", weights_only=True)
    assert torch.equal(loaded["w"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    assert loaded["n"] == [1, None, "x"]


def test_optimizer_state_and_ordered_dict_metadata_come_back(torch, tmp_path):
    checkpoint = _training_checkpoint(torch)
    torch.save(checkpoint, tmp_path / "c.pth")
    ours = fm.torch_load(tmp_path / "c.pth")
    assert ours["epoch"] == 3 and isinstance(ours["model_state_dict"], collections.OrderedDict)
    assert ours["model_state_dict"]._metadata == checkpoint["model_state_dict"]._metadata
    assert ours["optimizer_state_dict"]["param_groups"] == checkpoint["optimizer_state_dict"]["param_groups"]
    assert ours["adam"]["param_groups"][0]["betas"] == (0.9, 0.999)
    step = ours["adam"]["state"][0]["step"]
    assert step.shape == () and float(step) == float(checkpoint["adam"]["state"][0]["step"])


# --- fm.torch_save, read by torch ------------------------------------------------------------------


def test_torch_save_is_read_by_torch_load(torch, tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        name: (rng.normal(size=(3, 4)) * 50).astype(ml_dtypes.bfloat16 if name == "bfloat16" else name)
        for name in DTYPES
    }
    shared = np.arange(4.0, dtype=np.float32)
    obj = collections.OrderedDict(
        arrays=arrays,
        zero_dim=np.array(2.5),
        scalar=np.int32(7),
        empty=np.zeros((0, 3), np.int64),
        transposed=np.arange(6, dtype=np.int16).reshape(2, 3).T,
        jax=jnp.arange(3, dtype=jnp.float32),
        nested=[shared, (shared, None, "s", 1.5, True, b"\x00\xff", 2**40)],
    )
    fm.torch_save(obj, tmp_path / "ours.pth")
    loaded = torch.load(tmp_path / "ours.pth", weights_only=True)
    assert isinstance(loaded, collections.OrderedDict) and list(loaded) == list(obj)
    for name, array in arrays.items():
        tensor = loaded["arrays"][name]
        assert tensor.dtype == getattr(torch, name) and tuple(tensor.shape) == array.shape
        if name == "bfloat16":
            np.testing.assert_array_equal(tensor.view(torch.int16).numpy(), array.view(np.int16))
        else:
            np.testing.assert_array_equal(tensor.numpy(), array)
    assert (
        loaded["zero_dim"].dtype == torch.float64
        and loaded["zero_dim"].shape == ()
        and loaded["zero_dim"].item() == 2.5
    )
    assert loaded["scalar"].dtype == torch.int32 and loaded["scalar"].item() == 7
    assert loaded["empty"].shape == (0, 3) and loaded["empty"].dtype == torch.int64
    np.testing.assert_array_equal(loaded["transposed"].numpy(), obj["transposed"])
    np.testing.assert_array_equal(loaded["jax"].numpy(), np.arange(3, dtype=np.float32))
    first, (second, none, text, number, flag, raw, big) = loaded["nested"]
    assert first.data_ptr() == second.data_ptr()  # one array twice is one storage, as torch.save writes it
    assert (none, text, number, flag, raw, big) == (None, "s", 1.5, True, b"\x00\xff", 2**40)


def test_torch_save_refuses_what_torch_cannot_hold(tmp_path):
    with pytest.raises(TypeError, match=r"\['model'\] is a object"):
        fm.torch_save({"model": object()}, tmp_path / "x.pth")
    with pytest.raises(TypeError, match="dtype <U1"):
        fm.torch_save({"s": np.array(["a"])}, tmp_path / "x.pth")
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError, match=r"torch_save: \[0\] contains itself"):
        fm.torch_save(loop, tmp_path / "x.pth")
    assert os.listdir(tmp_path) == []


# --- save_model / load_model in torch's format, for any Equinox module -----------------------------


def test_book_model_pth_loads_here_and_ours_loads_in_torch(torch, tmp_path):
    torch.manual_seed(123)
    network = torch_network(torch, 2, 2)
    torch.save(network.state_dict(), tmp_path / "model.pth")
    model = fm.load_model(tmp_path / "model.pth", like=fm.NeuralNetwork(2, 2, key=jax.random.key(0)))
    X = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(np.asarray(model(X)), network(torch.from_numpy(X)).numpy(), atol=1e-6)
    with pytest.raises(fm.CheckpointError, match="like="):
        fm.load_model(tmp_path / "model.pth")

    ours = fm.NeuralNetwork(2, 2, key=jax.random.key(7))
    fm.save_model(ours, tmp_path / "ours.pt")
    fresh = torch_network(torch, 2, 2)
    fresh.load_state_dict(torch.load(tmp_path / "ours.pt", weights_only=True))  # the book's way, strict
    with torch.no_grad():
        np.testing.assert_allclose(fresh(torch.from_numpy(X)).numpy(), np.asarray(ours(X)), atol=1e-6)


def test_load_model_decides_by_content_not_name(torch, tmp_path):
    torch.manual_seed(1)
    network = torch_network(torch, 2, 2)
    torch.save(network.state_dict(), tmp_path / "actually_torch.safetensors")
    model = fm.load_model(tmp_path / "actually_torch.safetensors", like=fm.NeuralNetwork(2, 2, key=jax.random.key(0)))
    np.testing.assert_array_equal(np.asarray(model.layers[0].weight), network.layers[0].weight.detach().numpy())
    fm.save_model(model, tmp_path / "model.safetensors")
    os.replace(tmp_path / "model.safetensors", tmp_path / "renamed.pth")
    again = fm.load_model(tmp_path / "renamed.pth")  # safetensors under a .pth name, architecture kept
    np.testing.assert_array_equal(np.asarray(again.layers[4].bias), network.layers[4].bias.detach().numpy())


class Block(fm.ReLU.__mro__[1]):  # eqx.Module
    mlp: object
    table: dict
    scale: jax.Array
    steps: jax.Array


@pytest.mark.parametrize("name", ["any.pth", "any.safetensors"])
def test_any_equinox_module_round_trips_with_torch_style_keys(torch, tmp_path, name):
    import equinox as eqx

    keys = jax.random.split(jax.random.key(0), 3)
    model = Block(
        mlp=eqx.nn.MLP(3, 2, 4, 1, key=keys[0]),
        table={"embed": eqx.nn.Embedding(5, 2, key=keys[1])},
        scale=jnp.ones(2),
        steps=jnp.arange(3, dtype=jnp.int32),
    )
    fm.save_model(model, tmp_path / name)
    if name.endswith(".pth"):
        stored = torch.load(tmp_path / name, weights_only=True)
    else:
        from safetensors.torch import load_file

        stored = load_file(str(tmp_path / name))
    assert sorted(stored) == sorted(
        [
            "mlp.layers.0.weight",
            "mlp.layers.0.bias",
            "mlp.layers.1.weight",
            "mlp.layers.1.bias",
            "table.embed.weight",
            "scale",
            "steps",
        ]
    )
    np.testing.assert_array_equal(stored["mlp.layers.1.weight"].numpy(), np.asarray(model.mlp.layers[1].weight))
    assert stored["steps"].dtype == torch.int32

    like = Block(
        mlp=eqx.nn.MLP(3, 2, 4, 1, key=keys[2]),
        table={"embed": eqx.nn.Embedding(5, 2, key=keys[2])},
        scale=jnp.zeros(2),
        steps=jnp.zeros(3, dtype=jnp.int32),
    )
    loaded = fm.load_model(tmp_path / name, like=like)
    np.testing.assert_array_equal(np.asarray(loaded.table["embed"].weight), np.asarray(model.table["embed"].weight))
    np.testing.assert_array_equal(np.asarray(loaded.steps), [0, 1, 2])

    wrong = eqx.tree_at(lambda m: m.scale, like, jnp.zeros(5))
    with pytest.raises(fm.CheckpointError, match=r"'scale'.*\(2,\).*\(5,\)"):
        fm.load_model(tmp_path / name, like=wrong)


def test_training_checkpoint_is_not_taken_for_a_state_dict(torch, tmp_path):
    torch.save(_training_checkpoint(torch), tmp_path / "checkpoint.pth")
    with pytest.raises(fm.CheckpointError, match="'model_state_dict' holds a value of type OrderedDict"):
        fm.load_model(tmp_path / "checkpoint.pth", like=fm.NeuralNetwork(2, 2, key=jax.random.key(0)))
    state = fm.torch_load(tmp_path / "checkpoint.pth")["model_state_dict"]
    fm.load_state_dict(fm.NeuralNetwork(2, 2, key=jax.random.key(0)), state)


# --- files that try to run code -----------------------------------------------------------------------


def _attacks(marker):
    class Shell:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    class Eval:
        def __reduce__(self):
            return (eval, (f"open({str(marker)!r}, 'w').close()",))

    class Popen:
        def __reduce__(self):
            return (subprocess.Popen, (["touch", str(marker)],))

    return {"system": Shell(), "eval": Eval(), "Popen": Popen()}


@pytest.mark.parametrize("attack", ["system", "eval", "Popen"])
@pytest.mark.parametrize("container", ["zip", "legacy", "plain pickle"])
def test_code_in_a_file_is_refused_and_never_runs(torch, tmp_path, attack, container):
    marker = tmp_path / "pwned"
    payload = {"weight": torch.ones(2), "evil": _attacks(marker)[attack]}
    path = tmp_path / "evil.pth"
    if container == "plain pickle":
        path.write_bytes(pickle.dumps(payload["evil"], protocol=2))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=container == "zip")
    with pytest.raises((fm.UnsafeFileError, fm.TorchFileError)) as info:
        fm.torch_load(path)
    if container != "plain pickle":  # a bare pickle is refused as not torch's, or for its global
        assert isinstance(info.value, fm.UnsafeFileError) and isinstance(info.value, pickle.UnpicklingError)
        assert attack in str(info.value) and "evil.pth" in str(info.value)
    with pytest.raises(fm.CheckpointError):
        fm.load_model(path, like=fm.NeuralNetwork(2, 2, key=jax.random.key(0)))
    assert not marker.exists()


def _int(value):
    return b"\x8a" + bytes([len(pickle.encode_long(value))]) + pickle.encode_long(value)


def _tensor_pickle(size, stride, numel, key=b"0"):
    """A hand-written data.pkl: one float32 tensor, as torch.save spells it, with the sizes we choose."""

    def sizes(values):
        return b"(" + b"".join(_int(v) for v in values) + b"t"

    return (
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
        + b"X"
        + struct.pack("<I", len(key))
        + key
        + b"X\x03\x00\x00\x00cpu"
        + _int(numel)
        + b"tQK\x00"
        + sizes(size)
        + sizes(stride)
        + b"\x89ccollections\nOrderedDict\n)RtR."
    )


def _archive(path, pickled, storages):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        for key, data in storages.items():
            archive.writestr(f"archive/data/{key}", data)
        archive.writestr("archive/version", "3\n")


def test_hand_written_archive_is_read_as_torch_reads_it(torch, tmp_path):
    # The helper's own output, checked by torch: the hostile variants below differ only in numbers.
    _archive(tmp_path / "ok.pth", _tensor_pickle((2, 2), (1, 2), 4), {"0": np.arange(4, dtype=np.float32).tobytes()})
    expected = torch.load(tmp_path / "ok.pth", weights_only=True)
    np.testing.assert_array_equal(fm.torch_load(tmp_path / "ok.pth"), expected.numpy())


@pytest.mark.parametrize(
    "size, stride, numel, message",
    [
        ((10**6, 10**6), (10**6, 1), 4, "reaches element"),
        ((4,), (1,), 10**12, "should hold 1000000000000"),
        ((2, 2), (2,), 4, "different lengths"),
        ((-1,), (1,), 4, "non-negative"),
    ],
)
def test_sizes_that_lie_are_errors_not_allocations(tmp_path, size, stride, numel, message):
    _archive(tmp_path / "lie.pth", _tensor_pickle(size, stride, numel), {"0": b"\x00" * 16})
    with pytest.raises(fm.TorchFileError, match=message):
        fm.torch_load(tmp_path / "lie.pth")


def test_build_cannot_reach_the_readers_objects(tmp_path):
    # GLOBAL collections.Counter, then BUILD with a slot state: would set an attribute on Counter itself.
    pickled = b"\x80\x02ccollections\nCounter\nN}X\x05\x00\x00\x00pwnedK\x01s\x86b."
    _archive(tmp_path / "build.pth", pickled, {})
    with pytest.raises(fm.UnsafeFileError, match="set the state"):
        fm.torch_load(tmp_path / "build.pth")
    assert not hasattr(collections.Counter, "pwned")


def test_broken_and_foreign_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        fm.torch_load(tmp_path / "missing.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(fm.TorchFileError, match=r"text\.pth.*not a file written by torch\.save"):
        fm.torch_load(tmp_path / "text.pth")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(fm.TorchFileError, match=r"other\.zip.*data\.pkl"):
        fm.torch_load(tmp_path / "other.zip")
    with pytest.raises(fm.TorchFileError, match="folder"):
        fm.torch_load(tmp_path)


def test_truncated_file_is_a_clear_error(torch, tmp_path):
    torch.save(_book_state_dict(torch), tmp_path / "model.pth")
    data = (tmp_path / "model.pth").read_bytes()
    for cut in (len(data) // 3, len(data) - 30, 10):
        (tmp_path / "cut.pth").write_bytes(data[:cut])
        with pytest.raises(fm.TorchFileError, match=r"cut\.pth"):
            fm.torch_load(tmp_path / "cut.pth")


@pytest.fixture(scope="module")
def real_files(torch, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    state = {
        "w": torch.arange(6, dtype=torch.float32).reshape(2, 3).t(),
        "b": torch.ones(2, dtype=torch.bfloat16),
        "meta": {"epoch": 3, "name": "x", "betas": (0.9, 0.99)},
    }
    files = []
    for options in ({}, {"_use_new_zipfile_serialization": False}):
        path = folder / f"real{len(files)}.pth"
        torch.save(state, path, **options)
        files.append(path.read_bytes())
    return files


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_files_give_only_clear_errors(real_files, tmp_path, data):
    original = data.draw(st.sampled_from(real_files))
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 6))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        kind = data.draw(st.sampled_from(["byte", "big", "cut", "delete"]))
        if kind == "byte":
            mutated[position] = data.draw(st.integers(0, 255))
        elif kind == "big":  # a length or size field turned huge
            mutated[position : position + 4] = b"\xff\xff\xff\x7f"
        elif kind == "cut":
            del mutated[position:]
        else:
            del mutated[position : position + data.draw(st.integers(1, 16))]
        if not mutated:
            mutated = bytearray(b"\x00")
    path = tmp_path / "fuzzed.pth"
    path.write_bytes(bytes(mutated))
    try:
        fm.torch_load(path)
    except fm.TorchFileError as error:
        assert "fuzzed.pth" in str(error)


# --- fundamentals convert ------------------------------------------------------------------------------


def test_convert_round_trips_both_ways(torch, tmp_path, capsys):
    from safetensors.torch import load_file

    from fundamentals.cli import main

    state = _dtypes(torch)
    torch.save(state, tmp_path / "model.pth")
    assert main(["convert", str(tmp_path / "model.pth"), str(tmp_path / "model.safetensors")]) == 0
    assert main(["convert", str(tmp_path / "model.safetensors"), str(tmp_path / "back.pth")]) == 0
    assert "Wrote 10 tensors" in capsys.readouterr().out
    for loaded in (
        load_file(str(tmp_path / "model.safetensors")),
        torch.load(tmp_path / "back.pth", weights_only=True),
    ):
        assert sorted(loaded) == sorted(state)
        for key, tensor in state.items():
            assert loaded[key].dtype == tensor.dtype and torch.equal(loaded[key], tensor), key


def test_convert_refuses_with_one_line_and_writes_nothing(torch, tmp_path, capsys):
    from fundamentals.cli import main

    marker = tmp_path / "pwned"
    torch.save({"evil": _attacks(marker)["system"]}, tmp_path / "evil.pth")
    torch.save(_training_checkpoint(torch), tmp_path / "checkpoint.pth")
    (tmp_path / "broken.pth").write_bytes(b"PK\x03\x04 not really")
    for source, message in (
        ("evil.pth", "refused global posix.system"),
        ("checkpoint.pth", "model_state_dict"),
        ("broken.pth", "broken.pth"),
        ("missing.pth", "not found"),
    ):
        assert main(["convert", str(tmp_path / source), str(tmp_path / "out.safetensors")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and err.startswith("fundamentals convert: error:")
    assert not (tmp_path / "out.safetensors").exists() and not marker.exists()


def test_bench_reads_the_same_file_with_both_readers(torch):
    from fundamentals.bench.files import bench_torch_load
    from fundamentals.bench.report import format_files_table

    result = bench_torch_load(size_mb=4, repeats=1)
    assert result["tensors"] == 1 and 4.0 <= result["size_mb"] < 4.1  # one 1024 x 1024 float32 matrix
    assert result["ratio"] == result["fundamentals"]["median_s"] / result["torch"]["median_s"]
    assert "fm.torch_load(path)" in "\n".join(format_files_table(result))
