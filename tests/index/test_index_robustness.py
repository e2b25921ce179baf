"""Photo index under bad input, kill -9, concurrent use, and from the command line."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image

from tests.helpers.photos import SAMPLES, bad_inputs, good_formats, noise_image, record_open_image, write_images
from tests.index.test_index import assert_consistent
from vlm_vision.index import BuildLockedError, PhotoIndex
from vlm_vision.index.__main__ import build_parser
from vlm_vision.index.lock import BuildLock
from vlm_vision.index.photos import read_photo
from vlm_vision.index.scan import FoundFile
from vlm_vision.model.processor import DRAFT_SCALE, ImageProcessor, load_image

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def cli(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "vlm_vision.index", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=300, **kwargs)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_bad_input_is_skipped_with_reasons_and_good_files_are_searchable(tmp_path):
    photos = tmp_path / "photos"
    good = good_formats(photos / "good")
    assert {"heic", "avif"} <= set(good), "the dev extra installs pillow-heif, and Pillow's wheels decode AVIF"
    bad = bad_inputs(photos / "bad")
    exif_photo = photos / "good" / "exif.jpg"
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "Canon", "Canon EOS R5", 6  # make, model, orientation: rotate
    exif.get_ifd(0x8769)[0x9003] = "2024:07:14 18:30:05"  # DateTimeOriginal
    noise_image(400, size=(60, 30)).save(exif_photo, exif=exif)
    db = tmp_path / "index.db"

    done = cli("build", str(photos), "--db", str(db), "--workers", "1", "--batch-size", "4")
    assert "skipped" in done.stdout and "vlm-index errors" in done.stdout

    reasons = {json.loads(line)["path"]: json.loads(line)["reason"]
               for line in cli("errors", "--db", str(db), "--json").stdout.splitlines()}
    expected = {
        "empty": "empty", "truncated": "truncated or corrupt", "corrupt": "", "text": "not an image",
        "bomb": "decompression bomb", "broken_link": "broken symbolic link", "self_link": "symbolic link loop",
        "fifo": "not a regular file", "loop": "link loop", "undecodable": "not valid UTF-8",
    }
    for kind, phrase in expected.items():
        path = os.fsencode(bad[kind]).decode("utf-8", "backslashreplace")
        assert path in reasons, f"{kind} ({path}) was not recorded; recorded: {sorted(reasons)}"
        assert phrase in reasons[path], f"{kind}: {reasons[path]!r}"
    assert len(reasons) == len(expected)

    with PhotoIndex(db) as index:
        for path in [*good.values(), exif_photo]:
            hit = index.search(image=path, k=1)[0]
            assert hit.path == str(path) and hit.score == pytest.approx(1, abs=1e-5)
        row = index.db.indexed_file(str(exif_photo))
        assert (row.width, row.height) == (30, 60)  # as displayed: EXIF orientation 6 turns it
        assert (row.taken_at, row.camera) == ("2024-07-14T18:30:05", "Canon EOS R5")
        assert_consistent(index)

    again = cli("build", str(photos), "--db", str(db), "--workers", "0")  # skipped files are not retried unchanged
    assert "0 images encoded" in again.stdout


def test_skipped_file_is_retried_once_fixed(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "later.png").write_bytes(b"")
    with PhotoIndex(tmp_path / "index.db", create=True) as index:
        assert index.build([photos], workers=0).skipped == 1
        noise_image(5).save(photos / "later.png")
        s = index.build([photos], workers=0)
        assert (s.added, s.skipped) == (1, 0) and index.errors() == []


def test_read_photo_reasons_for_unreadable_and_vanished_files(tmp_path, monkeypatch):
    import vlm_vision.index.photos as photos

    path = tmp_path / "a.png"
    noise_image(1).save(path)
    file = FoundFile(str(path), path.stat().st_size, 0, 0)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(photos, "open", denied, raising=False)  # root can read anything: simulate
    assert read_photo(file, ImageProcessor()).error == "permission denied"
    monkeypatch.undo()
    path.unlink()
    assert read_photo(file, ImageProcessor()).error == "vanished before it could be read"


@pytest.mark.parametrize("do_resize", [True, False])
def test_read_photo_decodes_a_large_jpeg_reduced_and_records_the_files_size(tmp_path, monkeypatch, do_resize):
    import vlm_vision.index.photos as photos

    path = tmp_path / "camera.jpg"
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # rotate
    noise_image(7, size=(1024, 768)).resize((2048, 1536), Image.Resampling.BICUBIC).save(path, exif=exif, quality=90)
    decoded = record_open_image(monkeypatch, photos)
    processor = ImageProcessor(size=(64, 64), do_resize=do_resize)

    record = read_photo(FoundFile(str(path), path.stat().st_size, 0, 0), processor)

    assert (record.width, record.height) == (1536, 2048)  # the file's size, as displayed
    if not do_resize:  # the model takes the pixels as they are: nothing may be approximated
        assert decoded[0].size == (1536, 2048) and DRAFT_SCALE not in decoded[0].info
        return
    assert decoded[0].size == (192, 256) and decoded[0].info[DRAFT_SCALE] == 8  # 1536 / 8 = 3 * 64
    difference = np.abs(record.pixels.numpy().astype(int) - processor.resized(load_image(path)).astype(int))
    assert difference.mean() < 1.0 and difference.max() <= 4, (difference.mean(), difference.max())  # 0.82 and 3


def test_heic_without_plugin_names_the_extra(tmp_path, monkeypatch):
    import vlm_vision.index.photos as photos

    monkeypatch.setattr(photos, "pillow_heif", None)
    path = tmp_path / "phone.heic"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(100))
    record = read_photo(FoundFile(str(path), 112, 0, 0), ImageProcessor())
    assert "vlm-vision[heif]" in record.error


def _indexed_exactly_once(db: Path, files: list[Path]) -> None:
    conn = sqlite3.connect(db)
    stored = [row[0] for row in conn.execute("SELECT path FROM files")]
    conn.close()
    assert sorted(stored) == sorted(str(p.relative_to(db.parent)) for p in files)


def test_kill_minus_nine_at_random_points_then_resume(tmp_path):
    photos = tmp_path / "photos"
    files = write_images(photos, 60)
    db = tmp_path / "index.db"
    rng = random.Random(1234)
    args = [sys.executable, "-m", "vlm_vision.index", "build", str(photos), "--db", str(db), "--batch-size", "2",
            "--workers", "0"]
    killed = 0
    for _ in range(4):
        process = subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 5.0))  # model loading takes about 1-2 s: some kills land mid-encode
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
        process.wait()
        if db.exists():
            with PhotoIndex(db) as index:  # after any kill, the database is consistent (no torn batches)
                db_ = index.db.db
                assert db_.execute("SELECT COUNT(*) FROM files WHERE hash NOT IN "
                                   "(SELECT hash FROM vectors)").fetchone()[0] == 0
    assert killed >= 1, "no build was killed; the test did not test anything"
    done = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    _indexed_exactly_once(db, files)
    with PhotoIndex(db) as index:
        assert index.db.count("vectors") == 60
        assert_consistent(index)


def test_search_during_a_build_and_the_lock_against_a_second(tmp_path):
    photos = tmp_path / "photos"
    # Enough images (about 8 s of encoding here) that the slow build outlasts a search and a second CLI's
    # start (about 4.4 s): with 150 (about 1 s left once 20 were in) it lost that race once in CI.
    write_images(photos, 1000)
    db = tmp_path / "index.db"
    cli("build", str(SAMPLES), "--db", str(db), "--workers", "0")
    slow = subprocess.Popen([sys.executable, "-m", "vlm_vision.index", "build", str(photos), "--db", str(db),
                             "--batch-size", "1", "--workers", "0"], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        with PhotoIndex(db) as index:
            while index.db.count("files") < 20 and time.time() < deadline:  # the build is under way
                time.sleep(0.2)
            assert slow.poll() is None, "the build finished before the test could search during it"
            hits = index.search("red apple", k=3)
            assert Path(hits[0].path).name == "red_apple.png"
            with pytest.raises(BuildLockedError, match="Another build is already running"):
                index.build([photos], workers=0)
        second = cli("build", str(photos), "--db", str(db), check=False)
        assert second.returncode == 1 and "Another build is already running" in second.stderr
        assert slow.poll() is None
    finally:
        slow.wait(timeout=300)
    assert slow.returncode == 0, slow.stderr.read()
    with PhotoIndex(db) as index:
        assert index.db.count("files") == 1012
        assert_consistent(index)


class FakeMsvcrt:
    """Windows' byte-range locks as `msvcrt.locking` takes them: per handle, from the handle's file position."""

    LK_UNLCK, LK_NBLCK = 0, 2

    def __init__(self) -> None:
        self.held: dict[tuple[int, int], int] = {}  # (file, offset) -> the handle holding it

    def locking(self, fd: int, mode: int, nbytes: int) -> None:
        assert nbytes == 1
        key = (os.fstat(fd).st_ino, os.lseek(fd, 0, os.SEEK_CUR))
        if mode == self.LK_UNLCK:
            if self.held.pop(key, None) != fd:
                raise OSError(errno.EACCES, "not locked by this handle")
        elif key in self.held:
            raise OSError(errno.EACCES, "Permission denied")
        else:
            self.held[key] = fd


@pytest.mark.parametrize("platform", ["posix", "windows"])
def test_build_lock_excludes_a_second_holder_and_names_the_first(tmp_path, monkeypatch, platform):
    import vlm_vision.index.lock as lock_module

    if platform == "windows":  # the msvcrt branch, on a fake with Windows' semantics
        fake = FakeMsvcrt()
        monkeypatch.setattr(lock_module, "fcntl", None)
        monkeypatch.setattr(lock_module, "msvcrt", fake, raising=False)
    path = tmp_path / "index.db.lock"
    first, second = BuildLock(path), BuildLock(path, "index rebuild")
    assert first.acquire() and not second.acquire()
    assert path.read_text().startswith(f"build by pid {os.getpid()} since ") and path.stat().st_size < 100
    with pytest.raises(BuildLockedError, match=r"\(build by pid \d+ since .*; lock file .*index\.db\.lock\)"):
        with BuildLock(path):
            pass
    threading.Timer(0.3, first.release).start()
    started = time.monotonic()
    assert second.acquire(blocking=True) and time.monotonic() - started > 0.25  # it waited for the first to let go
    assert path.read_text().startswith("index rebuild by pid")
    second.release()
    with BuildLock(path):
        pass
    if platform == "windows":
        assert fake.held == {}

        def broken(fd: int, mode: int, nbytes: int) -> None:
            raise OSError(errno.EBADF, "Bad file descriptor")

        monkeypatch.setattr(fake, "locking", broken)
        with pytest.raises(OSError, match="Bad file descriptor"):  # a real error is not "another build"
            BuildLock(path).acquire()


def test_cli_search_stats_and_errors(tmp_path):
    db = tmp_path / "index.db"
    cli("build", str(SAMPLES), "--db", str(db), "--workers", "0")
    lines = [json.loads(line) for line in cli("search", "red apple", "--db", str(db), "-k", "3", "--json").stdout
             .splitlines()]
    assert len(lines) == 3 and set(lines[0]) == {"path", "score", "taken_at", "camera"}
    assert Path(lines[0]["path"]).name == "red_apple.png" and lines[0]["taken_at"] is None  # PNGs have no EXIF
    dated = cli("search", "red apple", "--db", str(db), "--since", "2024-06", "--camera", "pixel")
    assert dated.stdout == "" and "No results." in dated.stderr  # no sample has a date taken
    typo = cli("search", "red apple", "--db", str(db), "--under", str(tmp_path / "Pictrues"))
    assert typo.stdout == "" and "is not a folder on this machine: unless it is an unmounted" in typo.stderr
    bad_date = cli("search", "red apple", "--db", str(db), "--until", "June", check=False)
    assert bad_date.returncode == 1 and "error: until 'June' is not a date" in bad_date.stderr
    text = cli("search", "--image", str(SAMPLES / "pizza.png"), "--not", "food", "--db", str(db), "-k", "2").stdout
    score, path = text.splitlines()[0].split(maxsplit=1)
    assert path == str(SAMPLES / "pizza.png") and 0 < float(score) < 0.99  # steered away from "food"
    stats = json.loads(cli("stats", "--db", str(db), "--json").stdout)
    assert (stats["files"], stats["dim"], stats["model"], stats["index_type"]) == (12, 192, "default", "flat")
    none_skipped = cli("errors", "--db", str(db))
    assert none_skipped.stdout == "" and "No skipped files" in none_skipped.stderr
    missing = cli("search", "cat", "--db", str(tmp_path / "none.db"), check=False)
    assert missing.returncode == 1 and "Build one first" in missing.stderr and "Traceback" not in missing.stderr
    nowhere = cli("build", str(tmp_path / "no-such-folder"), "--db", str(tmp_path / "new.db"), check=False)
    assert nowhere.returncode == 1 and "Not a folder" in nowhere.stderr
    assert not (tmp_path / "new.db").exists()  # checked before a database is made for it
    # A build that stopped before its first batch (here: no such model) leaves an empty index: it searches as one.
    empty = tmp_path / "empty.db"
    no_model = cli("build", str(SAMPLES), "--db", str(empty), "--model", str(tmp_path / "no-model"), check=False)
    assert no_model.returncode == 1 and "No such checkpoint" in no_model.stderr
    searched = cli("search", "cat", "--db", str(empty))
    assert searched.stdout == "" and "No results: the index is empty. Build it: vlm-index" in searched.stderr
    forgot = cli("forget", str(SAMPLES), "--db", str(db))
    assert f"Removed 12 files and 0 skip records under {SAMPLES}; 0 files remain." in forgot.stdout
    assert json.loads(cli("stats", "--db", str(db), "--json").stdout)["roots"] == []


@pytest.mark.parametrize("command", ["build", "search", "stats", "errors", "forget", None])
def test_every_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"] if command else ["--help"])
    out = capsys.readouterr().out
    assert "example" in out and f"vlm-index {command or 'build'} " in out


def test_cli_build_says_when_the_index_type_asked_for_is_not_built(tmp_path, capsys):
    from vlm_vision.index.__main__ import main

    db = tmp_path / "index.db"
    assert main(["build", str(SAMPLES), "--db", str(db), "--index-type", "ivf", "--workers", "0"]) == 0
    assert "FAISS index: flat, not ivf: IVF needs at least 312 vectors" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["build", str(tmp_path / "empty"), "--db", str(tmp_path / "e.db"), "--index-type", "hnsw"]) == 0
    assert "FAISS index" not in capsys.readouterr().out  # nothing built: nothing to say
