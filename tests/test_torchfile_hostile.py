"""`.pth` files that read differently elsewhere, ask for memory they do not hold, never end, or are not what they
seem; and files from the wild (other protocols, byte orders, Python values) read and written as PyTorch does."""

import collections
import io
import json
import os
import struct
import subprocess
import sys
import warnings
import zipfile
import zlib
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import fundamentals as fm
from fundamentals.checkpoint import convert
from fundamentals.cli import main

from .test_torchfile import _archive, _int

HERE = Path(__file__).resolve().parent
PEAK = HERE / "workers" / "peak_memory.py"
HANG_GUARD = 120  # seconds; only so a broken build cannot hang the suite, never an assertion
SMALL = 100 << 20  # bytes: above the 64 MiB a small file may take, below the 128 MiB to 256 MB the attacks ask for


def peak(what, *args):
    """Run `what` on a file in a fresh process; its error (or None) and how much its peak memory grew.
    (Linux only: the peak is read from /proc.)"""
    result = subprocess.run(
        [sys.executable, str(PEAK), what, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        cwd=HERE.parent,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report["error"], report["grown"]


def text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def tensor_pickle(size, stride, numel, *, metadata: bytes = b"", key=b"0") -> bytes:
    """A hand-written data.pkl: one float32 tensor as torch.save spells it, optionally with metadata."""

    def sizes(values):
        return b"(" + b"".join(_int(v) for v in values) + b"t"

    return (
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
        + text(key.decode())
        + b"X\x03\x00\x00\x00cpu"
        + _int(numel)
        + b"tQK\x00"
        + sizes(size)
        + sizes(stride)
        + b"\x89ccollections\nOrderedDict\n)R"
        + metadata
        + b"tR."
    )


NEG = b"}" + text("neg") + b"\x88s"  # metadata {"neg": True}: the tensor reads as its storage negated


def state_pickle(tensor: bytes) -> bytes:
    """{"w": the tensor of a `tensor_pickle`}: a state dict."""
    return b"\x80\x02}" + text("w") + tensor[2:-1] + b"s."


def torch_files(torch, tmp_path):
    torch.manual_seed(0)
    torch.save({"w": torch.randn(3, 4), "b": torch.arange(5), "h": torch.randn(2).half()}, tmp_path / "ok.pth")
    return tmp_path / "ok.pth"


def rewrite(path, target, change):
    """Copy a zip archive, passing each record's (name, bytes) through `change` (which may return several)."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w") as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about a duplicate name: that is the point
        for info in source.infolist():
            for name, data in change(info.filename, source.read(info.filename)):
                out.writestr(name, data)
    return target


def assert_equal_to_torch(torch, ours, theirs):
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, np.ndarray) and ours.shape == tuple(theirs.shape)
        np.testing.assert_array_equal(ours, theirs.resolve_neg().resolve_conj().numpy())
    elif isinstance(theirs, dict):
        assert type(ours) is type(theirs) and list(ours) == list(theirs)
        for key in theirs:
            assert_equal_to_torch(torch, ours[key], theirs[key])
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert_equal_to_torch(torch, a, b)
    else:
        assert ours == theirs and type(ours) is type(theirs)


# --- item: one file, one reading ----------------------------------------------------------------------


def test_two_records_of_one_name_are_refused(torch, tmp_path):
    path = torch_files(torch, tmp_path)
    prefix = zipfile.ZipFile(path).namelist()[0].split("/")[0]
    storage = f"{prefix}/data/0"
    twice = rewrite(
        path,
        tmp_path / "twice.pth",
        lambda name, data: [(name, data)] + ([(name, bytes(len(data)))] if name == storage else []),
    )
    assert zipfile.ZipFile(twice).namelist().count(storage) == 2  # the file really holds both
    with pytest.raises(fm.TorchFileError, match=f"two records named '{storage}'"):
        fm.torch_load(twice)
    pickle_twice = rewrite(
        path,
        tmp_path / "pickle_twice.pth",
        lambda name, data: [(name, data)] * (2 if name.endswith("data.pkl") else 1),
    )
    with pytest.raises(fm.TorchFileError, match=f"two records named '{prefix}/data.pkl'") as info:
        fm.torch_load(pickle_twice)
    assert "no <name>/data.pkl" not in str(info.value)
    two_archives = rewrite(
        path,
        tmp_path / "two_archives.pth",
        lambda name, data: [(name, data), (name.replace(prefix, "other", 1), data)],
    )
    with pytest.raises(fm.TorchFileError, match=f"2 data.pkl records.*{prefix}/data.pkl.*other/data.pkl"):
        fm.torch_load(two_archives)


# --- memory ---------------------------------------------------------------------------------------------


def test_a_huge_memo_index_takes_no_memory_and_reads_as_in_torch(torch, tmp_path):
    # {"k": 1}, the dict memoised at index 2**24 (LONG_BINPUT): a memo array would take 256 MB.
    pickled = b"\x80\x02}r" + struct.pack("<I", 2**24) + text("k") + b"K\x01s."
    _archive(tmp_path / "memo.pth", pickled, {})
    assert fm.torch_load(tmp_path / "memo.pth") == torch.load(tmp_path / "memo.pth", weights_only=True) == {"k": 1}
    error, grown = peak("torch_load", tmp_path / "memo.pth")
    assert error is None and grown < SMALL


def test_an_expanded_view_with_metadata_stays_a_view_as_in_torch(torch, tmp_path):
    storage = {"0": np.array([2.0], np.float32).tobytes()}
    _archive(tmp_path / "small.pth", tensor_pickle((3, 2), (0, 0), 1, metadata=NEG), storage)
    theirs = torch.load(tmp_path / "small.pth", weights_only=True)
    ours = fm.torch_load(tmp_path / "small.pth")
    assert theirs.is_neg() and theirs.stride() == (0, 0)
    np.testing.assert_array_equal(ours, theirs.resolve_neg().numpy())  # all -2.0
    assert ours.strides == (0, 0)  # a view, as torch's, not 6 copies
    _archive(tmp_path / "huge.pth", tensor_pickle((2**26,), (0,), 1, metadata=NEG), storage)  # 256 MB expanded
    error, grown = peak("torch_load", tmp_path / "huge.pth")
    assert error is None and grown < SMALL


def test_convert_refuses_an_expanded_view_that_would_write_far_more_than_it_read(torch, tmp_path, capsys):
    storage = {"0": np.array([1.5], np.float32).tobytes()}
    _archive(tmp_path / "wide.pth", state_pickle(tensor_pickle((2**25,), (0,), 1)), storage)  # 4 bytes, 128 MiB out
    error, grown = peak("convert", tmp_path / "wide.pth", tmp_path / "wide.safetensors")
    assert error is not None and "134,217,728 bytes" in error and grown < SMALL
    assert not (tmp_path / "wide.safetensors").exists()
    assert main(["convert", str(tmp_path / "wide.pth"), str(tmp_path / "wide.safetensors")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    # A view that expands a little (torch.ones(3).expand(4, 3)) converts, as torch reads it.
    torch.save({"e": torch.ones(3).expand(4, 3)}, tmp_path / "small.pth")
    assert convert(tmp_path / "small.pth", tmp_path / "small.safetensors")[0] == 1
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(tmp_path / "small.safetensors"))["e"], torch.ones(4, 3))


def _one_record_many_names(path, pickled: bytes, data: bytes, count: int):
    """A zip whose central directory lists `count` storages, all pointing at one record's bytes."""
    out = io.BytesIO()

    def local(name: bytes, payload: bytes) -> int:
        offset = out.tell()
        out.write(
            struct.pack(
                "<4s5H3I2H",
                b"PK\x03\x04",
                20,
                0,
                0,
                0,
                0,
                zlib.crc32(payload),
                len(payload),
                len(payload),
                len(name),
                0,
            )
        )
        out.write(name + payload)
        return offset

    records = [(b"archive/data.pkl", pickled, local(b"archive/data.pkl", pickled))]
    shared = local(b"archive/data/0", data)
    records += [(f"archive/data/{i}".encode(), data, shared) for i in range(count)]
    start = out.tell()
    for name, payload, offset in records:
        out.write(
            struct.pack(
                "<4s6H3I5H2I",
                b"PK\x01\x02",
                20,
                20,
                0,
                0,
                0,
                0,
                zlib.crc32(payload),
                len(payload),
                len(payload),
                len(name),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + name
        )
    end = out.tell()
    out.write(struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, len(records), len(records), end - start, start, 0))
    path.write_bytes(out.getvalue())


def test_many_entries_pointing_at_one_record_do_not_multiply_it(tmp_path):
    count, numel = 200, 1 << 18  # 200 storages of 1 MiB each, from one 1 MiB record
    pickled = (
        b"\x80\x02]("
        + b"".join(tensor_pickle((numel,), (1,), numel, key=str(i).encode())[2:-1] for i in range(count))
        + b"e."
    )
    _one_record_many_names(tmp_path / "shared.pth", pickled, bytes(4 * numel), count)
    assert len(zipfile.ZipFile(tmp_path / "shared.pth").namelist()) == count + 1
    error, grown = peak("torch_load", tmp_path / "shared.pth")
    assert error is not None and "TorchFileError" in error and grown < SMALL


def _encode_repeated(count: int, size: int) -> bytes:
    """A list of one `size`-character string and `count` times _codecs.encode(that memoised string, 'latin1')."""
    encode = b"c_codecs\nencode\nq\x01" + b"h\x00" + text("latin1") + b"\x86R"
    again = b"h\x01h\x00" + text("latin1") + b"\x86R"
    return b"\x80\x02](" + text("x" * size) + b"q\x00" + encode + again * (count - 1) + b"e."


def test_decoding_one_string_many_times_counts_against_the_budget(torch, tmp_path):
    _archive(tmp_path / "encode.pth", _encode_repeated(200, 1 << 20), {})  # 200 MiB from a 1 MiB file
    error, grown = peak("torch_load", tmp_path / "encode.pth")
    assert error is not None and "max_bytes" in error and grown < SMALL
    # The limit is the file's own size plus 64 MiB unless raised: then it reads as torch reads it.
    _archive(tmp_path / "some.pth", _encode_repeated(80, 1 << 20), {})
    with pytest.raises(fm.TorchFileError, match="memory"):
        fm.torch_load(tmp_path / "some.pth")
    ours = fm.torch_load(tmp_path / "some.pth", max_bytes=1 << 30)
    assert ours == torch.load(tmp_path / "some.pth", weights_only=True)


# --- files that are not files ---------------------------------------------------------------------------


READ_IN_CHILD = """
import sys
import jax
import fundamentals as fm
from fundamentals.checkpoint import convert
what, path = sys.argv[1:]
try:
    if what == "torch_load":
        fm.torch_load(path)
    elif what == "convert":
        convert(path, path + ".out.safetensors")
    else:
        fm.load_model(path, like=fm.NeuralNetwork(2, 2, key=jax.random.key(0)))
except Exception as error:
    print(type(error).__name__, error)
"""


@pytest.mark.parametrize("kind", ["fifo", "link to a fifo", "device"])
@pytest.mark.parametrize("what", ["torch_load", "convert", "load_model"])
def test_a_fifo_or_device_is_refused_not_read(tmp_path, kind, what):
    if kind == "device":
        path = "/dev/zero"  # endless: reading it would never finish
    else:
        os.mkfifo(tmp_path / "pipe.pth")
        path = tmp_path / "pipe.pth"
        if kind == "link to a fifo":
            (tmp_path / "link.pth").symlink_to(path)
            path = tmp_path / "link.pth"
    result = subprocess.run(
        [sys.executable, "-c", READ_IN_CHILD, what, str(path)], capture_output=True, text=True, timeout=HANG_GUARD
    )
    assert result.returncode == 0, result.stderr
    assert ("FIFO" if kind != "device" else "character device") in result.stdout, result.stdout


# --- what the files are ---------------------------------------------------------------------------------


def test_quantized_and_torchscript_files_are_named_as_such(torch, tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.quantize_per_tensor(torch.randn(4), 0.1, 10, torch.quint8)
    torch.save({"q": quantized}, tmp_path / "quantized.pth")
    assert torch.load(tmp_path / "quantized.pth", weights_only=True)["q"].is_quantized  # torch reads it
    with pytest.raises(fm.TorchFileError, match="quantized tensor") as info:
        fm.torch_load(tmp_path / "quantized.pth")
    assert not isinstance(info.value, fm.UnsafeFileError) and "run code" not in str(info.value)
    assert "dequantize()" in str(info.value)

    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "script.pt")
    with pytest.raises(fm.TorchFileError, match="TorchScript archive.*torch.jit.load") as info:
        fm.torch_load(tmp_path / "script.pt")
    assert not isinstance(info.value, fm.UnsafeFileError)
    assert main(["convert", str(tmp_path / "script.pt"), str(tmp_path / "s.safetensors")]) == 2
    assert "TorchScript" in capsys.readouterr().err


def test_error_lines_never_carry_a_huge_value_from_the_file(tmp_path, capsys):
    huge_name = "m" * 5_000_000
    _archive(tmp_path / "global.pth", b"\x80\x02c" + huge_name.encode() + b"\nsystem\n.", {})
    with pytest.raises(fm.UnsafeFileError) as info:
        fm.torch_load(tmp_path / "global.pth")
    assert len(str(info.value)) < 500 and "global.pth" in str(info.value)
    _archive(tmp_path / "size.pth", tensor_pickle((-(10**600),), (1,), 4), {"0": bytes(16)})
    with pytest.raises(fm.TorchFileError) as info:
        fm.torch_load(tmp_path / "size.pth")
    assert len(str(info.value)) < 500
    assert main(["convert", str(tmp_path / "global.pth"), str(tmp_path / "g.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 500


# --- files from the wild --------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
def test_a_legacy_file_of_any_protocol_torch_reads_is_read(torch, tmp_path, protocol):
    state = {"w": torch.arange(6.0).reshape(2, 3), "s": {1, 2}, "t": (1, "x")}
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False, pickle_protocol=protocol)
    assert_equal_to_torch(
        torch, fm.torch_load(tmp_path / "legacy.pth"), torch.load(tmp_path / "legacy.pth", weights_only=True)
    )
    torch.save(
        {"w": torch.arange(6.0)}, tmp_path / "w.pth", _use_new_zipfile_serialization=False, pickle_protocol=protocol
    )
    assert convert(tmp_path / "w.pth", tmp_path / "w.safetensors")[0] == 1


def test_a_saved_set_is_read_through_its_protocol_2_name(torch, tmp_path):
    torch.save({"s": {3, 1}, "n": 1.5}, tmp_path / "set.pth")
    assert b"__builtin__\nset" in zipfile.ZipFile(tmp_path / "set.pth").read("set/data.pkl")
    assert_equal_to_torch(
        torch, fm.torch_load(tmp_path / "set.pth"), torch.load(tmp_path / "set.pth", weights_only=True)
    )


def test_big_endian_storages_are_swapped_as_torch_swaps_them(torch, tmp_path):
    path = torch_files(torch, tmp_path)
    dtypes = {"0": np.float32, "1": np.int64, "2": np.float16}  # the storages of w, b, h in save order

    def big(name, data):
        if name.endswith("/byteorder"):
            return [(name, b"big")]
        key = name.rsplit("/", 1)[1]
        if "/data/" in name and key in dtypes:
            return [(name, np.frombuffer(data, dtypes[key]).byteswap().tobytes())]
        return [(name, data)]

    swapped = rewrite(path, tmp_path / "big.pth", big)
    theirs = torch.load(swapped, weights_only=True)
    assert torch.equal(theirs["w"], torch.load(path, weights_only=True)["w"])  # torch swaps them back
    assert_equal_to_torch(torch, fm.torch_load(swapped), theirs)


def test_big_endian_arrays_are_written_as_torch_reads_them(torch, tmp_path):
    arrays = {"f": np.arange(5, dtype=">f4") / 3, "i": np.arange(-2, 2, dtype=">i8"), "h": np.arange(3, dtype=">f2")}
    fm.torch_save(arrays, tmp_path / "big.pth")
    loaded = torch.load(tmp_path / "big.pth", weights_only=True)
    for key, array in arrays.items():
        np.testing.assert_array_equal(loaded[key].numpy(), array.astype(array.dtype.newbyteorder("=")))


def test_python_values_torch_load_returns_are_written_back(torch, tmp_path):
    ordered = collections.OrderedDict(w=torch.ones(2))
    ordered._metadata = {"": {"version": 1}}
    state = {
        "complex": 1.5 - 2j,
        "set": {1, "a", (2, 3)},
        "tuple keys": {(1, 2): "a", ("x",): 3.0, (): None},
        "dtypes": [torch.float32, torch.int64, torch.bfloat16],
        "counter": collections.Counter({"a": 3}),
        "ordered": ordered,
        "bytearray": bytearray(b"\x00\xff"),
        "bytes": b"\x01",
    }
    torch.save(state, tmp_path / "torch.pth")
    ours = fm.torch_load(tmp_path / "torch.pth")
    assert ours["dtypes"][0] == np.dtype(np.float32)  # torch.float32 reads as NumPy's dtype
    fm.torch_save(ours, tmp_path / "again.pth")  # and everything it returned can be written back
    again = torch.load(tmp_path / "again.pth", weights_only=True)
    assert_equal_to_torch(
        torch, {k: v for k, v in again.items() if k != "ordered"}, {k: v for k, v in state.items() if k != "ordered"}
    )
    assert again["ordered"]._metadata == ordered._metadata and torch.equal(again["ordered"]["w"], ordered["w"])
    # NumPy's scalar types, as torch_load gives them back inside an optimizer's state
    fm.torch_save({"step": np.float32(3.0), "dtype": np.float16, "mask": np.bool_(True)}, tmp_path / "scalars.pth")
    scalars = torch.load(tmp_path / "scalars.pth", weights_only=True)
    assert scalars["step"].dtype == torch.float32 and scalars["step"].item() == 3.0
    assert scalars["dtype"] is torch.float16 and scalars["mask"].item() is True


# --- what the mutation run found untested ------------------------------------------------------------


@pytest.mark.parametrize(
    "call, expected",
    [
        (text("1+2j"), 1 + 2j),  # complex("1+2j"): Python's complex, as torch calls it, reads one string
        (b"\x88K\x02\x86", 1 + 2j),  # complex(True, 2)
        (b"G?\xf8\x00\x00\x00\x00\x00\x00\x85", 1.5 + 0j),  # complex(1.5)
    ],
)
def test_complex_is_built_from_what_pythons_complex_takes(torch, tmp_path, call, expected):
    arguments = call if call.endswith((b"\x86", b"\x85")) else call + b"\x85"
    _archive(tmp_path / "c.pth", b"\x80\x02c__builtin__\ncomplex\n" + arguments + b"R.", {})
    theirs = torch.load(tmp_path / "c.pth", weights_only=True)
    assert fm.torch_load(tmp_path / "c.pth") == theirs == expected


def test_a_short_binstring_reads_as_torch_reads_it(torch, tmp_path):
    # Python 2's str, as a protocol-2 pickle from Python 2 spells it: SHORT_BINSTRING, decoded as UTF-8.
    _archive(
        tmp_path / "s.pth",
        b"\x80\x02]q\x00(U\x03abcU\x05caf\xc3\xa9U\x00e.",
        {},
    )
    assert fm.torch_load(tmp_path / "s.pth") == torch.load(tmp_path / "s.pth", weights_only=True) == ["abc", "café", ""]


def test_memo_entries_past_255_are_read_back(torch, tmp_path):
    # Past 256 memoised objects, pickle refers back with LONG_BINGET: shared strings and tensors beyond it.
    keys = [f"key{i}" for i in range(400)]
    tensors = [torch.full((2,), float(i)) for i in range(300)]
    state = {
        "table": {key: i for i, key in enumerate(keys)},
        "again": keys[-3:],
        "tensors": tensors,
        "same": tensors[-1],
    }
    torch.save(state, tmp_path / "many.pth")
    import pickletools

    ops = {op.name for op, _, _ in pickletools.genops(zipfile.ZipFile(tmp_path / "many.pth").read("many/data.pkl"))}
    assert "LONG_BINGET" in ops and "LONG_BINPUT" in ops
    assert_equal_to_torch(
        torch, fm.torch_load(tmp_path / "many.pth"), torch.load(tmp_path / "many.pth", weights_only=True)
    )


def test_build_sets_attributes_as_torch_sets_them(torch, tmp_path):
    # BUILD on an OrderedDict takes a dict (a state_dict's _metadata); on a Counter, which has no
    # __setstate__, also (state, slot state), as pickle spells an object with slots. torch refuses the rest.
    metadata = b"}" + text("_metadata") + b"}" + text("") + b"}" + text("version") + b"K\x01sss"
    cases = {
        "od_dict": b"\x80\x02ccollections\nOrderedDict\n)R" + text("a") + b"K\x01s" + metadata + b"b.",
        "od_pair": b"\x80\x02ccollections\nOrderedDict\n)R" + text("a") + b"K\x01s" + metadata + b"N\x86b.",
        "counter_pair": b"\x80\x02ccollections\nCounter\n)R" + text("a") + b"K\x01s" + b"N" + metadata + b"\x86b.",
        "set": b"\x80\x02c__builtin__\nset\n)R" + metadata + b"b.",
    }
    for name, pickled in cases.items():
        _archive(tmp_path / f"{name}.pth", pickled, {})
        try:
            theirs = torch.load(tmp_path / f"{name}.pth", weights_only=True)
        except Exception:  # torch refuses it: so must we
            with pytest.raises(fm.TorchFileError):
                fm.torch_load(tmp_path / f"{name}.pth")
            continue
        ours = fm.torch_load(tmp_path / f"{name}.pth")
        assert ours == theirs and type(ours) is type(theirs), name
        assert ours._metadata == theirs._metadata == {"": {"version": 1}}, name
    assert not hasattr(collections.Counter, "_metadata")  # set on the instance only


def test_torchs_legacy_tensor_classes_are_named_not_taken_for_code(torch, tmp_path):
    _archive(tmp_path / "legacy_class.pth", b"\x80\x02ctorch\nFloatTensor\n.", {})
    assert torch.load(tmp_path / "legacy_class.pth", weights_only=True) is torch.FloatTensor  # allowed by torch
    with pytest.raises(fm.TorchFileError, match="torch.FloatTensor, which cannot be read without PyTorch") as info:
        fm.torch_load(tmp_path / "legacy_class.pth")
    assert not isinstance(info.value, fm.UnsafeFileError)


def test_the_tar_format_of_old_pytorch_is_named(tmp_path):
    import tarfile

    (tmp_path / "sys_info").write_bytes(b"\x80\x02}.")
    with tarfile.open(tmp_path / "old.pth", "w") as archive:
        archive.add(tmp_path / "sys_info", arcname="sys_info")
    with pytest.raises(fm.TorchFileError, match="PyTorch's tar format"):
        fm.torch_load(tmp_path / "old.pth")


@pytest.mark.parametrize("dtype", ["uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2"])
def test_torch_save_writes_the_dtypes_without_a_legacy_storage_class(torch, tmp_path, dtype):
    values = np.arange(6).reshape(2, 3)
    array = values.astype(getattr(ml_dtypes, dtype) if dtype.startswith("float8") else dtype)
    fm.torch_save({"x": array}, tmp_path / "x.pth")
    loaded = torch.load(tmp_path / "x.pth", weights_only=True)["x"]
    assert loaded.dtype == getattr(torch, dtype) and tuple(loaded.shape) == (2, 3)
    np.testing.assert_array_equal(loaded.float().numpy(), array.astype(np.float32))


@pytest.mark.parametrize(
    "global_, argument",
    [
        (b"c__builtin__\nset\n", b"](" + b"K\x00" * 1 + b"e"),  # set(list)
        (b"ccollections\nCounter\n", b"}"),  # Counter(dict)
    ],
)
def test_copies_a_global_makes_of_one_memoised_object_count_against_the_budget(tmp_path, global_, argument):
    # One container of 100,000 items, copied by set() or Counter() 1,000 times: 6 GB from a file of about 1 MB.
    if argument == b"}":
        items = b"}q\x00(" + b"".join(_int(i) + b"K\x01" for i in range(100_000)) + b"u"
    else:
        items = b"]q\x00(" + b"".join(_int(i) for i in range(100_000)) + b"e"
    copy = b"h\x01h\x00\x85R"  # the global and the container, from the memo: a few bytes a copy
    pickled = b"\x80\x02](" + items + global_ + b"q\x01h\x00\x85R" + copy * 999 + b"e."
    _archive(tmp_path / "copies.pth", pickled, {})
    error, grown = peak("torch_load", tmp_path / "copies.pth")
    assert error is not None and "max_bytes" in error and grown < SMALL
