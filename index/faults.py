"""Fault injection for the crash tests: named points on the index's write paths where a test makes the process die
or its disk fail. Inert unless the environment asks.

`VLM_INDEX_FAULT="POINT:N:WHAT"` acts at the N-th time (1: the first) this process passes POINT: WHAT is "kill"
(SIGKILL itself, as a power cut or `kill -9` would), "enospc" (a full disk) or "erofs" (a read-only file system),
raised there as the OSError the system would raise.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

POINTS = {
    "commit": "inside a build's batch transaction, its rows written, before COMMIT",
    "remove": "inside the transaction that drops files gone from disk",
    "forget": "inside `forget`'s transaction",
    "ann-write": "inside the FAISS file's write: the payload written, its header not yet, nothing renamed",
    "shard": "in a distributed build's driver, after storing a shard, before the next",
}
ENV = "VLM_INDEX_FAULT"
_passed: Counter[str] = Counter()


def point(name: str) -> None:
    """Pass the fault point `name`; act if the environment names it for this passage."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    where, count, what = spec.split(":")
    if where != name:
        return
    _passed[name] += 1
    if _passed[name] != int(count):
        return
    if what == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    code = {"enospc": errno.ENOSPC, "erofs": errno.EROFS}[what]
    raise OSError(code, os.strerror(code))
