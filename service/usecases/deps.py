"""What the use cases work with, built once by service.runtime: settings, store, model queue, search queue."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from conf.settings import Settings
from service.batcher import Batcher
from service.store.records import Hit, Query, VectorStore
from service.usecases.prepare import PixelBudget

# The score at or above which an image counts as a near-duplicate of a stored one (on_duplicate), unless
# DUPLICATE_SCORE says otherwise: with ImageNet weights, re-encodings, resizes and small crops of one
# picture score above it while different products rarely do.
DEFAULT_DUPLICATE_SCORE = 0.95


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

    @property
    def duplicate_score(self) -> float:
        """The score at or above which two images count as the same picture."""
        score = self.settings.duplicate_score
        return DEFAULT_DUPLICATE_SCORE if score is None else score

    def embed_each(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Vectors of preprocessed images through the model's micro-batching queue, queued together."""
        return self.embeds.submit_many(list(arrays))

    def close(self) -> None:
        """Stop both queues after the work already queued (the store is closed by its owner)."""
        self.searches.close()
        self.embeds.close()


def build_deps(settings: Settings, store: VectorStore, embed_batch: Callable[[np.ndarray], np.ndarray],
               model_info: dict[str, Any]) -> Deps:
    """Deps around a store and a batch embedding function ((n, ...) inputs -> (n, dim) unit vectors)."""
    embeds: Batcher[np.ndarray, np.ndarray] = Batcher(
        lambda arrays: embed_batch(np.stack(arrays)), settings.batch_max_size, settings.batch_window_ms,
        "embed-batcher")
    searches: Batcher[Query, list[Hit]] = Batcher(
        store.search_many, settings.batch_max_size, settings.batch_window_ms, "search-batcher")
    return Deps(settings, store, embeds, searches, PixelBudget.for_settings(settings), model_info)
