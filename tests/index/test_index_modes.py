"""The photo index and its encoder's mode: chosen by `auto` from the job's size, recorded, and mixing announced."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from PIL import Image

from tests.helpers.photos import SAMPLES
from vlm_vision.index import PhotoIndex
from vlm_vision.index import photo_index as photo_index_module
from vlm_vision.index.__main__ import main as index_main

pytest.importorskip("onnxruntime")


def test_the_encoder_is_recorded_and_a_second_one_announced(tmp_path, caplog, capsys):
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLES, photos)
    db = tmp_path / "index.db"
    assert index_main(["build", str(photos), "--db", str(db), "--mode", "onnx", "--workers", "0"]) == 0
    capsys.readouterr()
    assert index_main(["stats", "--db", str(db), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["encoders"] == ["onnx float32"] and stats["last_build"]["encoder"] == "onnx float32"

    Image.open(photos / "pizza.png").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos / "pizza-flipped.png")
    with caplog.at_level(logging.WARNING), PhotoIndex(db, mode="exact", dtype="float32") as index:
        summary = index.build([photos], workers=0)
        assert summary.added == 1
        assert index.stats().encoders == ["onnx float32", "exact float32"]
        assert [h.path for h in index.search("pizza", k=2)] and "pizza" in index.search("pizza", k=1)[0].path
    assert "holds vectors encoded onnx float32; this build adds vectors encoded exact float32" in caplog.text


def test_auto_decides_from_the_number_of_files_to_read(tmp_path, emoji_model, monkeypatch):
    asked = []

    def choose(device, images):
        asked.append(images)
        return "onnx" if images >= 10 else "exact"

    monkeypatch.setattr(photo_index_module, "choose_mode", choose)
    from vlm_vision.model import DualEncoder

    model = DualEncoder.from_pretrained()  # changed in place by the build: not the shared fixture
    with PhotoIndex(tmp_path / "index.db", model, create=True) as index:
        index.build([SAMPLES], workers=0)
        assert asked == [12] and index.stats().encoders == ["onnx float32"]  # ONNX graphs run in float32
        index.build([SAMPLES], workers=0)  # nothing to read: nothing to decide
        assert asked == [12]


def test_an_unknown_mode_is_refused_before_anything_is_built(tmp_path):
    with pytest.raises(ValueError, match="Unknown mode 'turbo'"):
        PhotoIndex(tmp_path / "index.db", mode="turbo", create=True)
    assert not (tmp_path / "index.db").exists()
