"""Vector searches: queries that share a namespace and filter go to Milvus together; grouped ones alone.

One hit per key (`group_by_key`): each key's best image, best keys first, `limit` counting keys.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.store.connection import Connection, MilvusClient
from service.store.filters import Scope, quote_literal

log = logging.getLogger(__name__)

SEARCH_PARAMS = {"metric_type": "IP"}  # cosine similarity: the stored vectors have unit length
HIT_FIELDS = ("key", "filepath", "md5", "attrs")
GROUP_FETCH_FACTOR = 4
MAX_GROUP_FETCH = 16384

# search(top_k, native_grouping) -> hits, best first
SearchFn = Callable[[int, bool], list["Hit"]]


@dataclass(frozen=True)
class Hit:
    """One search result; `attrs` is {} for a record without attributes."""

    id: int
    key: str
    filepath: str
    score: float
    md5: str = ""  # of the stored image's bytes: tells an exact copy of the query from a near one
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Query:
    """One vector search: the `limit` best hits in a namespace scope, only those scoring at least `min_score`.

    `filter` is an expression built by service.store.filters (never caller text; an attrs filter needs a
    scope made with `filtered=True`, which a collection without attributes refuses); `exclude_id` leaves
    one record out (a search by a stored record); `group_by_key` keeps each key's best hit only, and
    `limit` then counts keys.
    """

    scope: Scope
    vector: np.ndarray
    limit: int
    min_score: float | None = None
    filter: str = ""
    exclude_id: int | None = None
    group_by_key: bool = False

    def expr(self) -> str:
        """The Milvus expression of the records this query may find."""
        excluded = f"id != {int(self.exclude_id)}" if self.exclude_id is not None else ""
        return self.scope.expr(self.filter, excluded)


def hit_of(raw: dict[str, Any]) -> Hit:
    """A Milvus search hit as a Hit."""
    entity = raw["entity"]
    return Hit(
        id=int(raw["id"]),
        key=entity["key"],
        filepath=entity["filepath"],
        score=round(float(raw["distance"]), 6),
        md5=entity.get("md5", ""),
        attrs=entity.get("attrs") or {},
    )


class Searcher:
    """Runs Query objects against one collection, each within its namespace scope."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._native_grouping: bool | None = None  # decided once connected; False once Milvus ignores it

    def search_many(self, client: MilvusClient, queries: Sequence[Query]) -> list[list[Hit]]:
        """The hits of each query: one Milvus call per distinct namespace and filter (far cheaper than one each)."""
        results: list[list[Hit]] = [[] for _ in queries]
        shared: dict[tuple[str, tuple[str, ...]], list[int]] = {}
        for i, q in enumerate(queries):
            if q.group_by_key:
                results[i] = self._grouped(client, q)
            else:
                shared.setdefault((q.expr(), tuple(q.scope.fields(HIT_FIELDS))), []).append(i)
        for (expr, fields), members in shared.items():
            widest = max(queries[i].limit for i in members)
            answers = self._raw(client, fields, [queries[i].vector for i in members], widest, expr, group=False)
            for i, hits in zip(members, answers, strict=True):
                q = queries[i]
                results[i] = [h for h in hits[: q.limit] if q.min_score is None or h.score >= q.min_score]
        return results

    def duplicate_of(
        self,
        client: MilvusClient,
        scope: Scope,
        key: str,
        md5: str,
        vector: np.ndarray,
        min_score: float,
        fields: Sequence[str],
    ) -> dict[str, Any] | None:
        """A stored row (`fields`) of the scope under another key than `key`: the same MD5, or a score >= min_score.

        Called by VectorStore.put_unless_duplicate inside its write lock, so that two identical adds racing
        cannot both pass the check: the second one finds what the first one wrote.
        """
        other_key = f"key != {quote_literal(key)}"
        same_bytes = self.connection.query(
            client, scope.expr(other_key, f"md5 == {quote_literal(md5)}"), fields, limit=1
        )
        if same_bytes:
            return same_bytes[0]
        [hits] = self.search_many(client, [Query(scope, vector, 1, min_score, filter=other_key)])
        if not hits:
            return None
        rows = self.connection.query(client, scope.expr(f"id == {int(hits[0].id)}"), fields, limit=1)
        return rows[0] if rows else None

    def _grouped(self, client: MilvusClient, q: Query) -> list[Hit]:
        expr, fields = q.expr(), q.scope.fields(HIT_FIELDS)
        if self._native_grouping is None:
            self._native_grouping = self.connection.native_grouping

        def search(top_k: int, native: bool) -> list[Hit]:
            return self._raw(client, fields, [q.vector], top_k, expr, group=native)[0]

        hits, self._native_grouping = grouped_search(search, q.limit, q.min_score, self._native_grouping)
        return hits

    def _raw(
        self,
        client: MilvusClient,
        fields: Sequence[str],
        vectors: Sequence[np.ndarray],
        top_k: int,
        expr: str,
        group: bool,
    ) -> list[list[Hit]]:
        conn = self.connection
        params: dict[str, Any] = dict(SEARCH_PARAMS)
        if conn.indexes.vector == "HNSW":
            params["params"] = {"ef": max(conn.settings.milvus_hnsw_ef, top_k)}
        extra: dict[str, Any] = {"group_by_field": "key"} if group else {}
        result = client.search(
            conn.collection,
            data=[np.asarray(v, dtype=np.float32).tolist() for v in vectors],
            anns_field="vector",
            limit=top_k,
            filter=expr,
            output_fields=list(fields),
            search_params=params,
            consistency_level=conn.read_level,
            timeout=conn.settings.milvus_timeout,
            **extra,
        )
        return [[hit_of(h) for h in hits] for hits in result]


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
