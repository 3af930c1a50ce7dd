"""Vector searches: queries that share a namespace and filter go to Milvus together; grouped ones alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from service.store.client import MilvusClient
from service.store.connection import Connection
from service.store.grouping import grouped_search
from service.store.lite_engine import LiteEngine
from service.store.rows import HIT_FIELDS, Hit, Query, hit_of
from service.store.scope import Scope

SEARCH_PARAMS = {"metric_type": "IP"}  # cosine similarity: the stored vectors have unit length


class Searcher:
    """Runs Query objects against one collection, within each query's namespace."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._native_grouping: bool | None = None  # decided once connected; False once Milvus ignores it
        s = connection.settings
        self._lite = LiteEngine(s.milvus_uri, connection.collection, s.milvus_db or "") if s.milvus_is_lite else None

    def search_many(self, client: MilvusClient, scope: Scope, queries: Sequence[Query]) -> list[list[Hit]]:
        """The hits of each query: one Milvus call per distinct namespace and filter (far cheaper than one each)."""
        results: list[list[Hit]] = [[] for _ in queries]
        shared: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            if q.group_by_key:
                results[i] = self._grouped(client, scope, q)
            else:
                shared.setdefault(self._expr(scope, q), []).append(i)
        for expr, members in shared.items():
            widest = max(queries[i].limit for i in members)
            answers = self._raw(client, scope, [queries[i].vector for i in members], widest, expr, group=False)
            for i, hits in zip(members, answers, strict=True):
                q = queries[i]
                results[i] = [h for h in hits[:q.limit] if q.min_score is None or h.score >= q.min_score]
        return results

    @staticmethod
    def _expr(scope: Scope, q: Query) -> str:
        return scope.expr(q.namespace, q.filter, f"id != {int(q.exclude_id)}" if q.exclude_id is not None else "")

    def _grouped(self, client: MilvusClient, scope: Scope, q: Query) -> list[Hit]:
        expr = self._expr(scope, q)
        if self._native_grouping is None:
            self._native_grouping = self.connection.native_grouping

        def search(top_k: int, native: bool) -> list[Hit]:
            return self._raw(client, scope, [q.vector], top_k, expr, group=native)[0]

        hits, self._native_grouping = grouped_search(search, q.limit, q.min_score, self._native_grouping)
        return hits

    def _raw(self, client: MilvusClient, scope: Scope, vectors: Sequence[np.ndarray], top_k: int, expr: str,
             group: bool) -> list[list[Hit]]:
        conn = self.connection
        params: dict[str, Any] = dict(SEARCH_PARAMS)
        if conn.indexes.vector == "HNSW":
            params["params"] = {"ef": max(conn.settings.milvus_hnsw_ef, top_k)}
        fields = scope.fields(HIT_FIELDS)
        if self._lite is not None and not group:
            found = self._lite.search(vectors, top_k, expr, fields, params.get("params"))
            if found is not None:
                return [[hit_of(h) for h in hits] for hits in found]
        extra: dict[str, Any] = {"group_by_field": "key"} if group else {}
        result = client.search(conn.collection, data=[np.asarray(v, dtype=np.float32).tolist() for v in vectors],
                               anns_field="vector", limit=top_k, filter=expr, output_fields=fields,
                               search_params=params, consistency_level=conn.read_level,
                               timeout=conn.settings.milvus_timeout, **extra)
        return [[hit_of(h) for h in hits] for hits in result]
