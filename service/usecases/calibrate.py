"""Calibrate on the user's own images: the duplicate threshold of the collection, and the images for INT8.

The duplicate threshold: every image is embedded with generated near-copies of
it (model.copies: resized, re-compressed, cropped, mirrored, framed); the
threshold is the score that keeps DUPLICATE_KEEP of those true copies, and the
report says how many pairs of distinct images score at least that much (false
duplicates). Used by `python main.py calibrate DIR`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from conf.errors import ApiError
from conf.settings import CALIBRATION_IMAGES, Settings
from model.copies import COPY_KINDS
from model.images import decode_image
from service.store.meta import DuplicateThreshold
from service.usecases.deps import Model
from service.usecases.importer import iter_images
from service.usecases.prepare import Preprocess

log = logging.getLogger(__name__)

DUPLICATE_KEEP = 0.95  # share of true copies the threshold keeps
MIN_IMAGES = 8  # fewer distinct images give no meaningful distribution
_BATCH = 16


@dataclass(frozen=True)
class Scores:
    """Scores of the calibration: each generated copy against its original, and distinct images against each other."""

    copies: dict[str, np.ndarray]  # kind -> (n,) cosine of copy to original
    distinct: np.ndarray  # cosine of every pair of distinct originals
    nearest: np.ndarray  # (n,) each original's best score against another original

    @property
    def every_copy(self) -> np.ndarray:
        """The scores of all generated copies, of every kind."""
        return np.concatenate(list(self.copies.values()))

    def threshold(self) -> float:
        """The score that keeps DUPLICATE_KEEP of all true copies (rounded down to 3 decimals)."""
        return float(np.floor(np.quantile(self.every_copy, 1.0 - DUPLICATE_KEEP, method="lower") * 1000) / 1000)

    def summary(self, threshold: float, images: int) -> DuplicateThreshold:
        """The threshold with what it was measured on, ready to store with the collection."""
        return DuplicateThreshold(
            score=threshold,
            space="",
            images=images,
            copies_kept=round(float(np.mean(self.every_copy >= threshold)), 4),
            distinct_above=round(float(np.mean(self.distinct >= threshold)), 6),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )


def read_images(
    folder: Path, settings: Settings, limit: int = CALIBRATION_IMAGES, progress: bool = True
) -> list[Image.Image]:
    """Up to `limit` distinct decodable images from `folder`, spread evenly over its sorted files."""
    files = iter_images(folder)
    step = max(1, len(files) // max(limit, 1))
    picked, seen = [], set()
    for path in tqdm(files[::step], unit="img", disable=not progress, desc=f"reading {folder}"):
        try:
            decoded = decode_image(
                path.read_bytes(), max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
            )
        except (ApiError, OSError) as exc:
            log.info("calibrate: skipping %s (%s)", path, getattr(exc, "msg", exc))
            continue
        if decoded.md5 not in seen:  # the same bytes twice would look like a perfect "distinct" pair
            seen.add(decoded.md5)
            picked.append(decoded.image)
        if len(picked) >= limit:
            break
    return picked


def preprocessed(preprocess: Preprocess, images: list[Image.Image]) -> np.ndarray:
    """The model inputs of `images` as one (n, 224, 224, 3) batch."""
    return np.stack([preprocess(img) for img in images])


def score(model: Model, images: list[Image.Image], progress: bool = True) -> Scores:
    """Embed the originals and their generated copies; the score distributions of copies and distinct pairs."""
    if len(images) < MIN_IMAGES:
        raise ValueError(f"calibration needs at least {MIN_IMAGES} distinct images, got {len(images)}")
    with tqdm(
        total=len(images) * (1 + len(COPY_KINDS)),
        unit="img",
        disable=not progress,
        desc="embedding originals and copies",
    ) as bar:
        originals = _embed(model, iter(images), bar)
        copies = {
            name: (_embed(model, (make(img) for img in images), bar) * originals).sum(axis=1)
            for name, make in COPY_KINDS
        }
    similarity = originals @ originals.T
    upper = np.triu_indices(len(images), k=1)
    np.fill_diagonal(similarity, -np.inf)
    return Scores(copies, similarity[upper], similarity.max(axis=1))


def _embed(model: Model, images: Iterator[Image.Image], bar: tqdm) -> np.ndarray:
    """Vectors of a stream of images, _BATCH at a time."""
    parts, batch = [], []
    for img in images:
        batch.append(model.preprocess(img))
        if len(batch) == _BATCH:
            parts.append(model.embed(np.stack(batch)))
            bar.update(len(batch))
            batch = []
    if batch:
        parts.append(model.embed(np.stack(batch)))
        bar.update(len(batch))
    return np.concatenate(parts)


def report(scores: Scores, threshold: float) -> list[str]:
    """The score distributions and what the threshold means, as lines for a person."""

    def row(label: str, values: np.ndarray) -> str:
        p = np.percentile(values, [0, 1, 5, 50, 95, 99, 100])
        return f"  {label:<24} " + " ".join(f"{v:7.4f}" for v in p)

    lines = ["score distributions (cosine)      min      p1      p5  median     p95     p99     max"]
    lines += [row(f"copy: {name}", values) for name, values in scores.copies.items()]
    lines.append(row("distinct pairs", scores.distinct))
    lines.append(row("nearest distinct image", scores.nearest))
    kept = np.mean(scores.every_copy >= threshold)
    lines.append(
        f"duplicate threshold {threshold:.3f}: keeps {kept:.1%} of the generated "
        f"copies; {np.mean(scores.distinct >= threshold):.3%} of distinct-image pairs score at least as "
        f"much, and {np.mean(scores.nearest >= threshold):.1%} of images have a distinct image that does "
        f"(real duplicates inside DIR count as distinct here, so these shares are upper bounds)."
    )
    return lines
