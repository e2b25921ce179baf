"""Crash at any point (issue 32, part 3): builds and forgets killed (SIGKILL) at random passages of the write paths'
fault points (`vlm_vision.index.faults`: inside a batch's transaction, the removals', forget's, and the FAISS file's
write), and failing with a full or read-only disk there. After each run the database is consistent; at the end,
with the faults gone, every file on disk is stored exactly once and the FAISS file matches the database."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys

import pytest

from tests.helpers.photos import noise_image, write_images
from tests.index.test_index import assert_consistent
from tests.index.test_index_robustness import ENV, ROOT
from vlm_vision.index import PhotoIndex
from vlm_vision.index.faults import ENV as FAULT_ENV


def run(*args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**ENV, **({FAULT_ENV: fault} if fault else {})}
    return subprocess.run([sys.executable, "-m", "vlm_vision.index", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def links_hold(db) -> None:
    """After any run: no file without its vector, no vector without a file (the FAISS file may be stale)."""
    conn = sqlite3.connect(db)
    try:
        for table, other in (("files", "vectors"), ("vectors", "files")):
            orphans = f"SELECT COUNT(*) FROM {table} WHERE hash NOT IN (SELECT hash FROM {other})"
            assert conn.execute(orphans).fetchone()[0] == 0, table
    finally:
        conn.close()


@pytest.mark.slow  # about 15 runs of the CLI, each loading the model: a minute on 2 cores
def test_kills_and_disk_errors_at_the_write_points_lose_nothing(tmp_path):
    photos, db = tmp_path / "photos", tmp_path / "index.db"
    write_images(photos / "a", 24)
    write_images(photos / "b", 16, start=100)
    build = ["build", str(photos), "--db", str(db), "--batch-size", "2", "--workers", "0"]
    rng = random.Random(32)
    kills = []

    def killed_at(point: str, most: int, *args: str) -> None:
        count = rng.randint(1, most)
        done = run(*args, fault=f"{point}:{count}:kill")
        if done.returncode == -9:
            kills.append(f"{point}:{count}")
        else:  # the point was passed fewer times than `count`: the run finished
            assert done.returncode == 0, done.stderr
        links_hold(db)

    for _ in range(3):
        killed_at("commit", 20, *build)  # 40 new files in batches of 2: up to 20 commits
    killed_at("ann-write", 1, *build)
    assert run(*build).returncode == 0  # the rest of the photos, and a FAISS file
    for i in range(3):  # change, add and delete a few: commits and removals to kill in
        noise_image(500 + i).save(photos / "a" / f"img_{i:04d}.png")
        noise_image(600 + i).save(photos / "b" / f"new_{i}.png")
        (photos / "b" / f"img_{100 + i:04d}.png").unlink()
    killed_at("remove", 1, *build)
    killed_at("commit", 3, *build)
    for point, what in (("commit", "enospc"), ("commit", "erofs"), ("ann-write", "enospc")):
        noise_image(700).save(photos / "a" / "late.png")  # something to write, so that the point is passed
        failed = run(*build, fault=f"{point}:1:{what}")  # a full or read-only disk: a message, nothing half-stored
        assert failed.returncode == 1 and "can't be written" in failed.stderr and "Traceback" not in failed.stderr
        links_hold(db)
    assert run(*build).returncode == 0
    killed_at("forget", 1, "forget", str(photos / "b"), "--db", str(db))
    assert run("forget", str(photos / "b"), "--db", str(db)).returncode in (0, 1)  # 1: the killed one had finished
    killed_at("ann-write", 1, "search", "red", "--db", str(db))  # a reader's rebuild of the FAISS file
    assert run(*build).returncode == 0  # b comes back: forgotten, not deleted

    assert len(kills) >= 5, kills
    on_disk = sorted(str(p) for p in photos.rglob("*.png"))
    with PhotoIndex(db) as index:
        stored = sorted(index.db.to_absolute(p) for (p,) in index.db.db.execute("SELECT path FROM files"))
        assert stored == on_disk  # every file once: none lost, none twice
        assert index.db.count("vectors") == len(on_disk)  # distinct noise pictures: one vector each
        assert_consistent(index)  # links, and the FAISS file holds exactly the database's vectors
    print(f"kills at {', '.join(kills)}; {len(on_disk)} files stored once each")
