"""trim_border: flat margins go, the picture stays; bounded so a pale object on its own colour is not eaten."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from skimage import data

from model.transforms import TRIM_MAX_SIDE, trim_border


def product(size: tuple[int, int] = (200, 150)) -> Image.Image:
    """A real photo standing in for a product shot."""
    return Image.fromarray(data.coffee()).convert("RGB").resize(size)


def on_canvas(
    img: Image.Image, canvas: tuple[int, int], at: tuple[int, int], colour: tuple[int, int, int] = (255, 255, 255)
) -> Image.Image:
    """`img` pasted at `at` on a flat canvas."""
    out = Image.new("RGB", canvas, colour)
    out.paste(img, at)
    return out


def test_a_product_on_a_white_canvas_is_cropped_to_it_with_a_margin() -> None:
    trimmed = trim_border(on_canvas(product(), (600, 500), (200, 170)))
    # The object is 200x150; the margin keeps ~4% of it around, never cutting into it.
    assert 200 <= trimmed.width <= 200 * 1.2 and 150 <= trimmed.height <= 150 * 1.2
    inner = np.asarray(trimmed, dtype=np.int16)
    assert (inner[0] > 240).all() and (inner[:, 0] > 240).all()  # the kept margin is canvas


def test_a_photo_without_margins_is_returned_as_is() -> None:
    photo = Image.fromarray(data.astronaut()).convert("RGB")
    assert trim_border(photo) is photo


def test_a_screenshot_frame_is_removed_on_every_side() -> None:
    shot = on_canvas(product((300, 200)), (360, 300), (30, 60), colour=(40, 40, 48))
    trimmed = trim_border(shot)
    assert 300 <= trimmed.width < 330 and 200 <= trimmed.height < 230


def test_letterbox_bars_go_but_the_sides_touching_the_picture_stay() -> None:
    wide = product((400, 200))
    boxed = on_canvas(wide, (400, 300), (0, 50), colour=(0, 0, 0))
    trimmed = trim_border(boxed)
    assert trimmed.width == 400 and 200 <= trimmed.height < 220


def test_a_faint_white_object_on_white_is_not_eaten() -> None:
    canvas = Image.new("RGB", (400, 400), (255, 255, 255))
    ImageDraw.Draw(canvas).ellipse((120, 120, 280, 280), fill=(246, 246, 244))  # a white mug, barely visible
    assert trim_border(canvas.filter(ImageFilter.GaussianBlur(1))).size == (400, 400)


def test_never_more_than_the_bound_per_side() -> None:
    corner = on_canvas(product((40, 30)), (800, 600), (740, 550))  # a tiny object in the far corner
    trimmed = trim_border(corner)
    assert trimmed.width >= 800 * (1 - TRIM_MAX_SIDE) - 1 and trimmed.height >= 600 * (1 - TRIM_MAX_SIDE) - 1
