"""The ops console and the API docs page in a real browser (Debian's headless Chromium, driven by Playwright),
against the real app as the factory wires it: its token check, thumbnails, count and /ready.

Flow of issue 13: log in with the token, add images through the API, find one by upload in the console
(its card, real thumbnail and score), browse its key, delete one image and then the whole key, and see the
count fall; a wrong token, at the prompt or mid-session, brings the prompt back. Along the way: nothing is
requested from another origin, the token never appears in a URL, and no Content-Security-Policy violation
is reported. Screenshots of the main views go to tests/artifacts/. (The README's img/console.png is rendered
with real photos and real weights by tests/screenshot.py, not here: these tests use random weights.)

The only thing the test adds to the app is a recorder (a before_request hook) of what the page sent:
Chromium does not report multipart bodies to Playwright, and the thumbnail requests' headers are checked.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import request
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from tests.conftest import ROOT, LiveService, photo
from tests.procs import CHROMIUM, CHROMIUM_ARGS

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium "
    "(apt-get install chromium; `make test` installs "
    "it where apt-get can); none is installed here",
)

TOKEN = "console-T0ken_42.x"
ARTIFACTS = ROOT / "tests" / "artifacts"
TIMEOUT_MS = 30_000


@dataclass
class Site:
    """The live service (console included) and what the page sent it."""

    live: LiveService
    url: str
    thumb_requests: list[tuple[str, str | None]] = field(default_factory=list)
    search_bodies: list[bytes] = field(default_factory=list)  # what the page sent to search endpoints


def _record(site: Site) -> Callable[[], None]:
    """A before_request hook keeping search bodies and thumbnail requests (the app still answers them)."""

    def record() -> None:
        if request.path.startswith("/api/image/sim/search/"):
            site.search_bodies.append(request.get_data(cache=True))  # cached: the form is parsed from it later
        if request.path.startswith("/api/image/sim/thumb/"):
            site.thumb_requests.append((request.full_path, request.headers.get("token")))

    return record


@pytest.fixture
def site(start_service: Callable[..., LiveService]) -> Site:
    """A token-protected service on Milvus Lite over real HTTP, console and docs served by the app itself."""
    live = start_service(token=TOKEN)
    holder = Site(live, live.base_url)
    live.runtime.app.before_request(_record(holder))  # before its first request, as Flask requires
    return holder


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """The system Chromium, headless (never a downloaded browser build)."""
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Watch:
    """What a page did: every URL it requested, console errors, and the dialogs it opened."""

    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


def open_page(browser: Any, width: int = 1366, height: int = 900) -> tuple[Any, Any, Watch]:
    """A fresh browser context and page that records requests and errors and accepts every confirm()."""
    context = browser.new_context(viewport={"width": width, "height": height}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    watch = Watch()
    page.on("request", lambda req: watch.requests.append(req.url))
    page.on("console", lambda msg: watch.errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: watch.errors.append(f"page error: {exc}"))

    def on_dialog(dialog: Any) -> None:
        watch.dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", on_dialog)
    return context, page, watch


def shot(page: Any, name: str) -> Path:
    """Save a screenshot under tests/artifacts/ (gitignored) and return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def add(site: Site, seed: int, key: str) -> tuple[int, bytes]:
    """Add a photo through the API (which keeps its thumbnail); return its id (from get/key) and bytes."""
    data = photo(seed)
    before = {r["id"] for r in site.live.post("get/key", json={"key": [key]}).json()["data"]}
    answer = site.live.post("add/file", files={"file": (f"photo-{seed}.jpg", data)}, data={"key": key})
    assert answer.status_code == 200, answer.text
    after = {r["id"] for r in site.live.post("get/key", json={"key": [key]}).json()["data"]}
    (record_id,) = after - before
    return record_id, data


# Dispatches a paste (on the document) or a drop (on the drop zone) carrying an image file, as a user's
# Ctrl+V of a screenshot or drag from the file manager would; Chromium's DataTransfer accepts real Files.
SEND_IMAGE_EVENT = """([kind, b64]) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], 'clip.jpg', { type: 'image/jpeg' }));
  if (kind === 'paste') {
    document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: transfer, bubbles: true, cancelable: true }));
  } else {
    const zone = document.querySelector('[data-testid=search-dropzone]');
    zone.dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));
  }
}"""


def assert_clean(site: Site, watch: Watch) -> None:
    """Only our origin was asked for anything, the token was in no URL, and no CSP or script error happened."""
    network = [u for u in watch.requests if u.startswith(("http:", "https:", "ws:", "wss:"))]
    assert network and all(u.startswith(site.url + "/") for u in network), network
    assert not [u for u in watch.requests if TOKEN in u]
    # Chromium logs every non-2xx fetch as "Failed to load resource"; those are expected (401s, 404 thumbs).
    problems = [e for e in watch.errors if "Failed to load resource" not in e]
    assert not problems, problems


def log_in(page: Any, token: str) -> None:
    """Type `token` at the prompt and submit it."""
    page.get_by_test_id("token-input").fill(token)
    page.get_by_test_id("token-submit").click()


def count_chip(page: Any) -> str:
    """The record count the top bar shows."""
    return page.locator("#count-chip").inner_text()


def find_by_upload(page: Any, query: bytes, expected_id: int) -> None:
    """Upload `query` in the Search view; the best card is the stored image with its thumbnail and score 1."""
    page.get_by_test_id("search-file-input").set_input_files(
        {"name": "query.jpg", "mimeType": "image/jpeg", "buffer": query}
    )
    best = page.get_by_test_id("result-card").first
    best.wait_for()
    assert best.get_attribute("data-id") == str(expected_id)
    assert best.get_by_test_id("result-key").inner_text() == "SKU-1001"
    assert best.get_by_test_id("result-filepath").inner_text() == "photo-11.jpg"
    assert float(best.get_by_test_id("result-score").inner_text()) > 0.999
    assert page.get_by_test_id("result-card").count() == 3
    expect(page.locator("[data-testid=thumb].loading")).to_have_count(0)
    # Every card shows its real thumbnail (a decoded 256 px picture), none the placeholder.
    expect(page.get_by_test_id("thumb-img")).to_have_count(3)
    expect(page.get_by_test_id("thumb-placeholder")).to_have_count(0)
    assert best.get_by_test_id("thumb-img").evaluate("img => [img.complete, img.naturalWidth]") == [True, 256]
    shot(page, "console-search")
    best.get_by_test_id("result-key").get_by_role("button").click()


def browse_and_delete(page: Any, site: Site, watch: Watch, first_id: int, second_id: int) -> None:
    """In Browse a key: two images; delete one (count 3 -> 2), then the whole key (count 2 -> 1); each deleted
    record leaves the search results at once."""
    page.get_by_test_id("browse-title").wait_for()
    assert page.get_by_test_id("browse-title").inner_text() == "Key “SKU-1001”: 2 images"
    assert page.get_by_test_id("browse-card").count() == 2
    page.locator("[data-testid=browse-card] [data-testid=thumb-img]").nth(1).wait_for()
    shot(page, "console-browse")

    searches = len(site.search_bodies)
    page.locator(f"[data-testid=browse-card][data-id='{first_id}'] [data-testid=browse-delete-id]").click()
    expect(page.get_by_test_id("browse-card")).to_have_count(1)
    assert f"id {first_id}" in watch.dialogs[-1] and "Delete 1 record" in watch.dialogs[-1]
    assert page.get_by_test_id("browse-message").inner_text() == "Deleted 1 record."
    expect(page.locator("#count-chip")).to_have_text("2")
    # The deleted record left the search results too, at once and without searching again.
    page.get_by_test_id("nav-search").click()
    expect(page.get_by_test_id("result-card")).to_have_count(2)
    expect(page.locator(f"[data-testid=result-card][data-id='{first_id}']")).to_have_count(0)
    expect(page.get_by_test_id("search-message")).to_contain_text("2 results in")
    expect(page.get_by_test_id("search-message")).to_contain_text("(1 deleted since)")
    page.get_by_test_id("nav-browse").click()

    page.get_by_test_id("browse-delete-key").click()
    expect(page.get_by_test_id("browse-card")).to_have_count(0)
    assert "only record" in watch.dialogs[-1] and str(second_id) in watch.dialogs[-1]
    assert "SKU-1001" in watch.dialogs[-1]
    assert page.get_by_test_id("browse-title").inner_text() == "No images are stored under key “SKU-1001”."
    assert site.live.count() == 1
    page.get_by_test_id("nav-search").click()  # the whole key left the results: only SKU-2002 is still shown
    expect(page.get_by_test_id("result-card")).to_have_count(1)
    assert page.get_by_test_id("result-key").inner_text() == "SKU-2002"
    expect(page.get_by_test_id("search-message")).to_contain_text("1 result in")
    assert len(site.search_bodies) == searches


def check_catalog(page: Any) -> None:
    """The Catalog view: the count fell to 1; model, Milvus and batching from /ready; the 中文 toggle."""
    page.get_by_test_id("nav-catalog").click()
    expect(page.get_by_test_id("count-value")).to_have_text("1")
    page.get_by_test_id("ready-name").first.wait_for()
    assert page.get_by_test_id("ready-model").get_by_test_id("ready-name").inner_text() == "resnet50"
    assert page.get_by_test_id("ready-milvus").get_by_test_id("ready-target").inner_text()
    page.get_by_test_id("batching-embed").wait_for()
    assert page.get_by_test_id("ready-status").inner_text() == "Ready"
    shot(page, "console-catalog")
    page.get_by_test_id("lang-toggle").click()
    expect(page.get_by_test_id("nav-catalog")).to_have_text("概览")
    shot(page, "console-catalog-zh")
    page.get_by_test_id("lang-toggle").click()
    expect(page.get_by_test_id("nav-catalog")).to_have_text("Catalog")


@needs_chromium
def test_console_find_browse_delete(site: Site, browser: Any) -> None:
    """Log in, find an image by upload, browse its key, delete one image then the key, watch the count fall."""
    first_id, first = add(site, 11, "SKU-1001")
    second_id, _ = add(site, 12, "SKU-1001")
    add(site, 13, "SKU-2002")
    context, page, watch = open_page(browser)
    try:
        page.goto(f"{site.url}/console")
        log_in(page, TOKEN)
        page.get_by_test_id("nav-search").wait_for()
        assert page.get_by_test_id("login").is_hidden()
        expect(page.locator("#count-chip")).to_have_text("3")
        find_by_upload(page, first, first_id)
        browse_and_delete(page, site, watch, first_id, second_id)
        check_catalog(page)
        assert site.thumb_requests and all(token == TOKEN and TOKEN not in path for path, token in site.thumb_requests)
        assert_clean(site, watch)
    finally:
        context.close()


def revoke(page: Any) -> None:
    """From now on the page's API calls reach the app with another token, as after a revocation: the real
    token check answers them 401. (A single TOKEN cannot be changed while the service runs.)"""

    def swap(route: Any) -> None:
        route.continue_(headers={**route.request.headers, "token": "revoked-" + TOKEN})

    page.route("**/api/image/sim/**", swap)


@needs_chromium
def test_console_wrong_token_shows_prompt(site: Site, browser: Any) -> None:
    """A wrong token is refused at the prompt with the API's message; a 401 mid-session brings the prompt back."""
    context, page, watch = open_page(browser)
    try:
        page.goto(f"{site.url}/console")
        log_in(page, "not-the-token")
        error = page.get_by_test_id("login-error")
        error.wait_for()
        assert "invalid token" in error.inner_text()
        assert page.get_by_test_id("login").is_visible() and page.locator("#app").is_hidden()
        assert page.evaluate("sessionStorage.getItem('imgsim.token')") is None
        shot(page, "console-login-refused")

        log_in(page, TOKEN)
        page.get_by_test_id("nav-search").wait_for()
        assert page.evaluate("sessionStorage.getItem('imgsim.token')") == TOKEN
        assert page.evaluate("localStorage.length") == 0 or page.evaluate(
            "Object.keys(localStorage).every(k => k === 'imgsim.lang')"
        )

        expect(error).to_be_hidden()
        expect(page.locator("#count-chip")).to_have_text("0")  # the console has loaded: rights, then the count
        revoke(page)  # the token stops being valid while the console is open: the next call gets a 401
        page.get_by_test_id("nav-catalog").click()
        expect(error).to_be_visible()
        assert "invalid token" in error.inner_text()
        assert page.locator("#app").is_hidden()
        assert page.evaluate("sessionStorage.getItem('imgsim.token')") is None
        page.unroute("**/api/image/sim/**")

        page.evaluate("sessionStorage.setItem('imgsim.token', 'stale-token')")  # a stale token from earlier
        page.reload()
        expect(error).to_be_visible()
        assert "invalid token" in error.inner_text() and page.locator("#app").is_hidden()
        assert_clean(site, watch)
    finally:
        context.close()


@needs_chromium
def test_console_search_errors_and_options(site: Site, browser: Any) -> None:
    """API messages are shown verbatim; options are sent only when set; a bad filter is caught in the page."""
    _, data = add(site, 21, "SKU-3003")
    context, page, watch = open_page(browser, width=390, height=844)  # a phone: the layout must still work
    try:
        page.goto(f"{site.url}/console")
        log_in(page, TOKEN)
        page.get_by_test_id("search-file-input").set_input_files(
            {"name": "q.jpg", "mimeType": "image/jpeg", "buffer": data}
        )
        page.get_by_test_id("result-card").first.wait_for()
        body = site.search_bodies[-1]
        assert b'name="file"' in body and b"limit" not in body and b"group_by_key" not in body
        assert b"namespace" not in body and b"filter" not in body and b"min_score" not in body
        shot(page, "console-search-phone")

        for event in ("paste", "drop"):  # a pasted screenshot, then a file dragged onto the drop zone
            site.search_bodies.clear()
            page.evaluate(SEND_IMAGE_EVENT, [event, base64.b64encode(data).decode()])
            expect(page.get_by_test_id("search-message")).to_contain_text("1 result in")
            assert b'name="file"' in site.search_bodies[-1]

        page.get_by_test_id("search-limit").fill("0")
        page.get_by_test_id("search-submit").click()
        message = page.get_by_test_id("search-message")
        expect(message).to_have_class(re.compile(r"\bmsg-error\b"))
        expected = site.live.post("search/file", files={"file": ("q.jpg", data)}, data={"limit": "0"}).json()["msg"]
        assert message.inner_text().startswith(expected)

        page.get_by_test_id("search-limit").fill("")
        page.get_by_test_id("search-filter").fill("{not json")
        page.get_by_test_id("search-submit").click()
        expect(message).to_contain_text("must be a JSON object")

        page.get_by_test_id("search-filter").fill("")
        page.get_by_test_id("kind-id").check()
        page.get_by_test_id("search-id").fill("12345")
        page.get_by_test_id("search-submit").click()
        expect(message).to_contain_text("HTTP 4")
        answer = site.live.post("search/id", json={"id": 12345})
        assert message.inner_text().startswith(answer.json()["msg"])  # whatever the service says, verbatim
        assert_clean(site, watch)
    finally:
        context.close()


@needs_chromium
def test_console_search_by_url_and_path(site: Site, browser: Any, image_host: Callable[[bytes], str]) -> None:
    """Search by an image URL and by a path on the shared volume: the stored image comes first, with its thumbnail.
    The box searched is shown as coordinates (the page may not load that picture), and Auto asks for region=auto
    for that query only."""
    record_id, data = add(site, 31, "SKU-4004")
    add(site, 32, "SKU-5005")
    shared = site.live.runtime.settings.image_pool_path / "query.jpg"
    shared.write_bytes(data)
    context, page, watch = open_page(browser)
    try:
        page.goto(f"{site.url}/console")
        log_in(page, TOKEN)
        for kind, value in (("url", image_host(data)), ("path", str(shared))):
            page.get_by_test_id(f"kind-{kind}").check()
            page.get_by_test_id(f"search-{kind}").fill(value)
            page.get_by_test_id("search-submit").click()
            expect(page.get_by_test_id("search-message")).to_contain_text("2 results in")
            best = page.get_by_test_id("result-card").first
            assert best.get_attribute("data-id") == str(record_id), kind
            assert float(best.get_by_test_id("result-score").inner_text()) > 0.999
            best.get_by_test_id("thumb-img").wait_for()
            assert "region" not in json.loads(site.search_bodies[-1])  # Auto on the URL did not stick to the path
            expect(page.get_by_test_id("region-pane")).to_be_visible()
            expect(page.get_by_test_id("region-stage")).to_be_hidden()
            expect(page.get_by_test_id("region-coords")).to_have_text('{"x":0,"y":0,"w":320,"h":240}')
            with page.expect_response(f"**/search/{kind}") as caught:
                page.get_by_test_id("region-auto").click()
            expect(page.get_by_test_id("region-auto")).to_have_attribute("aria-pressed", "true")
            sent = json.loads(site.search_bodies[-1])
            assert sent["region"] == "auto" and sent[kind] == value
            expect(page.get_by_test_id("region-coords")).to_have_text(as_shown(caught.value.json()["region"]))
        assert_clean(site, watch)
    finally:
        context.close()


# The scene of the region test: a room photo (960 x 720) with the catalog's bag photo (320 x 240, 11% of the frame)
# pasted at (600, 420), saved as PNG and as a customer's JPEG.
SCENE_SIZE = (960, 720)
BAG_AT = (600, 420)
BAG_BOX = {"x": 600, "y": 420, "w": 320, "h": 240}


def scene_with(product: bytes, background: bytes, fmt: str) -> bytes:
    """`background` with `product` pasted at BAG_AT, as PNG or as a customer's JPEG (quality 80)."""
    room = Image.open(io.BytesIO(background)).convert("RGB")
    room.paste(Image.open(io.BytesIO(product)).convert("RGB"), BAG_AT)
    buf = io.BytesIO()
    room.save(buf, format=fmt, **({"quality": 80} if fmt == "JPEG" else {}))
    return buf.getvalue()


def add_bytes(site: Site, data: bytes, key: str) -> None:
    """Add `data` under `key` through the API."""
    answer = site.live.post("add/file", files={"file": (f"{key}.jpg", data)}, data={"key": key})
    assert answer.status_code == 200, answer.text


def sent_region(body: bytes) -> str | None:
    """The multipart form field `region` the page sent, as text (None when it sent none)."""
    found = re.search(rb'name="region"\r\n\r\n(.*?)\r\n--', body, re.S)
    return found.group(1).decode() if found else None


def as_shown(box: dict[str, int]) -> str:
    """A box as the pane shows it: compact JSON in the API docs' order x, y, w, h, ready to paste."""
    return json.dumps({k: box[k] for k in ("x", "y", "w", "h")}, separators=(",", ":"))


def shown_box(page: Any) -> dict[str, int]:
    """The box coordinates the pane shows beside the picture (JSON, ready for an API call)."""
    return dict(json.loads(page.get_by_test_id("region-coords").inner_text()))


def ranking(page: Any) -> list[tuple[str, float]]:
    """(key, score) of every result card, best first."""
    cards = page.get_by_test_id("result-card")
    return [
        (card.get_attribute("data-key") or "", float(card.get_by_test_id("result-score").inner_text()))
        for card in cards.all()
    ]


def to_screen(page: Any, x: float, y: float) -> tuple[float, float]:
    """A point in pixels of the (oriented) query image -> page coordinates of the displayed picture."""
    rect = page.get_by_test_id("region-img").bounding_box()
    return rect["x"] + x * rect["width"] / SCENE_SIZE[0], rect["y"] + y * rect["height"] / SCENE_SIZE[1]


def drag(page: Any, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Press the mouse at `start`, move to `end` in steps, release (points in image pixels)."""
    page.mouse.move(*to_screen(page, *start))
    page.mouse.down()
    page.mouse.move(*to_screen(page, *end), steps=8)
    page.mouse.up()


def search_upload(site: Site, page: Any, name: str, mime: str, data: bytes) -> dict[str, Any]:
    """Open the console logged in, search by uploading `data`, and return the search's JSON answer."""
    page.goto(f"{site.url}/console")
    log_in(page, TOKEN)
    page.get_by_test_id("nav-search").wait_for()
    with page.expect_response(lambda r: r.url.endswith("/search/file")) as caught:
        page.get_by_test_id("search-file-input").set_input_files({"name": name, "mimeType": mime, "buffer": data})
    answer: dict[str, Any] = caught.value.json()
    return answer


def near(box: dict[str, int], expected: dict[str, int], slack: int = 3) -> bool:
    """Each coordinate within `slack` image pixels (the mouse lands on displayed pixels, 2 image px each)."""
    return box.keys() == expected.keys() and all(abs(box[k] - expected[k]) <= slack for k in expected)


# The JPEG scene is decoded at a libjpeg draft scale (model/images.py, 960x720 -> 480x360): its region must still
# be in pixels of the full image, else the box lands on the wrong part of the picture.
@needs_chromium
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_console_region_box_drag_reruns_search(site: Site, browser: Any, fmt: str) -> None:
    """A scene photo with a catalog product in one corner: the pane shows the box searched (the answer's region,
    whole image by default); drawing a box, dragging it onto the product and resizing it by a corner reruns the
    search with that box, and the product rises to rank 1; Auto and Whole image (keyboard) send their values."""
    background = photo(60, size=SCENE_SIZE)
    bag = photo(61)
    add_bytes(site, background, "SKU-ROOM")
    add_bytes(site, bag, "SKU-BAG")
    add_bytes(site, photo(62), "SKU-OTHER")
    scene = scene_with(bag, background, fmt)
    context, page, watch = open_page(browser)
    try:
        answer = search_upload(site, page, f"scene.{fmt.lower()}", f"image/{fmt.lower()}", scene)
        whole = {"x": 0, "y": 0, "w": SCENE_SIZE[0], "h": SCENE_SIZE[1]}
        assert answer["region"] == whole  # no region asked: the whole (oriented) image was searched
        assert sent_region(site.search_bodies[-1]) is None  # nothing asked, nothing sent
        expect(page.get_by_test_id("region-box")).to_be_visible()
        assert shown_box(page) == whole
        assert page.get_by_test_id("region-img").evaluate("i => [i.naturalWidth, i.naturalHeight]") == list(SCENE_SIZE)
        # The box covers the displayed picture exactly.
        stage, box = page.get_by_test_id("region-img").bounding_box(), page.get_by_test_id("region-box").bounding_box()
        assert all(abs(stage[k] - box[k]) <= 1 for k in ("x", "y", "width", "height")), (stage, box)
        before = ranking(page)
        assert before[0][0] == "SKU-ROOM", before  # the room outvotes the bag
        bag_before = dict(before)["SKU-BAG"]
        shot(page, f"console-region-whole-{fmt.lower()}")

        steps = [  # draw a box in the empty top-left, drag it onto the bag, then pull its bottom-right corner
            ((40, 40), (300, 240), {"x": 40, "y": 40, "w": 260, "h": 200}),
            ((170, 140), (170 + 560, 140 + 380), {"x": 600, "y": 420, "w": 260, "h": 200}),
            ((860 - 4, 620 - 4), (920 - 4, 660 - 4), BAG_BOX),  # grab the se handle (inside the corner), pull it
        ]
        for start, end, expected in steps:
            searches = len(site.search_bodies)
            with page.expect_response(lambda r: r.url.endswith("/search/file")) as caught:
                drag(page, start, end)
            expect(page.get_by_test_id("search-message")).to_contain_text("results in")
            sent = json.loads(sent_region(site.search_bodies[-1]) or "null")
            assert len(site.search_bodies) == searches + 1 and near(sent, expected), (sent, expected)
            assert caught.value.json()["region"] == sent == shown_box(page)  # the server searched what was sent

        after = ranking(page)
        assert after[0][0] == "SKU-BAG", after  # on the bag alone, the bag comes first
        assert dict(after)["SKU-BAG"] > bag_before
        shot(page, f"console-region-bag-{fmt.lower()}")

        for button, value in (("region-auto", "auto"), ("region-whole", "whole")):
            page.get_by_test_id(button).focus()  # keyboard reachable: focus and Enter
            with page.expect_response(lambda r: r.url.endswith("/search/file")) as caught:
                page.keyboard.press("Enter")
            expect(page.get_by_test_id(button)).to_have_attribute("aria-pressed", "true")
            assert sent_region(site.search_bodies[-1]) == value
            expect(page.get_by_test_id("region-coords")).to_have_text(as_shown(caught.value.json()["region"]))
        assert shown_box(page) == whole

        page.get_by_test_id("region-box").focus()  # keyboard: Shift+Left narrows the box by 1%, Enter searches
        page.keyboard.press("Shift+ArrowLeft")
        narrower = {**whole, "w": SCENE_SIZE[0] - 10}
        assert shown_box(page) == narrower
        with page.expect_response(lambda r: r.url.endswith("/search/file")) as caught:
            page.keyboard.press("Enter")
        assert json.loads(sent_region(site.search_bodies[-1]) or "null") == narrower == caught.value.json()["region"]

        page.get_by_test_id("lang-toggle").click()
        expect(page.get_by_test_id("region-auto")).to_have_text("自动")
        expect(page.get_by_test_id("region-whole")).to_have_text("整张图片")
        page.get_by_test_id("lang-toggle").click()
        assert_clean(site, watch)
    finally:
        context.close()


def turned_jpeg(width: int, height: int) -> bytes:
    """A JPEG stored `width` x `height` whose EXIF orientation 6 turns it a quarter (shown `height` x `width`)."""
    img = Image.open(io.BytesIO(photo(70, size=(width, height)))).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


@needs_chromium
def test_console_region_box_follows_exif_orientation(site: Site, browser: Any) -> None:
    """A phone photo stored sideways with EXIF orientation 6: the browser shows it upright, and the box drawn on
    it is sent and answered in the same (oriented) pixels the service decodes."""
    context, page, watch = open_page(browser)
    try:
        answer = search_upload(site, page, "phone.jpg", "image/jpeg", turned_jpeg(400, 300))
        upright = {"x": 0, "y": 0, "w": 300, "h": 400}
        assert answer["region"] == upright
        expect(page.get_by_test_id("region-box")).to_be_visible()
        assert page.get_by_test_id("region-img").evaluate("i => [i.naturalWidth, i.naturalHeight]") == [300, 400]
        assert shown_box(page) == upright
        rect = page.get_by_test_id("region-img").bounding_box()
        assert rect["height"] > rect["width"]  # shown upright

        def at(x: float, y: float) -> tuple[float, float]:
            return rect["x"] + x * rect["width"] / 300, rect["y"] + y * rect["height"] / 400

        with page.expect_response(lambda r: r.url.endswith("/search/file")) as caught:
            page.mouse.move(*at(30, 200))  # the lower half, upright
            page.mouse.down()
            page.mouse.move(*at(270, 380), steps=5)
            page.mouse.up()
        sent = json.loads(sent_region(site.search_bodies[-1]) or "null")
        assert near(sent, {"x": 30, "y": 200, "w": 240, "h": 180}), sent
        assert caught.value.json()["region"] == sent == shown_box(page)
        assert_clean(site, watch)
    finally:
        context.close()


ADMIN, READER, WRITER = "console-admin-9e2", "console-reader-41d", "console-writer-7c3"


@pytest.fixture
def tenant_site(start_service: Callable[..., LiveService], tmp_path: Path) -> Site:
    """A service with a TOKENS_FILE: an admin token and a read and a write token bound to namespace shop-1."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{ADMIN} * admin\n{READER} shop-1 read\n{WRITER} shop-1 write\n")
    live = start_service(tokens_file=tokens)
    return Site(live, live.base_url)


def add_as_admin(site: Site, seed: int, key: str, namespace: str) -> None:
    """Add a photo to `namespace` with the admin token."""
    answer = site.live.post(
        "add/file",
        headers={"token": ADMIN},
        files={"file": (f"photo-{seed}.jpg", photo(seed))},
        data={"key": key, "namespace": namespace},
    )
    assert answer.status_code == 200, answer.text


def test_whoami_tells_a_token_its_namespace_and_rights(tenant_site: Site, lite_service: LiveService) -> None:
    """GET /api/image/sim/whoami: the calling token's namespace and rights, behind the token check."""
    http, url = tenant_site.live.http, tenant_site.url + "/api/image/sim/whoami"
    for token, expected in (
        (READER, {"namespace": "shop-1", "rights": ["read"]}),
        (WRITER, {"namespace": "shop-1", "rights": ["read", "write"]}),
        (ADMIN, {"namespace": None, "rights": ["read", "write", "admin"]}),
    ):
        answer = http.get(url, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200 and answer.json() == {"code": 200, "msg": "success", "data": expected}
    assert http.get(url).status_code == 401
    assert http.get(url, headers={"token": "not-a-token"}).json()["code"] == 401
    assert http.post(url, headers={"token": READER}).status_code == 405
    opened = lite_service.get("api/image/sim/whoami", headers={})  # no token configured: everyone is an admin
    assert opened.json()["data"] == {"namespace": None, "rights": ["read", "write", "admin"]}


@needs_chromium
def test_console_read_only_token_sees_why_it_cannot_delete(tenant_site: Site, browser: Any) -> None:
    """A read token bound to shop-1 browses its key with every delete control disabled, a note and tooltip saying
    why, and a namespace field it cannot change; a write token of the same namespace gets them enabled."""
    add_as_admin(tenant_site, 41, "SKU-7007", "shop-1")
    add_as_admin(tenant_site, 42, "SKU-7007", "shop-1")
    add_as_admin(tenant_site, 43, "SKU-7007", "shop-2")  # another tenant's record under the same key
    context, page, watch = open_page(browser)
    try:
        page.goto(f"{tenant_site.url}/console")
        page.evaluate("sessionStorage.setItem('imgsim.namespace', 'shop-2')")  # left over from an admin session
        page.reload()
        log_in(page, READER)
        namespace = page.get_by_test_id("namespace-input")
        expect(namespace).to_be_disabled()
        assert namespace.input_value() == "" and namespace.get_attribute("placeholder") == "shop-1"
        bound = "This token is bound to namespace “shop-1” and cannot choose another."
        assert namespace.get_attribute("title") == bound
        expect(page.locator("#count-chip")).to_have_text("2")  # its own namespace, not the stale shop-2
        page.get_by_test_id("nav-browse").click()
        note = page.get_by_test_id("rights-note")
        expect(note).to_have_text("This token has no write right, so it cannot delete records.")
        page.get_by_test_id("browse-key-input").fill("SKU-7007")
        page.get_by_test_id("browse-submit").click()
        expect(page.get_by_test_id("browse-card")).to_have_count(2)
        buttons = [page.get_by_test_id("browse-delete-key"), *page.get_by_test_id("browse-delete-id").all()]
        assert len(buttons) == 3
        for button in buttons:
            expect(button).to_be_disabled()
            assert button.get_attribute("title") == "This token has no write right, so it cannot delete records."
            assert button.get_attribute("aria-describedby") == "rights-note"
            button.click(force=True)  # a click on a disabled button does nothing: no dialog, no request
        assert not watch.dialogs and not [u for u in watch.requests if "/del/" in u]
        shot(page, "console-read-only")
        page.get_by_test_id("lang-toggle").click()
        expect(note).to_have_text("此令牌没有写权限，不能删除记录。")
        assert buttons[1].get_attribute("title") == "此令牌没有写权限，不能删除记录。"
        page.get_by_test_id("lang-toggle").click()

        page.get_by_test_id("logout").click()
        expect(page.get_by_test_id("browse-card")).to_have_count(0)  # a token's records leave with it
        log_in(page, WRITER)
        page.get_by_test_id("nav-browse").wait_for()
        expect(note).to_be_hidden()
        page.get_by_test_id("browse-submit").click()
        expect(page.get_by_test_id("browse-card")).to_have_count(2)
        for button in (page.get_by_test_id("browse-delete-key"), *page.get_by_test_id("browse-delete-id").all()):
            expect(button).to_be_enabled()
            assert button.get_attribute("title") is None
        page.get_by_test_id("browse-delete-key").click()
        expect(page.get_by_test_id("browse-card")).to_have_count(0)
        expect(page.locator("#count-chip")).to_have_text("0")
        other = tenant_site.live.post("count", headers={"token": ADMIN}, json={"namespace": "shop-2"})
        assert other.json()["data"] == 1  # the other tenant's record under the same key stays
        assert_clean(tenant_site, watch)
    finally:
        context.close()


@needs_chromium
def test_docs_page_offline_with_token(site: Site, browser: Any) -> None:
    """/docs renders every operation from /openapi.json with local assets; try-it-out sends the token header."""
    context, page, watch = open_page(browser)
    try:
        page.goto(f"{site.url}/console")
        log_in(page, TOKEN)  # the docs page reuses the console's session token
        page.get_by_test_id("nav-search").wait_for()
        page.goto(f"{site.url}/docs")
        page.locator(".opblock").first.wait_for()
        assert page.locator(".opblock").count() >= 15
        operation = page.locator("#operations-records-count_get")
        operation.locator(".opblock-summary").click()
        operation.get_by_role("button", name="Try it out").click()
        with page.expect_response(lambda r: r.url.endswith("/api/image/sim/count")) as caught:
            operation.get_by_role("button", name="Execute").click()
        response = caught.value
        assert response.status == 200
        assert response.request.headers.get("token") == TOKEN
        shot(page, "docs")
        assert_clean(site, watch)
    finally:
        context.close()


def named_buttons_exist(page: Any, words: Any) -> list[str]:
    """The button names a text tells the user to press (its <em>s); each must be a visible button on the page."""
    names = [em.inner_text().strip() for em in words.locator("em").all()]
    for name in names:
        expect(page.get_by_role("button", name=name, exact=True).first).to_be_visible()
    return names


@needs_chromium
def test_docs_page_asks_for_the_token(site: Site, browser: Any) -> None:
    """Opened directly on a protected service, /docs asks for the token (no error on a first visit), says
    which buttons to press with the names they carry, shows a refused token's error, then the reference."""
    context, page, watch = open_page(browser)
    try:
        page.goto(f"{site.url}/docs")
        page.get_by_test_id("docs-login").wait_for()
        help_text = page.get_by_test_id("docs-login-help")
        expect(help_text).to_be_visible()
        assert page.get_by_test_id("docs-login-error").is_hidden()  # a first visit is not an error
        assert page.get_by_test_id("docs-note").is_hidden()
        body = page.locator("body").inner_text().lower()
        assert "missing token" not in body and "refused" not in body and "error" not in body, body
        assert page.get_by_role("alert").filter(has_text=re.compile(r"\S")).count() == 0
        assert named_buttons_exist(page, help_text) == ["Show the API"]
        shot(page, "docs-first-visit")

        page.get_by_test_id("docs-token").fill("not-the-token")
        page.get_by_role("button", name="Show the API").click()
        error = page.get_by_test_id("docs-login-error")
        expect(error).to_be_visible()
        assert error.inner_text().startswith("The token was refused: invalid token"), error.inner_text()
        assert page.evaluate("sessionStorage.getItem('imgsim.token')") is None

        page.get_by_test_id("docs-token").fill(TOKEN)
        page.get_by_role("button", name="Show the API").click()
        page.locator(".opblock").first.wait_for()
        assert page.get_by_test_id("docs-login").is_hidden()
        note = page.get_by_test_id("docs-note")
        expect(note).to_be_visible()
        assert [em.inner_text() for em in note.locator("em").all()] == ["Try it out", "Execute", "Authorize"]
        expect(page.get_by_role("button", name="Authorize", exact=True).first).to_be_visible()
        operation = page.locator("#operations-records-count_get")
        operation.locator(".opblock-summary").click()  # "open an operation", as the note says
        operation.get_by_role("button", name="Try it out", exact=True).click()
        expect(operation.get_by_role("button", name="Execute", exact=True)).to_be_visible()
        assert_clean(site, watch)
    finally:
        context.close()


def test_console_and_docs_headers(site: Site) -> None:
    """Pages: CSP with no external origin, never cached; assets: a year under their content hash, else revalidated."""
    http = site.live.http
    for page in ("/console", "/docs"):
        answer = http.get(site.url + page)
        assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-cache"
        csp = answer.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self';" in csp and "http" not in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assets = re.findall(r'(?:src|href)="(/(?:console|docs)/[^"]+\?v=[0-9a-f]{12})"', answer.text)
        assert len(assets) >= 2
        linked = re.findall(r'(?:src|href|action)="([^"]*)"', answer.text)
        assert all(link.startswith(("/", "#", "data:")) and not link.startswith("//") for link in linked), linked
        for asset in assets:
            cached = http.get(site.url + asset)
            assert cached.status_code == 200 and "immutable" in cached.headers["Cache-Control"], asset
            stale = http.get(site.url + asset.split("?")[0] + "?v=000000000000")
            assert stale.headers["Cache-Control"] == "no-cache"
    assert http.get(site.url + "/console/static/nothing.js").status_code == 404  # open, but only its own files
    for sneaky in ("/docs/assets/../docs.py", "/docs/assets/%2e%2e%2fdocs.py", "/console/static/..%2fconsole.py"):
        answer = http.get(site.url + sneaky, headers={"token": TOKEN})
        assert answer.status_code == 404 and "import" not in answer.text, sneaky
    assert http.get(site.url + "/docs/docs.py").status_code == 401  # no page there: the token check applies
