"""Search: the stored images of a namespace most similar to an image, or to a stored record, each with a
verdict (exact, duplicate, similar)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from conf.errors import BadInput, NotFound
from service.inputs import ImageInput
from service.store.filters import FilterError, compile_filter
from service.store.records import Hit, Query, Scope
from service.usecases.deps import Deps
from service.usecases.prepare import model_input

EXACT, DUPLICATE, SIMILAR = "exact", "duplicate", "similar"


@dataclass(frozen=True)
class SearchOptions:
    """How to search: how many hits, the lowest score, the caller's filter object, one hit per key."""

    limit: int
    min_score: float | None = None
    filter: Any = None  # the parsed JSON object of the request's `filter` field (None: no filter)
    group_by_key: bool = False


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


def checked_filter(deps: Deps, namespace: str, options: SearchOptions) -> tuple[Scope, str]:
    """The namespace's scope and the filter as a Milvus expression, checked once before any work.

    A bad filter is refused with 400, a filter on a collection without attrs with 409, and a Milvus
    that is away with 503, all before the model runs.
    """
    try:
        expr = compile_filter(options.filter)
    except FilterError as exc:
        raise BadInput(f"field 'filter': {exc}", reason="bad_filter") from None
    return deps.store.scope(namespace, filtered=bool(expr)), expr


def _found(
    deps: Deps,
    vector: np.ndarray,
    md5: str,
    scope: Scope,
    options: SearchOptions,
    expr: str,
    exclude_id: int | None = None,
) -> list[Found]:
    query = Query(scope, vector, options.limit, options.min_score, expr, exclude_id, options.group_by_key)
    # Searches that arrive together (a model batch finishing) go to Milvus as one multi-vector search.
    hits = deps.searches.submit(query)
    threshold = deps.duplicate_score
    return [Found(hit, verdict(hit, md5, threshold)) for hit in hits]


def search_image(deps: Deps, namespace: str, image: ImageInput, options: SearchOptions) -> list[Found]:
    """The namespace's images most similar to this one, best first, as the options say."""
    scope, expr = checked_filter(deps, namespace, options)
    source = image.load(deps.settings)
    md5, array = model_input(source.data, deps.settings, deps.preprocess, deps.decode_budget)
    [vector] = deps.embed_each([array])
    return _found(deps, vector, md5, scope, options, expr)


def search_by_id(
    deps: Deps, namespace: str, record_id: int, options: SearchOptions, include_self: bool = False
) -> list[Found]:
    """The namespace's images most similar to its stored record `record_id` (left out unless include_self)."""
    scope, expr = checked_filter(deps, namespace, options)
    stored = deps.store.vector_of(scope, record_id)
    if stored is None:
        raise NotFound(f"no record with id {record_id} in this namespace", reason="no_such_record")
    vector, md5 = stored
    return _found(deps, vector, md5, scope, options, expr, None if include_self else record_id)
