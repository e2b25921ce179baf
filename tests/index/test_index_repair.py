"""Damaged index files at start: what the CLI says, and `vlm-index repair`, which rebuilds the FAISS file from the
stored vectors without encoding anything. Issue 32, part 4."""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from tests.helpers.photos import SAMPLES
from vlm_vision.index import PhotoIndex
from vlm_vision.index.__main__ import main as index_main


@pytest.fixture
def built(tmp_path, emoji_model):
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLES, photos, ignore=shutil.ignore_patterns("*.md", "*.txt"))
    db = tmp_path / "index.db"
    with PhotoIndex(db, emoji_model, create=True) as index:
        index.build([photos], workers=0)
    return photos, db


def search(db, capsys) -> tuple[int, list[str], str]:
    capsys.readouterr()
    code = index_main(["search", "pizza", "--db", str(db), "-k", "3"])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "empty"])
def test_a_damaged_faiss_file_is_rebuilt_by_search_and_by_repair(built, capsys, caplog, damage):
    photos, db = built
    ann = db.with_name(db.name + ".faiss")
    intact = search(db, capsys)[1]
    data = ann.read_bytes()
    ann.write_bytes({"truncated": data[: len(data) // 2], "random bytes": bytes(range(256)) * 40,
                     "empty": b""}[damage])
    code, hits, _ = search(db, capsys)
    assert code == 0 and hits == intact
    assert "it will be rebuilt" in caplog.text or "No ANN index" in caplog.text  # a warning says what it did
    ann.write_bytes(data[:100])
    assert index_main(["repair", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "FAISS file rebuilt from 12 stored vectors" in out and "nothing re-encoded" in out
    assert search(db, capsys)[1] == intact


def test_broken_links_are_mended_and_only_the_lost_file_is_encoded_again(built, capsys):
    photos, db = built
    conn = sqlite3.connect(db)  # what a bug or a hand edit could leave behind
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("INSERT INTO vectors (id, hash, vector) VALUES (999, 'nobody', x'00000000')")
    lost = conn.execute("SELECT path, hash FROM files WHERE path LIKE '%pizza%'").fetchone()
    conn.execute("DELETE FROM vectors WHERE hash = ?", [lost[1]])
    conn.commit()
    conn.close()
    assert index_main(["repair", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "1 orphan vectors" in out and "1 files without a vector" in out
    with PhotoIndex(db) as index:
        summary = index.build([photos], workers=0)
        assert (summary.added, summary.encoded) == (1, 1)  # the lost file alone, read and encoded again
        assert "pizza" in index.search("pizza", k=1)[0].path


def test_a_database_with_damaged_pages_is_reported_with_the_way_back(built, capsys):
    photos, db = built
    with sqlite3.connect(db) as conn:  # the pages of the vectors' table, past the schema's
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = [page for (page,) in conn.execute("SELECT pageno FROM dbstat WHERE name = 'vectors'")]
    with open(db, "r+b") as f:
        for page in pages[1:]:
            f.seek((page - 1) * 4096 + 8)  # past the page header: its cells are garbage now
            f.write(bytes([0xA5]) * 2000)
    code = index_main(["repair", "--db", str(db)])
    err = capsys.readouterr().err
    assert code == 1 and "is damaged" in err and "build a new index" in err and "Traceback" not in err
    db.with_name(db.name + ".faiss").unlink()  # a search must now read the damaged vectors to rebuild it
    code, _, err = search(db, capsys)
    assert code == 1 and "damaged" in err and "Traceback" not in err


def test_a_file_that_is_no_database_says_how_to_recover(tmp_path, capsys):
    (tmp_path / "index.db").write_bytes(b"not a database at all" * 200)
    assert index_main(["stats", "--db", str(tmp_path / "index.db")]) == 1
    err = capsys.readouterr().err
    assert "not a vlm-vision index database" in err and "move it aside and build again" in err


def test_the_app_says_what_is_wrong_with_a_damaged_index(built):
    from vlm_vision.app.backend import Backend, UserError

    photos, db = built
    (db.parent / "garbage.db").write_bytes(b"not a database at all" * 200)
    backend = Backend(db.parent / "garbage.db", dtype="float32")
    try:
        with pytest.raises(UserError, match="not a vlm-vision index database.*move it aside and build again"):
            backend.search("pizza")
    finally:
        backend.close()
