"""Searching while a build writes (issue 32, part 2): every answer is consistent, and new files show up without a
restart. SQLite's WAL lets the readers read while the build commits; the FAISS file is swapped whole."""

from __future__ import annotations

import threading

from tests.helpers.photos import SAMPLES, write_images
from vlm_vision.app.backend import Backend
from vlm_vision.index import PhotoIndex


def test_searches_during_a_build_are_consistent_and_see_the_new_files(tmp_path, emoji_model):
    db = tmp_path / "index.db"
    with PhotoIndex(db, emoji_model, create=True) as index:
        index.build([SAMPLES], workers=0)
    new = write_images(tmp_path / "new", 120)
    done, failures = threading.Event(), []

    def build() -> None:
        try:
            with PhotoIndex(db, emoji_model) as builder:
                builder.build([SAMPLES, tmp_path / "new"], workers=0, batch_size=4)  # 30 commits
        except Exception as e:  # noqa: BLE001 - the test reports it
            failures.append(e)
        finally:
            done.set()

    searches, sizes = 0, []
    app = Backend(db, dtype="float32")  # the app's searches, beside the CLI's and Python's
    with PhotoIndex(db, emoji_model) as reader:
        thread = threading.Thread(target=build)
        thread.start()
        while not done.is_set() or searches < 5:
            hits = reader.search("red apple", k=200)
            assert len(app.search("red apple", k=200)) >= len(hits)  # searched after: it sees at least as much
            searches += 1
            files = reader.db.count("files")
            sizes.append(len(hits))
            for hit in hits:  # every hit is a whole row: a file with its vector, no half-written state
                stored = reader.db.indexed_file(hit.path)
                assert stored is not None and stored.hash == hit.file.hash, hit.path
                assert reader.db.vector_of(hit.path) is not None, hit.path
            assert len(hits) <= files
        thread.join()
        assert failures == []
        final = reader.search("red apple", k=200)  # the same reader, no restart: it sees every new file
        assert len(app.search("red apple", k=200)) == len(final)
    app.close()
    assert len(final) == 12 + len(new) and {str(p) for p in new} <= {h.path for h in final}
    print(f"{searches} searches during the build, results growing {sizes[0]} -> {sizes[-1]} -> {len(final)}")
    assert searches >= 5 and sizes[0] < len(final)  # it searched while the index was still growing
