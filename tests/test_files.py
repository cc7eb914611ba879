"""Every file the project writes: only regular files are replaced, modes are kept, links are not
followed, temporary files of killed writers are cleaned up, and concurrent writers stay safe."""

import errno
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time

import jax
import optax
import pytest

import fundamentals as fm
import fundamentals._files as files
from fundamentals._files import atomic_write_bytes, check_output_path
from fundamentals.checkpoint import save_checkpoint


def _model():
    return fm.NeuralNetwork(2, 2, key=jax.random.key(0))


def _writers(tmp_path):
    """One callable per kind of file the project writes, each writing to the path it is given."""
    from fundamentals.cli import _plot_loss
    from fundamentals.cli import main as cli_main

    model = _model()

    def checkpoint(path):
        save_checkpoint(
            path,
            params=model,
            opt_state=optax.sgd(0.1, momentum=0.9).init(model),
            metadata={"epoch": 1, "global_step": 3, "history": {"loss": [1.0]}},
        )

    def bench_json(path):  # the option is checked before any benchmark runs
        if cli_main(["bench", "tiny", "--quick", "--json", str(path)]) != 2:
            raise AssertionError("bench accepted the output")
        raise ValueError("refused by bench")

    return {
        "atomic_write_bytes": lambda path: atomic_write_bytes(path, b"data"),
        "model": lambda path: fm.save_model(model, path),
        "checkpoint": checkpoint,
        "plot": lambda path: _plot_loss({"loss": [1.0, 0.5]}, str(path), title="loss"),
        "bench json": bench_json,
    }


@pytest.mark.parametrize("writer", ["atomic_write_bytes", "model", "checkpoint", "plot", "bench json"])
def test_a_fifo_is_refused_and_stays_a_fifo(tmp_path, writer):
    fifo = tmp_path / "out.png"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="FIFO|refused by bench"):
        _writers(tmp_path)[writer](fifo)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert os.listdir(tmp_path) == ["out.png"]  # and no temporary file was left


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="only root can make device files")
def test_a_device_file_is_refused_as_root(tmp_path):
    fake_null = tmp_path / "fakenull"
    try:
        os.mknod(fake_null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("this container may not make device files")
    for writer in _writers(tmp_path).values():
        with pytest.raises(ValueError, match="character device|refused by bench"):
            writer(fake_null)
    assert stat.S_ISCHR(os.lstat(fake_null).st_mode)
    with pytest.raises(ValueError, match="character device"):
        check_output_path(fake_null)


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o444])
def test_overwriting_keeps_the_files_mode(tmp_path, mode):
    path = tmp_path / "o.safetensors"
    fm.save_model(_model(), path)
    os.chmod(path, mode)
    fm.save_model(_model(), path)
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    assert fm.load_model(path).num_inputs == 2


def test_a_link_is_replaced_not_written_through(tmp_path):
    from fundamentals.cli import _plot_loss

    target = tmp_path / "target.txt"
    target.write_text("keep me")
    for name, write in [
        ("l.png", lambda p: _plot_loss({"loss": [1.0, 0.5]}, str(p), title="t")),
        ("l.safetensors", lambda p: fm.save_model(_model(), p)),
    ]:
        link = tmp_path / name
        link.symlink_to(target)
        write(link)
        assert target.read_text() == "keep me"
        assert not link.is_symlink() and link.stat().st_size > 0
    assert (tmp_path / "l.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    import fundamentals._files as files
    def die(*args):
        os.kill(os.getpid(), signal.SIGKILL)  # killed after writing the temporary file, before the rename
    files.os.replace = die
    files.atomic_write_bytes(sys.argv[1], b"new" * 1000)
""")


def test_a_killed_writers_temporary_file_is_removed_on_the_next_save(tmp_path):
    path = tmp_path / "model.safetensors"
    fm.save_model(_model(), path)
    before = path.read_bytes()
    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)])
    assert result.returncode == -signal.SIGKILL
    leftovers = [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    assert len(leftovers) == 1 and path.read_bytes() == before  # the kill left the old file and a temporary

    legacy = tmp_path / ".model.safetensors.ab12cd34.tmp"  # the naming of earlier versions, hours old
    legacy.write_bytes(b"x")
    os.utime(legacy, (time.time() - 7200, time.time() - 7200))
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        in_flight = tmp_path / f".model.safetensors.{live.pid}-abcd1234.tmp"  # a live writer's: kept
        in_flight.write_bytes(b"x")
        unrelated = tmp_path / ".other.safetensors.1-abcd1234.tmp"  # another file's: not ours to judge here
        unrelated.write_bytes(b"x")
        fm.save_model(_model(), path)
        assert sorted(os.listdir(tmp_path)) == sorted([path.name, in_flight.name, unrelated.name])
    finally:
        live.kill()
        live.wait()


CONCURRENT_WRITER = textwrap.dedent("""
    import sys
    import jax, optax
    import fundamentals as fm
    from fundamentals.checkpoint import save_checkpoint
    model = fm.NeuralNetwork(2, 2, key=jax.random.key(int(sys.argv[2])))
    opt_state = optax.sgd(0.1, momentum=0.9).init(model)
    for step in range(40):
        save_checkpoint(sys.argv[1], params=model, opt_state=opt_state,
                        metadata={"epoch": step, "global_step": step, "history": {"loss": [0.5] * step}})
""")


def test_two_writers_of_one_checkpoint_never_corrupt_it(tmp_path):
    from fundamentals.checkpoint import load_checkpoint

    path = tmp_path / "run.ckpt"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_WRITER, str(path), str(seed)], stderr=subprocess.PIPE, text=True
        )
        for seed in (1, 2)
    ]
    model = _model()
    opt_state = optax.sgd(0.1, momentum=0.9).init(model)
    while any(writer.poll() is None for writer in writers):
        if path.exists():
            _, _, state = load_checkpoint(path, params=model, opt_state=opt_state)  # never half-written
            assert len(state["history"]["loss"]) == state["epoch"]
    for writer in writers:
        assert writer.wait() == 0, writer.stderr.read()
    _, _, state = load_checkpoint(path, params=model, opt_state=opt_state)
    assert state["epoch"] == 39
    assert os.listdir(tmp_path) == ["run.ckpt"]


# --- the writer's smaller promises -----------------------------------------------------------------


def test_missing_folders_are_created(tmp_path):
    path = files.atomic_write_bytes(tmp_path / "a" / "b" / "f.bin", b"x")
    assert path.read_bytes() == b"x"


def test_a_ctrl_c_during_a_write_leaves_the_old_file_and_stays_a_ctrl_c(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def interrupted(fd, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        files.atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]


def test_a_file_appearing_meanwhile_is_refused_as_what_it_is(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    real_fsync = os.fsync

    def fsync_then_a_fifo_appears(fd):
        real_fsync(fd)
        if not path.exists():
            os.mkfifo(path)

    monkeypatch.setattr(os, "fsync", fsync_then_a_fifo_appears)
    with pytest.raises(ValueError, match="FIFO"):
        files.atomic_write_bytes(path, b"new")
    assert os.listdir(tmp_path) == ["f.bin"]  # the FIFO, and no temporary


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="sends a signal to this thread")
def test_ctrl_c_is_held_back_until_the_block_ends():
    with pytest.raises(KeyboardInterrupt):
        with files.interrupts_held() as received:
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            for _ in range(1000):  # Python runs the handler between bytecodes: here, inside the block
                pass
            assert received == [signal.SIGINT]  # recorded, not raised
    with files.interrupts_held(deliver=False) as received:
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        for _ in range(1000):
            pass
    assert received == [signal.SIGINT]  # the caller decides; nothing was raised
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _open_in(folder) -> list[str]:
    """What this process has open inside `folder` (by /proc/self/fd): immune to other threads' descriptors."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass  # closed meanwhile
    return [target for target in targets if target.startswith(str(folder))]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="lists descriptors in /proc")
def test_no_descriptor_is_left_open_by_checks_writes_or_refusals(tmp_path, monkeypatch):
    files.check_output_paths([("--out", tmp_path / "a.bin", 1 << 20), ("--plot", tmp_path / "b.png", 0)])
    assert os.listdir(tmp_path) == [] and _open_in(tmp_path) == []
    files.atomic_write_bytes(tmp_path / "c.bin", b"data")
    assert _open_in(tmp_path) == []
    # a FIFO swapped in after the name was checked: refused on what was opened, and closed
    os.mkfifo(tmp_path / "pipe")
    regular = os.stat(tmp_path / "c.bin")
    real_stat = os.stat
    monkeypatch.setattr(
        os, "stat", lambda path, *a, **k: regular if str(path).endswith("pipe") else real_stat(path, *a, **k)
    )
    with pytest.raises(ValueError, match="FIFO"):
        files.open_regular(tmp_path / "pipe")
    assert _open_in(tmp_path) == []


def test_no_room_names_the_output_and_its_size(tmp_path, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OSError) as info:
        files.check_output_paths([("--out", tmp_path / "m.safetensors", 5 << 20)])
    assert info.value.errno == errno.ENOSPC
    assert str(info.value.strerror).startswith("--out: cannot write") and "5.0 MiB" in info.value.strerror
    with pytest.raises(OSError, match=r"its 1\.5 MiB "):
        files.check_output_paths([("--out", tmp_path / "m.safetensors", 3 << 19)])
    with pytest.raises(OSError, match="its 1,000 bytes "):
        files.check_output_paths([("--out", tmp_path / "m.safetensors", 1000)])


def test_without_allocation_ahead_the_free_space_is_counted(tmp_path, monkeypatch):
    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    real = os.fstatvfs(os.open(tmp_path, os.O_RDONLY))
    free_blocks = (3 << 20) // real.f_frsize  # 3 MiB free, by the file system's own count

    class Small:
        f_bavail, f_frsize = free_blocks, real.f_frsize

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    monkeypatch.setattr(os, "fstatvfs", lambda fd: Small)
    files.check_output_paths([("--out", tmp_path / "a", 1 << 20), ("--plot", tmp_path / "b", 1 << 20)])  # 2 of 3
    with pytest.raises(OSError, match=r"--plot: .*no room .*2\.0 MiB.*1\.0 MiB free") as info:
        files.check_output_paths([("--out", tmp_path / "a", 2 << 20), ("--plot", tmp_path / "b", 2 << 20)])
    assert info.value.errno == errno.ENOSPC and os.listdir(tmp_path) == []
