"""The service layer: what each endpoint does, independent of HTTP.

Routes parse the request and call exactly one method here. The catalog ties the
input loaders, the image decoder, the embedder and the vector store together.
"""

from __future__ import annotations

import io
import logging
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from conf.settings import Settings
from model.batcher import Batcher, MicroBatcher
from model.preprocess import to_model_input
from service.errors import BadInput, NotReady
from service.fetch import fetch_image_bytes
from service.images import DECODE_MIN_SIDE, decode_image
from service.paths import read_allowed
from service.store import FILEPATH_MAX_CHARS, Hit, Record, VectorStore

log = logging.getLogger(__name__)

# Decoded pixels that may be in memory at once across all requests, in units of MAX_IMAGE_PIXELS.
# A decoded image takes ~3 bytes a pixel plus conversion copies, so without a budget API_THREADS
# maximum-size uploads at once need API_THREADS times that (16 x 50 MP: several GB). With it, two
# maximum-size images decode at a time while ordinary photos flow as before.
DECODE_BUDGET_IMAGES = 2


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
        self._budget = PixelBudget(DECODE_BUDGET_IMAGES * settings.max_image_pixels)
        # Searches that arrive together (a model batch finishing) go to Milvus as one multi-vector search.
        self._searches: Batcher[tuple[np.ndarray, int], list[Hit]] = Batcher(
            self._search_batch, settings.batch_max_size, settings.batch_window_ms, "search-batcher")

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
        md5, arr = self._prepare(source)
        record_key = key or md5
        filepath = _clip_filepath(img_path if img_path is not None else source.origin)
        stored = self.store.find(record_key, md5)
        if stored is not None and stored["filepath"] == filepath:
            return int(stored["id"]), False  # already there: no need to run the model
        vector = self._embed(arr)
        [(rid, created)] = self.store.put_many([Record(record_key, md5, filepath, vector)])
        log.info("add key=%r md5=%s id=%d %s", record_key[:80], md5, rid, "stored" if created else "exists")
        return rid, created

    def search(self, source: Source, limit: int, min_score: float | None) -> list[Hit]:
        """The stored images most similar to this one, best first."""
        _md5, arr = self._prepare(source)
        self.store.connect()  # fail fast with 503 before spending model time when Milvus is away
        hits = self._searches.submit((self._embed(arr), limit))
        return [h for h in hits if min_score is None or h.score >= min_score]

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
                                                     "key_index": self.store.key_index},
                "batching": {"embed": self._batcher.stats(), "search": self._searches.stats()}}

    # --- helpers ----------------------------------------------------------------------
    def _prepare(self, source: Source) -> tuple[str, np.ndarray]:
        """Decode and resize to the model input (MD5, array) within the decode budget; the big image is dropped."""
        # Resizing happens here, in the request thread, so it overlaps with other requests' inference.
        with self._budget.hold(self._decoded_pixels(source.data)):
            decoded = decode_image(source.data, max_bytes=self.settings.max_image_bytes,
                                   max_pixels=self.settings.max_image_pixels)
            return decoded.md5, to_model_input(decoded.image, self.settings.image_resize)

    def _decoded_pixels(self, data: bytes) -> int:
        """How many pixels decoding `data` will hold in memory, from its header (0 if it will be refused)."""
        if len(data) > self.settings.max_image_bytes:
            return 0
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img = Image.open(io.BytesIO(data))
                width, height = img.size
                if width * height > self.settings.max_image_pixels:
                    return 0  # refused before decoding
                if img.format in ("JPEG", "MPO"):
                    img.draft(None, (DECODE_MIN_SIDE, DECODE_MIN_SIDE))  # what decode_image does; header only
                    width, height = img.size
                return width * height
        except Exception:  # noqa: BLE001 - decode_image will say what is wrong with it
            return 0

    def _search_batch(self, queries: Sequence[tuple[np.ndarray, int]]) -> list[list[Hit]]:
        widest = max(limit for _vec, limit in queries)
        results = self.store.search_many([vec for vec, _limit in queries], widest)
        return [hits[:limit] for hits, (_vec, limit) in zip(results, queries, strict=True)]

    def close(self) -> None:
        """Stop the search batcher (after the searches already queued)."""
        self._searches.close()

    def _embed(self, arr: np.ndarray) -> np.ndarray:
        if self._batcher is None:
            raise NotReady("the model is still loading; retry when /ready answers 200")
        return self._batcher.embed_one(arr)


class PixelBudget:
    """A counting semaphore over pixels: decodes wait while the pixels held by others would pass the capacity."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._used = 0
        self._cond = threading.Condition()

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


def _clip_filepath(filepath: str) -> str:
    if len(filepath) > FILEPATH_MAX_CHARS:
        raise BadInput(f"the filepath to record is {len(filepath)} characters long; at most "
                       f"{FILEPATH_MAX_CHARS} are allowed (send a shorter 'imgPath')")
    return filepath

