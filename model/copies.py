"""Near-copies of an image, as catalogs get them: resized, re-compressed, cropped, mirrored, framed.

`python main.py calibrate DIR` embeds these next to their originals to learn
which scores mean "the same picture" for the user's own images and model.
Every copy is deterministic, so two calibrations of one folder agree.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from PIL import Image, ImageOps

# (name, transform); one copy of each per original.
COPY_KINDS: tuple[tuple[str, Callable[[Image.Image], Image.Image]], ...]


def half_size(img: Image.Image) -> Image.Image:
    """Downscaled to half the width and height (a thumbnail re-uploaded)."""
    return img.resize((max(1, img.width // 2), max(1, img.height // 2)), Image.Resampling.BILINEAR)


def jpeg_q40(img: Image.Image) -> Image.Image:
    """Re-encoded as a JPEG of quality 40 (a marketplace's recompression)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=40)
    buf.seek(0)
    with Image.open(buf) as copy:
        return copy.convert("RGB")


def crop_90(img: Image.Image) -> Image.Image:
    """The central 90% of width and height (a slightly tighter crop)."""
    dx, dy = img.width // 20, img.height // 20
    return img.crop((dx, dy, img.width - dx, img.height - dy))


def mirror(img: Image.Image) -> Image.Image:
    """Flipped left to right."""
    return ImageOps.mirror(img)


def white_border(img: Image.Image) -> Image.Image:
    """Framed by a white border of 8% of the longer side (a listing template)."""
    return ImageOps.expand(img, border=max(1, max(img.size) * 8 // 100), fill=(255, 255, 255))


COPY_KINDS = (("resize", half_size), ("jpeg", jpeg_q40), ("crop", crop_90), ("flip", mirror), ("border", white_border))
