"""Turn raw bytes into a validated RGB image, within the byte and pixel caps.

Images are recognised by decoding them with Pillow, never by file name, and
every decoder failure becomes a NotAnImage or TooLarge with a message the
caller can act on and a `reason` code says which failure it was.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from conf.errors import NotAnImage, TooLarge
from model.transforms import INPUT_SIZE

SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP", "TIFF"})
SUPPORTED_TEXT = "JPEG, PNG, GIF, BMP, WEBP or TIFF"
# JPEGs are decoded at the smallest libjpeg scale (1/2, 1/4, 1/8) that keeps the short side at
# least the model's input size: the model sees no more in any resize mode, and the DCT-domain
# reduction is itself a good low-pass filter. At 512 px decoding and resizing cost ~6 ms of CPU per
# query image, at 224 ~3 ms.
DECODE_MIN_SIDE = INPUT_SIZE

# EXIF orientations 2..8 flip or turn the image; 1 (or none) leaves it as stored.
_TURNED = frozenset(range(2, 9))

# We enforce our own pixel cap (MAX_IMAGE_PIXELS) before decoding, with a 413
# the caller understands; Pillow's own bomb guard is turned off so it cannot
# pre-empt ours with a different error.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class DecodedImage:
    """An image ready for the embedder, with the MD5 of the bytes it came from."""

    image: Image.Image
    md5: str
    # The size of the image as stored, after its EXIF orientation: what a caller's pixel coordinates (a region)
    # refer to. `image` may be smaller: a large JPEG is decoded at 1/2, 1/4 or 1/8 scale (draft).
    full_size: tuple[int, int]


def md5_hex(data: bytes) -> str:
    """The lowercase hex MD5 of some bytes (the record's default key)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _open_header(data: bytes, max_pixels: int) -> tuple[Image.Image, tuple[int, int]]:
    """Open image bytes without decoding the pixels: format and pixel cap checked, JPEGs set to draft scale.
    Also returns the size the file holds (a draft scale changes the image's `size`)."""
    img = Image.open(io.BytesIO(data))
    if img.format not in SUPPORTED_FORMATS:
        raise NotAnImage(
            f"image format {img.format} is not supported; send {SUPPORTED_TEXT}", reason="unsupported_format"
        )
    width, height = img.size
    if width * height > max_pixels:
        raise TooLarge(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} (MAX_IMAGE_PIXELS)",
            reason="too_many_pixels",
        )
    if img.format in ("JPEG", "MPO"):
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the photo is far larger than
        # what the model sees: several times faster and smaller in memory, same vector.
        img.draft(None, (DECODE_MIN_SIDE, DECODE_MIN_SIDE))
    return img, (width, height)


def decoded_pixels(data: bytes, *, max_bytes: int, max_pixels: int) -> int:
    """How many pixels `decode_image` will hold in memory for `data`, from its header alone.

    0 when the image will be refused before its pixels are decoded.
    """
    if len(data) > max_bytes:
        return 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img, _stored_size = _open_header(data, max_pixels)
            return img.width * img.height
    except Exception:  # noqa: BLE001 - decode_image will say what is wrong with it
        return 0


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> DecodedImage:
    """Decode image bytes into an RGB Pillow image.

    Applies EXIF orientation, takes the first frame of animations, and converts
    palette, CMYK, grayscale, 16-bit and alpha images to RGB (alpha over white).
    Raises TooLarge or NotAnImage with a message naming the problem.
    """
    if len(data) > max_bytes:
        raise TooLarge(
            f"image is {len(data)} bytes; the limit is {max_bytes} (MAX_IMAGE_BYTES)", reason="too_many_bytes"
        )
    if not data:
        raise NotAnImage(f"image is empty (0 bytes); send a {SUPPORTED_TEXT} file", reason="empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns on odd-but-readable files; we judge by decoding
            img, stored_size = _open_header(data, max_pixels)
            img.seek(0)  # first frame of a GIF/WEBP animation or multi-page TIFF
            img.load()
            rgb = _to_rgb(_apply_orientation(img))
    except (NotAnImage, TooLarge):
        raise
    except UnidentifiedImageError:
        raise NotAnImage(
            f"the bytes are not a decodable image; send {SUPPORTED_TEXT}", reason="not_decodable"
        ) from None
    except Image.DecompressionBombError as exc:  # belt and braces: a frame larger than its header said
        raise TooLarge(f"image is too large to decode safely: {exc}", reason="too_many_pixels") from None
    except ValueError as exc:
        if "Decompressed data too large" in str(exc) or "Too much memory used in text chunks" in str(exc):
            # A PNG whose compressed text or ICC profile chunks inflate past Pillow's safety limit.
            raise TooLarge(
                f"the image's metadata (text or ICC profile chunks) is too large to decode safely ({exc})",
                reason="metadata_too_large",
            ) from None
        raise _corrupt(exc) from None
    except (OSError, SyntaxError, TypeError, IndexError, EOFError, MemoryError) as exc:
        # Pillow signals truncated or corrupt data with any of these.
        raise _corrupt(exc) from None
    if rgb.width < 1 or rgb.height < 1:
        raise NotAnImage("the image has no pixels", reason="no_pixels")
    # An orientation that turns the image swaps its sides (5 to 8); a draft scales both by one factor.
    turned = (rgb.width > rgb.height) != (img.width > img.height)
    return DecodedImage(image=rgb, md5=md5_hex(data), full_size=stored_size[::-1] if turned else stored_size)


def _corrupt(exc: Exception) -> NotAnImage:
    return NotAnImage(f"the image is truncated or corrupt and cannot be decoded ({exc})", reason="corrupt")


def _apply_orientation(img: Image.Image) -> Image.Image:
    try:
        # Most images carry no orientation to apply, and for them exif_transpose would return a full
        # copy of the pixels; the EXIF block is parsed once either way (Pillow caches it on the image).
        if img.getexif().get(ExifTags.Base.Orientation, 1) not in _TURNED:
            return img
        return ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001 - a broken EXIF block must not reject an otherwise good image
        return img


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # Pillow's convert() clips 16/32-bit values at 255 (a mostly white image);
        # rescale the real range to 8 bits instead.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        white = Image.new("RGB", img.size, (255, 255, 255))
        white.paste(img, mask=img.getchannel("A"))
        return white
    return img.convert("RGB")
