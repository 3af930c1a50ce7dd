"""The service layer: what each endpoint does, independent of HTTP.

Routes parse the request and call exactly one method here. The catalog ties the
input loaders, the image decoder, the embedder and the vector store together.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from conf.settings import Settings
from model.batcher import MicroBatcher
from model.preprocess import to_model_input
from service.errors import BadInput, NotReady
from service.fetch import fetch_image_bytes
from service.images import DecodedImage, decode_image
from service.paths import read_allowed
from service.store import FILEPATH_MAX_CHARS, Hit, Record, VectorStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """Image bytes from one input kind, and the filepath to record when the caller gives no imgPath."""

    data: bytes
    origin: str


class Catalog:
    """Add, search and delete product images."""

    def __init__(self, settings: Settings, store: VectorStore, batcher: MicroBatcher | None,
                 model_info: dict[str, Any]) -> None:
        self.settings = settings
        self.store = store
        self._batcher = batcher
        self.model_info = model_info

    # --- inputs -----------------------------------------------------------------------
    def from_url(self, url: str) -> Source:
        """Fetch an image from an http(s) URL."""
        return Source(fetch_image_bytes(url, self.settings), url)

    def from_path(self, path: str) -> Source:
        """Read an image below PATH_ROOTS; the recorded filepath is the path as the caller gave it."""
        data, _real = read_allowed(path, self.settings.allowed_roots, self.settings.max_image_bytes)
        return Source(data, path)

    # --- operations -------------------------------------------------------------------
    def add(self, source: Source, key: str | None, img_path: str | None) -> tuple[int, bool]:
        """Store an image; returns (id, created). Re-adding the same bytes under the same key creates nothing."""
        decoded = self._decode(source)
        record_key = key or decoded.md5
        filepath = _clip_filepath(img_path if img_path is not None else source.origin)
        stored = self.store.find(record_key, decoded.md5)
        if stored is not None and stored["filepath"] == filepath:
            return int(stored["id"]), False  # already there: no need to run the model
        vector = self._embed(decoded)
        [(rid, created)] = self.store.put_many([Record(record_key, decoded.md5, filepath, vector)])
        log.info("add key=%r md5=%s id=%d %s", record_key[:80], decoded.md5, rid, "stored" if created else "exists")
        return rid, created

    def search(self, source: Source, limit: int, min_score: float | None) -> list[Hit]:
        """The stored images most similar to this one, best first."""
        decoded = self._decode(source)
        self.store.connect()  # fail fast with 503 before spending model time when Milvus is away
        return self.store.search(self._embed(decoded), limit, min_score)

    def delete_ids(self, ids: list[int]) -> int:
        """Delete records by id; returns how many were really deleted."""
        return self.store.delete_ids(ids)

    def delete_keys(self, keys: list[str]) -> int:
        """Delete every record of these keys; returns how many were deleted."""
        return self.store.delete_keys(keys)

    def get_keys(self, keys: list[str]) -> list[dict[str, Any]]:
        """The records stored under these keys."""
        return self.store.get_keys(keys)

    def count(self) -> int:
        """How many records are stored."""
        return self.store.count()

    def readiness(self) -> dict[str, Any]:
        """What /ready reports; raises NotReady when the model or Milvus is not usable."""
        if self._batcher is None:
            raise NotReady("the model is still loading")
        self.store.ping()
        return {"model": self.model_info, "milvus": {"target": self.store.target,
                                                     "server_version": self.store.server_version,
                                                     "vector_index": self.store.vector_index,
                                                     "key_index": self.store.key_index}}

    # --- helpers ----------------------------------------------------------------------
    def _decode(self, source: Source) -> DecodedImage:
        return decode_image(source.data, max_bytes=self.settings.max_image_bytes,
                            max_pixels=self.settings.max_image_pixels)

    def _embed(self, decoded: DecodedImage) -> np.ndarray:
        if self._batcher is None:
            raise NotReady("the model is still loading; retry when /ready answers 200")
        # Resizing happens here, in the request thread, so it overlaps with other requests' inference.
        return self._batcher.embed_one(to_model_input(decoded.image, self.settings.image_resize))


def _clip_filepath(filepath: str) -> str:
    if len(filepath) > FILEPATH_MAX_CHARS:
        raise BadInput(f"the filepath to record is {len(filepath)} characters long; at most "
                       f"{FILEPATH_MAX_CHARS} are allowed (send a shorter 'imgPath')")
    return filepath

