"""Search: the stored images of a namespace most similar to an image (or to a part of it: a box, or the main object
found by the model), or to a stored record, each with a verdict (exact, duplicate, similar)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from conf.errors import BadInput, NotFound
from conf.settings import SearchRegion
from model.images import DecodedImage
from model.regions import Box, auto_gate, choose
from service.inputs import ImageInput
from service.store.filters import FilterError, compile_filter
from service.store.records import Hit, Query, Scope
from service.usecases.deps import Deps
from service.usecases.prepare import Picture, Region, decoded_use, framed

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


@dataclass(frozen=True)
class Searched:
    """A search by image's hits, and the box (pixels of the EXIF-oriented image) whose vector was searched."""

    found: list[Found]
    region: Box


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


def _found_each(
    deps: Deps,
    vectors: list[np.ndarray],
    md5: str,
    scope: Scope,
    options: SearchOptions,
    expr: str,
    exclude_id: int | None = None,
) -> list[list[Found]]:
    queries = [
        Query(scope, v, options.limit, options.min_score, expr, exclude_id, options.group_by_key) for v in vectors
    ]
    # Searches that arrive together (a model batch finishing) go to Milvus as one multi-vector search.
    hits_each = deps.searches.submit_many(queries)
    threshold = deps.duplicate_score
    return [[Found(hit, verdict(hit, md5, threshold)) for hit in hits] for hits in hits_each]


def _found(
    deps: Deps,
    vector: np.ndarray,
    md5: str,
    scope: Scope,
    options: SearchOptions,
    expr: str,
    exclude_id: int | None = None,
) -> list[Found]:
    [found] = _found_each(deps, [vector], md5, scope, options, expr, exclude_id)
    return found


def search_image(
    deps: Deps, namespace: str, image: ImageInput, options: SearchOptions, region: Region | None = None
) -> Searched:
    """The namespace's images most similar to this one (or to the part `region` names; none named: SEARCH_REGION),
    best first, as the options say, and the box searched."""
    scope, expr = checked_filter(deps, namespace, options)
    region = deps.settings.search_region if region is None else region
    source = image.load(deps.settings)
    if region is SearchRegion.AUTO:
        # The whole auto flow runs while the image is held: its candidate boxes are worked out (and cropped) only
        # when the whole image's search falls short, and they need the decoded pixels.
        _md5, searched, _, _ = decoded_use(
            source.data,
            deps.settings,
            lambda decoded: _search_auto(deps, decoded, scope, options, expr),
            deps.decode_budget,
            thumbnail=False,
        )
        return searched
    md5, frame, _, _ = decoded_use(
        source.data,
        deps.settings,
        lambda decoded: framed(decoded, region, deps.framing),
        deps.decode_budget,
        thumbnail=False,
    )
    [vector] = deps.embed_each([frame.array])
    return Searched(_found(deps, vector, md5, scope, options, expr), frame.box)


def _best(found: list[Found]) -> float | None:
    return found[0].hit.score if found else None


def _search_auto(deps: Deps, decoded: DecodedImage, scope: Scope, options: SearchOptions, expr: str) -> Searched:
    """The "auto" flow: the whole image's search (its vector from the model's proposal pass) answers when its best
    hit reaches the gate or the model proposes no box; else every box is embedded and searched (each step queued
    together) and model.regions.choose picks the answer."""
    picture = Picture(decoded)
    proposal = deps.framing.propose(picture.image)
    whole = _found(deps, proposal.vector, decoded.md5, scope, options, expr)
    best = _best(whole)
    if best is not None and best >= auto_gate(deps.duplicate_score):
        return Searched(whole, picture.whole)
    boxes = proposal.boxes
    if not boxes:
        return Searched(whole, picture.whole)
    vectors = deps.embed_each([deps.framing.preprocess_box(picture.image, box) for box in boxes])
    each = _found_each(deps, vectors, decoded.md5, scope, options, expr)
    chosen = choose(best, [_best(found) for found in each])
    if chosen is None:
        return Searched(whole, picture.whole)
    return Searched(each[chosen], picture.callers_box(boxes[chosen]))


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
