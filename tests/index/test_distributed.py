"""The distributed build on a local multi-node Ray cluster (three nodes of one CPU each, all on 127.0.0.1): the same
index as the local build, a node lost and a driver killed mid-job, reruns, listings, and the merged FAISS index."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from tests.helpers.photos import bad_inputs, noise_image, write_images  # noqa: E402
from tests.helpers.vectors import clustered  # noqa: E402
from tests.index.test_index import assert_consistent  # noqa: E402
from vlm_vision.index import PhotoIndex, ann, distributed  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
NODE = {"num_cpus": 1, "node_ip_address": LOOPBACK, "include_dashboard": False}


@pytest.fixture(scope="module")
def cluster():
    """A head and two worker nodes of one CPU each, with this process as the driver."""
    cluster = Cluster(initialize_head=True, head_node_args=NODE)
    for _ in range(2):
        cluster.add_node(**{k: v for k, v in NODE.items() if k != "include_dashboard"})
    cluster.wait_for_nodes()
    cluster.connect()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """200 distinct images in two folders, a duplicate and every kind of bad input."""
    root = tmp_path_factory.mktemp("photos")
    files = write_images(root / "a", 110) + write_images(root / "b", 90, start=110, ext="jpg")
    shutil.copy(files[0], root / "b" / "copy_of_first.png")  # one content, two paths
    bad_inputs(root / "bad")
    return root


def _shards(db: Path) -> distributed.ShardFolder:
    """The shard folder of the index at `db` (the default, beside it)."""
    with PhotoIndex(db) as index:
        return distributed.ShardFolder(distributed.shard_location(str(db), index.db.id, None))


def test_cluster_talks_over_loopback_only(cluster):
    nodes = [node for node in ray.nodes() if node["Alive"]]
    assert len(nodes) == 3
    assert {node["NodeManagerAddress"] for node in nodes} == {LOOPBACK}
    assert ray.util.get_node_ip_address() == LOOPBACK
    assert distributed.node_addresses() == [LOOPBACK] * 3


def _state(db: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(path -> stored vector, path -> skip reason) of an index."""
    with PhotoIndex(db) as index:
        assert_consistent(index)
        rows = index.db.db.execute("SELECT f.path, v.vector FROM files f JOIN vectors v ON v.hash = f.hash")
        vectors = {index.db.to_absolute(p): np.frombuffer(v, dtype=np.float32) for p, v in rows}
        reasons = {s.path: s.reason for s in index.errors()}
    return vectors, reasons


def test_ray_build_equals_the_local_build(cluster, photos, tiny_siglip, tmp_path):
    model = str(tiny_siglip[0])
    with PhotoIndex(tmp_path / "local.db", model, create=True) as local:
        local.build([photos], batch_size=16, workers=0)
        local_hits = local.search("a photo", k=10)
    with PhotoIndex(tmp_path / "ray.db", model, create=True) as index:
        summary = index.build_on_ray([photos], workers=2, batch_size=16)
        ray_hits = index.search("a photo", k=10)
        by_image = index.search(image=photos / "a" / "img_0003.png", k=1)[0]
        assert index.stats().last_build["nodes"] == [LOOPBACK] * 3
    assert (summary.added, summary.reused, summary.encoded) == (200, 1, 200)

    local_vectors, local_reasons = _state(tmp_path / "local.db")
    ray_vectors, ray_reasons = _state(tmp_path / "ray.db")
    assert ray_vectors.keys() == local_vectors.keys() and len(ray_vectors) == 201
    for path, vector in local_vectors.items():
        np.testing.assert_allclose(ray_vectors[path], vector, atol=1e-5)
    assert ray_reasons == local_reasons and len(ray_reasons) == 10
    assert [h.path for h in ray_hits] == [h.path for h in local_hits]
    assert [h.score for h in ray_hits] == pytest.approx([h.score for h in local_hits], abs=1e-5)
    assert by_image.path == str(photos / "a" / "img_0003.png")

    with PhotoIndex(tmp_path / "ray.db") as index:
        table = _shards(tmp_path / "ray.db").read  # every row, bad files' too
        names = [p.name for p in (tmp_path / "ray.db.shards" / index.db.id).iterdir()]
    paths = [path for name in names for path in table(name, ["path"]).column("path").to_pylist()]
    assert len(paths) == len(set(paths))  # every file once
    assert set(ray_vectors) <= set(paths) <= set(ray_vectors) | set(ray_reasons)  # bad files read, with reasons
    assert not list((tmp_path / "ray.db.shards").glob("*/*.tmp"))


def test_rerun_reads_only_added_changed_and_deleted_files(cluster, tiny_siglip, tmp_path):
    photos = tmp_path / "photos"
    files = write_images(photos, 40)
    good = (photos / "zz_fixed.png")
    noise_image(900).save(good)
    fixed = good.read_bytes()
    good.write_bytes(b"\0" * len(fixed))  # skipped as "not an image"
    db = tmp_path / "index.db"
    with PhotoIndex(db, str(tiny_siglip[0]), create=True) as index:
        index.build_on_ray([photos], workers=1, batch_size=2)
        assert [s.path for s in index.errors()] == [str(good)]
        write_images(photos, 3, start=100)  # added
        shutil.copy(files[4], photos / "zz_copy.png")  # files[4]'s content under a new name, as files[4] changes:
        for path in [*files[:2], files[4]]:  # changed    its content may leave the index before the copy is stored
            noise_image(500 + files.index(path)).save(path)
        for path in files[2:4]:  # deleted
            path.unlink()
        mtime = good.stat().st_mtime_ns
        good.write_bytes(fixed)  # mended with the same size and mtime: only its ctime tells
        os.utime(good, ns=(mtime, mtime))
        summary = index.build_on_ray([photos], workers=1, batch_size=2)
        assert index.errors() == []
    assert (summary.added, summary.updated, summary.removed, summary.unchanged) == (5, 3, 2, 35)
    # 3 added, 3 changed, the mended file, and the copy: stored after files[4] (shards arrive in file order), its
    # content had left the index, so the driver read and encoded it again
    assert summary.encoded == 8
    vectors, _ = _state(db)
    assert len(vectors) == 43
    with PhotoIndex(tmp_path / "local.db", str(tiny_siglip[0]), create=True) as local:
        local.build([photos], workers=0)
    for path, vector in _state(tmp_path / "local.db")[0].items():
        np.testing.assert_allclose(vectors[path], vector, atol=1e-5)


def test_a_worker_node_lost_mid_job_still_stores_every_file_once(cluster, tiny_siglip, tmp_path):
    node = cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK)
    cluster.wait_for_nodes()
    photos = tmp_path / "photos"
    files = write_images(photos, 96)
    removed = []

    def remove_a_node(progress) -> None:
        if not removed and progress.done >= 8:
            cluster.remove_node(node)  # its tasks, actor or objects are lost; Ray retries and restarts them
            removed.append(progress.done)

    with PhotoIndex(tmp_path / "index.db", str(tiny_siglip[0]), create=True) as index:
        summary = index.build_on_ray([photos], workers=1, batch_size=8, progress=remove_a_node)
    assert removed and removed[0] < 96, "the node was not removed while the job ran"
    assert summary.added == summary.encoded == 96
    vectors, _ = _state(tmp_path / "index.db")
    assert sorted(vectors) == sorted(map(str, files))
    held = [path for path, _, _ in _shards(tmp_path / "index.db").finished()]
    assert sorted(held) == sorted(map(str, files))


def _cli(*args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("VLM_INDEX_FAULT", None)
    if fault:
        env["VLM_INDEX_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "vlm_vision.index", "build", "--engine", "ray", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def test_driver_killed_mid_job_then_rerun_takes_the_finished_shards(cluster, tiny_siglip, tmp_path):
    photos = tmp_path / "photos"
    files = write_images(photos, 64)
    args = [str(photos), "--db", str(tmp_path / "index.db"), "--model", str(tiny_siglip[0]), "--address",
            cluster.address, "--workers", "1", "--batch-size", "8"]
    killed = _cli(*args, fault="shard:3:kill")  # SIGKILL in the driver after it stored its third shard
    assert killed.returncode == -9, killed.stderr
    with PhotoIndex(tmp_path / "index.db") as index:
        stored = index.db.count("files")
    written = len(_shards(tmp_path / "index.db").finished())
    assert stored == 24 and written >= stored

    again = _cli(*args)
    assert again.returncode == 0, again.stderr
    resumed = written - stored
    assert f"{64 - written} images encoded" in again.stdout
    assert (f"{resumed} files were taken from the shards of an earlier run" in again.stdout) == (resumed > 0)
    assert "24 unchanged" in again.stdout
    vectors, _ = _state(tmp_path / "index.db")
    assert sorted(vectors) == sorted(map(str, files))
    held = [path for path, _, _ in _shards(tmp_path / "index.db").finished()]
    assert sorted(held) == sorted(map(str, files))  # no shard lost or written twice


def test_a_damaged_shard_is_dropped_and_its_files_encoded_again(tiny_siglip, tmp_path):
    """Without a cluster: a Ray instance of this machine (the driver: a subprocess, on loopback)."""
    photos = tmp_path / "photos"
    write_images(photos, 12)
    db = tmp_path / "index.db"
    args = [str(photos), "--db", str(db), "--model", str(tiny_siglip[0]), "--batch-size", "4"]
    assert _cli(*args, fault="shard:1:kill").returncode == -9
    shards = _shards(db)
    for path in Path(shards.root).glob("shard-*.parquet"):  # every shard torn: no Parquet footer
        path.write_bytes(path.read_bytes()[:100])
    (Path(shards.root) / "shard-x.parquet.1234.tmp").write_bytes(b"partial")
    done = _cli(*args)
    assert done.returncode == 0, done.stderr
    assert "8 images encoded" in done.stdout and "4 unchanged" in done.stdout  # the first shard was stored
    with PhotoIndex(db) as index:
        assert index.db.count("files") == 12
        assert index.stats().last_build["nodes"] == [LOOPBACK]
    assert not list(Path(shards.root).glob("*.tmp"))


def test_listings_of_paths_and_uris(cluster, tiny_siglip, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    photos = tmp_path / "photos"
    files = write_images(photos, 6)
    listing = tmp_path / "list.parquet"
    rows = [files[0].as_uri(), str(files[1]), os.path.relpath(files[2], tmp_path), str(tmp_path / "missing.png"),
            str(tmp_path / "list.parquet")]
    pq.write_table(pa.table({"path": rows}), listing)
    (tmp_path / "list.txt").write_text(f"# comment\n{files[3]}\n\n")
    with PhotoIndex(tmp_path / "index.db", str(tiny_siglip[0]), create=True) as index:
        summary = index.build_on_ray([listing, tmp_path / "list.txt", photos.as_uri() + "/"], workers=1)
        stored = {f.path for f in (index.db.indexed_file(p) for p in [files[0].as_uri(), str(files[1])]) if f}
        reasons = {s.path: s.reason for s in index.errors()}
        hit = index.search(image=files[5], k=1)[0]
        # The database's own folder holds the files it stores by relative path, not the URIs: a build of that
        # folder alone must not take them for deleted files
        assert sorted(index.db.file_states([str(tmp_path)])) == sorted(map(str, files[1:4]))
    assert (summary.added, summary.reused) == (6, 3)  # files[:4] by their paths, files[0] by its URI once more
    assert stored == {files[0].as_uri(), str(files[1])}
    assert reasons == {str(tmp_path / "missing.png"): "listed, but not found",
                       str(tmp_path / "list.parquet"): "not an image file name (listed)"}
    assert hit.score == pytest.approx(1, abs=1e-5)
    with pytest.raises(FileNotFoundError, match="No such folder or listing"):
        distributed.list_sources([tmp_path / "nowhere"])
    with pytest.raises(FileNotFoundError, match="Not a folder, nor a listing"):
        distributed.list_sources([files[0]])


def test_merged_ivf_equals_one_add_and_finds_the_true_neighbours(cluster, monkeypatch):
    vectors = clustered(20_000, seed=0)
    ids = np.arange(20_000, dtype=np.int64) * 7 + 3
    queries = clustered(200, seed=2)
    monkeypatch.setattr(distributed, "ADD_PART_MIN_VECTORS", 5_000)  # three parts: one per CPU of the cluster
    # "ivf": "auto" builds exact flat up to 50,000 768-d vectors, and the photo build hands IVF's fill to Ray only
    merged = ann.build_ann(vectors, ids, "ivf", add_parts=distributed.add_parts_on_ray)
    single = ann.build_ann(vectors, ids, "ivf")
    assert ann.index_type_of(merged) == "ivf" and merged.ntotal == 20_000
    scores, found = ann.search_ann(merged, queries, 10)
    single_scores, single_found = ann.search_ann(single, queries, 10)
    np.testing.assert_array_equal(found, single_found)
    np.testing.assert_allclose(scores, single_scores, atol=1e-6)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    recall = np.mean([len(set(ids[e]) & set(f)) / 10 for e, f in zip(exact, found)])
    assert recall >= 0.95, recall


def test_gpu_actors_from_a_head_without_a_gpu_need_gpus_in_the_cluster(cluster, tiny_siglip, tmp_path):
    write_images(tmp_path / "photos", 2)
    with PhotoIndex(tmp_path / "index.db", str(tiny_siglip[0]), device="cuda", create=True) as index:
        with pytest.raises(ValueError, match="the Ray cluster has no GPU"):  # not a CUDA error from this process
            index.build_on_ray([tmp_path / "photos"])


def test_a_cluster_of_several_machines_needs_a_shared_shard_folder(tiny_siglip, tmp_path, monkeypatch):
    @contextlib.contextmanager
    def two_machines(address, num_cpus=None):
        yield ["10.0.0.1", "10.0.0.2"]

    monkeypatch.setattr(distributed, "ray_session", two_machines)
    write_images(tmp_path / "photos", 2)
    with PhotoIndex(tmp_path / "index.db", str(tiny_siglip[0]), create=True) as index:
        with pytest.raises(ValueError, match="give --shards a folder or URI that every node"):
            index.build_on_ray([tmp_path / "photos"], address="auto")


def test_missing_sources_and_no_ray_are_clear_errors(tmp_path, monkeypatch, capsys):
    from vlm_vision.index.__main__ import main

    assert main(["build", "--engine", "ray", str(tmp_path / "gone"), "--db", str(tmp_path / "x.db")]) == 1
    assert "No such folder or listing" in capsys.readouterr().err
    (tmp_path / "list.txt").write_text("a.png\n")
    assert main(["build", str(tmp_path / "list.txt"), "--db", str(tmp_path / "x.db")]) == 1
    assert "read by --engine ray" in capsys.readouterr().err

    def no_cluster(**kwargs):
        raise ConnectionError("Could not find any running Ray instance.")  # what ray.init raises for "auto"

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", no_cluster)
    with pytest.raises(ValueError, match="Can't reach a Ray cluster at 'auto'.*ray start --head"):
        with distributed.ray_session("auto"):
            pass
    (tmp_path / "bad.csv").write_text("file\na.png\n")
    with pytest.raises(ValueError, match="no column 'path'"):
        distributed.list_sources([tmp_path / "bad.csv"])
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"vlm-vision\[ray\]"):
        distributed._import_ray()
