"""One hit per key: each key's best image, best keys first, `limit` counting keys.

Milvus groups by itself where it can (`group_by_field`: Milvus Lite and 2.4+ servers). Its answer
is trusted only as far as it is checked: a 2.3 server ignores the parameter (repeated keys betray
it), and Milvus Lite groups within a fixed over-fetch of ten times the limit, so a short answer may
be missing keys. Otherwise, and whenever the native answer is short, the service fetches plain hits
in growing rounds (GROUP_FETCH_FACTOR times the limit, then that times the factor again...) and keeps
the first hit of each key, until it has `limit` keys, Milvus has no more hits, the scores fall below
`min_score`, or the fetch reaches MAX_GROUP_FETCH (Milvus' largest top-k). Every key found this way
is a true answer: a key is found through its best hit, which ranks above all hits not fetched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from service.store.rows import Hit

log = logging.getLogger(__name__)

GROUP_FETCH_FACTOR = 4
MAX_GROUP_FETCH = 16384

# search(top_k, native_grouping) -> hits, best first
SearchFn = Callable[[int, bool], list[Hit]]


def best_per_key(hits: list[Hit]) -> list[Hit]:
    """The first (best) hit of each key, in order."""
    seen: set[str] = set()
    best = []
    for hit in hits:
        if hit.key not in seen:
            seen.add(hit.key)
            best.append(hit)
    return best


def grouped_search(search: SearchFn, limit: int, min_score: float | None, native: bool) -> tuple[list[Hit], bool]:
    """The best hit of each of the `limit` best keys (at least min_score); and whether native grouping held up.

    The second value is False when Milvus answered a grouping search with repeated keys (it ignored the
    parameter), so that the caller stops asking for it.
    """
    if native:
        hits = search(limit, True)
        if len({h.key for h in hits}) != len(hits):
            log.warning("Milvus ignored group_by_field (repeated keys in its answer); the service groups instead")
            native = False
        elif len(hits) >= limit:
            return _above(hits[:limit], min_score), True
    return _above(_fetch_rounds(search, limit, min_score), min_score), native


def _fetch_rounds(search: SearchFn, limit: int, min_score: float | None) -> list[Hit]:
    fetch = min(limit * GROUP_FETCH_FACTOR, MAX_GROUP_FETCH)
    while True:
        hits = search(fetch, False)
        best = best_per_key(hits)
        exhausted = len(hits) < fetch or fetch >= MAX_GROUP_FETCH
        below = min_score is not None and bool(hits) and hits[-1].score < min_score
        if len(best) >= limit or exhausted or below:
            return best[:limit]
        fetch = min(fetch * GROUP_FETCH_FACTOR, MAX_GROUP_FETCH)


def _above(hits: list[Hit], min_score: float | None) -> list[Hit]:
    return hits if min_score is None else [h for h in hits if h.score >= min_score]
