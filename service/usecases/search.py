"""Search: the stored images most similar to one image."""

from __future__ import annotations

from service.inputs import ImageInput
from service.store.records import Hit, Query
from service.usecases.deps import Deps
from service.usecases.prepare import model_input


def search_image(deps: Deps, image: ImageInput, limit: int, min_score: float | None) -> list[Hit]:
    """The `limit` stored images most similar to this one, best first, only those scoring at least min_score."""
    source = image.load(deps.settings)
    _md5, array = model_input(source.data, deps.settings, deps.decode_budget)
    deps.store.connect()  # fail fast with 503 before spending model time when Milvus is away
    [vector] = deps.embed_each([array])
    # Searches that arrive together (a model batch finishing) go to Milvus as one multi-vector search.
    return deps.searches.submit(Query(vector, limit, min_score))
