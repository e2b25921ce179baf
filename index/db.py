"""The index database: one SQLite file (via sqlite-utils) that owns every vector and all metadata.

It is the single source of truth. The FAISS file beside it is derived and carries
the `stamp` of the state it was built from; triggers bump that stamp whenever a
vector is added or removed, so a stale FAISS file can't go unnoticed.

Paths under the database's own folder are stored relative to it, so a photo
folder that holds its index (`--db ~/Photos/.vlm-index.db`) can be moved or
copied as a whole. Other paths are stored absolute.

The tables and their migrations: index/schema.py.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import sqlite_utils

from . import faults
from .errors import IndexNotFoundError, SchemaError
from .filters import SearchFilter
from .schema import MIGRATIONS, SCHEMA_VERSION

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    """Which model made the vectors; `probe` is its embedding of a fixed synthetic image (see photo_index)."""

    name: str
    revision: str | None
    dim: int
    probe: tuple[float, ...]


@dataclass(frozen=True)
class IndexedFile:
    """A row of `files`, with the path absolute."""

    path: str
    hash: str
    size: int
    mtime_ns: int
    width: int | None
    height: int | None
    taken_at: str | None
    camera: str | None


@dataclass(frozen=True)
class SkippedFile:
    """A row of `skipped`: a file the build could not index, and why."""

    path: str
    reason: str
    size: int | None = None
    mtime_ns: int | None = None
    ctime_ns: int | None = None
    seen_at: str | None = None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# Long lists of values go to `IN (...)` this many at a time: SQLite caps the parameters of one statement (999 before
# version 3.32).
IN_CHUNK = 500

# The files of given vector ids, found from the ids: INDEXED BY makes each id's files one lookup whatever the
# filter. Left to itself, SQLite picks a plan per filter; with schema 3 it walked the files of the filter's camera
# and tried every id on each (3 s for 1,000 ids of 20,000 files).
_FILES_OF_IDS = "FROM files INDEXED BY idx_files_vector_id"


class Database:
    """Owns the SQLite file: schema, typed reads and one transaction per write."""

    def __init__(self, path: str | os.PathLike, create: bool = False) -> None:
        self.path = Path(os.path.abspath(path))
        self.home = self.path.parent  # paths under it are stored relative to it
        if self.path.is_dir():
            raise IndexNotFoundError(f"{self.path} is a folder; the index is a file: give a file's path, e.g. "
                                     f"{self.path / '.vlm-index.db'}")
        existed = self.path.exists()
        if not existed:
            if not create:
                raise IndexNotFoundError(
                    f"No index at {self.path}. Build one first: vlm-index build FOLDER --db {self.path}")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:  # a file where a folder should be, no permission, a read-only disk
                raise IndexNotFoundError(f"Can't create an index at {self.path} ({e.strerror}: "
                                         f"{e.filename}): give a path in a folder you can write to") from e
        try:
            # isolation_level=None: no implicit transactions, so each `transaction()` is exactly one BEGIN/COMMIT.
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self.db = sqlite_utils.Database(conn)
            self.db.execute("PRAGMA journal_mode = WAL")  # readers (search) never wait for the writer (build)
            self.db.execute("PRAGMA synchronous = NORMAL")  # WAL keeps every commit across a process kill
            self.db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.DatabaseError as e:
            if not existed and not self.path.exists():
                raise IndexNotFoundError(f"Can't create an index at {self.path} ({e}): give a path in a folder you "
                                         f"can write to") from e
            raise SchemaError(f"{self.path} is not a vlm-vision index database ({e}). If it was one, it is damaged: "
                              f"move it aside and build again (vlm-index build FOLDER --db {self.path}); your "
                              f"photos are not touched.") from e

    # -- schema ---------------------------------------------------------------------------------------------

    def _migrate(self) -> None:
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"{self.path} has schema version {version}, newer than this vlm-vision understands "
                f"({SCHEMA_VERSION}). Upgrade vlm-vision to use it.")
        if version == 0 and self.db.table_names():
            raise SchemaError(f"{self.path} is an SQLite database but not a vlm-vision index; pick another --db path")
        if version == SCHEMA_VERSION:
            return
        try:
            with self.transaction():  # every step or none
                for target in range(version + 1, SCHEMA_VERSION + 1):
                    MIGRATIONS[target](self.db)
                    self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(target)])
        except sqlite3.DatabaseError as e:  # a read-only file, a full disk: the transaction rolled back
            raise SchemaError(
                f"{self.path} has schema version {version} and could not be updated to {SCHEMA_VERSION} ({e}); it "
                f"was left as it was. Open it where it can be written, or with the vlm-vision version that wrote it."
            ) from e
        logger.info("Migrated %s from schema version %d to %d", self.path, version, SCHEMA_VERSION)

    def schema_version(self) -> int:
        if "meta" not in self.db.table_names():
            return 0
        return int(self._meta("schema_version") or 0)

    def transaction(self, immediate: bool = True):
        """A context manager: BEGIN IMMEDIATE (or a plain BEGIN for a read snapshot) ... COMMIT, or ROLLBACK."""
        return _Transaction(self.db.conn, immediate)

    def close(self) -> None:
        self.db.conn.close()

    # -- paths ----------------------------------------------------------------------------------------------

    def to_stored(self, path: str) -> str:
        """Absolute path -> stored form: relative (POSIX) under the database's folder, else absolute."""
        home = str(self.home)
        if path.startswith(home.rstrip(os.sep) + os.sep):
            return Path(os.path.relpath(path, home)).as_posix()
        return path

    def to_absolute(self, stored: str) -> str:
        return stored if os.path.isabs(stored) or "://" in stored else os.path.normpath(os.path.join(self.home, stored))

    def _under(self, folders: Sequence[str]) -> tuple[str, list[str]]:
        """SQL condition (and parameters) for `path` at or under any of the absolute `folders`.

        Each folder is a range on the primary key's index: the folder's stored form, then paths from "folder/"
        up to "folder0" ("0" follows "/"), where substr() read every row (0.56 s for a folder of 1M files).
        Paths under the database's own folder are stored relative, so the database's folder and any folder
        above it also take every relative path: those that don't start with "/".
        """
        clauses, params = [], []
        home = str(self.home)
        for folder in folders:
            folder = os.path.normpath(folder)
            if home == folder or home.startswith(folder.rstrip(os.sep) + os.sep):  # relative paths; not URIs
                clauses.append("((path < '/' OR path >= '0') AND instr(path, '://') = 0)")
            stored = self.to_stored(folder)  # relative below the database's folder, else absolute
            prefix = stored.rstrip("/") + "/"
            clauses.append("(path = ? OR (path >= ? AND path < ?))")
            params += [stored, prefix, prefix[:-1] + "0"]
        return "(" + " OR ".join(clauses or ["0"]) + ")", params

    def _matching(self, only: SearchFilter, by_path: bool = False) -> tuple[str, list]:
        """SQL condition (and parameters) on `files` for the files that pass `only`. `by_path`: SQLite leads with
        the folders' path ranges, and checks the date and camera on each of their rows (a unary + on a column
        keeps its index out of the plan)."""
        clauses, params = ["1"], []
        unindexed = "+" if by_path else ""
        if only.folders:
            under, under_params = self._under(only.folders)
            clauses.append(under)
            params += under_params
        if only.taken_from:  # ISO 8601 strings of one form compare as the dates do
            clauses.append(f"{unindexed}taken_at >= ?")
            params.append(only.taken_from)
        if only.taken_before:
            clauses.append(f"{unindexed}taken_at < ?")
            params.append(only.taken_before)
        if only.camera:  # the few camera names that contain the text, then their files through the camera index
            names = [name for name in self.cameras() if only.camera.lower() in name.lower()]
            clauses.append(f"{unindexed}camera IN ({','.join('?' * len(names))})" if names else "0")
            params += names
        return " AND ".join(clauses), params

    # -- meta -----------------------------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return None if row is None else row[0]

    @property
    def id(self) -> str:
        """This database's own random id, made when it was created."""
        return self._meta("database_id")

    def stamp(self) -> str:
        """Identifies the current set of vectors; a FAISS file built from another state is stale."""
        return f"{self._meta('database_id')}:{self._meta('vectors_version')}"

    def model_info(self) -> ModelInfo | None:
        raw = self._meta("model")
        if raw is None:
            return None
        data = json.loads(raw)
        return ModelInfo(data["name"], data["revision"], int(data["dim"]), tuple(data["probe"]))

    def set_model_info(self, info: ModelInfo) -> None:
        raw = json.dumps({"name": info.name, "revision": info.revision, "dim": info.dim, "probe": list(info.probe)})
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('model', ?)", [raw])

    def set_setting(self, key: str, value: object) -> None:
        """Store a JSON value in `meta` (the last build's summary, the chosen index type)."""
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [f"setting:{key}", json.dumps(value)])

    def setting(self, key: str, default: object = None) -> object:
        raw = self._meta(f"setting:{key}")
        return default if raw is None else json.loads(raw)

    # -- reads ----------------------------------------------------------------------------------------------

    def file_states(self, folders: Sequence[str]) -> dict[str, tuple[int, int, str]]:
        """Absolute path -> (size, mtime_ns, hash) of indexed files under `folders`."""
        where, params = self._under(folders)
        rows = self.db.execute(f"SELECT path, size, mtime_ns, hash FROM files WHERE {where}", params)
        return {self.to_absolute(p): (s, m, h) for p, s, m, h in rows}

    def skipped_states(self, folders: Sequence[str]) -> dict[str, tuple[int | None, int | None, int | None]]:
        """Absolute path -> (size, mtime_ns, ctime_ns) of skipped files under `folders`."""
        where, params = self._under(folders)
        rows = self.db.execute(f"SELECT path, size, mtime_ns, ctime_ns FROM skipped WHERE {where}", params)
        return {self.to_absolute(p): (s, m, c) for p, s, m, c in rows}

    def file_states_at(self, paths: Sequence[str]) -> dict[str, tuple[int, int, str]]:
        """`file_states` of the indexed files among absolute `paths` (a listing's, rather than a folder's)."""
        return {self.to_absolute(p): (s, m, h) for p, s, m, h in self._rows_at("files", "size, mtime_ns, hash", paths)}

    def skipped_states_at(self, paths: Sequence[str]) -> dict[str, tuple[int | None, int | None, int | None]]:
        """`skipped_states` of the skipped files among absolute `paths`."""
        return {self.to_absolute(p): (s, m, c) for p, s, m, c in self._rows_at("skipped", "size, mtime_ns, ctime_ns",
                                                                              paths)}

    def _rows_at(self, table: str, columns: str, paths: Sequence[str]) -> list[tuple]:
        rows = []
        for chunk, marks in _in_chunks([self.to_stored(p) for p in paths]):
            rows += self.db.execute(f"SELECT path, {columns} FROM {table} WHERE path IN ({marks})", chunk).fetchall()
        return rows

    def known_hashes(self) -> set[str]:
        return {h for (h,) in self.db.execute("SELECT hash FROM vectors")}

    def metadata_of(self, hashes: Iterable[str]) -> dict[str, tuple]:
        """hash -> (width, height, taken_at, camera) copied from a file that has that content."""
        out = {}
        for h in set(hashes):
            row = self.db.execute("SELECT width, height, taken_at, camera FROM files WHERE hash = ? LIMIT 1",
                                  [h]).fetchone()
            out[h] = tuple(row) if row else (None, None, None, None)
        return out

    def vectors(self) -> tuple[np.ndarray, np.ndarray, str]:
        """(ids (N,) int64, vectors (N, D) float32, stamp), read in one snapshot."""
        with self.transaction(immediate=False):
            stamp = self.stamp()
            rows = self.db.execute("SELECT id, vector FROM vectors ORDER BY id").fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return ids, self._matrix([r[1] for r in rows]), stamp

    def _matrix(self, blobs: Sequence[bytes]) -> np.ndarray:
        """Stored vectors (float32 bytes) as one (N, D) array, D the model's embedding size."""
        info = self.model_info()
        return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), info.dim if info else 0)

    def snapshot(self):
        """A read transaction: everything read inside it comes from one database state (and one `stamp()`)."""
        return self.transaction(immediate=False)

    def can_update_from(self, stamp: str) -> bool:
        """Whether a FAISS file written at `stamp` may be updated to the current state: the same database, and
        written since vector ids stopped being reused (schema 2), so every id it holds still names its content."""
        database, _, version = stamp.partition(":")
        return (database == self._meta("database_id") and version.isdigit()
                and int(version) >= int(self._meta("ids_unique_since")))

    def vector_ids(self) -> np.ndarray:
        """The ids of all vectors (N,) int64, ascending; inside `snapshot()` to match its stamp."""
        rows = self.db.execute("SELECT id FROM vectors ORDER BY id").fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """The vectors (M, D) float32 of `ids`, in their order; inside `snapshot()` to match its stamp.

        Raises ValueError naming an id that has no vector (outside a snapshot, a build may have removed it)."""
        found: dict[int, bytes] = {}
        wanted = [int(i) for i in ids]
        for chunk, marks in _in_chunks(wanted):
            found.update(self.db.execute(f"SELECT id, vector FROM vectors WHERE id IN ({marks})", chunk).fetchall())
        missing = [i for i in wanted if i not in found]
        if missing:
            raise ValueError(f"no vector with id {missing[0]} ({len(missing)} missing)")
        return self._matrix([found[i] for i in wanted])

    def vector_of(self, path: str) -> np.ndarray | None:
        row = self.db.execute(
            "SELECT v.vector FROM files f JOIN vectors v ON v.hash = f.hash WHERE f.path = ?",
            [self.to_stored(path)]).fetchone()
        return None if row is None else np.frombuffer(row[0], dtype=np.float32)

    def files_of_ids(self, ids: Iterable[int], only: SearchFilter = SearchFilter()) -> dict[int, list[IndexedFile]]:
        """Vector id -> the indexed files with that content (those that pass `only`)."""
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        where, params = self._matching(only)
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            f"SELECT vector_id, path, hash, size, mtime_ns, width, height, taken_at, camera "
            f"{_FILES_OF_IDS} WHERE vector_id IN ({marks}) AND {where} ORDER BY path",
            ids + params)
        out: dict[int, list[IndexedFile]] = {}
        for vid, path, *rest in rows:
            out.setdefault(vid, []).append(IndexedFile(self.to_absolute(path), *rest))
        return out

    def cameras(self) -> list[str]:
        """The distinct camera names, sorted: one index lookup per name, where SELECT DISTINCT reads every row
        (SQLite's documented skip-scan by a recursive query)."""
        rows = self.db.execute(
            "WITH RECURSIVE c(name) AS (SELECT MIN(camera) FROM files UNION ALL "
            "SELECT (SELECT MIN(camera) FROM files WHERE camera > c.name) FROM c WHERE c.name IS NOT NULL) "
            "SELECT name FROM c WHERE name IS NOT NULL")
        return [name for (name,) in rows]

    def ids_passing(self, ids: Sequence[int], only: SearchFilter) -> set[int]:
        """Those of the vector `ids` that have a file passing `only`."""
        where, params = self._matching(only)
        passing: set[int] = set()
        for chunk, marks in _in_chunks([int(i) for i in ids]):
            passing.update(i for (i,) in self.db.execute(
                f"SELECT DISTINCT vector_id {_FILES_OF_IDS} WHERE vector_id IN ({marks}) AND {where}",
                chunk + params))
        return passing

    def ids_matching(self, only: SearchFilter, at_most: int | None = None) -> np.ndarray | None:
        """The distinct vector ids of the files that pass `only`, ascending; None when more than `at_most` files
        pass (the listing stops there).

        A folder that holds at most `at_most` files leads the listing (its rows are few); otherwise SQLite
        leads with the date or camera index, which hold the vector ids.
        """
        limit = "" if at_most is None else f" LIMIT {int(at_most) + 1}"
        by_path = False
        if at_most is not None and only.folders and (only.taken_from or only.taken_before or only.camera):
            under, under_params = self._under(only.folders)
            (in_folders,) = self.db.execute(f"SELECT count(*) FROM (SELECT 1 FROM files WHERE {under}{limit})",
                                            under_params).fetchone()
            by_path = in_folders <= at_most
        where, params = self._matching(only, by_path)
        # One string of ids parsed by numpy: reading 900,000 rows one by one took 2-3 times as long.
        count, text = self.db.execute(
            f"SELECT count(*), group_concat(vector_id, ' ') FROM (SELECT vector_id FROM files WHERE {where}{limit})",
            params).fetchone()
        if at_most is not None and count > at_most:
            return None
        return _distinct(np.fromstring(text or "", dtype=np.int64, sep=" "))

    def count(self, table: str) -> int:
        return self.db[table].count

    def roots(self) -> list[str]:
        return [self.to_absolute(p) for (p,) in self.db.execute("SELECT path FROM roots ORDER BY path")]

    def skipped_files(self) -> list[SkippedFile]:
        rows = self.db.execute("SELECT path, reason, size, mtime_ns, ctime_ns, seen_at FROM skipped ORDER BY path")
        return [SkippedFile(self.to_absolute(p), *rest) for p, *rest in rows]

    def indexed_file(self, path: str) -> IndexedFile | None:
        row = self.db.execute("SELECT path, hash, size, mtime_ns, width, height, taken_at, camera FROM files "
                              "WHERE path = ?", [self.to_stored(path)]).fetchone()
        return None if row is None else IndexedFile(self.to_absolute(row[0]), *row[1:])

    # -- writes (each call is one transaction) --------------------------------------------------------------

    def add_roots(self, folders: Sequence[str]) -> None:
        with self.transaction():
            for folder in folders:
                self.db.execute("INSERT OR IGNORE INTO roots VALUES (?, ?)", [self.to_stored(folder), _now()])

    def commit_batch(self, files: Sequence[IndexedFile], vectors: dict[str, np.ndarray],
                     skipped: Sequence[SkippedFile]) -> set[str]:
        """Store a batch atomically: new vectors, file rows (replacing older content), skip records.

        Vectors whose content no file has any more (a modified file's old content) go in the same transaction,
        so after any commit every vector belongs to a file and every file has a vector. Returns their hashes.
        """
        now = _now()
        with self.transaction():
            old = self._hashes_of([f.path for f in files] + [s.path for s in skipped])
            next_id = first_id = int(self._meta("next_vector_id"))  # never max(id) + 1: a deleted row's id
            for h, vector in vectors.items():
                inserted = self.db.execute(  # known content is skipped; a clash of ids would raise, not vanish
                    "INSERT INTO vectors (id, hash, vector) VALUES (?, ?, ?) ON CONFLICT (hash) DO NOTHING",
                    [next_id, h, np.ascontiguousarray(vector, dtype=np.float32).tobytes()])
                next_id += inserted.rowcount
            if next_id != first_id:
                self.db.execute("UPDATE meta SET value = ? WHERE key = 'next_vector_id'", [str(next_id)])
            for f in files:
                self.db.execute(
                    "INSERT OR REPLACE INTO files (path, hash, size, mtime_ns, width, height, taken_at, camera, "
                    "indexed_at, vector_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, "
                    "(SELECT id FROM vectors WHERE hash = ?))",
                    [self.to_stored(f.path), f.hash, f.size, f.mtime_ns, f.width, f.height, f.taken_at, f.camera, now,
                     f.hash])
                self.db.execute("DELETE FROM skipped WHERE path = ?", [self.to_stored(f.path)])
            for s in skipped:
                self.db.execute("DELETE FROM files WHERE path = ?", [self.to_stored(s.path)])
                self.db.execute("INSERT OR REPLACE INTO skipped VALUES (?, ?, ?, ?, ?, ?)",
                                [self.to_stored(s.path), s.reason, s.size, s.mtime_ns, s.ctime_ns, now])
            dropped = self._drop_orphans(old)
            faults.point("commit")
            return dropped

    def remove(self, paths: Sequence[str]) -> None:
        """Forget files (deleted from disk) and skip records, and the vectors no other file shares."""
        with self.transaction():
            old = self._hashes_of(paths)
            for path in paths:
                self.db.execute("DELETE FROM files WHERE path = ?", [self.to_stored(path)])
                self.db.execute("DELETE FROM skipped WHERE path = ?", [self.to_stored(path)])
            self._drop_orphans(old)
            faults.point("remove")

    def forget(self, folders: Sequence[str]) -> tuple[int, int]:
        """Remove the files and skip records under `folders`, the roots at or below them, and the vectors no other
        file shares, in one transaction; (files, skip records) removed. A folder with nothing indexed or built
        under it raises ValueError, and nothing is removed."""
        with self.transaction():
            for folder in folders:
                where, params = self._under([folder])
                found = " OR ".join(f"EXISTS (SELECT 1 FROM {table} WHERE {where})"
                                    for table in ("files", "skipped", "roots"))
                if not self.db.execute(f"SELECT {found}", params * 3).fetchone()[0]:
                    raise ValueError(f"Nothing is indexed under {folder!r}; nothing was changed. The index's folders: "
                                     + (", ".join(self.roots()) or "none"))
            where, params = self._under(folders)
            old = {h for (h,) in self.db.execute(f"SELECT DISTINCT hash FROM files WHERE {where}", params)}
            files = self.db.execute(f"DELETE FROM files WHERE {where}", params).rowcount
            skipped = self.db.execute(f"DELETE FROM skipped WHERE {where}", params).rowcount
            self.db.execute(f"DELETE FROM roots WHERE {where}", params)
            self._drop_orphans(old)
            faults.point("forget")
        return files, skipped

    def damage(self) -> list[str]:
        """What SQLite's own integrity check finds wrong in the file (empty when it is sound)."""
        rows = [row[0] for row in self.db.execute("PRAGMA integrity_check")]
        return [] if rows == ["ok"] else rows

    def repair_links(self) -> dict[str, int]:
        """Make every file point at its vector and every vector belong to a file, in one transaction: vectors no file
        has are dropped, files whose vector is gone are dropped (the next build reads and encodes them again), and a
        file's vector_id is set to its vector's. Returns how many of each were found."""
        with self.transaction():
            orphans = self.db.execute("DELETE FROM vectors WHERE NOT EXISTS "
                                      "(SELECT 1 FROM files WHERE files.hash = vectors.hash)").rowcount
            unencoded = self.db.execute("DELETE FROM files WHERE NOT EXISTS "
                                        "(SELECT 1 FROM vectors WHERE vectors.hash = files.hash)").rowcount
            relinked = self.db.execute("UPDATE files SET vector_id = (SELECT id FROM vectors WHERE vectors.hash = "
                                       "files.hash) WHERE vector_id IS NOT (SELECT id FROM vectors WHERE "
                                       "vectors.hash = files.hash)").rowcount
        return {"orphan vectors": orphans, "files without a vector": unencoded, "files relinked": relinked}

    def _hashes_of(self, paths: Sequence[str]) -> set[str]:
        out = set()
        for path in paths:
            row = self.db.execute("SELECT hash FROM files WHERE path = ?", [self.to_stored(path)]).fetchone()
            if row:
                out.add(row[0])
        return out

    def _drop_orphans(self, hashes: Iterable[str]) -> set[str]:
        dropped = set()
        for h in hashes:
            cursor = self.db.execute("DELETE FROM vectors WHERE hash = ? AND NOT EXISTS "
                                     "(SELECT 1 FROM files WHERE files.hash = vectors.hash)", [h])
            if cursor.rowcount:
                dropped.add(h)
        return dropped


def _in_chunks(values: list) -> Iterator[tuple[list, str]]:
    """`values` in parts of IN_CHUNK, each with its "?,?,..." placeholders for `IN (...)`."""
    for start in range(0, len(values), IN_CHUNK):
        chunk = values[start:start + IN_CHUNK]
        yield chunk, ",".join("?" * len(chunk))


def _distinct(ids: np.ndarray) -> np.ndarray:
    """`ids` ascending, each once. (np.unique took 1.2 s for 900,000 ids with numpy 2.4; sorting takes 0.05 s.)"""
    ids = np.sort(ids)
    return ids[np.concatenate(([True], ids[1:] != ids[:-1]))] if len(ids) else ids


class _Transaction:
    """BEGIN (IMMEDIATE for writes: take the write lock up front, no upgrade deadlocks) ... COMMIT / ROLLBACK."""

    def __init__(self, conn: sqlite3.Connection, immediate: bool = True) -> None:
        self.conn, self.immediate = conn, immediate

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE" if self.immediate else "BEGIN")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:  # SQLite ends it itself on some errors (a full disk): keep that error
            self.conn.execute("ROLLBACK")
