"""Pure image transforms: bring an RGB image to the square the model expects; trim flat borders.

These run in the request thread, outside the model's batching queue, so that
decoding and resizing of many requests overlap with inference.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from conf.settings import ResizeMode

# The side of the square image the model sees (both backbones' ImageNet input).
INPUT_SIZE = 224
_WHITE = (255, 255, 255)

# Border trim. A pixel is background when every channel is within TRIM_TOLERANCE of the border
# colour: JPEG ringing on a flat canvas stays within ~10, a light-grey product shadow does not.
TRIM_TOLERANCE = 24
# A side is only trimmed when this share of its outermost line is background (a photo that
# touches the edge keeps that edge).
TRIM_EDGE_SHARE = 0.9
# Never cut more than this share of the width (height) from one side: a faint object on a canvas
# of its own colour (a white mug on white) must not be reduced to a sliver of its shadow.
TRIM_MAX_SIDE = 0.4
# Keep this share of the content box's size around it, so the object keeps some context and a
# small error in the box does not cut into it.
TRIM_MARGIN = 0.04
# Below this share of foreground pixels the content is too faint to locate reliably: no trim.
TRIM_MIN_CONTENT = 0.005
# A row or column holds content when more than this share of its pixels is foreground (isolated
# specks of noise or dust on the canvas do not count).
TRIM_LINE_SHARE = 0.003
# Cuts below this share of a side are not worth a copy of the image.
TRIM_MIN_CUT = 0.01
# The border is located on a copy no larger than this: enough for a 1% decision, cheap to scan.
TRIM_PROBE_SIDE = 256


def fit_square(img: Image.Image, mode: ResizeMode, size: int = INPUT_SIZE) -> Image.Image:
    """Resize an RGB image to size x size: squash, centre-crop, or pad with white to a square."""
    if mode is ResizeMode.CENTER_CROP:
        return ImageOps.fit(img, (size, size), method=Image.Resampling.BILINEAR)
    if mode is ResizeMode.PAD:
        # White padding: product photos are usually shot on white, so padding adds no new "content".
        return ImageOps.pad(img, (size, size), method=Image.Resampling.BILINEAR, color=_WHITE)
    return img.resize((size, size), Image.Resampling.BILINEAR)


def trim_border(img: Image.Image) -> Image.Image:
    """The image without its near-uniform margins (a product on a flat canvas, a screenshot's frame).

    Bounded: a side is trimmed only when its outer line is flat, never by more than
    TRIM_MAX_SIDE of the image, and a margin of TRIM_MARGIN of the content box is kept.
    Returns `img` itself when there is nothing worth trimming.
    """
    box = trim_box(img)
    return img if box is None else img.crop(box)


def trim_box(img: Image.Image) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of what `trim_border` keeps, or None when it keeps the whole image."""
    probe = img.copy()
    probe.thumbnail((TRIM_PROBE_SIDE, TRIM_PROBE_SIDE), Image.Resampling.NEAREST)
    pixels = np.asarray(probe.convert("RGB"), dtype=np.int16)
    if min(pixels.shape[:2]) < 8:
        return None
    fg = _foreground(pixels)
    box = _content_box(fg)
    if box is None:
        return None
    scale_x, scale_y = img.width / probe.width, img.height / probe.height
    left, top, right, bottom = box
    cuts = _bounded_cuts(
        (left * scale_x, top * scale_y, (probe.width - right) * scale_x, (probe.height - bottom) * scale_y),
        img.width,
        img.height,
        _edges_flat(fg),
    )
    if max(cuts[0] / img.width, cuts[2] / img.width, cuts[1] / img.height, cuts[3] / img.height) < TRIM_MIN_CUT:
        return None
    return cuts[0], cuts[1], img.width - cuts[2], img.height - cuts[3]


def _border_colour(pixels: np.ndarray) -> np.ndarray:
    """The canvas colour: the per-channel median of the outermost ring of pixels."""
    ring = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return np.median(ring, axis=0)


def _foreground(pixels: np.ndarray) -> np.ndarray:
    """Boolean (h, w): pixels that differ from the border colour by more than the tolerance in some channel."""
    # In doubled int16 units (a median may end in .5): the same test as |p - median| > tolerance in floats,
    # several times faster than float64 arrays over a request's every pixel.
    diff = pixels * 2
    diff -= np.rint(2.0 * _border_colour(pixels)).astype(np.int16)
    np.abs(diff, out=diff)
    limit = 2 * TRIM_TOLERANCE
    return (diff[..., 0] > limit) | (diff[..., 1] > limit) | (diff[..., 2] > limit)


def _edges_flat(fg: np.ndarray) -> tuple[bool, bool, bool, bool]:
    """Whether the left, top, right and bottom outer lines of the foreground mask are (mostly) canvas."""
    left, top, right, bottom = (
        bool(1.0 - line.mean() >= TRIM_EDGE_SHARE) for line in (fg[:, 0], fg[0], fg[:, -1], fg[-1])
    )
    return left, top, right, bottom


def _content_box(fg: np.ndarray) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the content in probe pixels given its foreground mask, or None when none
    can be located."""
    if fg.mean() < TRIM_MIN_CONTENT:
        return None
    rows = np.flatnonzero(fg.mean(axis=1) > TRIM_LINE_SHARE)
    cols = np.flatnonzero(fg.mean(axis=0) > TRIM_LINE_SHARE)
    if not len(rows) or not len(cols):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _bounded_cuts(
    raw: tuple[float, float, float, float], width: int, height: int, flat: tuple[bool, bool, bool, bool]
) -> tuple[int, int, int, int]:
    """Pixels to cut from (left, top, right, bottom): less the margin, zero on non-flat sides, capped."""
    box_w = max(width - raw[0] - raw[2], 1.0)
    box_h = max(height - raw[1] - raw[3], 1.0)
    margins = (TRIM_MARGIN * box_w, TRIM_MARGIN * box_h) * 2
    sides = (width, height) * 2
    left, top, right, bottom = (
        int(max(0.0, min(cut - margin, TRIM_MAX_SIDE * side))) if ok else 0
        for cut, margin, side, ok in zip(raw, margins, sides, flat, strict=True)
    )
    return left, top, right, bottom


def to_model_input(img: Image.Image, mode: ResizeMode) -> np.ndarray:
    """ResNet50's input for an image (no trim). Kept for the benchmark tools; the service uses Embedder.preprocess."""
    from model.resnet50 import preprocess  # noqa: PLC0415 - model.resnet50 imports this module's neighbours

    return preprocess(np.asarray(fit_square(img, mode)))
