"""One build at a time per index: an advisory file lock that the OS releases if the builder dies.

POSIX: `fcntl.flock` on the lock file, released when the process exits for any
reason, `kill -9` included, so a crashed build never leaves a stale lock behind.
Windows (untested here: no Windows machine runs this project's CI): `msvcrt.locking`
on one byte far past the holder's text, which other processes can then still read;
Windows releases a dead process's locks too, though not always at once.
"""

from __future__ import annotations

import errno
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from .errors import BuildLockedError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

_WINDOWS_LOCKED_BYTE = 1 << 20  # a locked range can't be read by others: keep it clear of the holder text
_WINDOWS_RETRY_S = 0.1  # msvcrt has no blocking lock without a 10 s timeout; a blocking acquire polls
_WINDOWS_HELD = (errno.EACCES, getattr(errno, "EDEADLOCK", errno.EDEADLK))  # what msvcrt.locking says when held


class BuildLock:
    """`with BuildLock(path):` holds the lock; a second holder gets `BuildLockedError` at once."""

    def __init__(self, path: Path, what: str = "build") -> None:
        self.path, self.what = path, what
        self._fd: int | None = None

    def acquire(self, blocking: bool = False) -> bool:
        """Take the lock; without `blocking`, return False when another process holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o644)
        try:
            locked = _lock(fd, blocking)
        except BaseException:
            os.close(fd)
            raise
        if not locked:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        os.write(fd, f"{self.what} by pid {os.getpid()} since {started}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def release(self) -> None:
        if self._fd is not None:
            _unlock(self._fd)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> BuildLock:
        if not self.acquire():
            raise BuildLockedError(
                f"Another build is already running on this index ({self.holder()}; lock file {self.path}). "
                f"Wait for it to finish; searching works meanwhile.")
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _lock(fd: int, blocking: bool) -> bool:
    """Lock the open lock file `fd`; False if another holder has it (and not `blocking`)."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        return True
    while True:
        os.lseek(fd, _WINDOWS_LOCKED_BYTE, os.SEEK_SET)  # msvcrt.locking locks from the file position
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError as e:
            if e.errno not in _WINDOWS_HELD:
                raise
            if not blocking:  # held by another process (or another handle of this one)
                return False
            time.sleep(_WINDOWS_RETRY_S)


def _unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:
        os.lseek(fd, _WINDOWS_LOCKED_BYTE, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
