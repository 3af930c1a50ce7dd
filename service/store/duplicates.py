"""Is this image already in the namespace under another key? The same bytes (MD5), or a near-duplicate.

Called by VectorStore.put_unless_duplicate inside its write lock, so that two identical adds racing
cannot both pass the check: the second one finds what the first one wrote.
"""

from __future__ import annotations

from typing import Any

from service.store.client import MilvusClient
from service.store.connection import Connection
from service.store.filters import quote_literal
from service.store.rows import RECORD_FIELDS, Query, Record
from service.store.scope import Scope
from service.store.searching import Searcher


def find_duplicate(connection: Connection, searcher: Searcher, client: MilvusClient, scope: Scope, record: Record,
                   min_score: float) -> dict[str, Any] | None:
    """A stored row of the record's namespace, under another key, with the same MD5 or a score >= min_score."""
    other_key = f"key != {quote_literal(record.key)}"
    same_bytes = connection.query(client, scope.expr(record.namespace, other_key,
                                                     f"md5 == {quote_literal(record.md5)}"),
                                  scope.fields(RECORD_FIELDS), limit=1)
    if same_bytes:
        return same_bytes[0]
    [hits] = searcher.search_many(client, scope, [Query(record.vector, 1, min_score, record.namespace,
                                                        filter=other_key)])
    if not hits:
        return None
    rows = connection.query(client, scope.expr(record.namespace, f"id == {int(hits[0].id)}"), scope.fields(RECORD_FIELDS),
                            limit=1)
    return rows[0] if rows else None
