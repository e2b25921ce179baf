"""One build at a time per index: an advisory file lock that the OS releases if the builder dies.

`fcntl.flock` is released when the process exits for any reason, `kill -9`
included, so a crashed build never leaves a stale lock behind (POSIX only).
"""

from __future__ import annotations

import fcntl
import os
from datetime import datetime, timezone
from pathlib import Path

from .errors import BuildLockedError


class BuildLock:
    """`with BuildLock(path):` holds the lock; a second holder gets `BuildLockedError` at once."""

    def __init__(self, path: Path, what: str = "build") -> None:
        self.path, self.what = path, what
        self._fd: int | None = None

    def acquire(self, blocking: bool = False) -> bool:
        """Take the lock; without `blocking`, return False when another process holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
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
            fcntl.flock(self._fd, fcntl.LOCK_UN)
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
