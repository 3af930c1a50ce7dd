"""Add one image; and the embed-and-store steps every way of adding shares (add, bulk and start-up import)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from service.inputs import ImageInput
from service.store.records import Record, VectorStore
from service.usecases.deps import Deps
from service.usecases.prepare import PreparedImage, checked_filepath, model_input

log = logging.getLogger(__name__)

EmbedMany = Callable[[Sequence[np.ndarray]], Sequence[np.ndarray]]


@dataclass(frozen=True)
class Embedded:
    """A prepared image and its vector, ready to store."""

    image: PreparedImage
    vector: np.ndarray


def embed_unstored(store: VectorStore, embed_many: EmbedMany, images: Sequence[PreparedImage], *,
                   refresh_filepath: bool) -> tuple[list[Embedded], dict[tuple[str, str], int]]:
    """Embed, in one model call, the images the store does not hold; returns them and the ids of the others.

    An image is held when its (key, MD5) is stored, and with `refresh_filepath`
    only when it is stored under the same filepath (so that storing it again
    updates the filepath). Held images skip the model.
    """
    stored = store.stored([(im.key, im.md5) for im in images])
    fresh: list[PreparedImage] = []
    held: dict[tuple[str, str], int] = {}
    for im in images:
        row = stored.get((im.key, im.md5))
        if row is not None and (not refresh_filepath or row["filepath"] == im.filepath):
            held[(im.key, im.md5)] = int(row["id"])
        else:
            fresh.append(im)
    vectors = embed_many([im.array for im in fresh]) if fresh else []
    return [Embedded(im, vec) for im, vec in zip(fresh, vectors, strict=True)], held


def put_embedded(store: VectorStore, embedded: Sequence[Embedded]) -> list[tuple[int, bool]]:
    """Store embedded images in one write; (id, created) for each."""
    return store.put_many([Record(e.image.key, e.image.md5, e.image.filepath, e.vector) for e in embedded])


def add_image(deps: Deps, image: ImageInput, key: str | None, img_path: str | None) -> tuple[int, bool]:
    """Store an image under `key` (default: its MD5); returns (id, created).

    Re-adding the same bytes under the same key creates nothing; with another
    imgPath it updates the recorded filepath.
    """
    source = image.load(deps.settings)
    md5, array = model_input(source.data, deps.settings, deps.preprocess, deps.decode_budget)
    filepath = checked_filepath(img_path if img_path is not None else source.default_filepath)
    prepared = PreparedImage(key or md5, md5, filepath, array)
    embedded, held = embed_unstored(deps.store, deps.embed_each, [prepared], refresh_filepath=True)
    if not embedded:
        return held[(prepared.key, md5)], False  # already there: the model did not run
    [(rid, created)] = put_embedded(deps.store, embedded)
    log.info("add key=%r md5=%s id=%d %s", prepared.key[:80], md5, rid, "stored" if created else "exists")
    return rid, created
