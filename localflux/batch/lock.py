"""One batch run per output folder: an advisory ``flock`` on a lock file inside it.

The kernel drops the lock when the process ends in any way (``kill -9`` included), so a crash
never leaves a stale lock behind and no "is that pid still alive?" guessing is needed. The
file itself stays (deleting a lock file that others may be opening is a race); it only holds
the pid of the current holder, for the message the next run shows.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import OutputError

LOCK_NAME = ".localflux-batch.lock"


class FolderLock:
    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> "FolderLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies, as for open()
        except OSError as exc:
            raise OutputError(f"cannot create the lock file {str(self.path)!r}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputError(f"another localflux batch (pid {holder}) is running in {str(self.path.parent)!r}; "
                              "wait for it to finish or give this job another output folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None
