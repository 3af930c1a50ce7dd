"""What the use cases work with, built once by service.runtime: settings, store, model queue, search queue."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from PIL import Image

from conf.settings import Settings
from model.regions import Box, Proposal
from service.batcher import Batcher
from service.store.records import Hit, Query, VectorStore
from service.thumbs import Sources, Thumbnails
from service.usecases.duplicates import Scans
from service.usecases.prepare import Framing, PixelBudget


class Model(Protocol):
    """What the use cases need of the model (model.embedder.Embedder is one)."""

    # Read-only: Embedder computes `info` on each read and sets `duplicate_default` once.
    @property
    def info(self) -> dict[str, Any]:
        """What /ready reports about the model."""
        ...

    @property
    def duplicate_default(self) -> float:
        """The backbone's default duplicate score."""
        ...

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """(n, ...) preprocessed inputs -> (n, dim) unit vectors."""
        ...

    def preprocess(self, img: Image.Image) -> np.ndarray:
        """A decoded RGB image -> one model input."""
        ...

    def preprocess_box(self, img: Image.Image, box: Box) -> np.ndarray:
        """The model input of the part `box` of a decoded RGB image."""
        ...

    def propose(self, img: Image.Image) -> Proposal:
        """The whole image's unit vector (run now, outside the batcher) and candidate boxes of its main object."""
        ...


# The least the search queue waits for company while requests overlap, whatever BATCH_WINDOW_MS says. The
# searches of one model batch arrive within a millisecond or two of each other as its results are handed out;
# waiting for them sends them to Milvus as one call (16 clients, INT8: 8.0 queries a call instead of 4.7 at
# 0 ms, and 0.4-0.8 ms less CPU per request). Unlike the model queue's window, this never leaves the model idle.
SEARCH_WINDOW_MS = 2.0

# Told of every batch a batcher runs: (batcher name, batch size, seconds it ran). Metrics are fed through it.
BatchObserver = Callable[[str, int, float], None]


@dataclass
class Deps:
    """The service's dependencies, passed to every use case."""

    settings: Settings
    store: VectorStore
    # Concurrent requests' model inputs share one forward pass; their searches share one Milvus call.
    embeds: Batcher[np.ndarray, np.ndarray]
    searches: Batcher[Query, list[Hit]]
    decode_budget: PixelBudget
    model_info: dict[str, Any]
    thumbs: Thumbnails
    sources: Sources  # the kept sources (SOURCE_DIR), what a reindex re-embeds from
    framing: Framing
    duplicate_default: float
    # Duplicate-group scans, run by their own worker thread (started with the first scan).
    scans: Scans = field(default_factory=Scans)

    @property
    def duplicate_score(self) -> float:
        """The score at or above which a hit is a duplicate: DUPLICATE_SCORE, else calibrated, else the default."""
        return self._duplicate()[0]

    @property
    def duplicate_source(self) -> str:
        """Where `duplicate_score` comes from, for /ready."""
        return self._duplicate()[1]

    def _duplicate(self) -> tuple[float, str]:
        return duplicate_threshold(self.settings, self.store, self.duplicate_default, self.model_info)

    def embed_each(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Vectors of preprocessed images through the model's micro-batching queue, queued together."""
        return self.embeds.submit_many(list(arrays))

    def close(self) -> None:
        """Stop scans and both queues after the work already queued (the store is closed by its owner)."""
        self.scans.close()
        self.searches.close()
        self.embeds.close()


def duplicate_threshold(
    settings: Settings, store: VectorStore, default: float, model_info: dict[str, Any]
) -> tuple[float, str]:
    """The duplicate score in force and where it comes from: DUPLICATE_SCORE, else the one calibrated for the
    store's collection (read when it connected), else the model's `default`. The service (Deps) and
    `main.py duplicates` both take it from here, so a scan finds the same groups either way."""
    if settings.duplicate_score is not None:
        return settings.duplicate_score, "DUPLICATE_SCORE"
    calibrated = store.duplicate_threshold
    if calibrated is not None:
        return calibrated.score, (
            f"calibrated on {calibrated.images} images at {calibrated.created} "
            f"(keeps {calibrated.copies_kept:.0%} of copies)"
        )
    return default, f"default for {model_info.get('name', 'this model')}"


def build_deps(settings: Settings, store: VectorStore, model: Model, on_batch: BatchObserver | None = None) -> Deps:
    """Deps around a store and a model.

    `on_batch` is told of every batch of the model ("embed") and Milvus search ("search") queues.
    """

    def observer(name: str) -> Callable[[int, float], None] | None:
        """The batcher `name`'s own callback: on_batch with its name filled in."""
        return None if on_batch is None else lambda size, seconds: on_batch(name, size, seconds)

    embeds: Batcher[np.ndarray, np.ndarray] = Batcher(
        lambda arrays: list(model.embed(np.stack(arrays))),
        settings.batch_max_size,
        settings.batch_window_ms,
        "embed-batcher",
        observer("embed"),
    )
    searches: Batcher[Query, list[Hit]] = Batcher(
        store.search_many,
        settings.batch_max_size,
        max(settings.batch_window_ms, SEARCH_WINDOW_MS),
        "search-batcher",
        observer("search"),
    )
    return Deps(
        settings,
        store,
        embeds,
        searches,
        PixelBudget.for_settings(settings),
        model.info,
        Thumbnails(settings.thumb_dir),
        Sources(settings.source_dir),
        Framing(model.preprocess, model.preprocess_box, model.propose),
        model.duplicate_default,
    )
