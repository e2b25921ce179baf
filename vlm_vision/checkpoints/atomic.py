"""Replacing a file so that readers see the old version or the new one, never half of one.

Checkpoints, our safetensors, config JSON (`hub.write_json`) and SentencePiece model files (transformers writes the
other tokenizer files itself), the emoji corpus's summary and attribution files, the photo index's FAISS file and the
app's thumbnails all go through `replace_atomically`: the new contents are written to a temporary file beside the
target and renamed over it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def replace_atomically(path: Path, write: Callable[[BinaryIO], object], *, durable: bool = False,
                       mode: int = 0o666) -> None:
    """Call `write` on a new binary file beside `path`, then rename that file over `path`.

    If `write` raises (or the process dies), `path` keeps its old contents and the temporary file is removed
    (after a crash one hidden `.NAME.*.tmp` file may remain). Every call writes its own temporary file, so two
    writers racing on one path each rename a whole file and the last one wins. The new file gets `mode` less the
    umask, like any file `open` creates (`tempfile.mkstemp` would make it owner-only). `durable` also flushes the
    file and the rename to disk before returning, for files that must survive a power cut.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        with os.fdopen(os.open(tmp, flags, mode), "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (no-op where directories can't be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    """Replace `path` atomically with `text` in UTF-8."""
    data = text.encode("utf-8")
    replace_atomically(path, lambda f: f.write(data))
