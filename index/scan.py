"""Find image files under photo folders, recording each one that can't be taken and why.

The walk follows symbolic links to folders, as a user browsing the folder would,
and remembers every folder it entered by (device, inode) so that a link loop is
recorded once instead of recursing forever. Hidden folders (".thumbnails", ".git",
an index kept beside the photos) are not entered.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field

# Formats PIL decodes out of the box (GIF: its first frame).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
# HEIC/HEIF need pillow-heif (`pip install "vlm-vision[heif]"`); AVIF needs Pillow >= 11.3 (its wheels).
PLUGIN_EXTENSIONS = frozenset({".heic", ".heif", ".avif"})


@dataclass(frozen=True)
class FoundFile:
    """An image file as the scan saw it; (size, mtime_ns) decide whether it changed since the last build."""

    path: str  # absolute, through any symbolic links the walk followed
    size: int
    mtime_ns: int
    ctime_ns: int  # changes with permissions too: lets a skipped file be retried after `chmod`


@dataclass(frozen=True)
class Problem:
    """A file or folder the scan could not take, with the reason shown to the user."""

    path: str  # printable: undecodable bytes of a file name are shown as backslash escapes
    reason: str


@dataclass
class ScanResult:
    files: list[FoundFile] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # Folders that could not be listed: what the index holds under them is kept, not removed.
    unlisted: list[str] = field(default_factory=list)


def printable(path: str) -> str:
    """`path` as valid UTF-8, undecodable file-name bytes shown as backslash escapes (SQLite stores UTF-8)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:  # bytes that aren't UTF-8 arrive as lone surrogates (PEP 383)
        return False


def has_image_extension(name: str) -> bool:
    suffix = os.path.splitext(name)[1].lower()
    return suffix in IMAGE_EXTENSIONS or suffix in PLUGIN_EXTENSIONS


def scan(roots: Iterable[str | os.PathLike]) -> ScanResult:
    """Walk `roots` (existing folders) recursively and return the image files and the problems met."""
    result = ScanResult()
    visited: set[tuple[int, int]] = set()
    for root in roots:
        root = os.path.abspath(root)
        info = os.stat(root)
        visited.add((info.st_dev, info.st_ino))
        _walk(root, visited, result)
    return result


def _walk(folder: str, visited: set[tuple[int, int]], result: ScanResult) -> None:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        result.problems.append(Problem(printable(folder), f"can't list this folder ({_os_reason(e)})"))
        result.unlisted.append(folder)
        return
    for entry in entries:
        if not is_utf8(entry.path):
            if entry.is_dir(follow_symlinks=False) or has_image_extension(entry.name):
                result.problems.append(Problem(
                    printable(entry.path), "the name is not valid UTF-8; rename it to index it"))
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
        except OSError as e:  # ELOOP from a link to itself
            if has_image_extension(entry.name):
                result.problems.append(Problem(entry.path, _os_reason(e)))
            continue
        if is_dir:
            if entry.name.startswith("."):
                continue
            try:
                info = entry.stat(follow_symlinks=True)
            except OSError as e:
                result.problems.append(Problem(entry.path, f"can't open this folder ({_os_reason(e)})"))
                result.unlisted.append(entry.path)
                continue
            identity = (info.st_dev, info.st_ino)
            if identity in visited:
                result.problems.append(Problem(
                    entry.path, "symbolic link to a folder already scanned (a link loop, or a second path to it)"))
                continue
            visited.add(identity)
            _walk(entry.path, visited, result)
        elif has_image_extension(entry.name):
            _take_file(entry, result)


def _take_file(entry: os.DirEntry, result: ScanResult) -> None:
    try:
        info = entry.stat(follow_symlinks=True)
    except FileNotFoundError:
        reason = "broken symbolic link" if entry.is_symlink() else "vanished during the scan"
        result.problems.append(Problem(entry.path, reason))
        return
    except OSError as e:
        result.problems.append(Problem(entry.path, _os_reason(e)))
        return
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device named *.jpg would block or never end
        result.problems.append(Problem(entry.path, "not a regular file"))
        return
    result.files.append(FoundFile(entry.path, info.st_size, info.st_mtime_ns, info.st_ctime_ns))


def _os_reason(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "symbolic link loop"
    if isinstance(e, PermissionError):
        return "permission denied"
    return f"{type(e).__name__}: {e.strerror or e}"


def is_under(path: str, folders: Iterable[str]) -> bool:
    """Whether absolute `path` is one of `folders` or inside one of them."""
    return any(path == f or path.startswith(f.rstrip(os.sep) + os.sep) for f in folders)

