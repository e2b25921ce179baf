"""Photo index: incremental builds, agreement of SQLite and FAISS, search, moves, model checks, schema migrations.

Filtered searches (folder, date, camera, score) are in tests/test_filters.py."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from tests.helpers.photos import SAMPLES, noise_image, write_images
from tests.helpers.vectors import first_format_file
from vlm_vision.checkpoints import DEFAULT_MODEL
from vlm_vision.index import IndexedFile, IndexNotFoundError, ModelMismatchError, PhotoIndex, SchemaError, ann, ann_file
from vlm_vision.index import db as db_module
from vlm_vision.index.db import Database


def open_index(db: Path, model) -> PhotoIndex:
    return PhotoIndex(db, model, create=True)


def assert_consistent(index: PhotoIndex) -> None:
    """Every file has a vector (its vector_id names it), every vector a file, and the FAISS file holds exactly the
    database's vectors."""
    db = index.db.db
    assert db.execute("SELECT COUNT(*) FROM files WHERE hash NOT IN (SELECT hash FROM vectors)").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM vectors WHERE hash NOT IN (SELECT hash FROM files)").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM files f LEFT JOIN vectors v ON v.hash = f.hash "
                      "WHERE f.vector_id IS NOT v.id").fetchone()[0] == 0
    faiss_index = ann_file.read_ann(index.ann_path, index.db.stamp())
    assert faiss_index is not None, "the FAISS file is missing or stale after a build"
    ids, vectors, _ = index.db.vectors()
    assert faiss_index.ntotal == len(ids)
    if len(ids):
        _, found = ann.search_ann(faiss_index, vectors, 1)
        assert np.array_equal(found[:, 0], ids)  # each stored vector finds itself: same ids, same vectors


def paths(index: PhotoIndex) -> set[str]:
    return {index.db.to_absolute(p) for (p,) in index.db.db.execute("SELECT path FROM files")}


def test_text_queries_find_the_matching_emoji(tmp_path, emoji_model):
    with open_index(tmp_path / "samples.db", emoji_model) as index:
        summary = index.build([SAMPLES], workers=0)
        assert (summary.added, summary.skipped) == (12, 0)
        top3 = [Path(h.path).name for h in index.search("red apple", k=3)]
        assert "red_apple.png" in top3
        labels = [p.stem for p in sorted(SAMPLES.glob("*.png"))]
        found = sum(f"{label}.png" in [Path(h.path).name for h in index.search(label.replace("_", " "), k=3)]
                    for label in labels)
        assert found >= 10, f"only {found} of {len(labels)} sample names rank their emoji in the top 3"
        hits = index.search("red apple", k=12)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert_consistent(index)
        # The pipeline (workers resize, the main process normalises) gives encode_images' numbers, up to the
        # float32 rounding that differs between batch sizes (12 images there, 2 here).
        stored = np.stack([index.db.vector_of(str(SAMPLES / name)) for name in ("pizza.png", "rocket.png")])
        expected = emoji_model.encode_images([SAMPLES / "pizza.png", SAMPLES / "rocket.png"]).numpy()
        np.testing.assert_allclose(stored, expected, atol=1e-6, rtol=0)


def test_incremental_add_modify_rename_duplicate_delete(tmp_path, emoji_model):
    photos = tmp_path / "photos"
    files = write_images(photos, 6)
    with open_index(tmp_path / "index.db", emoji_model) as index:
        s = index.build([photos], batch_size=4, workers=0)
        assert (s.added, s.encoded) == (6, 6)
        assert_consistent(index)

        s = index.build([photos], workers=0)  # nothing changed: nothing read
        assert (s.unchanged, s.encoded, s.added, s.removed) == (6, 0, 0, 0)

        write_images(photos / "new", 2, start=50)  # add
        s = index.build([photos], workers=0)
        assert (s.added, s.encoded, s.unchanged) == (2, 2, 6)
        assert_consistent(index)

        noise_image(99).save(files[0])  # modify
        os.utime(files[0], ns=(1, 1_000_000_000))
        s = index.build([photos], workers=0)
        assert (s.updated, s.encoded) == (1, 1)
        assert index.db.count("vectors") == 8  # the old content's vector left with it
        assert_consistent(index)

        files[1].rename(photos / "renamed.png")  # rename: the vector is reused, not re-encoded
        shutil.copy(files[2], photos / "copy_of_2.png")  # duplicate: shares the vector
        s = index.build([photos], workers=0)
        assert (s.reused, s.removed, s.encoded) == (2, 1, 0)
        assert index.db.count("files") == 9 and index.db.count("vectors") == 8
        assert_consistent(index)
        hits = index.search(image=photos / "copy_of_2.png", k=2)
        assert {Path(h.path).name for h in hits} == {"copy_of_2.png", files[2].name}
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)

        files[3].unlink()  # delete
        (photos / "copy_of_2.png").unlink()  # delete one of two duplicates: the shared vector stays
        s = index.build([photos], workers=0)
        assert (s.removed, s.encoded) == (2, 0)
        assert index.db.count("files") == 7 and index.db.count("vectors") == 7
        assert str(files[3]) not in paths(index)
        assert_consistent(index)


def test_modified_file_whose_old_content_is_copied_elsewhere(tmp_path, emoji_model):
    """A copy of a file's old content, indexed in the same build that modifies the original, keeps a vector."""
    photos = tmp_path / "photos"
    first, = write_images(photos, 1)
    with open_index(tmp_path / "index.db", emoji_model) as index:
        index.build([photos], workers=0)
        shutil.copy(first, photos / "zz_copy.png")  # sorted after the original: read in a later batch
        noise_image(77).save(first)
        os.utime(first, ns=(1, 1_000_000_000))
        s = index.build([photos], batch_size=1, workers=0)
        assert index.db.count("files") == 2 and index.db.count("vectors") == 2
        assert s.encoded == 2  # the new content, and the old one again (its vector left with the original)
        assert_consistent(index)


def test_build_with_workers_matches_build_without(tmp_path, emoji_model):
    photos = tmp_path / "photos"
    write_images(photos, 10)
    vectors = []
    for workers in (0, 2):
        with open_index(tmp_path / f"w{workers}.db", emoji_model) as index:
            assert index.build([photos], batch_size=3, workers=workers).encoded == 10
            vectors.append(index.db.vectors()[1])
    np.testing.assert_array_equal(vectors[0], vectors[1])


def test_index_inside_the_photo_folder_moves_with_it(tmp_path, emoji_model):
    photos = tmp_path / "photos"
    write_images(photos / "trip", 3)
    with open_index(photos / ".vlm-index.db", emoji_model) as index:
        index.build([photos], workers=0)
        stored = {p for (p,) in index.db.db.execute("SELECT path FROM files")}
        assert stored == {f"trip/img_{i:04d}.png" for i in range(3)}  # relative: no absolute path inside
    moved = tmp_path / "elsewhere" / "my photos"
    moved.parent.mkdir()
    photos.rename(moved)
    with PhotoIndex(moved / ".vlm-index.db", emoji_model) as index:
        s = index.build([moved], workers=0)
        assert (s.unchanged, s.encoded, s.removed) == (3, 0, 0)
        hits = index.search(image=moved / "trip" / "img_0001.png", k=1)
        assert hits[0].path == str(moved / "trip" / "img_0001.png")
        assert [h.path for h in index.search("anything", k=5, under=moved / "trip")][:1]


def test_a_full_disk_is_reported_as_such_and_the_batch_is_not_stored(tmp_path):
    import sqlite3

    db = Database(tmp_path / "index.db", create=True)
    (pages,) = db.db.execute("PRAGMA page_count").fetchone()
    db.db.execute(f"PRAGMA max_page_count = {pages}")  # as if the disk were full
    files = [IndexedFile(f"/photos/{i}.jpg", f"{i:032x}", 1, 1, None, None, None, None) for i in range(200)]
    with pytest.raises(sqlite3.OperationalError, match="full"):  # SQLite's own error, not a failed ROLLBACK's
        db.commit_batch(files, {f.hash: np.ones(192, dtype=np.float32) for f in files}, [])
    assert db.count("files") == 0 and db.count("vectors") == 0 and not db.db.conn.in_transaction
    db.close()


def test_missing_folder_changes_nothing(tmp_path, emoji_model):
    photos = tmp_path / "photos"
    write_images(photos, 2)
    with open_index(tmp_path / "index.db", emoji_model) as index:
        index.build([photos], workers=0)
        shutil.move(photos, tmp_path / "unmounted")
        with pytest.raises(FileNotFoundError, match="Nothing was changed"):
            index.build([photos], workers=0)
        assert index.db.count("files") == 2


def test_forget_removes_a_renamed_folder_and_only_what_no_other_file_shares(tmp_path, emoji_model):
    photos = tmp_path / "photos"
    write_images(photos / "old", 3)
    write_images(photos / "other", 2, start=10)
    shutil.copy(photos / "old" / "img_0000.png", photos / "other" / "copy.png")  # content shared with old/
    (photos / "old" / "broken.jpg").write_bytes(b"not a jpeg")
    with open_index(tmp_path / "index.db", emoji_model) as index:
        index.build([photos / "old", photos / "other"], workers=0)
        assert (index.db.count("files"), index.db.count("vectors"), index.db.count("skipped")) == (6, 5, 1)
        shutil.move(photos / "old", photos / "new")
        index.build([photos / "new"], workers=0)
        assert index.db.count("files") == 9  # the renamed folder's old paths stay: it might be unmounted
        with pytest.raises(ValueError, match="Nothing is indexed under .*nothing was changed"):
            index.forget([photos / "olf", photos / "old"])  # a typo: neither is forgotten
        assert index.db.count("files") == 9
        assert index.forget([photos / "old"]) == (3, 1)
        assert paths(index) == {str(p) for p in (photos / "new").iterdir() if p.suffix == ".png"} | {
            str(p) for p in (photos / "other").iterdir()}
        assert index.db.roots() == [str(photos / "new"), str(photos / "other")]
        assert_consistent(index)  # vectors shared with new/ and other/ kept, the FAISS file up to date
        assert all(str(photos / "old") not in h.path for h in index.search("a photo", k=20))
        assert index.forget([photos / "new", photos / "other"]) == (6, 1)
        assert index.db.count("vectors") == 0 and index.search("a photo", k=5) == []
        assert_consistent(index)


def test_forget_the_index_folder_itself_and_a_built_folder_left_empty(tmp_path, emoji_model):
    photos = tmp_path / "photos"
    write_images(photos / "trip", 2)
    (photos / "empty").mkdir()
    with open_index(photos / ".index.db", emoji_model) as index:  # paths below photos/ are stored relative
        index.build([photos / "trip", photos / "empty"], workers=0)
        assert index.forget([photos / "empty"]) == (0, 0)  # nothing in it, but it was built: its root goes
        assert index.db.roots() == [str(photos / "trip")]
        assert index.forget([photos]) == (2, 0)
        assert index.db.count("files") == 0 and index.db.roots() == []
        assert_consistent(index)


def test_model_mismatch_is_a_clear_error(tmp_path, emoji_model, tiny_siglip):
    with open_index(tmp_path / "index.db", emoji_model) as index:
        index.build([SAMPLES], workers=0)
    with PhotoIndex(tmp_path / "index.db", tiny_siglip[0]) as index:
        with pytest.raises(ModelMismatchError, match="built with model 'default'.*--model 'default'"):
            index.search("cat")
        with pytest.raises(ModelMismatchError):
            index.build([SAMPLES], workers=0)
    with PhotoIndex(tmp_path / "index.db") as index:  # no --model: the index's own model
        assert index.search("pizza", k=1)[0].path.endswith("pizza.png")
    with PhotoIndex(tmp_path / "index.db", DEFAULT_MODEL, dtype="bfloat16") as index:  # same model, other dtype
        assert index.search("pizza", k=1)[0].path.endswith("pizza.png")


def test_a_database_never_built_into_searches_as_empty(tmp_path, emoji_model):
    Database(tmp_path / "index.db", create=True).close()  # as a build that failed before its first batch left it
    with PhotoIndex(tmp_path / "index.db", emoji_model) as index:
        assert index.search("a cat", k=3) == [] and index.search("a cat", k=3, since="2024") == []


def test_missing_and_foreign_databases(tmp_path):
    with pytest.raises(IndexNotFoundError, match="vlm-index build FOLDER --db"):
        PhotoIndex(tmp_path / "none.db")
    assert not (tmp_path / "none.db").exists()
    import sqlite3

    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE notes (x)").connection.commit()
    with pytest.raises(SchemaError, match="not a vlm-vision index"):
        PhotoIndex(other)
    (tmp_path / "garbage.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(SchemaError):
        PhotoIndex(tmp_path / "garbage.db")
    with pytest.raises(IndexNotFoundError, match="is a folder; the index is a file: give a file's path"):
        PhotoIndex(tmp_path, create=True)
    with pytest.raises(IndexNotFoundError, match="Can't create an index at .*: give a path in a folder you can"):
        PhotoIndex(tmp_path / "garbage.db" / "inside.db", create=True)  # below a file


def test_newer_schema_is_refused(tmp_path):
    PhotoIndex(tmp_path / "index.db", create=True).close()
    import sqlite3

    conn = sqlite3.connect(tmp_path / "index.db")
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match="schema version 99.*Upgrade vlm-vision"):
        PhotoIndex(tmp_path / "index.db")


def test_a_migration_that_fails_leaves_the_database_as_it_was(tmp_path, monkeypatch):
    import sqlite3

    path = tmp_path / "index.db"
    PhotoIndex(path, create=True).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")

    def failing(db):  # as on a read-only file: a first change, then SQLite refuses the next
        db["files"].create_index(["size"])
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setitem(db_module.MIGRATIONS, 4, failing)
    with pytest.raises(SchemaError, match=r"schema version 3 and could not be updated to 4 \(attempt to write a "
                                          r"readonly database\); it was left as it was"):
        PhotoIndex(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("3",)
        assert "idx_files_size" not in {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}


def test_stale_or_damaged_faiss_file_is_rebuilt(tmp_path, emoji_model):
    with open_index(tmp_path / "index.db", emoji_model) as index:
        index.build([SAMPLES], workers=0)
        expected = [h.path for h in index.search("rocket", k=5)]
    faiss_file = tmp_path / "index.db.faiss"
    faiss_file.write_bytes(faiss_file.read_bytes()[:100])  # damaged
    with PhotoIndex(tmp_path / "index.db", emoji_model) as index:
        assert [h.path for h in index.search("rocket", k=5)] == expected
        assert_consistent(index)  # the search rewrote the file
    faiss_file.unlink()
    with PhotoIndex(tmp_path / "index.db", emoji_model) as index:
        assert [h.path for h in index.search("rocket", k=5)] == expected


def test_stats_and_index_type_override(tmp_path, emoji_model):
    with open_index(tmp_path / "index.db", emoji_model) as index:
        index.build([SAMPLES], workers=0, index_type="hnsw")
        stats = index.stats()
        assert (stats.files, stats.vectors, stats.skipped, stats.index_type) == (12, 12, 0, "hnsw")
        assert stats.model.name == "default" and stats.model.dim == 192
        assert stats.roots == [str(SAMPLES)]
        assert stats.last_build["added"] == 12
        with pytest.raises(ValueError, match="Unknown index type: 'annoy'"):
            index.build([SAMPLES], index_type="annoy")
        index.build([SAMPLES], workers=0, index_type="flat")  # nothing changed but the setting
        assert index.stats().index_type == "flat"
        assert ann.index_type_of(ann_file.read_ann(index.ann_path, index.db.stamp())) == "flat"


def test_stale_ivf_file_is_updated_without_retraining(tmp_path, emoji_model, monkeypatch):
    """After a build adds and removes photos, the IVF index is brought up to date, not trained again."""
    rng = np.random.default_rng(0)

    def commit(index: PhotoIndex, numbers: range) -> None:  # synthetic photos: the vectors are what matters here
        vectors = rng.standard_normal((len(numbers), 192)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        files = [IndexedFile(str(tmp_path / f"p{i}.jpg"), f"{i:032x}", 1, 1, 8, 8, None, None) for i in numbers]
        index.db.commit_batch(files, {f.hash: v for f, v in zip(files, vectors)}, [])

    with open_index(tmp_path / "index.db", emoji_model) as index:
        index.build([SAMPLES], workers=0, index_type="ivf")  # 12 photos: a flat index (too few for IVF lists)
        commit(index, range(2000))
        index.search("warm-up")  # trains an IVF index (51 lists) on the 2,012 vectors and writes the file
        trained = ann_file.read_ann(index.ann_path, index.db.stamp())
        assert ann.index_type_of(trained) == "ivf"
        commit(index, range(2000, 2200))
        index.db.remove([str(tmp_path / f"p{i}.jpg") for i in range(150)])
        monkeypatch.setattr(ann, "build_ann", pytest.fail)  # any rebuild fails the test

        index.search("again")

        assert_consistent(index)  # the file is fresh and holds exactly the database's 2,062 vectors
        updated, recorded = ann_file.read_stale_ann(index.ann_path, lambda stamp: stamp == index.db.stamp())
        assert updated.ntotal == 2062
        np.testing.assert_array_equal(updated.quantizer.reconstruct_n(0, updated.nlist),
                                      trained.quantizer.reconstruct_n(0, trained.nlist))
        assert recorded == ann.imbalance(trained) != ann.imbalance(updated)  # still the value after training

        commit(index, range(2200, 2300))  # a second update keeps it too
        index.search("and again")
        assert_consistent(index)
        assert ann_file.read_stale_ann(index.ann_path, lambda stamp: True)[1] == ann.imbalance(trained)


def test_faiss_file_of_the_first_format_is_rebuilt_once_then_updated(tmp_path, emoji_model, monkeypatch, caplog):
    """A file written before the trained imbalance was recorded is searched as it is while fresh, and rebuilt (not
    updated) when stale; the rebuilt file is then updated."""
    vectors = np.random.default_rng(1).standard_normal((2400, 192)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    def commit(index: PhotoIndex, numbers: range) -> None:
        files = [IndexedFile(str(tmp_path / f"p{i}.jpg"), f"{i:032x}", 1, 1, 8, 8, None, None) for i in numbers]
        index.db.commit_batch(files, {f.hash: vectors[i] for f, i in zip(files, numbers)}, [])

    builds = []
    build_ann = ann.build_ann
    monkeypatch.setattr(ann, "build_ann", lambda *args: builds.append(1) or build_ann(*args))
    with open_index(tmp_path / "index.db", emoji_model) as index:
        index.build([SAMPLES], workers=0, index_type="ivf")  # 12 photos: a flat index
        commit(index, range(2000))
        index.search("first")  # an IVF index, trained
        payload = faiss.serialize_index(ann_file.read_ann(index.ann_path, index.db.stamp())).tobytes()
        first_format_file(index.ann_path, payload, index.db.stamp().encode())
    assert len(builds) == 2
    with open_index(tmp_path / "index.db", emoji_model) as index:
        assert len(index.search("fresh: searched as it is")) > 0 and len(builds) == 2
        commit(index, range(2000, 2200))
        with caplog.at_level(logging.INFO, logger=ann.__name__):
            index.search("stale: rebuilt")
        assert "not recorded" in caplog.text  # rebuilt for that reason, not another
        assert len(builds) == 3 and index.ann_path.read_bytes()[:8] == b"VLMANN02"
        rebuilt, recorded = ann_file.read_stale_ann(index.ann_path, lambda stamp: True)
        assert recorded == ann.imbalance(rebuilt)
        commit(index, range(2200, 2400))
        index.search("stale again: updated")
        assert len(builds) == 3
        assert_consistent(index)
        assert ann_file.read_stale_ann(index.ann_path, lambda stamp: True)[1] == recorded



def test_vector_ids_are_never_reused(tmp_path, emoji_model):
    """A FAISS file updated in place trusts that an id it holds still names the same content."""
    with open_index(tmp_path / "index.db", emoji_model) as index:
        index.build([SAMPLES], workers=0)
        newest = int(index.db.vector_ids().max())
        newest_path = next(p for (p,) in index.db.db.execute(
            "SELECT f.path FROM files f JOIN vectors v ON v.hash = f.hash WHERE v.id = ?", [newest]))
        index.db.remove([index.db.to_absolute(newest_path)])  # SQLite alone would hand its id out again
        new = IndexedFile(str(tmp_path / "new.jpg"), "f" * 32, 1, 1, 8, 8, None, None)
        index.db.commit_batch([new], {new.hash: np.ones(192, dtype=np.float32) / np.sqrt(192)}, [])
        assert int(index.db.vector_ids().max()) == newest + 1
        stamp = index.db.stamp()
        assert index.db.can_update_from(stamp) and not index.db.can_update_from("another-database" + stamp[32:])


def test_schema_1_database_is_migrated_and_its_old_faiss_files_are_not_updated(tmp_path, emoji_model, monkeypatch):
    with open_index(tmp_path / "built.db", emoji_model) as index:
        index.build([SAMPLES], workers=0)
        model = index.db._meta("model")
        vectors = index.db.db.execute("SELECT id, hash, vector FROM vectors").fetchall()
        files = index.db.db.execute("SELECT path, hash, size, mtime_ns, width, height, taken_at, camera, indexed_at "
                                    "FROM files").fetchall()
    apple = next(i for i, row in enumerate(files) if row[0].endswith("red_apple.png"))
    files[apple] = files[apple][:6] + ("2024-05-01T10:00:00", "Canon EOS R5", files[apple][8])
    db_path = tmp_path / "index.db"
    monkeypatch.setattr(db_module, "SCHEMA_VERSION", 1)  # a database as the first version wrote it
    with Database(db_path, create=True).transaction() as conn:
        conn.execute("INSERT INTO meta VALUES ('model', ?)", [model])
        conn.executemany("INSERT INTO vectors VALUES (?, ?, ?)", vectors)
        conn.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", files)
        version = int(conn.execute("SELECT value FROM meta WHERE key = 'vectors_version'").fetchone()[0])
    monkeypatch.undo()
    with PhotoIndex(db_path, emoji_model) as index:
        assert index.db.schema_version() == 4
        plan = " ".join(row[-1] for row in index.db.db.execute(
            "EXPLAIN QUERY PLAN SELECT vector_id FROM files WHERE taken_at >= '2024' AND taken_at < '2025'"))
        assert "USING COVERING INDEX idx_files_taken_at" in plan  # the allowed ids come from the index alone
        assert {"idx_files_taken_at", "idx_files_camera", "idx_files_vector_id"} <= {
            i.name for i in index.db.db["files"].indexes}
        assert [Path(h.path).name for h in index.search("red apple", since="2024", camera="canon")] == ["red_apple.png"]
        assert_consistent(index)  # also: each file's vector_id (schema 4) names the vector of its hash
        assert index.db._meta("next_vector_id") == str(int(index.db.vector_ids().max()) + 1)
        assert index.db.can_update_from(index.db.stamp())
        database = index.db._meta("database_id")  # a FAISS file from the state at the migration can be updated,
        assert index.db.can_update_from(f"{database}:{version}")  # one from before it may hold a reused id
        assert not index.db.can_update_from(f"{database}:{version - 1}")


def test_query_embeddings_are_cached_within_a_bound(tmp_path, emoji_model, monkeypatch):
    from vlm_vision.index import photo_index as photo_index_module

    with PhotoIndex(tmp_path / "index.db", emoji_model, create=True) as index:
        index.build([SAMPLES], workers=0)
        encoded = []
        encode_texts = emoji_model.encode_texts
        monkeypatch.setattr(emoji_model, "encode_texts", lambda texts: encoded.append(list(texts)) or
                            encode_texts(texts))
        monkeypatch.setattr(photo_index_module, "TEXT_CACHE_SIZE", 3)
        first = [h.path for h in index.search("red apple", k=3)]
        assert [h.path for h in index.search("red apple", k=3)] == first and encoded == [["red apple"]]
        assert np.array_equal(index.text_vectors(["red apple"])[0], encode_texts(["red apple"])[0].numpy())
        for query in ("pizza", "rocket", "sun"):  # three newer queries push "red apple" out
            index.search(query, k=1)
        assert list(index._text_vectors) == ["pizza", "rocket", "sun"]
        index.search("red apple", k=1)
        assert encoded[-1] == ["red apple"]
