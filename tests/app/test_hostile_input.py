"""Hostile input through the launched app (issue 32, part 5): every upload and text below gets a result or a clear
message, the server stays up, memory stays bounded, and nothing is written outside the app's own caches."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from tests.app.test_app import free_port
from tests.helpers.images import photo
from tests.helpers.photos import SAMPLES
from vlm_vision.app.backend import Backend
from vlm_vision.index import PhotoIndex

# What an upload may get back: a result, or one of these messages (never a traceback or a bare "Error").
MESSAGES = ("can't be read as an image", "can't be used as an image", "decompression bomb", "truncated or corrupt",
            "not an image", "labels is too many", "at least one label", "Type what to look for", "too large",
            "exceeds the maximum")


def hostile_files(folder: Path) -> dict[str, Path]:
    """Each hostile upload of the issue, written into `folder`."""
    folder.mkdir()
    files = {}

    def add(name: str, filename: str) -> Path:
        files[name] = folder / filename
        return files[name]

    Image.new("1", (12_000, 12_000)).save(add("decompression bomb (144 MP PNG, 17 KB)", "bomb.png"))
    photo(400, 300).save(buffer := add("truncated JPEG", "truncated.jpg"), "JPEG", quality=90)
    buffer.write_bytes(buffer.read_bytes()[: buffer.stat().st_size // 2])
    add("50 MB of random bytes", "random.jpg").write_bytes(np.random.default_rng(0).bytes(50 * 2**20))
    add("a text file named .png", "text.png").write_text("hello, I am not an image\n" * 100)
    add("an SVG", "drawing.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
                                            '<rect width="10" height="10" fill="red"/></svg>')
    frames = [photo(64, 48, seed=i) for i in range(3)]
    frames[0].save(add("an animated GIF", "animated.gif"), save_all=True, append_images=frames[1:], duration=100)
    sixteen = (np.asarray(photo(64, 48).convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(sixteen).save(add("a 16-bit PNG", "sixteen.png"))
    photo(64, 48).convert("CMYK").save(add("a CMYK JPEG", "cmyk.jpg"), "JPEG")
    photo(1, 10_000).save(add("an image of 1 x 10,000 pixels", "sliver.png"))
    return files


TEXTS = {"empty": "", "10,000 characters": "cat " * 2500, "control characters": "\x00\x07\x1b[31mcat\x08\r\n\x7f",
         "1,000 comma-separated terms": ",".join(f"thing{i}" for i in range(1000))}


class PeakMemory:
    """The process's largest RSS above its RSS at start, sampled every 5 ms in a thread while the block runs."""

    def __enter__(self) -> PeakMemory:
        self.process, self.stop = psutil.Process(), threading.Event()
        self.start, self.peak = self.process.memory_info().rss, 0
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss - self.start)

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """(url, photos folder, index path, backend) of the launched app over an index of the samples."""
    from vlm_vision.app.__main__ import launch_options
    from vlm_vision.app.ui import build_demo

    root = tmp_path_factory.mktemp("hostile")
    shutil.copytree(SAMPLES, root / "photos", ignore=shutil.ignore_patterns("*.md", "*.txt"))
    db = root / "index" / "index.db"
    with PhotoIndex(db, create=True) as index:
        index.build([root / "photos"], workers=0)
    backend = Backend(db, dtype="float32")
    demo = build_demo(backend=backend)
    port = free_port()
    demo.queue().launch(prevent_thread_lock=True, quiet=True, **launch_options(backend, "127.0.0.1", port))
    yield f"http://127.0.0.1:{port}", root / "photos", db, backend
    demo.close()
    backend.close()


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def outcome(call) -> str:
    try:
        call()
        return "result"
    except Exception as e:  # noqa: BLE001 - gradio_client raises AppError with the page's message
        return str(e)


def ask_everything(client, files: dict[str, Path], outcomes: dict[str, str]) -> None:
    """Each file as a classify upload and as an image query, and each text as labels and as a query."""
    from gradio_client import handle_file

    for name, path in files.items():
        outcomes[f"classify: {name}"] = outcome(lambda: client.predict(
            handle_file(str(path)), "pizza, rocket", "{}", api_name="/classify"))
        outcomes[f"image search: {name}"] = outcome(lambda: client.predict(
            "", handle_file(str(path)), "", 3, "", "", "", "", None, api_name="/search"))
    for name, text in TEXTS.items():
        outcomes[f"labels {name}"] = outcome(lambda: client.predict(
            handle_file(str(SAMPLES / "pizza.png")), text, "{}", api_name="/classify"))
        outcomes[f"query {name}"] = outcome(lambda: client.predict(
            text, None, "", 3, "", "", "", "", None, api_name="/search"))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Gradio opens the bomb to check it
def test_every_hostile_input_gets_a_result_or_a_clear_message(app, tmp_path):
    from gradio_client import Client, handle_file

    url, photos, db, backend = app
    client = Client(url, verbose=False)
    files = hostile_files(tmp_path / "uploads")
    photos_before, index_before, cwd_before = tree(photos), tree(db.parent), set(os.listdir("."))
    outcomes = {}
    with PeakMemory() as memory:
        ask_everything(client, files, outcomes)
    print("\n".join(f"{k}: {v}" for k, v in outcomes.items()))
    print(f"peak RSS above the start: {memory.peak / 2**20:.0f} MB")


    for name, got in outcomes.items():
        assert got == "result" or any(m in got for m in MESSAGES), (name, got)
        assert "Traceback" not in got, name
    for valid in ("an animated GIF", "a 16-bit PNG", "a CMYK JPEG", "an image of 1 x 10,000 pixels"):
        assert outcomes[f"classify: {valid}"] == "result" and outcomes[f"image search: {valid}"] == "result"
    for refused in ("decompression bomb (144 MP PNG, 17 KB)", "truncated JPEG", "50 MB of random bytes",
                    "a text file named .png", "an SVG"):
        assert outcomes[f"classify: {refused}"] != "result", refused
    assert outcomes["labels empty"] != "result" and outcomes["query empty"] != "result"
    assert outcomes["labels 1,000 comma-separated terms"] != "result"  # more labels than the app scores

    # The server is still up and right; memory grew by less than a decoded bomb; nothing was written outside the
    # app's caches (Gradio's upload folder, and the thumbnails beside the index).
    result, _ = client.predict(handle_file(str(SAMPLES / "pizza.png")), "pizza, rocket", "{}", api_name="/classify")
    assert result["label"] == "pizza"
    assert memory.peak < 400 * 2**20  # a decoded 144 MP bomb alone would take 432 MB in RGB
    assert tree(photos) == photos_before and set(os.listdir(".")) == cwd_before
    assert {p for p in tree(db.parent) - index_before if not p.startswith(db.name + ".thumbnails")} == set()
