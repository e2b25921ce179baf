"""Search filters: the periods --since and --until name, what a filter refuses, and filtered searches of an index
(folder, date taken, camera, score; listed first, among the candidates, or ranked again on an approximate index)."""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.photos import SAMPLES, exif_photo, write_images
from vlm_vision.index import IndexedFile, PhotoIndex, QueryError, ann
from vlm_vision.index.db import Database
from vlm_vision.index.filters import SearchFilter, period


@pytest.mark.parametrize("text, start, end", [
    ("2024-06-15", datetime(2024, 6, 15), datetime(2024, 6, 16)),
    ("2024-02-29", datetime(2024, 2, 29), datetime(2024, 3, 1)),  # a leap day
    ("2023-12-31", datetime(2023, 12, 31), datetime(2024, 1, 1)),
    ("2024-02", datetime(2024, 2, 1), datetime(2024, 3, 1)),
    ("2024-12", datetime(2024, 12, 1), datetime(2025, 1, 1)),  # December runs into the next year
    (" 2024-6 ", datetime(2024, 6, 1), datetime(2024, 7, 1)),
    ("2023", datetime(2023, 1, 1), datetime(2024, 1, 1)),
    ("9999", datetime(9999, 1, 1), datetime.max), ("9999-12-31", datetime(9999, 12, 31), datetime.max),
])
def test_period_is_the_day_month_or_year_named(text, start, end):
    assert period(text) == (start, end)


@pytest.mark.parametrize("text", ["2024-13", "2023-02-29", "June 2024", "24-06-01", "", "2024/06/01"])
def test_period_refuses_what_is_not_a_date_and_says_the_forms(text):
    with pytest.raises(QueryError, match=r"since .* is not a date: give a day, month or year as YYYY-MM-DD"):
        period(text, "since")


def test_filter_of_a_search_includes_both_ends_and_normalises_the_rest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    only = SearchFilter.of("photos", since="2024-06", until="2024-08", camera="  Pixel 8 ")
    assert only == SearchFilter((os.path.join(str(tmp_path), "photos"),), "2024-06-01T00:00:00",
                                "2024-09-01T00:00:00", "Pixel 8")  # August included
    assert SearchFilter.of(until="2024-08-31").taken_before == "2024-09-01T00:00:00"
    assert SearchFilter.of(since="2024-08-31", until="2024-08-31")  # one day
    assert not SearchFilter.of() and not SearchFilter.of(camera="   ")


def test_an_empty_date_range_is_refused():
    with pytest.raises(ValueError, match="the date range is empty"):
        SearchFilter.of(since="2024-09", until="2024-08")
    with pytest.raises(ValueError, match=r"until .*2024-8-x.* is not a date"):
        SearchFilter.of(since="2024-01", until="2024-8-x")


def test_under_filter_negative_and_k(tmp_path, emoji_model):
    with PhotoIndex(tmp_path / "index.db", emoji_model, create=True) as index:
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
    with PhotoIndex(tmp_path / "index.db", emoji_model, create=True) as index:
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
    from vlm_vision.index import photo_index

    for seed in range(12):
        exif_photo(tmp_path / "photos" / f"{seed:02d}.jpg", seed, f"20{10 + seed}:01:01 12:00:00", "Canon",
                   "EOS R5" if seed % 3 else "EOS R6")
    with PhotoIndex(tmp_path / "index.db", emoji_model, create=True) as index:
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
    from tests.helpers.vectors import clustered
    from vlm_vision.index import photo_index

    vectors = clustered(2000, seed=0)[:, :32]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    files = [IndexedFile(f"/photos/{i:04d}.jpg", f"{i:032x}", 1, 1, None, None, f"20{10 + i % 10}-01-01T00:00:00",
                         None) for i in range(len(vectors))]
    with PhotoIndex(tmp_path / "index.db", emoji_model, create=True) as index:
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


def test_a_folder_of_few_files_leads_the_listing_of_a_combined_filter(tmp_path, monkeypatch):
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
