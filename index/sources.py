"""What a distributed build reads: folders, listings of paths, and object-store prefixes, as one `ScanResult`.

- A folder (on storage every node sees) is scanned as the local build scans it, with the same problems recorded.
- A listing is a `.parquet`, `.csv` or `.txt` file of paths or URIs: the column `path` (a `.txt` file: one per line).
  Relative paths are taken relative to the listing's folder. A listed file that is missing or not an image is
  recorded with the reason, like a bad file in a folder.
- A URI prefix (`s3://bucket/photos/`, `gs://...`, `file:///...`) is listed recursively through pyarrow's file
  systems; credentials come from the environment, as pyarrow reads them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from .scan import FoundFile, Problem, ScanResult, has_image_extension, scan

LISTING_EXTENSIONS = (".parquet", ".csv", ".txt")


def is_uri(path: str) -> bool:
    return "://" in path


def check_sources(sources: Sequence[str | os.PathLike]) -> tuple[list[str], list[str], list[str]]:
    """(folders, listings, URI prefixes) of `sources`, local ones made absolute; nothing is listed or read.

    Raises FileNotFoundError for a source that is neither a folder, a listing nor a URI prefix: a missing folder (an
    unmounted drive) must never read as "all its photos were deleted"."""
    folders, listings, prefixes = [], [], []
    for source in map(str, sources):
        if is_uri(source):
            (listings if source.lower().endswith(LISTING_EXTENSIONS) else prefixes).append(source)
            continue
        path = os.path.abspath(os.path.expanduser(source))
        if os.path.isdir(path):
            folders.append(path)
        elif os.path.isfile(path) and path.lower().endswith(LISTING_EXTENSIONS):
            listings.append(path)
        elif not os.path.exists(path):
            raise FileNotFoundError(f"No such folder or listing: {source!r}. Nothing was changed in the index.")
        else:
            raise FileNotFoundError(f"Not a folder, nor a listing of paths ({', '.join(LISTING_EXTENSIONS)}): "
                                    f"{source!r}. Nothing was changed in the index.")
    if not (folders or listings or prefixes):
        raise ValueError("Give at least one folder, listing or URI prefix to index")
    return folders, listings, prefixes


def list_sources(sources: Sequence[str | os.PathLike]) -> tuple[ScanResult, list[str]]:
    """(the image files and problems of all `sources`, each path once, the absolute folders among them)."""
    folders, listings, prefixes = check_sources(sources)
    found = scan(folders) if folders else ScanResult()
    for listing in listings:
        _add_files(found, listed_paths(listing))
    for prefix in prefixes:
        _add_prefix(found, prefix)
    found.files = list({f.path: f for f in reversed(found.files)}.values())[::-1]  # a path named twice: once
    return found, folders


def listed_paths(listing: str) -> list[str]:
    """The paths a listing names, relative ones resolved against its folder."""
    import pyarrow.csv
    import pyarrow.parquet
    from pyarrow import fs

    filesystem, inner = fs.FileSystem.from_uri(listing) if is_uri(listing) else (fs.LocalFileSystem(), listing)
    if listing.lower().endswith(".txt"):
        with filesystem.open_input_stream(inner) as f:
            paths = [line.strip() for line in f.read().decode("utf-8").splitlines()]
        paths = [p for p in paths if p and not p.startswith("#")]
    else:
        if listing.lower().endswith(".parquet"):
            table = pyarrow.parquet.read_table(inner, filesystem=filesystem)
        else:
            with filesystem.open_input_stream(inner) as f:
                table = pyarrow.csv.read_csv(f)
        if "path" not in table.column_names:
            raise ValueError(f"{listing} has no column 'path' (its columns: {', '.join(table.column_names)}); name "
                             f"the column of paths or URIs 'path'")
        paths = [p for p in table.column("path").to_pylist() if p]
    base = listing.rsplit("/", 1)[0] if is_uri(listing) else os.path.dirname(listing)
    return [p if is_uri(p) or os.path.isabs(p) else
            (f"{base}/{p}" if is_uri(base) else os.path.normpath(os.path.join(base, p))) for p in paths]


def _add_files(found: ScanResult, paths: Sequence[str]) -> None:
    """Stat each listed path into `found`: local paths with os.stat, URIs through pyarrow."""
    taken = {f.path for f in found.files} | {p.path for p in found.problems}
    new = [p for p in dict.fromkeys(paths) if p not in taken]
    local, remote = [p for p in new if not is_uri(p)], [p for p in new if is_uri(p)]
    for path in local:
        if not has_image_extension(path):
            found.problems.append(Problem(path, "not an image file name (listed)"))
            continue
        try:
            info = os.stat(path)
        except FileNotFoundError:
            found.problems.append(Problem(path, "listed, but not found"))
            continue
        except OSError as e:
            found.problems.append(Problem(path, f"{type(e).__name__}: {e.strerror or e}"))
            continue
        found.files.append(FoundFile(path, info.st_size, info.st_mtime_ns, info.st_ctime_ns))
    if remote:
        from pyarrow import fs

        by_store: dict[str, list[str]] = {}  # one file system per scheme and bucket, one call for all its files
        for path in remote:
            if has_image_extension(path):
                scheme, rest = path.split("://", 1)
                by_store.setdefault(f"{scheme}://{rest.split('/', 1)[0]}", []).append(path)
            else:
                found.problems.append(Problem(path, "not an image file name (listed)"))
        for uris in by_store.values():
            filesystem, _ = fs.FileSystem.from_uri(uris[0])
            for path, info in zip(uris, filesystem.get_file_info([u.split("://", 1)[1] for u in uris])):
                if info.type != fs.FileType.File:
                    found.problems.append(Problem(path, "listed, but not found"))
                else:
                    found.files.append(_remote_file(path, info))


def _add_prefix(found: ScanResult, prefix: str) -> None:
    from pyarrow import fs

    filesystem, inner = fs.FileSystem.from_uri(prefix)
    scheme = prefix.split("://", 1)[0]
    infos = filesystem.get_file_info(fs.FileSelector(inner, recursive=True, allow_not_found=False))
    for info in sorted(infos, key=lambda i: i.path):
        if info.type == fs.FileType.File and has_image_extension(info.base_name):
            found.files.append(_remote_file(f"{scheme}://{info.path}", info))


def _remote_file(uri: str, info) -> FoundFile:
    mtime_ns = info.mtime_ns if info.mtime_ns is not None else 0  # an object store's last-modified time
    return FoundFile(uri, info.size, mtime_ns, mtime_ns)  # no ctime on object stores: a skip is retried on change
