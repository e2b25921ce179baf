"""The app in a real browser: headless Chromium (Debian's package) driven by Playwright, no download.

`.ci/run` installs `chromium`; where it is missing locally the tests skip, but in
CI (CI=true) they fail instead, so they can't silently stop running. Screenshots
go to $SCREENSHOT_DIR (the README's come from `SCREENSHOT_DIR=app/screenshots`),
else to the test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from tests.helpers.photos import SAMPLES

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if os.environ.get("CI") != "true":  # in CI a missing browser is a failure, not a skip
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install chromium); CI installs it", allow_module_level=True)
    pytest.importorskip("playwright")

from playwright import sync_api  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from vlm_vision.app.__main__ import launch_options
    from vlm_vision.app.backend import Backend
    from vlm_vision.app.ui import build_demo
    from vlm_vision.index import PhotoIndex

    db = tmp_path_factory.mktemp("browser") / "samples.db"
    with PhotoIndex(db, create=True) as index:
        index.build([SAMPLES], workers=0)
    backend = Backend(db)
    demo = build_demo(backend=backend)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.queue().launch(prevent_thread_lock=True, quiet=True, **launch_options(backend, "127.0.0.1", port))
    yield f"http://127.0.0.1:{port}"
    demo.close()
    backend.close()


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox can't start.
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(server)
                   or route.request.url.startswith("data:") else route.abort())  # no test reaches the network
        page.goto(server)
        page.wait_for_selector("#query textarea", timeout=60_000)
        yield page
        browser.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def result_captions(page) -> list[str]:
    """The gallery's captions, best first: "0.477  red_apple.png", ..."""
    lines = page.locator("#results").inner_text().splitlines()
    return [line.strip() for line in lines if line.strip().endswith(".png")]


def test_search_shows_the_apple_first(page, screenshots):
    page.fill("#query textarea", "red apple")
    page.click("#search-button")
    first = page.locator("#results button img").first
    first.wait_for(timeout=30_000)
    captions = result_captions(page)
    assert captions[0].endswith("red_apple.png"), captions
    assert len(captions) == 12, captions  # the empty minimum score is no minimum (ten of these scores are < 0)
    page.wait_for_timeout(500)  # let thumbnails paint
    page.screenshot(path=str(screenshots / "search.png"), full_page=True, animations="disabled")
    assert (screenshots / "search.png").stat().st_size > 10_000


def test_minimum_score_keeps_only_the_close_matches(page):
    page.get_by_role("tab", name="Search").click()
    page.get_by_text("More ways to search").click()
    page.fill("#min-score input", "0.3")  # red apple scores about 0.48 for "red apple", the next about 0.06
    page.fill("#query textarea", "red apple")
    page.click("#search-button")
    page.wait_for_function("document.querySelectorAll('#results button img').length == 1", timeout=30_000)
    assert [c.split()[-1] for c in result_captions(page)] == ["red_apple.png"]
    page.fill("#min-score input", "")
    page.get_by_text("More ways to search").click()  # closed again, as the other tests found it


def upload_and_run(page, tab: str, prefix: str, image: Path) -> None:
    """Open `tab`, upload `image` into #<prefix>-image, wait for its preview, press #<prefix>-button."""
    page.get_by_role("tab", name=tab).click()
    page.locator(f"#{prefix}-image input[type=file]").set_input_files(str(image))
    page.locator(f"#{prefix}-image img").first.wait_for(timeout=30_000)
    page.click(f"#{prefix}-button")


def test_classify_puts_the_right_label_on_top(page, screenshots):
    upload_and_run(page, "Classify", "classify", SAMPLES / "pizza.png")
    page.locator("#classify-heatmap img").first.wait_for(timeout=30_000)
    top = page.locator("#probabilities h2, #probabilities .output-class").first.inner_text()
    text = page.locator("#probabilities").inner_text()
    assert top.strip() == "pizza", text
    percents = [int(word[:-1]) for word in text.split() if word.endswith("%")]
    # The upload reached the model as uploaded, transparency onto white: 99% (onto black it would be 0.003%).
    assert percents[0] >= 10, text
    page.screenshot(path=str(screenshots / "classify.png"), full_page=True, animations="disabled")
    assert (screenshots / "classify.png").stat().st_size > 10_000


def test_describe_names_the_emoji(page, screenshots):
    upload_and_run(page, "Describe", "describe", SAMPLES / "pizza.png")
    page.wait_for_function("document.querySelector('#description textarea').value.length > 0", timeout=60_000)
    assert page.locator("#description textarea").input_value() == "pizza"
    page.screenshot(path=str(screenshots / "describe.png"), full_page=True, animations="disabled")


def test_index_a_folder_then_remove_it_from_the_index(page, tmp_path):
    from tests.helpers.photos import write_images

    write_images(tmp_path / "trip", 2)
    page.get_by_role("tab", name="Search").click()
    page.get_by_text("Index a folder").click()
    page.fill("#folder textarea", str(tmp_path / "trip"))
    page.click("#build-button")
    page.get_by_text("2 added").wait_for(timeout=60_000)
    assert "14 images" in page.locator("#status").inner_text()  # the 12 samples and the trip
    page.click("#forget-button")
    page.get_by_text(f"Removed 2 images and 0 skip records under {tmp_path / 'trip'}").wait_for(timeout=30_000)
    assert "12 images" in page.locator("#status").inner_text()
