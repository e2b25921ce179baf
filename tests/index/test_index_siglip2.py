"""A photo index built with a SigLIP 2 NaFlex model: photos keep their aspect ratio, the index keeps its patch
budget, and the CLI and the app search it. A tiny random `Siglip2Model` built with transformers, offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.images import photo
from vlm_vision.app.backend import Backend
from vlm_vision.explain import pooling_attention
from vlm_vision.index import PhotoIndex
from vlm_vision.index.__main__ import main as index_main
from vlm_vision.model import NaFlexProcessor
from vlm_vision.model.dual_encoder import DualEncoder

SIZES = [(120, 40), (40, 120), (64, 64), (200, 30), (31, 77), (90, 60)]  # (width, height)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_naflex):
    """(photos, db): six photos of different aspect ratios, one a JPEG, built by the CLI with 16 patches each."""
    photos = tmp_path_factory.mktemp("naflex_photos")
    for i, (w, h) in enumerate(SIZES):
        photo(w, h, seed=i).save(photos / f"photo{i}.{'jpg' if i == 5 else 'png'}")
    db = photos.parent / "naflex.db"
    assert index_main(["build", str(photos), "--db", str(db), "--model", str(tiny_naflex[0]), "--max-patches", "16",
                       "--workers", "1", "--batch-size", "4", "--mode", "exact", "--dtype", "float32"]) == 0
    return photos, db


def test_stored_vectors_are_the_models_own_at_the_index_patch_budget(built, tiny_naflex):
    photos, db = built
    model = DualEncoder.from_pretrained(tiny_naflex[0])
    model.processor = NaFlexProcessor(patch_size=8, max_num_patches=16)
    paths = sorted(photos.iterdir())
    expected = model.encode_images(paths).numpy()
    with PhotoIndex(db) as index:
        stored = np.stack([index.db.vector_of(str(p)) for p in paths])
        assert index.db.setting("processor")["max_num_patches"] == 16
    assert np.abs(stored - expected).max() < 1e-5


def test_search_by_image_and_text_through_the_cli(built, tmp_path, capsys):
    photos, db = built
    query = tmp_path / "query.png"  # a copy outside the index: encoded at query time, with the index's budget
    shutil.copy(photos / "photo3.png", query)
    capsys.readouterr()
    assert index_main(["search", "--image", str(query), "--db", str(db), "-k", "3", "--json"]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert hits[0]["path"] == str(photos / "photo3.png") and hits[0]["score"] > 0.9999
    assert index_main(["search", "a photo of a cat", "--db", str(db), "-k", "6", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 6


def test_another_patch_budget_is_refused_and_a_fixed_size_model_has_none(built, tiny_siglip, tmp_path, capsys):
    photos, db = built
    assert index_main(["build", str(photos), "--db", str(db), "--max-patches", "24"]) != 0
    assert "built with max_num_patches 16, not 24" in capsys.readouterr().err
    assert index_main(["build", str(photos), "--db", str(tmp_path / "fixed.db"), "--model", str(tiny_siglip[0]),
                       "--max-patches", "16"]) != 0
    assert "takes whole images at a fixed size" in capsys.readouterr().err


def test_the_app_searches_classifies_and_draws_a_non_square_heatmap(built):
    photos, db = built
    backend = Backend(db, dtype="float32")
    try:
        assert backend.model.processor.max_num_patches == 16  # the index's budget, not the checkpoint's 24
        results = backend.search("a photo of a cat", None, k=6)
        assert sorted(r.path for r in results) == sorted(str(p) for p in photos.iterdir())
        scores = backend.classify(str(photos / "photo0.png"), "cat, dog")
        assert set(scores) == {"cat", "dog"} and all(0 < s < 1 for s in scores.values())
        wide = Image.open(photos / "photo3.png").convert("RGB")  # 200 x 30
        inputs = backend.model.processor([wide])
        grid = pooling_attention(backend.model.vision, inputs)[0]
        assert grid.shape == (2, 8) == tuple(inputs["spatial_shapes"][0])  # 16 patches at about 200:30
        assert float(grid.sum()) == pytest.approx(1, abs=1e-5)
        overlay = backend.heatmap(str(photos / "photo3.png"))
        assert overlay.width / overlay.height == pytest.approx(wide.width / wide.height, rel=0.05)
    finally:
        backend.close()


def test_the_launched_app_searches_a_naflex_index(built):
    from gradio_client import Client, handle_file

    from tests.app.test_app import free_port
    from vlm_vision.app.__main__ import launch_options
    from vlm_vision.app.ui import build_demo

    photos, db = built
    backend = Backend(db, dtype="float32")
    demo = build_demo(backend=backend)
    port = free_port()
    demo.queue().launch(prevent_thread_lock=True, quiet=True, **launch_options(backend, "127.0.0.1", port))
    try:
        client = Client(f"http://127.0.0.1:{port}", verbose=False)
        gallery, _ = client.predict("", handle_file(str(photos / "photo3.png")), "", 3, "", "", "", "", None,
                                    api_name="/search")
        assert gallery[0]["caption"].endswith("photo3.png")  # by its stored vector, at the index's own budget
        result, heatmap = client.predict(handle_file(str(photos / "photo0.png")), "cat, dog", "{}",
                                         api_name="/classify")
        assert {c["label"] for c in result["confidences"]} == {"cat", "dog"} and Path(heatmap).is_file()
    finally:
        demo.close()
        backend.close()
