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
from service.store.connection import QUERY_PAGE, CallObserver, Connection
from service.store.duplicates import find_duplicate
from service.store.filters import DEFAULT_NAMESPACE, key_in, md5_in, quote_literal
from service.store.flusher import LiteFlusher
from service.store.ids import Ref, Slot, allocate_ids
from service.store.meta import DuplicateThreshold, SpaceTag
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

    def __init__(self, settings: Settings, dim: int, space: SpaceTag | None = None,
                 on_call: CallObserver | None = None) -> None:
        """A store of `dim`-d vectors; with `space`, the collection must belong to that embedding space.

        `on_call(operation, seconds, failed)` is told of every Milvus call (service.runtime feeds metrics).
        """
        self._settings = settings
        self.connection = Connection(settings, dim, space, on_call)
        # Check-then-write sequences (id probing, counted deletes) run one at a time
        # so that identical concurrent adds cannot both insert.
        self._write_lock = threading.Lock()
        # The flush holds the Lite gate exclusively, so it never overlaps a write, delete or read (store.gate).
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

    @property
    def connected(self) -> bool:
        """Whether a Milvus client is open now (it may still fail its next call)."""
        return self.connection.client is not None

    @property
    def duplicate_threshold(self) -> DuplicateThreshold | None:
        """The duplicate score calibrated for this collection and space (None before connecting or if none)."""
        return self.connection.threshold

    def save_duplicate_threshold(self, threshold: DuplicateThreshold) -> str:
        """Store a calibrated duplicate threshold with the collection; returns where it went."""
        return self.connection.save_threshold(threshold)

    def connect(self) -> None:
        """Connect, create or verify the collection, and load it (see Connection.connect)."""
        self.connection.connect()

    def scope(self) -> Scope:
        """The namespace expressions of this collection (connects first: they depend on its schema)."""
        self.connection.connect()
        return self._scope()

    def _scope(self) -> Scope:
        # Inside a Milvus call (connected): every store method builds its expressions here, so that a
        # Milvus that is away fails the call itself, which the connection reports to its observer.
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

    def _call(self, fn: Callable[[MilvusClient], T], operation: str = "other", retry: bool = True,
              writes: bool = False) -> T:
        return self.connection.call(fn, retry=retry, operation=operation, writes=writes)

    def _wrote(self, rows: int) -> None:
        if self._flusher is not None:
            self._flusher.wrote(rows)

    def _query(self, client: MilvusClient, expr: str, limit: int = QUERY_PAGE) -> list[dict[str, Any]]:
        return self.connection.query(client, expr, self._scope().fields(RECORD_FIELDS), limit=limit)

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
        def run(c: MilvusClient) -> list[Slot]:
            self._scope().require(namespace)
            return self._slots(c, [(namespace, key, md5) for key, md5 in unique])
        slots = self._call(run, "lookup")
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
        def run(c: MilvusClient) -> list[tuple[int, bool]]:
            scope = self._scope()
            for rec in records:
                scope.require(rec.namespace, attrs=bool(rec.attrs))
            return self._put_locked(c, scope, records)
        with self._write_lock:
            return self._call(run, "upsert", writes=True)

    def put_unless_duplicate(self, record: Record, min_score: float) -> tuple[int, bool, dict[str, Any] | None]:
        """Store the record unless its namespace holds the same image under another key.

        Returns (id, created, None) when stored (or already stored under its own key), and
        (id, False, the other record) for a duplicate: the same MD5, or a score >= min_score.
        Check and write run under the write lock, so identical concurrent adds cannot both pass.
        """
        with self._write_lock:
            def run(client: MilvusClient) -> tuple[int, bool, dict[str, Any] | None]:
                scope = self._scope()
                scope.require(record.namespace, attrs=bool(record.attrs))
                [own] = self._slots(client, [(record.namespace, record.key, record.md5)])
                if own.stored is None:
                    other = find_duplicate(self.connection, self._searcher, client, scope, record, min_score)
                    if other is not None:
                        return int(other["id"]), False, public_record(other)
                [(rid, created)] = self._put_locked(client, scope, [record])
                return rid, created, None
            return self._call(run, "upsert", writes=True)

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
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return 0
        return self._delete_found(lambda c: [int(r["id"]) for r in self.connection.query(
            c, self._scope().expr(namespace, f"id in {wanted}"), ("id",))])

    def delete_keys(self, keys: Iterable[str], namespace: str = DEFAULT_NAMESPACE) -> int:
        """Delete every record of these keys in the namespace; returns how many records were deleted."""
        match = key_in(keys)
        if match is None:
            return 0
        with self._write_lock:
            def run(c: MilvusClient) -> int:
                # One delete by the expression, as counted: Milvus applies it to every matching row at once
                # (a query for ids first could miss rows Milvus Lite is moving in a background flush).
                expr = self._scope().expr(namespace, match)
                count = self._count(c, expr)
                if count:
                    c.delete(self.connection.collection, filter=expr, timeout=self._settings.milvus_timeout)
                    self._deleted(c, count)
                return count
            return self._call(run, "delete", writes=True)

    def delete_key_except(self, key: str, keep_md5s: Iterable[str], namespace: str = DEFAULT_NAMESPACE) -> int:
        """Delete the records of `key` in the namespace whose image is not one of `keep_md5s`; returns how many."""
        keep = set(keep_md5s)
        return self._delete_found(lambda c: [int(r["id"]) for r in self.connection.query(
            c, self._scope().expr(namespace, f"key == {quote_literal(key)}"), ("id", "md5")) if r["md5"] not in keep])

    def _delete_found(self, find: Callable[[MilvusClient], list[int]]) -> int:
        """Delete the rows `find` names (ids, at most a query page), found and deleted under the write lock."""
        with self._write_lock:
            def run(c: MilvusClient) -> int:
                found = find(c)
                if found:
                    c.delete(self.connection.collection, ids=found, timeout=self._settings.milvus_timeout)
                    self._deleted(c, len(found))
                return len(found)
            return self._call(run, "delete", writes=True)

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
        def run(c: MilvusClient) -> list[list[Hit]]:
            scope = self._scope()
            for q in queries:
                scope.require(q.namespace, filtered=bool(q.filter))
            return self._searcher.search_many(c, scope, queries)
        return self._call(run, "search")

    def vector_of(self, record_id: int, namespace: str = DEFAULT_NAMESPACE) -> tuple[np.ndarray, str] | None:
        """The stored vector and image MD5 of one of the namespace's records; None when it holds no such id."""
        rows = self._call(lambda c: self.connection.query(c, self._scope().expr(namespace, f"id == {int(record_id)}"),
                                                          ("id", "md5", "vector"), limit=1), "query")
        return (np.asarray(rows[0]["vector"], dtype=np.float32), rows[0]["md5"]) if rows else None

    def get_keys(self, keys: Iterable[str], namespace: str = DEFAULT_NAMESPACE) -> list[dict[str, Any]]:
        """The records (id, key, filepath, md5, attrs) of these keys in the namespace, ordered by key then id."""
        match = key_in(keys)
        return self._records(namespace, match) if match is not None else []

    def get_ids(self, ids: Iterable[int], namespace: str = DEFAULT_NAMESPACE) -> list[dict[str, Any]]:
        """The namespace's records (id, key, filepath, md5, attrs) with these ids, ordered by key then id."""
        wanted = sorted({int(i) for i in ids})
        return self._records(namespace, f"id in {wanted}") if wanted else []

    def _records(self, namespace: str, match: str) -> list[dict[str, Any]]:
        rows = self._call(lambda c: self._query(c, self._scope().expr(namespace, match)), "query")
        return sorted((public_record(r) for r in rows), key=lambda r: (r["key"], r["id"]))

    def md5s_in_use(self, md5s: Iterable[str]) -> set[str]:
        """Which of these image MD5s some record still has, in any namespace.

        For the thumbnail files only, which all namespaces share (one file per image): it answers
        yes or no about files, never a record, so it looks past the namespaces on purpose.
        """
        wanted = set(md5s)
        expr = md5_in(wanted)
        if expr is None:
            return set()
        rows = self._call(lambda c: self.connection.query(c, expr, ("md5",)), "query")
        if len(rows) >= QUERY_PAGE:  # a page full of copies may hide the others: say all are used (keep files)
            return wanted
        return {r["md5"] for r in rows}

    def count(self, namespace: str = DEFAULT_NAMESPACE, retry: bool = True) -> int:
        """How many records the namespace holds; `retry=False` gives up at the first failure."""
        return self._call(lambda c: self._count(c, self._scope().expr(namespace)), "count", retry=retry)

    def count_all(self, retry: bool = True) -> int:
        """How many records the collection holds in all namespaces: for the operator's metrics, not for callers."""
        return self._call(lambda c: self._count(c, ""), "count", retry=retry)

    def list_records(self, after_id: int, limit: int, namespace: str = DEFAULT_NAMESPACE) -> Page:
        """The namespace's records with an id above `after_id`, `limit` at most, in id order (see paging)."""
        def run(c: MilvusClient) -> Page:
            scope = self._scope()
            remaining = self._count(c, scope.expr(namespace, f"id > {int(after_id)}"))
            page = list_page(lambda window, cap: self._query(c, scope.expr(namespace, window), cap),
                             remaining, after_id, limit, QUERY_PAGE)
            return Page([public_record(r) for r in page.rows], page.next_after_id)
        return self._call(run, "query")

    def _count(self, client: MilvusClient, expr: str) -> int:
        rows = client.query(self.connection.collection, filter=expr, output_fields=["count(*)"],
                            consistency_level=self.connection.read_level, timeout=self._settings.milvus_timeout)
        return int(rows[0]["count(*)"]) if rows else 0


def _row(scope: Scope, rid: int, rec: Record, stored: dict[str, Any] | None) -> dict[str, Any]:
    """The row to write for `rec` under id `rid`; attrs None keeps what `stored` has."""
    attrs = rec.attrs if rec.attrs is not None else ((stored or {}).get("attrs") or {})
    return {"id": rid, "key": rec.key, "md5": rec.md5, "filepath": rec.filepath,
            "vector": np.asarray(rec.vector, dtype=np.float32).tolist(), **scope.extras(rec.namespace, attrs)}
