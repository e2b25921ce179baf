"""The index database's tables, and the steps that bring a database written by an older version up to date.

Tables (schema version 4):
    meta      key -> value: schema version, database id, vectors version, model name/revision/dim/probe,
              next vector id, the vectors version since which ids are never reused
    vectors   one row per distinct file content: id (the FAISS id, never reused), hash, float32 vector
    files     one row per indexed path: hash (-> vectors), size, mtime_ns, width, height, taken_at, camera,
              vector_id (the id of the vector with that hash), indexed by hash, vector_id, (taken_at,
              vector_id) and (camera, taken_at, vector_id)
    skipped   one row per file the build could not take, with the reason
    roots     folders that were built

A database records its version in `meta`; `Database` runs the missing steps in one transaction on open.
"""

from __future__ import annotations

import logging
import uuid

import sqlite_utils

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 4


def _migrate_to_1(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["vectors"].create({"id": int, "hash": str, "vector": bytes}, pk="id", not_null={"hash", "vector"})
    db["vectors"].create_index(["hash"], unique=True)
    db["files"].create(
        {"path": str, "hash": str, "size": int, "mtime_ns": int, "width": int, "height": int,
         "taken_at": str, "camera": str, "indexed_at": str},
        pk="path", not_null={"hash", "size", "mtime_ns"}, foreign_keys=[("hash", "vectors", "hash")],
    )
    db["files"].create_index(["hash"])
    db["skipped"].create(
        {"path": str, "reason": str, "size": int, "mtime_ns": int, "ctime_ns": int, "seen_at": str},
        pk="path", not_null={"reason"},
    )
    db["roots"].create({"path": str, "added_at": str}, pk="path")
    db.execute("INSERT INTO meta VALUES ('database_id', ?), ('vectors_version', '0')", [uuid.uuid4().hex])
    for event in ("INSERT", "DELETE", "UPDATE"):
        db.execute(f"""
            CREATE TRIGGER vectors_{event.lower()} AFTER {event} ON vectors BEGIN
                UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'vectors_version';
            END""")


def _migrate_to_2(db: sqlite_utils.Database) -> None:
    """Vector ids are never reused from now on, so that a FAISS file's id still names the same content later.

    SQLite gives a new row max(id) + 1, which reuses the id of a deleted newest vector. `commit_batch` now takes ids
    from `next_vector_id`; `ids_unique_since` is the vectors_version from which that holds (FAISS files written
    before it are rebuilt, never updated).
    """
    db.execute("INSERT INTO meta VALUES ('next_vector_id', (SELECT COALESCE(MAX(id), 0) + 1 FROM vectors))")
    db.execute("INSERT INTO meta SELECT 'ids_unique_since', value FROM meta WHERE key = 'vectors_version'")


def _migrate_to_3(db: sqlite_utils.Database) -> None:
    """Indexes for the date and camera filters of a search: a month of 1M files took 1.07 s to search without one
    (`benchmarks/index.py --part filters`, ids listed first)."""
    logger.info("Indexing the files' dates taken and cameras (once: seconds for a million files)")
    db["files"].create_index(["taken_at"], if_not_exists=True)
    db["files"].create_index(["camera"], if_not_exists=True)


def _migrate_to_4(db: sqlite_utils.Database) -> None:
    """Each file row names its vector's id, and the date and camera indexes carry it: a filter then lists the
    allowed vector ids from one index, where it looked up each file's row and then its vector by hash. (The
    listing's SQL on a database of 1M files: 12.6 s against 0.54 s for a 90% date range, 0.91 s against 0.03 s
    for a 10% one.) The camera index holds the date too, so a camera and a date range are one range of it."""
    logger.info("Adding vector ids to the files' rows and indexes (once: seconds for a million files)")
    db.execute("ALTER TABLE files ADD COLUMN vector_id INTEGER REFERENCES vectors(id)")
    db.execute("UPDATE files SET vector_id = (SELECT id FROM vectors WHERE vectors.hash = files.hash)")
    for columns in (["taken_at", "vector_id"], ["camera", "taken_at", "vector_id"]):
        db.execute(f"DROP INDEX IF EXISTS idx_files_{columns[0]}")
        db["files"].create_index(columns, index_name=f"idx_files_{columns[0]}")
    db["files"].create_index(["vector_id"])


# Step-by-step migrations: MIGRATIONS[v] takes a database at version v - 1 to version v.
MIGRATIONS = {1: _migrate_to_1, 2: _migrate_to_2, 3: _migrate_to_3, 4: _migrate_to_4}
