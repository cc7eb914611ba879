"""Runs `fundamentals ARGS...` on a disk that fails the way full, read-only or interrupted disks fail.

Only files inside `FAULT_DIR` are affected, and only those whose name starts with `FAULT_NAME`
(the target's own name, or the `.NAME.` temporary next to it), and only after `FAULT_AFTER`
(default 0) such calls went through. `FAULT_KIND`:

- `enospc-fsync`: flushing such a file to disk fails with ENOSPC (what a full disk, a full quota
  or delayed allocation gives at `fsync`);
- `erofs-create`: creating such a file fails with EROFS once `FAULT_DIR/FAULT_NAME` exists (the
  file system was remounted read-only after the first write);
- `enospc-fallocate`: reserving space for such a file fails with ENOSPC;
- `sigint-folder-fsync`: syncing the folder once `FAULT_DIR/FAULT_NAME` exists sends this process
  SIGINT (Ctrl-C during the last step of the write, after the file was renamed in place).

The real call runs in every other case, so the run is otherwise a normal one.
"""

import errno
import os
import signal
import stat
import sys

FOLDER = os.path.realpath(os.environ["FAULT_DIR"])
NAME = os.environ["FAULT_NAME"]
KIND = os.environ["FAULT_KIND"]
TARGET = os.path.join(FOLDER, NAME)
AFTER = int(os.environ.get("FAULT_AFTER", "0"))
calls = 0


def _fault() -> bool:
    """Counts a matching call; True once FAULT_AFTER of them went through."""
    global calls
    calls += 1
    return calls > AFTER


def _ours(path: str) -> bool:
    folder, name = os.path.split(path)
    return folder == FOLDER and (name == NAME or name.startswith(f".{NAME}."))


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


real_fsync, real_open, real_fallocate = os.fsync, os.open, getattr(os, "posix_fallocate", None)


def fsync(fd):
    path = _fd_path(fd)
    mode = os.fstat(fd).st_mode
    if KIND == "enospc-fsync" and stat.S_ISREG(mode) and _ours(path) and _fault():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if KIND == "sigint-folder-fsync" and stat.S_ISDIR(mode) and path == FOLDER and os.path.exists(TARGET) and _fault():
        os.kill(os.getpid(), signal.SIGINT)
    return real_fsync(fd)


def open_(path, flags, *args, **kwargs):
    if (
        KIND == "erofs-create"
        and flags & os.O_CREAT
        and _ours(os.path.realpath(os.fspath(path)))
        and os.path.exists(TARGET)
    ):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
    return real_open(path, flags, *args, **kwargs)


def fallocate(fd, offset, length):
    if KIND == "enospc-fallocate" and _ours(_fd_path(fd)) and _fault():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_fallocate(fd, offset, length)


os.fsync, os.open = fsync, open_
if real_fallocate is not None:
    os.posix_fallocate = fallocate

if __name__ == "__main__":
    from fundamentals.cli import main

    sys.exit(main(sys.argv[1:]))
