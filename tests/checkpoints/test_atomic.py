"""replace_atomically: how checkpoints, safetensors, write_json's JSON, the FAISS file and thumbnails are written."""

import json
import stat

import pytest

from vlm_vision.checkpoints import write_json
from vlm_vision.checkpoints.atomic import replace_atomically


def mode_of(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("durable", [False, True])
def test_writes_the_new_contents_with_the_umask_mode(tmp_path, umask_022, durable):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")
    path.chmod(0o600)
    replace_atomically(path, lambda f: f.write(b"new"), durable=durable)
    assert path.read_bytes() == b"new"
    assert mode_of(path) == 0o644  # the umask's, not the old file's
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_mode_can_be_owner_only(tmp_path, umask_022):
    path = tmp_path / "thumb.jpg"
    replace_atomically(path, lambda f: f.write(b"jpeg"), mode=0o600)
    assert mode_of(path) == 0o600


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"old")

    def write(f):
        f.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_atomically(path, write)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_racing_writers_each_write_a_whole_file(tmp_path):
    path = tmp_path / "index.faiss"

    def outer(f):
        f.write(b"outer, ")
        # A second writer starts and finishes while the first is half way: with a shared
        # temporary name the two would write into one file.
        replace_atomically(path, lambda g: g.write(b"inner"))
        assert path.read_bytes() == b"inner"
        f.write(b"whole")

    replace_atomically(path, outer)
    assert path.read_bytes() == b"outer, whole"  # the last rename wins
    assert [p.name for p in tmp_path.iterdir()] == ["index.faiss"]


def test_write_json_replaces_the_file_and_a_bad_value_keeps_the_old_one(tmp_path):
    path = tmp_path / "config.json"
    write_json(path, {"b": 1, "a": [2, 3]})
    assert path.read_text() == '{\n  "a": [\n    2,\n    3\n  ],\n  "b": 1\n}\n'  # sorted, as transformers writes
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": [2, 3], "b": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
