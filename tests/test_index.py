"""Photo index: incremental builds, agreement of SQLite and FAISS, search, moves, model checks."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from index import IndexedFile, IndexNotFoundError, ModelMismatchError, PhotoIndex, SchemaError
from index import ann, ann_file
from index import db as db_module
from index.db import Database
from tests.photos import SAMPLES, exif_photo, noise_image, write_images
from tests.vectors import first_format_file
from vlm_vision.dual_encoder import DualEncoder
from vlm_vision.hub import DEFAULT_MODEL


@pytest.fixture(scope="module")
def emoji_model():
    return DualEncoder.from_pretrained(DEFAULT_MODEL)


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


def test_under_filter_negative_and_k(tmp_path, emoji_model):
    with open_index(tmp_path / "index.db", emoji_model) as index:
        shutil.copytree(SAMPLES, tmp_path / "a", ignore=shutil.ignore_patterns("*.md", "*.txt"))
        write_images(tmp_path / "b", 4)
        index.build([tmp_path / "a", tmp_path / "b"], workers=0)
        hits = index.search("red apple", k=3, under=tmp_path / "b")
        assert len(hits) == 3 and all(h.path.startswith(str(tmp_path / "b") + os.sep) for h in hits)
        assert index.search("red apple", k=50, under=tmp_path / "b" / "nothing-here") == []
        assert len(index.search("red apple", k=50)) == 16
        plain = [Path(h.path).name for h in index.search("red heart", k=3)]
        steered = [Path(h.path).name for h in index.search("red heart", negative="red", k=3)]
        assert plain[0] == "red_heart.png" and steered != plain
        with pytest.raises(ValueError, match="text query, an image"):
            index.search("   ")
        with pytest.raises(ValueError, match="k must be"):
            index.search("cat", k=0)


def test_date_camera_and_score_filters(tmp_path, emoji_model):
    photos = tmp_path / "photos"
    shot = {  # name -> (EXIF date taken, make, model)
        "may": ("2024:05:31 23:59:59", "Google", "Pixel 8"),
        "june_first": ("2024:06:01 00:00:00", "Google", "Pixel 8"),
        "july": ("2024:07:14 18:30:05", "Canon", "Canon EOS R5"),
        "august_last": ("2024:08:31 23:59:59", "Google", "Pixel 8 Pro"),
        "september": ("2024:09:01 00:00:00", "Canon", "Canon EOS R5"),
        "no_exif": (None, None, None),
    }
    for seed, (name, (taken, make, model)) in enumerate(shot.items()):
        exif_photo(photos / ("trip" if name in ("july", "august_last") else "home") / f"{name}.jpg", seed, taken,
                   make, model)
    shutil.copy(photos / "trip" / "july.jpg", photos / "home" / "july_copy.jpg")  # one content, two files
    with open_index(tmp_path / "index.db", emoji_model) as index:
        index.build([photos], workers=0)

        def names(**filters) -> set[str]:
            return {Path(h.path).stem for h in index.search("a photo", k=10, **filters)}

        assert names() == set(shot) | {"july_copy"}
        assert names(since="2024-06", until="2024-08") == {"june_first", "july", "july_copy", "august_last"}
        assert names(since="2024-07", until="2024-07", under=photos / "home") == {"july_copy"}  # the copy that passes
        assert len(index.search("a photo", k=1, since="2024-07", until="2024-07")) == 1  # k counts files
        assert names(since="2024-06-01", until="2024-06-01") == {"june_first"}
        assert names(until="2024-05") == {"may"} and names(since="2024-09") == {"september"}
        assert names(since="2024") == set(shot) - {"no_exif"} | {"july_copy"}  # files without a date drop out
        assert index.db.cameras() == ["Canon EOS R5", "Google Pixel 8", "Google Pixel 8 Pro"]
        assert names(camera="pixel") == {"may", "june_first", "august_last"}  # any case, part of make and model
        assert names(camera="PIXEL 8 PRO") == {"august_last"} and names(camera="Nikon") == set()
        assert names(camera="canon", since="2024-07", under=photos / "trip") == {"july"}
        assert names(until="9999") == set(shot) - {"no_exif"} | {"july_copy"}
        assert names(since="2025") == set()

        hits = index.search(image=photos / "home" / "may.jpg", k=10)
        assert hits[0].score == pytest.approx(1, abs=1e-5) and hits[-1].score < 0.99
        cutoff = (hits[1].score + hits[2].score) / 2
        kept = index.search(image=photos / "home" / "may.jpg", k=10, min_score=cutoff)
        assert [h.path for h in kept] == [h.path for h in hits[:2]]
        assert kept[0].file.taken_at == "2024-05-31T23:59:59" and kept[0].file.camera == "Google Pixel 8"

        with pytest.raises(ValueError, match="the date range is empty"):
            index.search("a photo", since="2024-09", until="2024-06")
        with pytest.raises(ValueError, match="since '31/12/2024' is not a date"):
            index.search("a photo", since="31/12/2024")


def test_filtered_search_gives_the_same_results_however_many_candidates_it_ranks(tmp_path, emoji_model,
                                                                                monkeypatch):
    from index import photo_index

    for seed in range(12):
        exif_photo(tmp_path / "photos" / f"{seed:02d}.jpg", seed, f"20{10 + seed}:01:01 12:00:00", "Canon",
                   "EOS R5" if seed % 3 else "EOS R6")
    with open_index(tmp_path / "index.db", emoji_model) as index:
        index.build([tmp_path / "photos"], workers=0)
        scores = [h.score for h in index.search("a photo", k=12)]
        cut = (scores[4] + scores[5]) / 2  # 5 of the 12 score above it
        queries = [dict(since="2015", until="2018"), dict(camera="r6"), dict(until="2010"), dict(since="2030"),
                   dict(camera="canon", min_score=cut), dict(camera="r6", min_score=cut)]
        listed, ids_matching = [], index.db.ids_matching

        def listing(only, at_most=None):
            listed.append(at_most)
            return ids_matching(only, at_most)

        def results() -> list[list[str]]:
            return [[h.path for h in index.search("a photo", k=3, **q)] for q in queries]

        monkeypatch.setattr(index.db, "ids_matching", listing)
        listed_first = results()  # at most LIST_FIRST_MAX files pass: each filter lists them and searches those
        assert [len(paths) for paths in listed_first][:5] == [3, 3, 1, 0, 3]
        assert listed == [photo_index.LIST_FIRST_MAX] * len(queries)
        monkeypatch.setattr(photo_index, "LIST_FIRST_MAX", 0)
        listed.clear()
        assert results() == listed_first and None not in listed  # 1,000 candidates: the first pass ranks all 12
        monkeypatch.setattr(photo_index, "FILTER_CANDIDATES", 3)  # the 3 best: too few pass, so the allowed ids
        listed.clear()
        assert results() == listed_first and listed.count(None) >= 3  # are listed after all


def test_on_an_approximate_index_a_filter_ranks_again_as_wide_as_the_share_that_passed(tmp_path, emoji_model,
                                                                                       monkeypatch):
    from index import photo_index
    from index.filters import SearchFilter
    from tests.vectors import clustered

    vectors = clustered(2000, seed=0)[:, :32]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    files = [IndexedFile(f"/photos/{i:04d}.jpg", f"{i:032x}", 1, 1, None, None, f"20{10 + i % 10}-01-01T00:00:00",
                         None) for i in range(len(vectors))]
    with open_index(tmp_path / "index.db", emoji_model) as index:
        index.db.commit_batch(files, dict(zip((f.hash for f in files), vectors)), [])
        ids, stored = index.db.vector_ids(), vectors  # ids in commit order
        ivf = ann.build_ann(stored, ids, "ivf")
        assert ann.index_type_of(ivf) == "ivf"
        widened = []
        search_ann = ann.search_ann
        monkeypatch.setattr(ann, "search_ann", lambda *a, widen=1.0, **kw: widened.append(widen) or search_ann(
            *a, widen=widen, **kw))
        only = SearchFilter.of(since="2012", until="2012")  # a tenth of the photos
        monkeypatch.setattr(photo_index, "LIST_FIRST_MAX", 0)  # too many to list first
        allowed = np.isin(ids, index.db.ids_matching(only))
        for query in clustered(20, seed=5)[:, :32]:
            query /= np.linalg.norm(query)
            found = index._filtered(ivf, query.astype(np.float32), 10, only, None)
            exact = ids[allowed][np.argsort(-(stored[allowed] @ query))[:10]]
            assert len(found) == 10 and len({i for _, i in found} & set(exact.tolist())) >= 9
        assert widened[:2] == [1.0, pytest.approx(10, rel=0.3)]  # the second pass probes about 10 times wider


def test_under_is_each_folder_and_what_is_below_it_stored_relative_or_absolute(tmp_path):
    from index.db import Database, IndexedFile
    from index.filters import SearchFilter

    db = Database(tmp_path / "Photos" / "index.db", create=True)  # paths below Photos are stored relative
    paths = {"a": tmp_path / "Photos" / "a.jpg", "c": tmp_path / "Photos" / "b" / "c.jpg",
             "d": tmp_path / "other" / "d.jpg", "e": tmp_path / "Photos-old" / "e.jpg",
             "f": tmp_path / "Photos" / "b0" / "f.jpg", "g": tmp_path / "Photos" / "b.jpg"}
    files = [IndexedFile(str(path), f"{i:032x}", 1, 1, None, None, None, None) for i, path in enumerate(paths.values())]
    db.commit_batch(files, {f.hash: np.ones(4, dtype=np.float32) / 2 for f in files}, [])
    ids = dict(zip(paths, db.vector_ids()))  # ids in commit order

    def under(*folders) -> set[str]:
        found = db.ids_matching(SearchFilter(tuple(str(f) for f in folders)))
        return {key for key, i in ids.items() if i in set(found.tolist())}

    assert {f.path for f in db.files_of_ids(ids.values())[ids["a"]]} == {str(paths["a"])}
    assert under(tmp_path / "Photos") == {"a", "c", "f", "g"}  # the database's folder: every relative path
    assert under(tmp_path) == set(paths) and under("/") == set(paths)  # folders above it, too
    assert under(tmp_path / "Photos" / "b") == {"c"}  # not b0/ nor b.jpg beside it
    assert under(tmp_path / "Photos" / "b" / "c.jpg") == {"c"}  # a file is its own folder
    assert under(tmp_path / "Photos-old") == {"e"} and under(tmp_path / "Photo") == set()
    assert under(tmp_path / "other", tmp_path / "Photos" / "b0") == {"d", "f"}
    photos = SearchFilter((str(tmp_path / "Photos"),))
    copy = IndexedFile(str(tmp_path / "Photos" / "copy.jpg"), files[0].hash, 1, 1, None, None, None, None)
    db.commit_batch([copy], {}, [])  # five files, four contents: `at_most` counts files
    assert db.ids_matching(photos, at_most=4) is None
    assert db.ids_matching(photos, at_most=5).tolist() == sorted(ids[key] for key in ("a", "c", "f", "g"))
    db.close()


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


def test_a_folder_of_few_files_leads_the_listing_of_a_combined_filter(tmp_path, monkeypatch):
    from index.filters import SearchFilter

    db = Database(tmp_path / "index.db", create=True)
    files = [IndexedFile(f"/photos/{'trip' if i < 5 else 'home'}/{i:03d}.jpg", f"{i:032x}", 1, 1, None, None,
                         f"20{10 + i % 10}-06-01T00:00:00", "Canon EOS R5" if i % 2 else "Google Pixel 8")
             for i in range(40)]
    db.commit_batch(files, {f.hash: np.ones(4, dtype=np.float32) / 2 for f in files}, [])
    ids = db.vector_ids()  # in commit order
    only = SearchFilter.of(under="/photos/trip", since="2012", camera="canon")
    leads, matching = [], db._matching
    monkeypatch.setattr(db, "_matching", lambda only, by_path=False: leads.append(by_path) or matching(only, by_path))
    for at_most in (None, 5, 4):  # the folder holds 5 files
        assert db.ids_matching(only, at_most).tolist() == [ids[3]]  # trip, 2013, Canon
    assert leads == [False, True, False]
    where, params = matching(only, by_path=True)
    plan = " ".join(row[-1] for row in db.db.execute(f"EXPLAIN QUERY PLAN SELECT vector_id FROM files WHERE {where}",
                                                       params))
    assert "sqlite_autoindex_files_1" in plan and "idx_files_taken_at" not in plan and "idx_files_camera" not in plan
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


def test_missing_and_foreign_databases(tmp_path):
    with pytest.raises(IndexNotFoundError, match="python -m index build FOLDER --db"):
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
