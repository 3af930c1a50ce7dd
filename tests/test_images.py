"""Images are recognised by decoding, and every supported kind arrives as the RGB picture a person sees."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from conf.errors import NotAnImage, TooLarge
from model.images import decode_image

LIMITS = {"max_bytes": 5_000_000, "max_pixels": 10_000_000}


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def red_square(mode: str = "RGB") -> Image.Image:
    return Image.new("RGB", (40, 30), (200, 30, 30)).convert(mode)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF"])
def test_every_supported_format_decodes_to_rgb(fmt: str) -> None:
    decoded = decode_image(encode(red_square(), fmt), **LIMITS)
    assert decoded.image.mode == "RGB" and decoded.image.size == (40, 30)
    r, g, b = decoded.image.getpixel((20, 15))
    assert r > 150 and g < 80 and b < 80  # still red after any palette quantisation


def test_extension_is_irrelevant_content_decides() -> None:
    # A PNG is a PNG whatever it is called; a text file called .jpg is not an image.
    assert decode_image(encode(red_square(), "PNG"), **LIMITS).image.size == (40, 30)
    with pytest.raises(NotAnImage, match="not a decodable image"):
        decode_image(b"just some text pretending to be photo.jpg", **LIMITS)


def test_alpha_is_composited_over_white() -> None:
    img = Image.new("RGBA", (10, 10), (0, 0, 255, 0))  # fully transparent blue
    decoded = decode_image(encode(img, "PNG"), **LIMITS)
    assert decoded.image.getpixel((5, 5)) == (255, 255, 255)


def test_palette_with_transparency_and_grayscale_and_cmyk() -> None:
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 255, 0] + [0, 0, 0] * 255)
    pal.info["transparency"] = 0
    assert decode_image(encode(pal, "PNG", transparency=0), **LIMITS).image.getpixel((1, 1)) == (255, 255, 255)
    gray = decode_image(encode(Image.new("L", (8, 8), 90), "PNG"), **LIMITS).image
    assert gray.mode == "RGB" and gray.getpixel((1, 1)) == (90, 90, 90)
    cmyk = decode_image(encode(red_square("CMYK"), "JPEG"), **LIMITS).image
    r, g, b = cmyk.getpixel((20, 15))
    assert cmyk.mode == "RGB" and r > 150 and g < 90 and b < 90


def test_16_bit_png_keeps_its_tones() -> None:
    arr = np.full((8, 8), 32768, dtype=np.uint16)  # mid grey in 16 bits
    decoded = decode_image(encode(Image.fromarray(arr), "PNG"), **LIMITS).image
    assert 120 <= decoded.getpixel((1, 1))[0] <= 135  # not clipped to white


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (60, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    decoded = decode_image(encode(img, "JPEG", exif=exif), **LIMITS).image
    assert decoded.size == (20, 60)


def test_gif_animation_uses_first_frame() -> None:
    frames = [Image.new("RGB", (10, 10), c) for c in ((250, 0, 0), (0, 0, 250))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    r, _, b = decode_image(buf.getvalue(), **LIMITS).image.getpixel((5, 5))
    assert r > 200 and b < 50


def test_limits_give_too_large() -> None:
    with pytest.raises(TooLarge, match="MAX_IMAGE_BYTES"):
        decode_image(b"x" * 2000, max_bytes=1000, max_pixels=100)
    with pytest.raises(TooLarge, match="MAX_IMAGE_PIXELS"):
        decode_image(encode(Image.new("L", (200, 200)), "PNG"), max_bytes=10**6, max_pixels=100)


def test_truncated_and_empty_are_not_images() -> None:
    data = encode(red_square().resize((400, 300)), "JPEG")
    with pytest.raises(NotAnImage, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2], **LIMITS)
    with pytest.raises(NotAnImage, match="empty"):
        decode_image(b"", **LIMITS)


def test_md5_is_of_the_original_bytes() -> None:
    data = encode(red_square(), "PNG")
    assert decode_image(data, **LIMITS).md5 == hashlib.md5(data).hexdigest()
