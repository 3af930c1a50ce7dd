"""The image records: VectorStore stores, finds, searches, lists and deletes them in one Milvus collection.

Works against embedded Milvus Lite (a local file), a Milvus 2.3 standalone
server and Milvus 2.5+ servers or clusters. All writes of one request are a
single Milvus call, so a failure never leaves half a request written.

Every read, write, count, delete and search is confined to one namespace: its
expression starts with the namespace condition (service.store.scope). The one
exception is the id lookup of id allocation, which must see every namespace
because ids are unique across them; it never hands another namespace's row out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np

from conf.settings import Settings
from service.store.client import MilvusClient, short
from service.store.connection import QUERY_PAGE, Connection
from service.store.duplicates import find_duplicate
from service.store.filters import DEFAULT_NAMESPACE, key_in, quote_literal
from service.store.flusher import LiteFlusher
from service.store.ids import Ref, Slot, allocate_ids
from service.store.paging import Page, list_page
from service.store.rows import RECORD_FIELDS, Hit, Query, Record, public_record
from service.store.schema import Layout
from service.store.scope import Scope
from service.store.searching import Searcher

__all__ = ["Hit", "Page", "Query", "Record", "VectorStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class VectorStore:
    """The image records in one Milvus collection."""

    def __init__(self, settings: Settings, dim: int) -> None:
        self._settings = settings
        self.connection = Connection(settings, dim)
        # Check-then-write sequences (id probing, counted deletes) run one at a time
        # so that identical concurrent adds cannot both insert.
        self._write_lock = threading.Lock()
        self._flusher = LiteFlusher(self.connection.flush) if settings.milvus_is_lite else None
        self._searcher = Searcher(self.connection)

    # --- connection -------------------------------------------------------------------
    @property
    def target(self) -> str:
        """Where the vectors live, for logs and messages (never includes credentials)."""
        return self.connection.target

    @property
    def server_version(self) -> str:
        """The Milvus version reported at connection ('' before)."""
        return self.connection.server_version

    @property
    def vector_index(self) -> str:
        """The vector index type in use ('' before connecting)."""
        return self.connection.indexes.vector

    @property
    def key_index(self) -> str:
        """The scalar index type on `key` ('' when the server accepted none)."""
        return self.connection.indexes.key

    @property
    def layout(self) -> Layout:
        """Whether the collection has namespaces and attributes, and a partition key (after connecting)."""
        return self.connection.layout

    def connect(self) -> None:
        """Connect, create or verify the collection, and load it (see Connection.connect)."""
        self.connection.connect()

    def scope(self) -> Scope:
        """The namespace expressions of this collection (connects first: they depend on its schema)."""
        self.connection.connect()
        return Scope(self.connection.layout, self.connection.collection)

    def require(self, namespace: str, attrs: bool = False, filtered: bool = False) -> None:
        """Raise Conflict now if the collection cannot serve this namespace, attributes or filter.

        Use cases call this before spending model time on a request the store would refuse.
        """
        self.scope().require(namespace, attrs=attrs, filtered=filtered)

    def ping(self) -> None:
        """Raise NotReady unless Milvus serves the collection now."""
        self.connection.ping()

    def close(self) -> None:
        """Flush what Milvus Lite still holds in memory, then drop the connection."""
        if self._flusher is not None:
            self._flusher.close()
            self._flusher = None
        self.connection.close()

    def _call(self, fn: Callable[[MilvusClient], T]) -> T:
        return self.connection.call(fn)

    def _wrote(self, rows: int) -> None:
        if self._flusher is not None:
            self._flusher.wrote(rows)

    def _query(self, client: MilvusClient, expr: str, limit: int = QUERY_PAGE) -> list[dict[str, Any]]:
        return self.connection.query(client, expr, self.scope().fields(RECORD_FIELDS), limit=limit)

    # --- ids --------------------------------------------------------------------------
    def _slots(self, client: MilvusClient, refs: Sequence[Ref]) -> list[Slot]:
        def rows_by_id(ids: list[int]) -> dict[int, dict[str, Any]]:
            return {r["id"]: r for r in self._query(client, f"id in {ids}")}
        return allocate_ids(refs, rows_by_id)

    def stored(self, pairs: Sequence[tuple[str, str]],
               namespace: str = DEFAULT_NAMESPACE) -> dict[tuple[str, str], dict[str, Any]]:
        """The stored row (id, key, md5, filepath, attrs...) of each of these (key, md5) pairs of the namespace."""
        unique = list(dict.fromkeys(pairs))
        if not unique:
            return {}
        self.require(namespace)
        slots = self._call(lambda c: self._slots(c, [(namespace, key, md5) for key, md5 in unique]))
        return {pair: slot.stored for pair, slot in zip(unique, slots, strict=True) if slot.stored is not None}

    def existing(self, pairs: Sequence[tuple[str, str]], namespace: str = DEFAULT_NAMESPACE) -> set[tuple[str, str]]:
        """Which of these (key, md5) pairs the namespace holds already."""
        return set(self.stored(pairs, namespace))

    def find(self, key: str, md5: str, namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any] | None:
        """The stored record for exactly this key and image in the namespace, if any."""
        return self.stored([(key, md5)], namespace).get((key, md5))

    # --- writes -----------------------------------------------------------------------
    def put_many(self, records: Sequence[Record]) -> list[tuple[int, bool]]:
        """Store records; returns (id, created) for each. Re-putting a stored (namespace, key, md5) creates nothing.

        A record that is stored already keeps its id; its filepath (and attrs, when
        given) are updated when they changed. The whole batch is one upsert.
        """
        if not records:
            return []
        scope = self.scope()
        for rec in records:
            scope.require(rec.namespace, attrs=bool(rec.attrs))
        with self._write_lock:
            return self._call(lambda c: self._put_locked(c, scope, records))

    def put_unless_duplicate(self, record: Record, min_score: float) -> tuple[int, bool, dict[str, Any] | None]:
        """Store the record unless its namespace holds the same image under another key.

        Returns (id, created, None) when stored (or already stored under its own key), and
        (id, False, the other record) for a duplicate: the same MD5, or a score >= min_score.
        Check and write run under the write lock, so identical concurrent adds cannot both pass.
        """
        scope = self.scope()
        scope.require(record.namespace, attrs=bool(record.attrs))
        with self._write_lock:
            def run(client: MilvusClient) -> tuple[int, bool, dict[str, Any] | None]:
                [own] = self._slots(client, [(record.namespace, record.key, record.md5)])
                if own.stored is None:
                    other = find_duplicate(self.connection, self._searcher, client, scope, record, min_score)
                    if other is not None:
                        return int(other["id"]), False, public_record(other)
                [(rid, created)] = self._put_locked(client, scope, [record])
                return rid, created, None
            return self._call(run)

    def _put_locked(self, client: MilvusClient, scope: Scope, records: Sequence[Record]) -> list[tuple[int, bool]]:
        slots = self._slots(client, [(r.namespace, r.key, r.md5) for r in records])
        rows: dict[int, dict[str, Any]] = {}
        result = []
        for rec, slot in zip(records, slots, strict=True):
            if slot.stored is not None:
                row = _row(scope, slot.id, rec, slot.stored)
                if any(row.get(f) != slot.stored.get(f) for f in ("filepath", "attrs") if f in row):
                    rows[slot.id] = row
                result.append((slot.id, False))
            elif slot.id not in rows:
                rows[slot.id] = _row(scope, slot.id, rec, None)
                result.append((slot.id, True))
            else:
                result.append((slot.id, False))  # the same image twice in one batch
        if rows:
            client.upsert(self.connection.collection, list(rows.values()), timeout=self._settings.milvus_timeout)
            self._wrote(len(rows))
        return result

    def delete_ids(self, ids: Iterable[int], namespace: str = DEFAULT_NAMESPACE) -> int:
        """Delete the namespace's records with these ids; returns how many existed (another namespace's: none)."""
        wanted = sorted(set(ids))
        if not wanted:
            return 0
        expr = self.scope().expr(namespace, f"id in {wanted}")
        return self._delete_found(lambda c: [int(r["id"]) for r in self.connection.query(c, expr, ("id",))])

    def delete_keys(self, keys: Iterable[str], namespace: str = DEFAULT_NAMESPACE) -> int:
        """Delete every record of these keys in the namespace; returns how many records were deleted."""
        match = key_in(keys)
        if match is None:
            return 0
        expr = self.scope().expr(namespace, match)
        return self._delete_found(lambda c: [int(r["id"]) for r in self.connection.query(c, expr, ("id",))])

    def delete_key_except(self, key: str, keep_md5s: Iterable[str], namespace: str = DEFAULT_NAMESPACE) -> int:
        """Delete the records of `key` in the namespace whose image is not one of `keep_md5s`; returns how many."""
        keep = set(keep_md5s)
        expr = self.scope().expr(namespace, f"key == {quote_literal(key)}")
        return self._delete_found(lambda c: [int(r["id"]) for r in self.connection.query(c, expr, ("id", "md5"))
                                             if r["md5"] not in keep])

    def _delete_found(self, find: Callable[[MilvusClient], list[int]]) -> int:
        """Delete the rows `find` names, found and deleted under the write lock; returns how many."""
        with self._write_lock:
            def run(c: MilvusClient) -> int:
                deleted = 0
                while found := find(c):  # a query returns at most QUERY_PAGE rows: repeat until none is left
                    c.delete(self.connection.collection, ids=found, timeout=self._settings.milvus_timeout)
                    self._deleted(c, len(found))
                    deleted += len(found)
                    if len(found) < QUERY_PAGE:
                        break
                return deleted
            return self._call(run)

    def _deleted(self, client: MilvusClient, rows: int) -> None:
        """After a delete: make sure the next Session-level reads cannot still see the deleted rows."""
        self._wrote(rows)
        if self.connection.read_level != "Strong" and not self._settings.milvus_is_lite:
            # Session reads wait for this client's last write timestamp, but a Milvus 2.3 server
            # returns none for deletes. One Strong read returns only once the query node has
            # applied everything up to now, the delete included; later reads are served from there.
            try:
                self.connection.query(client, "id in [0]", ("id",), limit=1, level="Strong")
            except Exception as exc:  # noqa: BLE001 - the delete is done; do not retry (and recount) it
                log.warning("read barrier after a delete failed (%s); a search in the next moment may still "
                            "return the deleted rows", short(exc))

    # --- reads ------------------------------------------------------------------------
    def search(self, vector: np.ndarray, limit: int, min_score: float | None = None,
               namespace: str = DEFAULT_NAMESPACE) -> list[Hit]:
        """The `limit` stored images of the namespace most similar to `vector`, best first."""
        [hits] = self.search_many([Query(vector, limit, min_score, namespace)])
        return hits

    def search_many(self, queries: Sequence[Query]) -> list[list[Hit]]:
        """The hits of each query, each within its namespace; queries alike share one Milvus call."""
        scope = self.scope()
        for q in queries:
            scope.require(q.namespace, filtered=bool(q.filter))
        return self._call(lambda c: self._searcher.search_many(c, scope, queries))

    def vector_of(self, record_id: int, namespace: str = DEFAULT_NAMESPACE) -> np.ndarray | None:
        """The stored vector of one of the namespace's records; None when it holds no such id."""
        expr = self.scope().expr(namespace, f"id == {int(record_id)}")
        rows = self._call(lambda c: self.connection.query(c, expr, ("id", "vector"), limit=1))
        return np.asarray(rows[0]["vector"], dtype=np.float32) if rows else None

    def get_keys(self, keys: Iterable[str], namespace: str = DEFAULT_NAMESPACE) -> list[dict[str, Any]]:
        """The records (id, key, filepath, md5, attrs) of these keys in the namespace, ordered by key then id."""
        match = key_in(keys)
        if match is None:
            return []
        expr = self.scope().expr(namespace, match)
        rows = self._call(lambda c: self._query(c, expr))
        return sorted((public_record(r) for r in rows), key=lambda r: (r["key"], r["id"]))

    def count(self, namespace: str = DEFAULT_NAMESPACE) -> int:
        """How many records the namespace holds."""
        expr = self.scope().expr(namespace)
        return self._call(lambda c: self._count(c, expr))

    def list_records(self, after_id: int, limit: int, namespace: str = DEFAULT_NAMESPACE) -> Page:
        """The namespace's records with an id above `after_id`, `limit` at most, in id order (see paging)."""
        scope = self.scope()

        def run(c: MilvusClient) -> Page:
            remaining = self._count(c, scope.expr(namespace, f"id > {int(after_id)}"))
            page = list_page(lambda window, cap: self._query(c, scope.expr(namespace, window), cap),
                             remaining, after_id, limit, QUERY_PAGE)
            return Page([public_record(r) for r in page.rows], page.next_after_id)
        return self._call(run)

    def _count(self, client: MilvusClient, expr: str) -> int:
        rows = client.query(self.connection.collection, filter=expr, output_fields=["count(*)"],
                            consistency_level=self.connection.read_level, timeout=self._settings.milvus_timeout)
        return int(rows[0]["count(*)"]) if rows else 0


def _row(scope: Scope, rid: int, rec: Record, stored: dict[str, Any] | None) -> dict[str, Any]:
    """The row to write for `rec` under id `rid`; attrs None keeps what `stored` has."""
    attrs = rec.attrs if rec.attrs is not None else ((stored or {}).get("attrs") or {})
    return {"id": rid, "key": rec.key, "md5": rec.md5, "filepath": rec.filepath,
            "vector": np.asarray(rec.vector, dtype=np.float32).tolist(), **scope.extras(rec.namespace, attrs)}
