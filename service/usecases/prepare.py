"""Image bytes to a model input: decoded, resized and normalised, within a budget of decoded pixels.

Shared by every path that stores or searches an image (add, search, the bulk
and the start-up import), so they decode and preprocess exactly alike.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from conf.errors import BadInput
from conf.settings import Settings
from model.images import decode_image, decoded_pixels
from service.store.connection import FILEPATH_MAX_CHARS
from service.thumbs import make_thumbnail

# Decoded pixels that may be in memory at once across all requests, in units of MAX_IMAGE_PIXELS.
# A decoded image takes ~3 bytes a pixel plus conversion copies, so without a budget API_THREADS
# maximum-size uploads at once need API_THREADS times that (16 x 50 MP: several GB). With it, two
# maximum-size images decode at a time while ordinary photos flow as before.
DECODE_BUDGET_IMAGES = 2

# The model's own preprocessing (Embedder.preprocess): decoded RGB image -> model input array.
Preprocess = Callable[[Image.Image], np.ndarray]


@dataclass(frozen=True)
class PreparedImage:
    """An image ready for the model, and the record it is to become."""

    key: str
    md5: str
    filepath: str
    array: np.ndarray
    thumb: Image.Image | None = None  # for the thumbnail store, made while the image was decoded anyway
    attrs: dict[str, Any] | None = None  # None: keep what is stored (nothing, for a new record)


class PixelBudget:
    """A counting semaphore over pixels: decodes wait while the pixels held by others would pass the capacity."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._used = 0
        self._cond = threading.Condition()

    @classmethod
    def for_settings(cls, settings: Settings) -> PixelBudget:
        """Room for DECODE_BUDGET_IMAGES images of MAX_IMAGE_PIXELS at once."""
        return cls(DECODE_BUDGET_IMAGES * settings.max_image_pixels)

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Hold `pixels` (at most the whole capacity, so any one image can run) for the `with` block."""
        need = min(max(pixels, 0), self._capacity)
        with self._cond:
            self._cond.wait_for(lambda: self._used + need <= self._capacity)
            self._used += need
        try:
            yield
        finally:
            with self._cond:
                self._used -= need
                self._cond.notify_all()


def model_input(
    data: bytes, settings: Settings, preprocess: Preprocess, budget: PixelBudget | None = None
) -> tuple[str, np.ndarray]:
    """(MD5 of the bytes, model input array); raises NotAnImage or TooLarge.

    With a budget, decoding waits until the pixels it will hold fit in it; the
    full-size image is dropped before this returns.
    """
    md5, array, _thumb = _decode(data, settings, preprocess, budget, thumbnail=False)
    return md5, array


def stored_input(
    data: bytes, settings: Settings, preprocess: Preprocess, budget: PixelBudget | None = None
) -> tuple[str, np.ndarray, Image.Image]:
    """As `model_input`, plus the image's thumbnail (for images about to be stored)."""
    md5, array, thumb = _decode(data, settings, preprocess, budget, thumbnail=True)
    assert thumb is not None
    return md5, array, thumb


def thumbnail_input(data: bytes, settings: Settings, budget: PixelBudget | None = None) -> tuple[str, Image.Image]:
    """(MD5 of the bytes, thumbnail), decoded within the caps and the budget; the full image is dropped."""
    with _held(data, settings, budget) as limits:
        decoded = decode_image(data, **limits)
        return decoded.md5, make_thumbnail(decoded.image)


def _decode(
    data: bytes, settings: Settings, preprocess: Preprocess, budget: PixelBudget | None, thumbnail: bool
) -> tuple[str, np.ndarray, Image.Image | None]:
    with _held(data, settings, budget) as limits:
        decoded = decode_image(data, **limits)
        thumb = make_thumbnail(decoded.image) if thumbnail else None
        return decoded.md5, preprocess(decoded.image), thumb


@contextmanager
def _held(data: bytes, settings: Settings, budget: PixelBudget | None) -> Iterator[dict[str, int]]:
    """The decode caps of the settings, yielded while the pixels `data` will decode to are held in the budget."""
    limits = {"max_bytes": settings.max_image_bytes, "max_pixels": settings.max_image_pixels}
    with budget.hold(decoded_pixels(data, **limits)) if budget is not None else nullcontext():
        yield limits


def checked_filepath(filepath: str) -> str:
    """The filepath to record, refused (BadInput) when it is longer than the store keeps."""
    if len(filepath) > FILEPATH_MAX_CHARS:
        raise BadInput(
            f"the filepath to record is {len(filepath)} characters long; at most "
            f"{FILEPATH_MAX_CHARS} are allowed (send a shorter 'imgPath')"
        )
    return filepath
