"""What the use cases work with, built once by service.runtime: settings, store, model queue, search queue."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from conf.settings import Settings
from service.batcher import Batcher
from service.store.records import Hit, Query, VectorStore
from service.thumbs import Thumbnails
from service.usecases.prepare import PixelBudget

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

    def embed_each(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Vectors of preprocessed images, each through the model's micro-batching queue."""
        return [self.embeds.submit(arr) for arr in arrays]

    def close(self) -> None:
        """Stop both queues after the work already queued (the store is closed by its owner)."""
        self.searches.close()
        self.embeds.close()


def build_deps(settings: Settings, store: VectorStore, embed_batch: Callable[[np.ndarray], np.ndarray],
               model_info: dict[str, Any], on_batch: BatchObserver | None = None) -> Deps:
    """Deps around a store and a batch embedding function ((n, ...) inputs -> (n, dim) unit vectors).

    `on_batch` is told of every batch of the model ("embed") and Milvus search ("search") queues.
    """
    def observer(name: str) -> Callable[[int, float], None] | None:
        """The batcher `name`'s own callback: on_batch with its name filled in."""
        return None if on_batch is None else lambda size, seconds: on_batch(name, size, seconds)

    embeds: Batcher[np.ndarray, np.ndarray] = Batcher(
        lambda arrays: embed_batch(np.stack(arrays)), settings.batch_max_size, settings.batch_window_ms,
        "embed-batcher", observer("embed"))
    searches: Batcher[Query, list[Hit]] = Batcher(
        store.search_many, settings.batch_max_size, settings.batch_window_ms, "search-batcher", observer("search"))
    return Deps(settings, store, embeds, searches, PixelBudget.for_settings(settings), model_info,
                Thumbnails(settings.thumb_dir))
