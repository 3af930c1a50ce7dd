"""Turn raw bytes into a validated RGB image.

Images are recognised by decoding them with Pillow, never by file name, and
every decoder failure becomes a NotAnImage (415) or TooLarge (413) with a
message the caller can act on.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import NotAnImage, TooLarge

SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP", "TIFF"})
SUPPORTED_TEXT = "JPEG, PNG, GIF, BMP, WEBP or TIFF"
# JPEGs are decoded at the smallest libjpeg scale (1/2, 1/4, 1/8) that keeps the short side at
# least this: the model sees 224 px in every resize mode, and the DCT-domain reduction is itself a
# good low-pass filter. At 512 decoding and resizing cost ~6 ms of CPU per query image, at 224 ~3 ms.
DECODE_MIN_SIDE = 224

# We enforce our own pixel cap (MAX_IMAGE_PIXELS) before decoding, with a 413
# the caller understands; Pillow's own bomb guard is turned off so it cannot
# pre-empt ours with a different error.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class DecodedImage:
    """An image ready for the embedder, with the MD5 of the bytes it came from."""

    image: Image.Image
    md5: str


def md5_hex(data: bytes) -> str:
    """The lowercase hex MD5 of some bytes (the record's default key)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int) -> DecodedImage:
    """Decode image bytes into an RGB Pillow image.

    Applies EXIF orientation, takes the first frame of animations, and converts
    palette, CMYK, grayscale, 16-bit and alpha images to RGB (alpha over white).
    Raises TooLarge or NotAnImage with a message naming the problem.
    """
    if len(data) > max_bytes:
        raise TooLarge(f"image is {len(data)} bytes; the limit is {max_bytes} (MAX_IMAGE_BYTES)")
    if not data:
        raise NotAnImage(f"image is empty (0 bytes); send a {SUPPORTED_TEXT} file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns on odd-but-readable files; we judge by decoding
            img = Image.open(io.BytesIO(data))
            if img.format not in SUPPORTED_FORMATS:
                raise NotAnImage(f"image format {img.format} is not supported; send {SUPPORTED_TEXT}")
            width, height = img.size
            if width * height > max_pixels:
                raise TooLarge(f"image is {width}x{height} = {width * height} pixels; the limit is "
                               f"{max_pixels} (MAX_IMAGE_PIXELS)")
            if img.format in ("JPEG", "MPO"):
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the photo is far larger than
                # what the model sees: several times faster and smaller in memory, same vector.
                img.draft(None, (DECODE_MIN_SIDE, DECODE_MIN_SIDE))
            img.seek(0)  # first frame of a GIF/WEBP animation or multi-page TIFF
            img.load()
            img = _apply_orientation(img)
            rgb = _to_rgb(img)
    except (NotAnImage, TooLarge):
        raise
    except UnidentifiedImageError:
        raise NotAnImage(f"the bytes are not a decodable image; send {SUPPORTED_TEXT}") from None
    except Image.DecompressionBombError as exc:  # belt and braces: a frame larger than its header said
        raise TooLarge(f"image is too large to decode safely: {exc}") from None
    except ValueError as exc:
        if "Decompressed data too large" in str(exc) or "Too much memory used in text chunks" in str(exc):
            # A PNG whose compressed text or ICC profile chunks inflate past Pillow's safety limit.
            raise TooLarge(f"the image's metadata (text or ICC profile chunks) is too large to decode "
                           f"safely ({exc})") from None
        raise NotAnImage(f"the image is truncated or corrupt and cannot be decoded ({exc})") from None
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, EOFError, MemoryError) as exc:
        # Pillow signals truncated or corrupt data with any of these.
        raise NotAnImage(f"the image is truncated or corrupt and cannot be decoded ({exc})") from None
    if rgb.width < 1 or rgb.height < 1:
        raise NotAnImage("the image has no pixels")
    return DecodedImage(image=rgb, md5=md5_hex(data))


def _apply_orientation(img: Image.Image) -> Image.Image:
    try:
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
