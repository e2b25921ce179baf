"""The Gradio app: the backend's results and messages, and the launched server through gradio_client."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.helpers.photos import SAMPLES, noise_image, record_open_image, write_images
from vlm_vision.app.backend import Backend, UserError, split_labels
from vlm_vision.index import PhotoIndex


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """An indexed copy of the samples plus a few other images, the index kept beside them."""
    folder = tmp_path_factory.mktemp("app") / "photos"
    shutil.copytree(SAMPLES, folder / "emoji", ignore=shutil.ignore_patterns("*.md", "*.txt"))
    write_images(folder / "noise", 3)
    db = folder / ".index.db"
    with PhotoIndex(db, create=True) as index:
        index.build([folder], workers=0)
    return folder, db


@pytest.fixture(scope="module")
def backend(photos):
    backend = Backend(photos[1], dtype="float32")  # exact: its answers equal Python's to 1e-5 on every CPU
    yield backend
    backend.close()


def test_the_model_takes_the_dtype_asked_for_and_auto_by_default(photos, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)  # an AVX2 CPU: auto is float32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    for dtype, expected in (("auto", torch.float32), ("bfloat16", torch.bfloat16)):
        for index in (photos[1], None):  # the index's model, and the model alone
            backend = Backend(index, dtype=dtype)
            try:
                assert backend.model.vision.dtype == expected
            finally:
                backend.close()


def test_split_labels():
    assert split_labels("cat, dog\nred apple,, cat\n ") == ["cat", "dog", "red apple"]


def test_search_finds_the_emoji_and_makes_thumbnails(backend, photos):
    results = backend.search("red apple", k=3)
    assert Path(results[0].path).name == "red_apple.png"
    thumbnail = Image.open(results[0].thumbnail)
    assert max(thumbnail.size) <= 320 and results[0].thumbnail.startswith(str(backend.thumbnails.folder))
    again = backend.search("red apple", k=3)
    assert [r.thumbnail for r in again] == [r.thumbnail for r in results]  # cached, not remade
    similar = backend.search(image=str(photos[0] / "emoji" / "pizza.png"), k=2)
    assert Path(similar[0].path).name == "pizza.png" and similar[0].score == pytest.approx(1, abs=1e-5)
    only_noise = backend.search("red apple", k=5, under=str(photos[0] / "noise"))
    assert len(only_noise) == 3 and all("/noise/" in r.path for r in only_noise)
    assert backend.search("red apple", since="2024", until="2024-06-30") == []  # the PNGs have no date taken
    assert backend.search("red apple", camera="pixel") == []


def test_search_drops_results_below_the_minimum_score(backend):
    ranked = backend.search("red apple", k=5)
    cut = (ranked[0].score + ranked[1].score) / 2  # between the first and the second
    assert [r.path for r in backend.search("red apple", k=5, min_score=cut)] == [ranked[0].path]
    assert backend.search("red apple", k=5, min_score=None) == ranked
    assert backend.search("red apple", k=5, min_score=ranked[0].score + 0.01) == []


@pytest.mark.parametrize("sample, label", [("pizza.png", "pizza"), ("rocket.png", "rocket"),
                                           ("red_heart.png", "red heart")])
def test_classify_ranks_the_right_label_first(backend, sample, label):
    probabilities = backend.classify(str(SAMPLES / sample), "red heart, blue heart, pizza, rocket, sun", "{}")
    assert max(probabilities, key=probabilities.get) == label
    assert all(0 <= p <= 1 for p in probabilities.values())


def test_heatmap_is_drawn_over_the_image(backend):
    overlay = backend.heatmap(str(SAMPLES / "rocket.png"))  # a 72 x 72 emoji, drawn at 384 x 384
    original = Image.open(SAMPLES / "rocket.png").convert("RGB").resize(overlay.size)
    assert overlay.mode == "RGB" and overlay.size == (384, 384)
    assert overlay.tobytes() != original.tobytes()


@pytest.mark.parametrize("call, message", [
    (lambda b, tmp: b.classify(str(SAMPLES / "pizza.png"), " , \n", "{}"), "at least one label"),
    (lambda b, tmp: b.classify(str(SAMPLES / "pizza.png"), "cat", "a photo"), "needs {}"),
    (lambda b, tmp: b.classify(str(tmp / "notes.png"), "cat", "{}"), "can't be used as an image"),
    (lambda b, tmp: b.classify(None, "cat", "{}"), "Upload an image"),
    (lambda b, tmp: b.search("   "), "Type what to look for"),
    (lambda b, tmp: b.search("cat", under=str(tmp / "nowhere")), "not a folder"),
    (lambda b, tmp: b.search("cat", since="June"), r"since 'June' is not a date: give a day, month or year"),
    (lambda b, tmp: b.search("cat", since="2024-09", until="2024-08"), "the date range is empty"),
    (lambda b, tmp: b.search("cat", negative="cat"), "cancel out"),
    (lambda b, tmp: b.build(str(tmp / "nowhere")), "not a folder"),
])
def test_bad_input_gets_a_message(backend, tmp_path, call, message):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(UserError, match=message):
        call(backend, tmp_path)


def test_an_index_path_that_is_a_folder_is_a_message(tmp_path):
    folder_backend = Backend(tmp_path)
    try:
        assert "is a folder; the index is a file" in folder_backend.status()
        write_images(tmp_path / "pics", 1)
        with pytest.raises(UserError, match="is a folder; the index is a file"):
            folder_backend.build(str(tmp_path / "pics"))
    finally:
        folder_backend.close()


def test_huge_image_is_refused(backend, tmp_path, monkeypatch):
    import vlm_vision.app.backend

    monkeypatch.setattr(vlm_vision.app.backend, "MAX_UPLOAD_PIXELS", 1000)
    with pytest.raises(UserError, match="decompression bomb"):
        backend.classify(str(SAMPLES / "pizza.png"), "pizza", "{}")


def test_status_and_indexing_a_folder(tmp_path):
    backend = Backend(tmp_path / "new.db")  # no index yet: the page says how to make one
    try:
        assert "Index:** none" in backend.status() and "vlm-index build" in backend.status()
        with pytest.raises(UserError, match="vlm-index build"):
            backend.search("cat")
        write_images(tmp_path / "pics", 4)
        steps = []
        assert backend.build(str(tmp_path / "pics"), lambda f, text: steps.append(f)).startswith("4 added")
        assert steps and steps[-1] == 1.0
        assert "4 images" in backend.status() and len(backend.search("cat", k=10)) == 4
        write_images(tmp_path / "old", 2, start=10)
        backend.build(str(tmp_path / "old"))
        shutil.rmtree(tmp_path / "old")  # retired: its entries stay until removed, shown as grey tiles
        results = backend.search("cat", k=10)
        assert len(results) == 6 and [r.missing for r in results].count(True) == 2
        grey = [r.thumbnail for r in results if r.missing]
        assert grey[0] == grey[1] and Image.open(grey[0]).getpixel((5, 5)) == (200, 200, 200)
        with pytest.raises(UserError, match="Nothing is indexed under"):
            backend.forget(str(tmp_path / "olf"))
        assert backend.forget(str(tmp_path / "old")).startswith("Removed 2 images and 0 skip records")
        assert "4 images" in backend.status() and len(backend.search("cat", k=10)) == 4
        with pytest.raises(UserError, match="Type the full path"):
            backend.forget(" ")
    finally:
        backend.close()


def test_index_of_another_model_is_a_message(tmp_path, tiny_siglip, photos):
    from vlm_vision.index import ModelMismatchError

    with pytest.raises(ModelMismatchError, match="built with model 'default'"):
        Backend(photos[1], tiny_siglip[0])


def test_demo_index_of_an_earlier_embedded_model_is_rebuilt(tmp_path, monkeypatch):
    """Upgrading vlm-vision changes the embedded model; the demo index (a cache) follows, a user's index says so."""
    from dataclasses import replace

    from vlm_vision.app.__main__ import demo_index
    from vlm_vision.index import ModelMismatchError

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    db = demo_index()
    with PhotoIndex(db) as index:  # as if an older vlm-vision's model had built it
        recorded = index.db.model_info()
        index.db.set_model_info(replace(recorded, probe=tuple(-v for v in recorded.probe)))
    user_copy = tmp_path / "mine.db"
    shutil.copyfile(db, user_copy)
    assert demo_index() == db
    with PhotoIndex(db) as index:
        assert index.db.model_info().probe == recorded.probe
        assert Path(index.search("red apple", k=1)[0].path).name == "red_apple.png"
    with PhotoIndex(user_copy) as index, pytest.raises(ModelMismatchError, match="earlier version of model 'default'"):
        index.search("red apple", k=1)


def test_each_copy_of_the_samples_has_its_own_demo_index(tmp_path, monkeypatch):
    """A checkout and an installed wheel share the user's cache: one index for both showed every sample twice."""
    from vlm_vision.app.__main__ import demo_index

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    other = tmp_path / "site-packages" / "samples"
    shutil.copytree(SAMPLES, other)
    first, second = demo_index(), demo_index(other)
    assert first != second and first.parent == second.parent
    for db, folder in ((first, SAMPLES), (second, other)):
        with PhotoIndex(db) as index:
            hits = index.search("red apple", k=20)
            assert [Path(hit.path).parent for hit in hits] == [folder.resolve()] * len(hits) == [folder.resolve()] * 12


@pytest.fixture(scope="module")
def server(backend):
    from vlm_vision.app.__main__ import launch_options
    from vlm_vision.app.ui import build_demo

    demo = build_demo(backend=backend)
    port = free_port()
    demo.queue().launch(prevent_thread_lock=True, quiet=True, **launch_options(backend, "127.0.0.1", port,
                                                                                max_upload_mb=1))
    yield f"http://127.0.0.1:{port}"
    demo.close()


def backend_probability() -> float:
    from vlm_vision.checkpoints import DEFAULT_MODEL
    from vlm_vision.model.dual_encoder import DualEncoder

    return dict(DualEncoder.from_pretrained(DEFAULT_MODEL).classify(
        SAMPLES / "pizza.png", ["pizza", "rocket", "sun"], template="{}"))["pizza"]


def test_gradio_client_search_and_classify(server):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    gallery, _selected = client.predict("red apple", None, "", 3, "", "", "", "", None, api_name="/search")
    assert gallery[0]["caption"].endswith("red_apple.png") and len(gallery) == 3
    best = float(gallery[0]["caption"].split()[0])  # "0.477  red_apple.png"
    above, _ = client.predict("red apple", None, "", 3, "", "", "", "", best - 0.0005, api_name="/search")
    assert [g["caption"] for g in above] == [gallery[0]["caption"]]
    with pytest.raises(Exception, match="until '2024-8-' is not a date"):
        client.predict("red apple", None, "", 3, "", "", "2024-8-", "", None, api_name="/search")
    assert httpx.get(f"{server}/gradio_api/file={gallery[0]['image']}").status_code == 200
    result, heatmap = client.predict(handle_file(str(SAMPLES / "pizza.png")), "pizza, rocket, sun", "{}",
                                     api_name="/classify")
    assert result["label"] == "pizza" and Path(heatmap).is_file()
    # The upload reaches the model as uploaded (transparency onto white): the same probability as in Python.
    confidence = {c["label"]: c["confidence"] for c in result["confidences"]}["pizza"]
    assert confidence == pytest.approx(backend_probability(), abs=1e-5) and confidence > 0.1  # 2e-5 onto black
    with pytest.raises(Exception, match="can't be read as an image"):
        client.predict(handle_file(__file__), "cat", "{}", api_name="/classify")
    with pytest.raises(Exception, match="at least one label"):
        client.predict(handle_file(str(SAMPLES / "pizza.png")), " ", "{}", api_name="/classify")


def test_thumbnail_of_a_camera_jpeg_is_decoded_reduced_and_matches_the_full_decode(tmp_path, monkeypatch):
    import vlm_vision.app.thumbnails as thumbnails
    from vlm_vision.model.processor import load_image

    path = tmp_path / "camera.jpg"
    noise_image(3, size=(400, 300)).resize((4000, 3000), Image.Resampling.BICUBIC).save(path, quality=90)
    decoded = record_open_image(monkeypatch, thumbnails)
    made = thumbnails.ThumbnailCache(tmp_path / "thumbnails").get(str(path), "abc")
    full = load_image(path)
    full.thumbnail((320, 320), Image.Resampling.LANCZOS)
    full.save(tmp_path / "full.jpg", "JPEG", quality=85)  # what the thumbnail was before reduced decoding
    pixels = {name: np.asarray(Image.open(file).convert("RGB"), dtype=int)
              for name, file in (("ours", made), ("before", tmp_path / "full.jpg"))}
    assert decoded[0].size == (1000, 750) and pixels["ours"].shape == (240, 320, 3)
    error = {name: np.abs(p - np.asarray(full, dtype=int)).mean() for name, p in pixels.items()}
    assert error["ours"] <= 1.05 * error["before"], error  # JPEG's own loss dwarfs the reduced decode's (0.45)


def test_only_thumbnails_and_samples_are_served(server, photos):
    folder, db = photos
    for path in ["/etc/passwd", str(db), str(folder / "noise" / "img_0000.png"), str(Path(__file__)),
                 str(Path(__file__).resolve().parents[2] / "pyproject.toml")]:
        response = httpx.get(f"{server}/gradio_api/file={path}")
        assert response.status_code in (403, 404), (path, response.status_code)
    for attempt in ["../../../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd", "..%2f..%2fetc%2fpasswd"]:
        response = httpx.get(f"{server}/gradio_api/file={attempt}")
        assert response.status_code in (403, 404) and "root:" not in response.text, attempt


def test_upload_size_is_bounded(server, tmp_path):
    from gradio_client import Client, handle_file

    big = tmp_path / "big.png"
    Image.effect_noise((1200, 1200), 100).convert("RGB").save(big)  # about 2 MB: over the 1 MB limit
    assert big.stat().st_size > 1_000_000
    with pytest.raises(Exception):
        Client(server, verbose=False).predict(handle_file(str(big)), "cat", "{}", api_name="/classify")


def test_cli_help_and_a_non_local_host_needs_a_login_or_open(capsys, monkeypatch, tmp_path):
    import gradio as gr

    from vlm_vision.app.__main__ import build_parser, main

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    assert "vlm-app" in capsys.readouterr().out
    launched = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: launched.update(kw))
    monkeypatch.delenv("VLM_APP_AUTH", raising=False)
    index = ["--index", str(tmp_path / "none.db"), "--port", "7999"]

    assert main([*index, "--host", "0.0.0.0"]) == 2 and launched == {}  # no login, no --open: not served
    assert "set a login" in capsys.readouterr().err

    assert main([*index, "--host", "0.0.0.0", "--open"]) == 0
    assert list(tmp_path.iterdir()) == []  # no index there: nothing is created beside the path
    assert "WARNING: binding 0.0.0.0" in capsys.readouterr().err and launched["auth"] is None
    assert launched["server_name"] == "0.0.0.0" and launched["share"] is False

    monkeypatch.setenv("VLM_APP_AUTH", "me:from env")
    assert main([*index, "--host", "0.0.0.0"]) == 0 and launched["auth"] == ("me", "from env")
    monkeypatch.delenv("VLM_APP_AUTH")

    secret = tmp_path / "login"
    secret.write_text("me:from a file\n")
    secret.chmod(0o644)
    assert main([*index, "--host", "0.0.0.0", "--auth-file", str(secret)]) == 0
    assert launched["auth"] == ("me", "from a file") and "readable by other users" in capsys.readouterr().err
    secret.write_text("no password")
    assert main([*index, "--auth-file", str(secret)]) == 2 and "must hold USER:PASSWORD" in capsys.readouterr().err
    assert main([*index, "--auth", "me:secret"]) == 2  # refused: it would sit in the shell history
    assert "--auth puts the password in your shell history" in capsys.readouterr().err


def test_a_login_guards_the_api(backend):
    from gradio_client import Client, handle_file

    from vlm_vision.app.__main__ import launch_options
    from vlm_vision.app.ui import build_demo

    demo = build_demo(backend=backend)
    port = free_port()
    demo.queue().launch(prevent_thread_lock=True, quiet=True,
                        **launch_options(backend, "127.0.0.1", port, auth=("me", "pw")))
    try:
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/config").status_code == 401
        with pytest.raises(Exception):
            Client(url, auth=("me", "wrong"), verbose=False)
        client = Client(url, auth=("me", "pw"), verbose=False)
        result, _ = client.predict(handle_file(str(SAMPLES / "pizza.png")), "pizza, rocket", "{}",
                                   api_name="/classify")
        assert result["label"] == "pizza"
    finally:
        demo.close()


def test_cli_index_of_another_model_is_a_message(capsys, photos, tiny_siglip):
    from vlm_vision.app.__main__ import main

    assert main(["--index", str(photos[1]), "--model", str(tiny_siglip[0])]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: This index was built with model 'default'") and "Traceback" not in err


def test_describe_runs_the_captioner_and_explains_when_there_is_none(tmp_path, photos, monkeypatch):
    import vlm_vision.app.backend
    from tests.vlm.test_vlm import tiny_vlm
    from vlm_vision.model.processor import load_image

    vlm = tiny_vlm()
    vlm.prompt = "<image> name:"  # saved with it: the app describes with the prompt the model was trained with
    vlm.save_pretrained(tmp_path / "captioner", save_vision=True, save_language_model=True)
    backend = Backend(photos[1], captioner=tmp_path / "captioner")
    try:
        image = str(SAMPLES / "pizza.png")
        expected = vlm.generate([load_image(image)], "<image> name:", max_new_tokens=16)[0].strip()
        assert backend.describe(image) == expected
        with pytest.raises(UserError, match="can't be used as an image"):
            (tmp_path / "notes.png").write_text("no")
            backend.describe(str(tmp_path / "notes.png"))
    finally:
        backend.close()
    monkeypatch.setattr(vlm_vision.app.backend, "DEFAULT_CAPTIONER", tmp_path / "none")
    without = Backend(photos[1])
    try:
        assert without.captioner_path is None
        with pytest.raises(UserError, match="--captioner"):
            without.describe(str(SAMPLES / "pizza.png"))
    finally:
        without.close()


@pytest.mark.parametrize("mode", ["exact", "int8"])
def test_the_classify_tab_takes_both_answers_from_one_pass(backend, monkeypatch, mode):
    import vlm_vision.app.backend as backend_module

    monkeypatch.setattr(backend_module, "mode_of", lambda model: mode)  # int8: a compiled tower, two passes
    image = str(SAMPLES / "pizza.png")
    probabilities, overlay = backend.classify_and_heatmap(image, "pizza, rocket, sun")
    expected = backend.classify(image, "pizza, rocket, sun")
    assert probabilities.keys() == expected.keys()
    assert all(abs(probabilities[k] - expected[k]) < 1e-5 for k in expected)
    separate = np.asarray(backend.heatmap(image), dtype=int)
    assert overlay.size == backend.heatmap(image).size and np.abs(np.asarray(overlay, dtype=int) - separate).max() <= 1
