"""Regions of an image: boxes in pixels, and finding the main object from the backbone's own activations.

A customer's photo shows the product in a scene; one vector of the whole frame lets the background outvote it.
A caller may name the part to search (a box), or ask imgsim to find it ("auto"). No detector weights can be had
offline, so "auto" reads the backbone's last feature map, which the model computes anyway: the cells where its
activations are strongest are where the object is. docs/region-search.md gives the measurements behind every
constant here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Box:
    """A box in whole pixels of an image as decoded (after its EXIF orientation): left, top, width, height."""

    x: int
    y: int
    w: int
    h: int

    def as_dict(self) -> dict[str, int]:
        """The box as the API spells it."""
        return {"x": self.x, "y": self.y, "w": self.w, "h": self.h}

    @classmethod
    def whole(cls, width: int, height: int) -> Box:
        """The whole image."""
        return cls(0, 0, width, height)

    def is_whole(self, width: int, height: int) -> bool:
        """Whether the box covers the whole `width` x `height` image."""
        return self == Box.whole(width, height)

    @property
    def corners(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom), as Pillow's crop takes it."""
        return self.x, self.y, self.x + self.w, self.y + self.h


def clip_box(x: float, y: float, w: float, h: float, width: int, height: int) -> Box | None:
    """The box rounded outward to whole pixels and clipped to the image; None when no pixel of it is inside."""
    left, top = max(0, math.floor(x)), max(0, math.floor(y))
    right, bottom = min(width, math.ceil(x + w)), min(height, math.ceil(y + h))
    if right <= left or bottom <= top:
        return None
    return Box(left, top, right - left, bottom - top)


def widen(box: Box, share: float, width: int, height: int) -> Box:
    """The box grown by `share` of its size on every side, clipped to the image."""
    grown = clip_box(
        box.x - share * box.w, box.y - share * box.h, box.w * (1 + 2 * share), box.h * (1 + 2 * share), width, height
    )
    return box if grown is None else grown


@dataclass(frozen=True)
class Frame:
    """Where the model's square input lies in the image, in (fractional) pixels: the feature map's cells tile it.

    Squashing maps the square onto the (trimmed) image; a centre crop onto its central square; padding onto a
    square larger than the image (the padding's cells fall outside and are clipped away).
    """

    x: float
    y: float
    w: float
    h: float

    def box(self, left: float, top: float, right: float, bottom: float, width: int, height: int) -> Box | None:
        """The part (fractions of the input square) as a box of the `width` x `height` image."""
        return clip_box(
            self.x + left * self.w,
            self.y + top * self.h,
            (right - left) * self.w,
            (bottom - top) * self.h,
            width,
            height,
        )


def activation_energy(feature_map: np.ndarray) -> np.ndarray:
    """Per cell of an (h, w, channels) feature map, the length of its activation vector."""
    return np.linalg.norm(feature_map.astype(np.float32), axis=-1)


def strongest_blob(energy: np.ndarray, k: float) -> tuple[float, float, float, float] | None:
    """(left, top, right, bottom), as fractions of the map, of the connected cells above mean + k std that hold
    the most energy; None when no cell stands out."""
    mask = energy > energy.mean() + k * energy.std()
    labels, count = ndimage.label(mask)
    if count == 0:
        return None
    weights = ndimage.sum(energy - energy.min(), labels, range(1, count + 1))
    rows, cols = np.nonzero(labels == int(np.argmax(weights)) + 1)
    gh, gw = energy.shape
    return cols.min() / gw, rows.min() / gh, (cols.max() + 1) / gw, (rows.max() + 1) / gh


class Proposal:
    """What one pass of the model over a whole image says: its unit vector, and where the main object may be.

    The boxes are worked out on first use: a caller whose whole-image search is already good enough never pays
    for the second look some candidates take.
    """

    def __init__(self, vector: np.ndarray, locate: Callable[[], list[Box]]) -> None:
        self.vector = vector
        self._locate = locate

    @cached_property
    def boxes(self) -> list[Box]:
        """Candidate boxes of the main object, best first; none when nothing stands out."""
        return self._locate()


# The candidate boxes "auto" proposes, best first: (k, zoom). k: cells above mean + k std of the activation
# energy form the object; zoom (widen share, k) looks again inside the box widened by that share.
AUTO_CANDIDATES: tuple[tuple[float, tuple[float, float] | None], ...] = ((1.0, (0.3, 0.5)), (0.5, None))

# A whole-image search whose best hit scores at least this share of the duplicate threshold in force keeps the
# whole image: the photo already nearly duplicates something in the catalog as it is, and a crop of it would
# more often match a detail shot or a neighbour than its own original. Measured on the benchmark's tune split
# (EfficientNet-Lite0, duplicate threshold 0.746, so a gate of 0.65): docs/region-search.md.
AUTO_GATE_SHARE = 0.87


def auto_gate(duplicate_score: float) -> float:
    """The whole-image best score at or above which "auto" keeps the whole image, for this threshold in force."""
    return AUTO_GATE_SHARE * duplicate_score


def choose(whole_best: float | None, candidate_best: Sequence[float | None]) -> int | None:
    """Which candidate box's search answers an "auto" search (None: the whole image's).

    `whole_best` and `candidate_best` are the scores of each search's best hit (None when it found nothing).
    The search that found the closest match wins.
    """
    best, chosen = -math.inf if whole_best is None else whole_best, None
    for i, score in enumerate(candidate_best):
        if score is not None and score > best:
            best, chosen = score, i
    return chosen
