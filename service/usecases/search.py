"""Search: the stored images most similar to one image, each with a verdict (exact, duplicate, similar)."""

from __future__ import annotations

from dataclasses import dataclass

from service.inputs import ImageInput
from service.store.records import Hit, Query
from service.usecases.deps import Deps
from service.usecases.prepare import model_input

EXACT, DUPLICATE, SIMILAR = "exact", "duplicate", "similar"


@dataclass(frozen=True)
class Found:
    """One search hit and its verdict: `exact` (the same bytes), `duplicate` (at or above the threshold), `similar`."""

    hit: Hit
    match: str


def verdict(hit: Hit, query_md5: str, duplicate_score: float) -> str:
    """How a hit relates to the query image."""
    if hit.md5 and hit.md5 == query_md5:
        return EXACT
    return DUPLICATE if hit.score >= duplicate_score else SIMILAR


def search_image(deps: Deps, image: ImageInput, limit: int, min_score: float | None) -> list[Found]:
    """The `limit` stored images most similar to this one, best first, only those scoring at least min_score."""
    source = image.load(deps.settings)
    md5, array = model_input(source.data, deps.settings, deps.preprocess, deps.decode_budget)
    deps.store.connect()  # fail fast with 503 before spending model time when Milvus is away
    [vector] = deps.embed_each([array])
    # Searches that arrive together (a model batch finishing) go to Milvus as one multi-vector search.
    hits = deps.searches.submit(Query(vector, limit, min_score))
    threshold = deps.duplicate_score
    return [Found(hit, verdict(hit, md5, threshold)) for hit in hits]
