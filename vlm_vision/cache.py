"""Where vlm-vision keeps what it can rebuild: $XDG_CACHE_HOME/vlm-vision (~/.cache/vlm-vision by default)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """A folder under the cache (not created here)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "vlm-vision", *parts)
