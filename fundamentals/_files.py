"""Safe files: written atomically (`atomic_write_bytes`), read only when regular (`open_regular`).

Every file this library writes goes through `atomic_write_bytes`, every file it reads by
content through `open_regular`.

A write goes to a temporary file in the target's folder, is flushed to disk (`fsync`), and is
then moved over the target with `os.replace`, whose folder is flushed in turn, so a crash
leaves either the old file or the new one, never half of one. On top of that:

- only a regular file (or nothing) is ever replaced: a device, a FIFO, a socket or a folder
  at the path is refused before anything is written (as root, `os.replace` would otherwise
  swap `/dev/null` for a model file);
- a symbolic link at the path is replaced by the file, never written through;
- the replaced file's permission bits (and, where allowed, its owner) are kept;
- temporary files of this module's naming left by a killed writer are removed on the next
  write to the same path (only those whose writing process no longer runs);
- a failed write (a full or read-only disk) raises an `OSError` of the file system's kind whose
  one-line message names the file, and leaves the previous file and no temporary;
- `check_output_paths` proves, before any work, that the outputs can be created and that
  their disks have room for them (space is allocated to trial files, not estimated).

Reading: `open_regular` opens only regular files, so a FIFO (which would block until a writer
comes), a device or a socket is refused instead of read.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "atomic_write_bytes",
    "check_output_path",
    "check_output_paths",
    "check_regular",
    "describe",
    "interrupts_held",
    "open_regular",
]


def _read_umask() -> int:
    umask = os.umask(0)  # the only way to read it is to set it: once, at import
    os.umask(umask)
    return umask


_UMASK = _read_umask()
# Legacy temporary files (no process id in the name) count as stale after this many seconds.
_LEGACY_STALE_SECONDS = 3600.0
_CHUNK = 1 << 30  # bytes per write call (Linux writes at most about 2 GiB at once)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _existing(path: Path) -> os.stat_result | None:
    """`lstat` of what is at `path` (None if nothing); refuses anything but a regular file or a link."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(f"cannot write {path}: it is a folder, not a file name")
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
        raise ValueError(f"cannot write {path}: it is {_kind(info.st_mode)}; only a regular file is ever replaced")
    return info


def _folder(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def _write_error(path: Path, error: OSError) -> OSError:
    """The same kind of error (its errno kept), saying which file could not be written, on one line."""
    reason = error.strerror or str(error) or type(error).__name__
    if error.errno is None:
        return OSError(f"cannot write {path}: {reason}")
    return OSError(error.errno, f"cannot write {path}: {reason}")  # OSError(errno, ...) picks the subclass


def describe(error: BaseException) -> str:
    """An exception as one line: an `OSError`'s own message without its `[Errno N]` prefix."""
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror if not error.filename else f"{error.strerror}: {error.filename}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def _size_text(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size:,} bytes"


def _reserve(handle: int, size: int, path: Path, folder: Path, free: dict[int, int]) -> None:
    """Allocate `size` bytes to an open trial file: proof that the disk has them, not a guess."""
    if size <= 0:
        return
    try:
        os.posix_fallocate(handle, 0, size)
        return
    except AttributeError:  # no posix_fallocate on this system
        pass
    except OSError as error:
        if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise OSError(
                error.errno,
                f"cannot write {path}: no room for its {_size_text(size)} in {folder} ({error.strerror})",
            ) from None
    # The file system cannot allocate ahead: count its free blocks instead.
    info = os.fstatvfs(handle)
    device = os.fstat(handle).st_dev
    free.setdefault(device, info.f_bavail * info.f_frsize)
    if free[device] < size:
        raise OSError(
            errno.ENOSPC,
            f"cannot write {path}: no room for its {_size_text(size)} in {folder} "
            f"({_size_text(max(free[device], 0))} free; {os.strerror(errno.ENOSPC)})",
        )
    free[device] -= size


def _check_one(path: Path, size: int, free: dict[int, int], trials: list[tuple[int, str]]) -> None:
    _existing(path)
    folder = _folder(path)
    if not folder.is_dir():
        raise FileNotFoundError(errno.ENOENT, f"cannot write {path}: folder {folder} does not exist")
    try:
        handle, trial = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=folder)
    except OSError as error:
        raise OSError(
            error.errno, f"cannot write {path}: cannot create a file in {folder} ({error.strerror})"
        ) from None
    trials.append((handle, trial))
    _reserve(handle, size, path, folder, free)


def check_output_paths(outputs: Sequence[tuple[str, str | os.PathLike, int]]) -> None:
    """Check, before any work is done, that each `atomic_write_bytes(path, ...)` will be able to write,
    and that the disks have room for all of them at once.

    For each path a trial file is created in its folder and `size` bytes are allocated to it
    (`posix_fallocate`; on file systems that cannot allocate ahead, the free space is counted
    instead). All trial files are held together, so outputs that share a disk must fit
    together, and are then removed.

    **Arguments:**

    - `outputs`: `(name, path, size)`: what the output is called in messages (an option such
      as `"--out"`, or `""`), the file to be written later, and an upper bound of its size in
      bytes (0: only check that the file can be created).

    **Raises:** `IsADirectoryError` if a path is a folder; `ValueError` if something other than
    a regular file or a link is there; `FileNotFoundError` if its folder does not exist;
    `PermissionError` (or another `OSError`) if a file cannot be created in its folder (tried,
    not guessed: also right for root and read-only file systems); `OSError` with errno
    `ENOSPC` naming the path and its size if the disk has no room. Nothing is left behind.
    """
    trials: list[tuple[int, str]] = []
    free: dict[int, int] = {}
    try:
        for name, given, size in outputs:
            path = Path(given)
            try:
                _check_one(path, int(size), free, trials)
            except (OSError, ValueError) as error:
                if not name:
                    raise
                message = f"{name}: {error.strerror if isinstance(error, OSError) and error.strerror else error}"
                if isinstance(error, OSError) and error.errno is not None:
                    raise OSError(error.errno, message) from None
                raise type(error)(message) from None
    finally:
        for handle, trial in trials:
            os.close(handle)
            try:
                os.unlink(trial)
            except OSError:
                pass


def check_output_path(path: str | os.PathLike, size: int = 0) -> Path:
    """Check, before any work is done, that `atomic_write_bytes(path, ...)` will be able to write.

    **Arguments:**

    - `path`: the file to be written later.
    - `size`: an upper bound of its size in bytes, reserved on the disk to prove there is room
      (0: only check that the file can be created).

    **Returns:** the path.

    **Raises:** as `check_output_paths`.
    """
    check_output_paths([("", path, size)])
    return Path(path)


@contextlib.contextmanager
def interrupts_held(deliver: bool = True) -> Iterator[list[int]]:
    """Hold back Ctrl-C (SIGINT) for the duration: work that must not be cut in two finishes first.

    A SIGINT that arrives meanwhile is recorded in the list this yields and, with `deliver`,
    handed to the handler that was in place when the block ends (Python's raises
    `KeyboardInterrupt` there); without it, the caller decides. A second SIGINT is not held
    back. Outside the main thread, or when SIGINT has no Python handler, nothing changes.
    """
    received: list[int] = []
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield received
        return

    def hold(signum, frame):
        received.append(signum)
        signal.signal(signal.SIGINT, previous)  # a second Ctrl-C interrupts at once

    signal.signal(signal.SIGINT, hold)
    try:
        yield received
    finally:
        signal.signal(signal.SIGINT, previous)
        if received and deliver:
            previous(signal.SIGINT, None)


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """Open `path` for reading if it is a regular file (links followed); never block on a FIFO.

    A FIFO, a device or a socket is refused before it is read: opening a FIFO for reading
    waits for a writer, and a device can be endless. The check is made on what was opened
    (`fstat`), so the path cannot be swapped for a FIFO in between.

    **Returns:** the file, opened in binary mode.

    **Raises:** `FileNotFoundError`; `IsADirectoryError` for a folder; `ValueError` naming what
    else is there.
    """
    path = Path(path)
    info = os.stat(path)
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, f"{path} is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path} is {_kind(info.st_mode)}, not a regular file")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    handle = os.open(path, flags)
    try:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path} is {_kind(info.st_mode)}, not a regular file")
        os.set_blocking(handle, True)
        return os.fdopen(handle, "rb")
    except BaseException:
        os.close(handle)
        raise


def check_regular(path: str | os.PathLike) -> None:
    """**Raises:** as `open_regular`, without opening the file (for readers that open it by name)."""
    open_regular(path).close()


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?:(?P<pid>\d+)-)?[A-Za-z0-9_]{8}\.tmp$")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _remove_stale_temporaries(path: Path) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    try:
        names = os.listdir(folder)
    except OSError:
        return
    prefix = f".{path.name}."
    for name in names:
        if not name.startswith(prefix):
            continue
        match = _TEMPORARY.match(name)
        if match is None or match["name"] != path.name:
            continue
        candidate = folder / name
        try:
            if match["pid"] is not None:
                stale = int(match["pid"]) != os.getpid() and not _running(int(match["pid"]))
            else:
                stale = time.time() - os.lstat(candidate).st_mtime > _LEGACY_STALE_SECONDS
            if stale:
                os.unlink(candidate)
        except OSError:
            pass  # gone already, or not ours to remove


def _write_all(handle: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(handle, view[:_CHUNK]) :]


def _sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (some file systems cannot sync a folder: the data itself is on disk)."""
    try:
        directory = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(directory)
    except OSError:
        pass
    finally:
        os.close(directory)


def atomic_write_bytes(path: str | os.PathLike, data) -> Path:
    """Write `data` to `path` atomically: a temporary file in the same folder, flushed to disk, then `os.replace`.

    **Arguments:**

    - `path`: the file to write. Missing parent folders are created. A symbolic link there is
      replaced by the file (not written through); an existing file keeps its permissions.
    - `data`: the bytes (or any buffer of bytes).

    **Returns:** the path written, as a `Path`.

    **Raises:** `IsADirectoryError` if the path is a folder, `ValueError` if it is a device,
    FIFO or socket (both before writing anything); an `OSError` of the file system's kind
    (`errno` kept: `ENOSPC` for a full disk, `EROFS` for a read-only one) whose one-line message
    names the path. The previous file then stays as it was, and no temporary file is left.
    A Ctrl-C during the rename and the folder's sync that follows is delivered after both.
    """
    path = Path(path)
    previous = _existing(path)
    folder = _folder(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _write_error(path, error) from None
    _remove_stale_temporaries(path)
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=folder)
    except OSError as error:
        raise _write_error(path, error) from None
    try:
        try:
            if previous is not None and stat.S_ISREG(previous.st_mode):
                os.chmod(temporary, stat.S_IMODE(previous.st_mode))
                if previous.st_uid != os.geteuid() or previous.st_gid != os.getegid():
                    try:  # root replacing a user's file: the file stays theirs
                        os.chown(temporary, previous.st_uid, previous.st_gid)
                    except OSError:
                        pass
            else:
                # mkstemp makes the file private (0600); give it the permissions open() would have.
                os.chmod(temporary, 0o666 & ~_UMASK)
            _write_all(handle, data)
            os.fsync(handle)
        finally:
            os.close(handle)
        _existing(path)  # again, just before the rename: something may have appeared meanwhile
        with interrupts_held():  # the rename and its sync: never one without the other
            try:
                os.replace(temporary, path)
            except OSError as error:
                raise _write_error(path, error) from None
            _sync_folder(folder)
    except BaseException as error:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        if isinstance(error, OSError) and not isinstance(error, IsADirectoryError) and str(path) not in str(error):
            raise _write_error(path, error) from None
        raise
    return path
