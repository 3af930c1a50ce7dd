"""Image bytes to a model input: decoded, resized and normalised, within a budget of decoded pixels.

Shared by every path that stores or searches an image (add, search, the bulk
and the start-up import), so they decode and preprocess exactly alike. A request's
`region` (the whole image, a box, or "auto") is applied here too, to the image as
decoded and EXIF-oriented, so every image is decoded once whatever part of it is used.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from conf.errors import BadInput
from conf.settings import SearchRegion, Settings
from model.images import DecodedImage, decode_image, decoded_pixels
from model.regions import Box, Proposal, clip_box
from service.store.connection import FILEPATH_MAX_CHARS
from service.thumbs import KeptSource, make_source, make_thumbnail

# Decoded pixels that may be in memory at once across all requests, in units of MAX_IMAGE_PIXELS.
# A decoded image takes ~3 bytes a pixel plus conversion copies, so without a budget API_THREADS
# maximum-size uploads at once need API_THREADS times that (16 x 50 MP: several GB). With it, two
# maximum-size images decode at a time while ordinary photos flow as before.
DECODE_BUDGET_IMAGES = 2

# The model's own preprocessing (Embedder.preprocess): decoded RGB image -> model input array.
Preprocess = Callable[[Image.Image], np.ndarray]
# Embedder.preprocess_box: the model input of one part of the image.
PreprocessBox = Callable[[Image.Image, Box], np.ndarray]
# Embedder.propose: the whole image's vector and candidate boxes of its main object.
Propose = Callable[[Image.Image], Proposal]
T = TypeVar("T")


@dataclass(frozen=True)
class RegionBox:
    """A box as the request gives it (pixels of the EXIF-oriented image, possibly fractional or hanging over the
    edge): checked for shape by the HTTP layer, clipped to the image once it is decoded."""

    x: float
    y: float
    w: float
    h: float

    def __str__(self) -> str:
        return f"x={self.x:g},y={self.y:g},w={self.w:g},h={self.h:g}"


# What part of an image a request uses: the whole image, the main object ("auto"), or a box.
Region = SearchRegion | RegionBox


@dataclass(frozen=True)
class Framing:
    """The model's ways of turning a decoded image into model inputs (model.embedder.Embedder's methods)."""

    preprocess: Preprocess
    preprocess_box: PreprocessBox
    propose: Propose


@dataclass(frozen=True)
class Framed:
    """A decoded image's model input for one part of it, the box that part is, and the image's size (the box and
    the size in pixels of the image as stored, after its EXIF orientation)."""

    array: np.ndarray
    box: Box
    width: int
    height: int

    @property
    def region(self) -> dict[str, int] | None:
        """The box as a record stores it: None for the whole image."""
        return None if self.box.is_whole(self.width, self.height) else self.box.as_dict()


class Picture:
    """A decoded image and the size a caller's pixels refer to: the image as stored, after its EXIF orientation.
    The two differ when a large JPEG was decoded at 1/2, 1/4 or 1/8 scale (model.images: draft)."""

    def __init__(self, decoded: DecodedImage) -> None:
        self.image = decoded.image
        self.width, self.height = decoded.full_size
        self._sx, self._sy = self.image.width / self.width, self.image.height / self.height

    @property
    def whole(self) -> Box:
        """The whole image, in the caller's pixels."""
        return Box.whole(self.width, self.height)

    def clipped(self, region: RegionBox) -> Box:
        """The requested box clipped to the image; BadInput when no pixel of it is inside."""
        box = clip_box(region.x, region.y, region.w, region.h, self.width, self.height)
        if box is None:
            raise BadInput(
                f"field 'region': the box {region} lies outside the image ({self.width} x {self.height} px after "
                "EXIF orientation): give a box inside it",
                reason="bad_region",
            )
        return box

    def decoded_box(self, box: Box) -> Box:
        """A box of the caller's pixels in pixels of the decoded image (rounded outward)."""
        img = self.image
        scaled = clip_box(box.x * self._sx, box.y * self._sy, box.w * self._sx, box.h * self._sy, img.width, img.height)
        return scaled or Box.whole(img.width, img.height)  # never None: the box is inside the image

    def callers_box(self, box: Box) -> Box:
        """A box of the decoded image in the caller's pixels (rounded outward)."""
        scaled = clip_box(
            box.x / self._sx, box.y / self._sy, box.w / self._sx, box.h / self._sy, self.width, self.height
        )
        return scaled or self.whole

    def framed(self, box: Box | None, framing: Framing) -> Framed:
        """The model input of the part `box` (the caller's pixels; None: the whole image)."""
        if box is None or box.is_whole(self.width, self.height):
            return Framed(framing.preprocess(self.image), self.whole, self.width, self.height)
        return Framed(framing.preprocess_box(self.image, self.decoded_box(box)), box, self.width, self.height)


def framed(decoded: DecodedImage, region: Region, framing: Framing) -> Framed:
    """The model input of the part of the image that `region` names; "auto" takes the first proposed box (adds)."""
    picture = Picture(decoded)
    if isinstance(region, RegionBox):
        return picture.framed(picture.clipped(region), framing)
    if region is SearchRegion.AUTO:
        first = next(iter(framing.propose(picture.image).boxes), None)
        return picture.framed(None if first is None else picture.callers_box(first), framing)
    return picture.framed(None, framing)


@dataclass(frozen=True)
class PreparedImage:
    """An image ready for the model, and the record it is to become."""

    key: str
    md5: str
    filepath: str
    array: np.ndarray
    thumb: Image.Image | None = None  # for the thumbnail store, made while the image was decoded anyway
    source: KeptSource | None = None  # for the kept sources (KEEP_SOURCES), made from the same decode
    attrs: dict[str, Any] | None = None  # None: keep what is stored (nothing, for a new record)
    box: Box | None = None  # the part of the image `array` shows (None: the whole image, size not kept)
    region: dict[str, int] | None = None  # what the record stores of `box`: None when it is the whole image


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


def stored_input(
    data: bytes, settings: Settings, preprocess: Preprocess, budget: PixelBudget | None = None
) -> tuple[str, np.ndarray, Image.Image, KeptSource | None]:
    """(MD5 of the bytes, model input of the whole image, its thumbnail, its kept source unless KEEP_SOURCES is
    off), for images about to be stored."""
    md5, array, thumb, source = decoded_use(
        data, settings, lambda decoded: preprocess(decoded.image), budget, thumbnail=True, source=True
    )
    assert thumb is not None
    return md5, array, thumb, source


def decoded_use(
    data: bytes,
    settings: Settings,
    use: Callable[[DecodedImage], T],
    budget: PixelBudget | None,
    thumbnail: bool,
    source: bool = False,
) -> tuple[str, T, Image.Image | None, KeptSource | None]:
    """(MD5 of the bytes, what `use` makes of the decoded image, its thumbnail when asked, its kept source when
    asked and KEEP_SOURCES is on); raises NotAnImage or TooLarge. Decodes once, within the caps and the budget;
    the full-size image is dropped before this returns."""
    with _held(data, settings, budget) as limits:
        decoded = decode_image(data, **limits)
        thumb = make_thumbnail(decoded.image) if thumbnail else None
        kept = make_source(decoded) if source and settings.keep_sources else None
        return decoded.md5, use(decoded), thumb, kept


def thumbnail_input(data: bytes, settings: Settings, budget: PixelBudget | None = None) -> tuple[str, Image.Image]:
    """(MD5 of the bytes, thumbnail), decoded within the caps and the budget; the full image is dropped."""
    md5, _nothing, thumb, _source = decoded_use(data, settings, lambda _decoded: None, budget, thumbnail=True)
    assert thumb is not None
    return md5, thumb


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
