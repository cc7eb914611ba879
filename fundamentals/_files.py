"""Safe writes: every file this library writes goes through `atomic_write_bytes`.

A write goes to a temporary file in the target's folder, is flushed to disk, and is then
moved over the target with `os.replace`, so a crash leaves either the old file or the new
one, never half of one. On top of that:

- only a regular file (or nothing) is ever replaced: a device, a FIFO, a socket or a folder
  at the path is refused before anything is written (as root, `os.replace` would otherwise
  swap `/dev/null` for a model file);
- a symbolic link at the path is replaced by the file, never written through;
- the replaced file's permission bits (and, where allowed, its owner) are kept;
- temporary files of this module's naming left by a killed writer are removed on the next
  write to the same path (only those whose writing process no longer runs).
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import time
from pathlib import Path

__all__ = ["atomic_write_bytes", "check_output_path"]


def _read_umask() -> int:
    umask = os.umask(0)  # the only way to read it is to set it: once, at import
    os.umask(umask)
    return umask


_UMASK = _read_umask()
# Legacy temporary files (no process id in the name) count as stale after this many seconds.
_LEGACY_STALE_SECONDS = 3600.0


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


def check_output_path(path: str | os.PathLike) -> Path:
    """Check, before any work is done, that `atomic_write_bytes(path, ...)` will be able to write.

    **Arguments:**

    - `path`: the file to be written later.

    **Returns:** the path.

    **Raises:** `IsADirectoryError` if it is a folder; `ValueError` if something other than a
    regular file or a link is there; `FileNotFoundError` if its folder does not exist;
    `PermissionError` if a file cannot be created in its folder (tried, not guessed: also
    right for root and read-only file systems).
    """
    path = Path(path)
    _existing(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    try:
        handle, trial = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=folder)
    except OSError as error:
        raise PermissionError(f"cannot write {path}: cannot create a file in {folder} ({error.strerror})") from None
    os.close(handle)
    os.unlink(trial)
    return path


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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically: a temporary file in the same folder, then `os.replace`.

    **Arguments:**

    - `path`: the file to write. Missing parent folders are created. A symbolic link there is
      replaced by the file (not written through); an existing file keeps its permissions.
    - `data`: the bytes.

    **Returns:** the path written, as a `Path`.

    **Raises:** `IsADirectoryError` if the path is a folder, `ValueError` if it is a device,
    FIFO or socket (both before writing anything); `OSError` from the file system, the
    previous file then staying as it was.
    """
    path = Path(path)
    previous = _existing(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent or ".")
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
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        _existing(path)  # again, just before the rename: something may have appeared meanwhile
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    try:  # make the rename itself durable
        directory = os.open(path.parent or ".", os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(directory)
    except OSError:
        pass  # some file systems cannot sync a folder; the data itself is on disk
    finally:
        os.close(directory)
    return path
