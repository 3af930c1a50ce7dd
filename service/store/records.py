"""The image records: VectorStore stores, finds, searches, lists and deletes them in one Milvus collection.

Works against embedded Milvus Lite (a local file), a Milvus 2.3 standalone
server and Milvus 2.5+ servers or clusters. All writes of one request are a
single Milvus call, so a failure never leaves half a request written.

Every read, write, count, delete and search is confined to one namespace: it takes a Scope
(VectorStore.scope, made once per request), and its expression starts with the scope's namespace
condition. The exceptions look past namespaces on purpose and never hand another namespace's row
out: the id lookup of id allocation (ids are unique across namespaces), md5s_in_use (thumbnail
files are shared) and count_all (the operator's metrics).

Record ids are derived from (namespace, key, MD5), stay below 2^53, and are allocated by probing
when two records collide. Pages list a namespace's records in id order (list_page). Iterating
whole namespaces or the whole collection belongs here too.

A reindex (service.usecases.reindex, an operator's job like count_all) also looks past namespaces on
purpose: OldCollection reads every row of another collection of the same Milvus and never writes,
indexes, alters or adopts anything there; the target's rows of all namespaces are read in id windows
(rows_window), written with their explicit ids (write_rows) and deleted by id (delete_any).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from conf.errors import NotReady, StartupError
from conf.settings import Settings
from service.store.connection import (
    QUERY_PAGE,
    CallObserver,
    Connection,
    MilvusClient,
    _check_schema,
    describe_target,
    is_transient,
    open_client,
    short,
)
from service.store.filters import (
    ATTRS_FIELD,
    DEFAULT_NAMESPACE,
    JS_MAX_SAFE_INTEGER,
    NAMESPACE_FIELD,
    REGION_FIELD,
    Layout,
    Scope,
    key_in,
    md5_in,
    quote_literal,
)
from service.store.lite import LiteFlusher, SharedExclusiveLock
from service.store.meta import DuplicateThreshold, SpaceTag, stored_space
from service.store.search import Hit, Query, Searcher

__all__ = ["Hit", "OldCollection", "Page", "Query", "Record", "Scope", "VectorChunk", "VectorStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# The scalar fields of a stored record, in the order answers list them.
RECORD_FIELDS = ("id", "namespace", "key", "md5", "filepath", "attrs", "region")
# Candidate ids tried for one (key, md5) after its first choice is owned by another record.
MAX_ID_CANDIDATES = 16
# Paging: aim each window at this many times the page size, so one round usually fills the page.
WINDOW_OVERSHOOT = 2
WIDEN_FACTOR = 4

# Reading whole namespaces (vector_chunks): rows a window may hold at most, by default. 4096 rows of
# 1280 floats are ~21 MB of answer, well inside gRPC's message limits, and short enough that a search
# waiting for Milvus Lite's gate waits one window, not the whole read.
VECTOR_CHUNK = 4096
# Milvus Lite reads vectors by id (see _lite_vector_chunks): chunks of 1024 read 100,000 records in 41 s with
# +0.6 GB, against 48 s and +0.9 GB with 4096 (2 cores, measured with a scratch probe of the bench catalog).
LITE_VECTOR_CHUNK = 1024

# Which record a row is: (namespace, key, md5).
Ref = tuple[str, str, str]
# query(expression over id, row cap) -> rows
QueryFn = Callable[[str, int], list[dict[str, Any]]]


@dataclass(frozen=True)
class Record:
    """One image to store: the caller's key, the image MD5, where it came from, and its vector.

    `attrs` None means "keep what is stored" when the record exists already ({} for a new one);
    a dict replaces the stored attributes. `region` is the box (x, y, w, h in pixels of the image as
    decoded) that `vector` describes; None is the whole image. Unlike attrs it always replaces the
    stored one, since it goes with the vector.
    """

    key: str
    md5: str
    filepath: str
    vector: np.ndarray
    attrs: dict[str, Any] | None = None
    region: dict[str, int] | None = None


@dataclass(frozen=True)
class Page:
    """Records in id order, and the `after_id` of the next page (None on the last one)."""

    rows: list[dict[str, Any]]
    next_after_id: int | None


@dataclass(frozen=True)
class VectorChunk:
    """Some records of a namespace with their vectors: ids (int64), MD5s and unit rows as stored (float32)."""

    ids: np.ndarray
    md5s: list[str]
    vectors: np.ndarray


def public_record(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as answers show it: id, key, filepath, md5, attrs ({} when it has none) and region
    (the box its vector describes; None for the whole image, and in a collection without regions)."""
    return {
        "id": int(row["id"]),
        "key": row["key"],
        "filepath": row["filepath"],
        "md5": row["md5"],
        "attrs": row.get("attrs") or {},
        "region": row.get("region") or None,
    }


class VectorStore:
    """The image records in one Milvus collection."""

    def __init__(
        self, settings: Settings, dim: int, space: SpaceTag | None = None, on_call: CallObserver | None = None
    ) -> None:
        """A store of `dim`-d vectors; with `space`, the collection must belong to that embedding space.

        `on_call(operation, seconds, failed)` is told of every Milvus call (service.runtime feeds metrics).
        """
        self._settings = settings
        lite = settings.milvus_is_lite
        # Milvus Lite only: its reads must not overlap its writes and flushes (service.store.lite).
        self.connection = Connection(settings, dim, space, on_call, SharedExclusiveLock() if lite else None)
        # Check-then-write sequences (id probing, counted deletes) run one at a time
        # so that identical concurrent adds cannot both insert.
        self._write_lock = threading.Lock()
        # The flush holds the Lite gate exclusively, so it never overlaps a write, delete or read.
        self._flusher = LiteFlusher(self.connection.flush) if lite else None
        self._searcher = Searcher(self.connection)

    # --- connection -------------------------------------------------------------------
    @property
    def target(self) -> str:
        """Where the vectors live, for logs and messages (never includes credentials)."""
        return self.connection.target

    @property
    def collection(self) -> str:
        """The collection the records are in: MILVUS_COLLECTION, or (once connected) the one its alias points at."""
        return self.connection.collection

    @property
    def alias(self) -> str | None:
        """MILVUS_COLLECTION when it names an alias (known once connected), else None."""
        return self.connection.alias

    def point_alias(self, alias: str) -> str:
        """Point `alias` at this store's collection in one step, so services reading through it move here.

        Creates the alias, or moves it from the collection it points at (atomic on a Milvus server: every
        request names either collection, never none). Returns what was done, e.g.
        "alias catalog: image_sim_v1 -> image_sim_v2". Raises StartupError when `alias` is the name of a
        collection, or when this Milvus refuses aliases (the way forward is in the message).
        """
        self.connection.connect()
        done = self.connection.point_alias(alias)
        log.info("%s in %s", done, self.target)
        return done

    @property
    def space(self) -> SpaceTag | None:
        """The embedding space the store was opened for (the collection carries it once connected)."""
        return self.connection.space

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

    def scope(
        self, namespace: str = DEFAULT_NAMESPACE, attrs: bool = False, filtered: bool = False, regions: bool = False
    ) -> Scope:
        """The namespace, checked once: what every record operation of one request takes.

        Connects first (the answer depends on the collection's schema), so a Milvus that is away
        answers NotReady here, before a use case spends model time. Raises NamespaceError for a
        malformed name and Conflict when the collection cannot serve this namespace, attributes
        (`attrs`), an attribute filter (`filtered`) or records of a region rather than the whole
        image (`regions`; reason collection_without_regions).
        """
        self.connection.connect()
        return Scope(
            self.connection.layout,
            self.connection.collection,
            namespace,
            attrs=attrs,
            filtered=filtered,
            regions=regions,
        )

    def ping(self) -> None:
        """Raise NotReady unless Milvus serves the collection now."""
        self.connection.ping()

    def close(self) -> None:
        """Flush what Milvus Lite still holds in memory, then drop the connection."""
        if self._flusher is not None:
            self._flusher.close()
            self._flusher = None
        self.connection.close()

    def _call(
        self, fn: Callable[[MilvusClient], T], operation: str = "other", retry: bool = True, writes: bool = False
    ) -> T:
        return self.connection.call(fn, retry=retry, operation=operation, writes=writes)

    def _wrote(self, rows: int) -> None:
        if self._flusher is not None:
            self._flusher.wrote(rows)

    def _query(self, client: MilvusClient, scope: Scope, expr: str, limit: int = QUERY_PAGE) -> list[dict[str, Any]]:
        return self.connection.query(client, expr, scope.fields(RECORD_FIELDS), limit=limit)

    # --- ids --------------------------------------------------------------------------
    def _slots(self, client: MilvusClient, scope: Scope, refs: Sequence[Ref]) -> list[Slot]:
        def rows_by_id(ids: list[int]) -> dict[int, dict[str, Any]]:
            return {r["id"]: r for r in self._query(client, scope, f"id in {ids}")}  # every namespace: see above

        return allocate_ids(refs, rows_by_id)

    def stored(self, scope: Scope, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """The stored row (id, key, md5, filepath, attrs, region...) of each of these (key, md5) pairs."""
        unique = list(dict.fromkeys(pairs))
        if not unique:
            return {}
        refs = [(scope.namespace, key, md5) for key, md5 in unique]
        slots = self._call(lambda c: self._slots(c, scope, refs), "lookup")
        return {pair: slot.stored for pair, slot in zip(unique, slots, strict=True) if slot.stored is not None}

    def existing(self, scope: Scope, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (key, md5) pairs the namespace holds already."""
        return set(self.stored(scope, pairs))

    def find(self, scope: Scope, key: str, md5: str) -> dict[str, Any] | None:
        """The stored record for exactly this key and image in the namespace, if any."""
        return self.stored(scope, [(key, md5)]).get((key, md5))

    # --- writes -----------------------------------------------------------------------
    def put_many(self, scope: Scope, records: Sequence[Record]) -> list[tuple[int, bool]]:
        """Store records; returns (id, created) for each. Re-putting a stored (namespace, key, md5) creates nothing.

        A record that is stored already keeps its id; its filepath, region (with the vector that
        describes it) and attrs (when given) are updated when they changed. The whole batch is one upsert.
        """
        if not records:
            return []
        with self._write_lock:
            return self._call(lambda c: self._put_locked(c, scope, records), "upsert", writes=True)

    def put_unless_duplicate(
        self, scope: Scope, record: Record, min_score: float
    ) -> tuple[int, bool, dict[str, Any] | None]:
        """Store the record unless its namespace holds the same image under another key.

        Returns (id, created, None) when stored (or already stored under its own key), and
        (id, False, the other record) for a duplicate: the same MD5, or a score >= min_score.
        Check and write run under the write lock, so identical concurrent adds cannot both pass.
        """

        def run(client: MilvusClient) -> tuple[int, bool, dict[str, Any] | None]:
            [own] = self._slots(client, scope, [(scope.namespace, record.key, record.md5)])
            if own.stored is None:
                other = self._searcher.duplicate_of(
                    client, scope, record.key, record.md5, record.vector, min_score, scope.fields(RECORD_FIELDS)
                )
                if other is not None:
                    return int(other["id"]), False, public_record(other)
            [(rid, created)] = self._put_locked(client, scope, [record])
            return rid, created, None

        with self._write_lock:
            return self._call(run, "upsert", writes=True)

    def _put_locked(self, client: MilvusClient, scope: Scope, records: Sequence[Record]) -> list[tuple[int, bool]]:
        slots = self._slots(client, scope, [(scope.namespace, r.key, r.md5) for r in records])
        rows: dict[int, dict[str, Any]] = {}
        result = []
        for rec, slot in zip(records, slots, strict=True):
            if slot.stored is not None:
                row = _row(scope, slot.id, rec, slot.stored)
                if any(_changed(row, slot.stored, f) for f in ("filepath", "attrs", "region") if f in row):
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

    def delete_ids(self, scope: Scope, ids: Iterable[int]) -> int:
        """Delete the namespace's records with these ids; returns how many existed (another namespace's: none)."""
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return 0
        return self._delete_found(
            lambda c: [int(r["id"]) for r in self.connection.query(c, scope.expr(f"id in {wanted}"), ("id",))]
        )

    def delete_keys(self, scope: Scope, keys: Iterable[str]) -> int:
        """Delete every record of these keys in the namespace; returns how many records were deleted."""
        match = key_in(keys)
        if match is None:
            return 0
        expr = scope.expr(match)

        def run(c: MilvusClient) -> int:
            # One delete by the expression, as counted: Milvus applies it to every matching row at once
            # (a query for ids first could miss rows Milvus Lite is moving in a background flush).
            count = self._count(c, expr)
            if count:
                c.delete(self.connection.collection, filter=expr, timeout=self._settings.milvus_timeout)
                self._deleted(c, count)
            return count

        with self._write_lock:
            return self._call(run, "delete", writes=True)

    def delete_key_except(self, scope: Scope, key: str, keep_md5s: Iterable[str]) -> int:
        """Delete the records of `key` in the namespace whose image is not one of `keep_md5s`; returns how many."""
        keep = set(keep_md5s)
        return self._delete_found(
            lambda c: [
                int(r["id"])
                for r in self.connection.query(c, scope.expr(f"key == {quote_literal(key)}"), ("id", "md5"))
                if r["md5"] not in keep
            ]
        )

    def _delete_found(self, find: Callable[[MilvusClient], list[int]]) -> int:
        """Delete the rows `find` names (ids, at most a query page), found and deleted under the write lock."""

        def run(c: MilvusClient) -> int:
            found = find(c)
            if found:
                c.delete(self.connection.collection, ids=found, timeout=self._settings.milvus_timeout)
                self._deleted(c, len(found))
            return len(found)

        with self._write_lock:
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
                log.warning(
                    "read barrier after a delete failed (%s); a search in the next moment may still "
                    "return the deleted rows",
                    short(exc),
                )

    # --- reads ------------------------------------------------------------------------
    def search(self, scope: Scope, vector: np.ndarray, limit: int, min_score: float | None = None) -> list[Hit]:
        """The `limit` stored images of the namespace most similar to `vector`, best first."""
        [hits] = self.search_many([Query(scope, vector, limit, min_score)])
        return hits

    def search_many(self, queries: Sequence[Query]) -> list[list[Hit]]:
        """The hits of each query, each within its scope; queries alike share one Milvus call."""
        return self._call(lambda c: self._searcher.search_many(c, queries), "search")

    def vector_of(self, scope: Scope, record_id: int) -> tuple[np.ndarray, str] | None:
        """The stored vector and image MD5 of one of the namespace's records; None when it holds no such id."""
        expr = scope.expr(f"id == {int(record_id)}")
        rows = self._call(lambda c: self.connection.query(c, expr, ("id", "md5", "vector"), limit=1), "query")
        return (np.asarray(rows[0]["vector"], dtype=np.float32), rows[0]["md5"]) if rows else None

    def get_keys(self, scope: Scope, keys: Iterable[str]) -> list[dict[str, Any]]:
        """The namespace's records (id, key, filepath, md5, attrs, region) of these keys, by key then id."""
        match = key_in(keys)
        return self._records(scope, match) if match is not None else []

    def get_ids(self, scope: Scope, ids: Iterable[int]) -> list[dict[str, Any]]:
        """The namespace's records (id, key, filepath, md5, attrs, region) with these ids, ordered by key then id."""
        wanted = sorted({int(i) for i in ids})
        return self._records(scope, f"id in {wanted}") if wanted else []

    def _records(self, scope: Scope, match: str) -> list[dict[str, Any]]:
        rows = self._call(lambda c: self._query(c, scope, scope.expr(match)), "query")
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

    def count(self, scope: Scope, retry: bool = True, filter_expr: str = "") -> int:
        """How many records the namespace holds (those matching the compiled attrs filter `filter_expr`, when
        given); `retry=False` gives up at the first failure."""
        return self._call(lambda c: self._count(c, scope.expr(filter_expr)), "count", retry=retry)

    def vector_chunks(self, scope: Scope, filter_expr: str = "", chunk: int = VECTOR_CHUNK) -> Iterator[VectorChunk]:
        """Every record of the namespace (matching the compiled attrs filter) with its vector, in id windows.

        Like list_page, ids being hashes spread evenly over 1..2^53-1, each window of ids is aimed at half of
        `chunk` records and read whole: a window that comes back with `chunk` rows (the row cap; it may have
        been cut) is halved and read again. Never offset paging (Milvus caps offset + limit at 16384), never
        the whole namespace in one answer, and each window is its own store call: Milvus Lite's gate is taken
        per window, so searches interleave with a long read. Records written meanwhile may or may not appear;
        none appears twice (the windows do not overlap). Milvus Lite reads by id instead (_lite_vector_chunks).
        """
        if self._settings.milvus_is_lite:  # its id list says what a count would (a count there is an id query too)
            yield from self._lite_vector_chunks(scope, filter_expr, min(chunk, LITE_VECTOR_CHUNK))
            return
        total = self.count(scope, filter_expr=filter_expr)
        if total <= 0:
            return
        fields = ("id", "md5", "vector")

        def read(low: int, high: int, cap: int) -> list[dict[str, Any]]:
            return self._window(scope.expr(f"id > {low} and id <= {high}", filter_expr), fields, cap)

        for _high, (rows,) in id_windows([read], total, chunk):
            if rows:
                yield VectorChunk(
                    np.fromiter((int(r["id"]) for r in rows), dtype=np.int64, count=len(rows)),
                    [r["md5"] for r in rows],
                    np.asarray([r["vector"] for r in rows], dtype=np.float32),
                )

    def _lite_vector_chunks(self, scope: Scope, filter_expr: str, chunk: int) -> Iterator[VectorChunk]:
        """vector_chunks on Milvus Lite: the namespace's ids in one query, then the vectors by id.

        Milvus Lite 3 gathers every vector of the collection for any filtered query, whatever it outputs (0.5 GB
        per query at 100,000 records of 1280 floats: windows of vectors cost a scan +5 GB and 80 s of reading),
        but answers a bare `id in [...]`, what MilvusClient.get sends, by point reads. So one query lists the
        ids (one gathering, no vector kept), and each chunk of them is read by id (measured in
        docs/benchmarks.md, "Duplicate groups at scale"). A record deleted in between is just not answered; the
        namespace is checked again on every row, so ids never widen the scope.
        """
        expr = scope.expr(filter_expr)
        ids = sorted(self._call(lambda c: self._ids(c, expr), "query"))
        fields = scope.fields(("id", "namespace", "md5", "vector"))
        for start in range(0, len(ids), chunk):
            wanted = ids[start : start + chunk]
            rows = [r for r in self._by_ids(wanted, fields) if r.get("namespace", scope.namespace) == scope.namespace]
            if rows:
                yield VectorChunk(
                    np.fromiter((int(r["id"]) for r in rows), dtype=np.int64, count=len(rows)),
                    [r["md5"] for r in rows],
                    np.asarray([r["vector"] for r in rows], dtype=np.float32),
                )

    def _ids(self, client: MilvusClient, expr: str) -> list[int]:
        """The ids of every row matching `expr`, in one query without a limit (Milvus Lite has none)."""
        rows = client.query(
            self.connection.collection,
            filter=expr,
            output_fields=["id"],
            consistency_level=self.connection.read_level,
            timeout=self._settings.milvus_timeout,
        )
        return [int(r["id"]) for r in rows]

    def _by_ids(self, ids: list[int], fields: Sequence[str]) -> list[dict[str, Any]]:
        """The rows with these ids, one store call (Milvus Lite answers a bare `id in [...]` by point reads)."""
        return self._call(lambda c: self.connection.query(c, f"id in {ids}", fields, limit=len(ids)), "query")

    def count_all(self, retry: bool = True) -> int:
        """How many records the collection holds in all namespaces: for the operator's metrics, not for callers."""
        return self._call(lambda c: self._count(c, ""), "count", retry=retry)

    def list_records(self, scope: Scope, after_id: int, limit: int) -> Page:
        """The namespace's records with an id above `after_id`, `limit` at most, in id order (see list_page)."""

        def run(c: MilvusClient) -> Page:
            remaining = self._count(c, scope.expr(f"id > {int(after_id)}"))
            page = list_page(
                lambda window, cap: self._query(c, scope, scope.expr(window), cap),
                remaining,
                after_id,
                limit,
                QUERY_PAGE,
            )
            return Page([public_record(r) for r in page.rows], page.next_after_id)

        return self._call(run, "query")

    # --- every namespace at once: a reindex's target (see the module docstring) ----------
    def rows_window(self, low: int, high: int, cap: int, vectors: bool = False) -> list[dict[str, Any]]:
        """The rows of every namespace with low < id <= high (at most `cap`), as written_row shows them, read
        Strong (this process's own writes included); with `vectors`, each with its stored vector."""
        fields = list(OLD_FIELDS) + (["vector"] if vectors else [])
        expr = f"id > {int(low)} and id <= {int(high)}"
        layout = self.layout
        return [
            normalised(r)
            for r in self._call(
                lambda c: self.connection.query(c, expr, present(fields, layout), limit=cap, level="Strong"), "query"
            )
        ]

    def rows_of(self, ids: Iterable[int], vectors: bool = True) -> list[dict[str, Any]]:
        """The rows (of any namespace) with these ids, with their vectors unless told."""
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return []
        fields = list(OLD_FIELDS) + (["vector"] if vectors else [])
        layout = self.layout
        rows = self._call(
            lambda c: self.connection.query(c, f"id in {wanted}", present(fields, layout), level="Strong"), "query"
        )
        return [normalised(r) for r in rows]

    def write_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        """Upsert whole rows under their own ids (id, namespace, key, md5, filepath, attrs, region, vector) in one
        call: a reindex copies ids as they are, so writing a row twice stores it once."""
        if not rows:
            return
        layout = self.layout
        data = [written_row(r, layout) for r in rows]
        self._call(
            lambda c: c.upsert(self.connection.collection, data, timeout=self._settings.milvus_timeout),
            "upsert",
            writes=True,
        )
        self._wrote(len(data))

    def delete_any(self, ids: Iterable[int]) -> int:
        """Delete the rows with these ids, whatever their namespace; returns how many ids were given."""
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return 0

        def run(c: MilvusClient) -> int:
            c.delete(self.connection.collection, ids=wanted, timeout=self._settings.milvus_timeout)
            self._deleted(c, len(wanted))
            return len(wanted)

        with self._write_lock:
            return self._call(run, "delete", writes=True)

    def _window(self, expr: str, fields: Sequence[str], cap: int) -> list[dict[str, Any]]:
        """The rows of one id window (at most `cap`), one store call."""
        return self._call(lambda c: self.connection.query(c, expr, fields, limit=cap), "query")

    def _count(self, client: MilvusClient, expr: str) -> int:
        if expr and self._settings.milvus_is_lite:
            # Milvus Lite answers a filtered count(*) by gathering every matching row whole, vector included, as
            # Python objects: +4 GB for 100,000 records of 1280 floats. Their ids alone cost a few MB.
            return len(self._ids(client, expr))
        rows = client.query(
            self.connection.collection,
            filter=expr,
            output_fields=["count(*)"],
            consistency_level=self.connection.read_level,
            timeout=self._settings.milvus_timeout,
        )
        return int(rows[0]["count(*)"]) if rows else 0


# --- another collection: the old one of a reindex --------------------------------------
# The scalar fields a reindex copies; `vector` is re-embedded.
OLD_FIELDS = RECORD_FIELDS


def present(fields: Sequence[str], layout: Layout) -> list[str]:
    """The fields of `fields` a collection of this layout has (an older one lacks namespace and attrs, or region)."""
    return [
        f
        for f in fields
        if (layout.tenancy or f not in (NAMESPACE_FIELD, ATTRS_FIELD)) and (layout.regions or f != REGION_FIELD)
    ]


def normalised(row: dict[str, Any]) -> dict[str, Any]:
    """A row with every field of OLD_FIELDS: the default namespace, {} attrs and {} region where the collection
    has none (or they are empty), and the id an int."""
    out = dict(row)
    out["id"] = int(row["id"])
    out[NAMESPACE_FIELD] = row.get(NAMESPACE_FIELD) or DEFAULT_NAMESPACE
    out[ATTRS_FIELD] = row.get(ATTRS_FIELD) or {}
    out[REGION_FIELD] = row.get(REGION_FIELD) or {}
    return out


def written_row(row: dict[str, Any], layout: Layout) -> dict[str, Any]:
    """A normalised row (with its `vector`) as a collection of this layout stores it; ValueError when the
    collection cannot hold it (a namespace, attrs or a region in a collection of an earlier imgsim)."""
    out: dict[str, Any] = {
        "id": int(row["id"]),
        "key": row["key"],
        "md5": row["md5"],
        "filepath": row["filepath"],
        "vector": np.asarray(row["vector"], dtype=np.float32).tolist(),
    }
    if layout.tenancy:
        out[NAMESPACE_FIELD] = row[NAMESPACE_FIELD]
        out[ATTRS_FIELD] = row[ATTRS_FIELD]
    elif row[NAMESPACE_FIELD] != DEFAULT_NAMESPACE or row[ATTRS_FIELD]:
        raise ValueError(f"record {row['id']} has a namespace or attrs, which this collection cannot store")
    if layout.regions:
        out[REGION_FIELD] = {name: int(value) for name, value in row[REGION_FIELD].items()}
    elif row[REGION_FIELD]:
        raise ValueError(f"record {row['id']} has a region, which this collection cannot store")
    return out


class DataDirHeld(StartupError):
    """Milvus Lite's data folder is held by another process (a running service): it cannot be opened twice."""


def open_reader(settings: Settings) -> MilvusClient:
    """A client of MILVUS_URI. Raises DataDirHeld when another process holds its Milvus Lite file, NotReady when
    Milvus is away."""
    try:
        return open_client(settings)
    except Exception as exc:
        target = describe_target(settings)
        if settings.milvus_is_lite and "open local milvus failed" in str(exc).lower():
            raise DataDirHeld(
                f"{target} is held by another process (a running imgsim service?): Milvus Lite opens its "
                "file in one process at a time"
            ) from exc
        raise NotReady(f"{target} is unreachable ({short(exc)}); retry later") from exc


@dataclass(frozen=True)
class CollectionInfo:
    """What a collection is: its name, vector width, layout, recorded embedding space and row count."""

    name: str
    dim: int
    layout: Layout
    space: str | None  # the fingerprint digest recorded on it (None: made before imgsim recorded one)
    space_summary: str
    rows: int
    properties: dict[str, str]


class OldCollection:
    """Another collection of the same Milvus, read and never written: the old collection of a reindex.

    It never creates, indexes, alters, adopts or writes anything: describe, load (when the server released it),
    count and query only, always at Strong consistency (a catch-up pass must see what the old service wrote a
    moment ago). Rows of all namespaces, on purpose: a reindex copies the whole collection.
    """

    def __init__(self, settings: Settings, name: str) -> None:
        """The collection `name` in MILVUS_URI; nothing is opened before `open`."""
        # Its own settings: messages from the schema check name this collection, not MILVUS_COLLECTION.
        self._settings = settings.model_copy(update={"milvus_collection": name})
        self.name = name
        self.target = describe_target(settings)
        self._client: MilvusClient | None = None
        self.layout = Layout(tenancy=False, partition_key=False, regions=False)

    def open(self) -> CollectionInfo | None:
        """Connect and describe the collection; None when it does not exist. Raises DataDirHeld when another
        process holds the Milvus Lite file, NotReady when Milvus is away, StartupError when the collection is
        not one imgsim wrote."""
        s = self._settings
        self._client = open_reader(s)
        if not self._call(lambda c: c.has_collection(self.name, timeout=s.milvus_timeout)):
            return None
        desc = self._call(lambda c: c.describe_collection(self.name, timeout=s.milvus_timeout))
        # --from may name an alias: read the collection behind it, which stays put when the alias moves.
        self.name = str(desc.get("collection_name") or self.name)
        s = self._settings = s.model_copy(update={"milvus_collection": self.name})
        fields = {f["name"]: f for f in desc.get("fields", [])}
        dim = int(fields.get("vector", {}).get("params", {}).get("dim", 0))
        self.layout = _check_schema(desc, s, dim)  # the service's own check: a collection imgsim wrote
        digest, summary = stored_space(desc)
        self._ensure_loaded()
        props = {str(k): str(v) for k, v in (desc.get("properties") or {}).items()}
        return CollectionInfo(self.name, dim, self.layout, digest, summary, self.count(), props)

    def _ensure_loaded(self) -> None:
        t = self._settings.milvus_timeout
        state = self._call(lambda c: c.get_load_state(self.name, timeout=t))
        if str(getattr(state.get("state"), "name", state.get("state"))).lower() != "loaded":
            # Loading changes nothing stored: it makes the collection readable (the old service loads it too).
            self._call(lambda c: c.load_collection(self.name, timeout=max(t, 60)))

    def count(self) -> int:
        """How many rows the collection holds, in all namespaces."""
        rows = self._query("", ["count(*)"], None)
        return int(rows[0]["count(*)"]) if rows else 0

    def rows_window(self, low: int, high: int, cap: int) -> list[dict[str, Any]]:
        """The rows with low < id <= high (at most `cap`), every field of OLD_FIELDS (see `normalised`)."""
        rows = self._query(f"id > {int(low)} and id <= {int(high)}", present(OLD_FIELDS, self.layout), cap)
        return [normalised(r) for r in rows]

    def _query(self, expr: str, fields: list[str], cap: int | None) -> list[dict[str, Any]]:
        extra = {"limit": cap} if cap is not None else {}
        return list(
            self._call(
                lambda c: c.query(
                    self.name,
                    filter=expr,
                    output_fields=fields,
                    consistency_level="Strong",
                    timeout=self._settings.milvus_timeout,
                    **extra,
                )
            )
        )

    def _call(self, fn: Callable[[MilvusClient], T]) -> T:
        """One read, retried while Milvus is away (as Connection.call does); NotReady if it stays away."""
        client = self._client
        if client is None:
            raise NotReady(f"collection {self.name!r} was not opened")
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(self._settings.milvus_retries),
                wait=wait_exponential(0.2, max=2.0),
                retry=retry_if_exception(is_transient),
                reraise=True,
            ):
                with attempt:
                    return fn(client)
        except Exception as exc:
            if is_transient(exc):
                raise NotReady(f"{self.target} is not answering ({short(exc)}); run the reindex again later") from exc
            raise
        raise AssertionError("unreachable")  # pragma: no cover - Retrying either returns or raises

    def close(self) -> None:
        """Drop the connection (the collection itself is left as it was)."""
        if self._client is not None:
            self._client.close()
            self._client = None


def id_windows(
    readers: Sequence[Callable[[int, int, int], list[dict[str, Any]]]], total: int, cap: int = VECTOR_CHUNK
) -> Iterator[tuple[int, list[list[dict[str, Any]]]]]:
    """Walk ids 1..2^53-1 in windows read whole by every reader; yields (window's upper id, rows of each reader).

    Ids are hashes spread evenly (as list_page relies on too), so each window is aimed at half of `cap` rows of the
    larger side (`total`); a window any reader answers with `cap` rows (it may have been cut) is halved and read
    again. The same window is read from every reader, so rows with one id meet in one step.
    """
    cap = max(2, min(int(cap), QUERY_PAGE))
    nominal = max(1, int(JS_MAX_SAFE_INTEGER * min(1.0, cap / 2 / max(total, 1))))
    low, width = 0, nominal
    while low < JS_MAX_SAFE_INTEGER:
        high = min(JS_MAX_SAFE_INTEGER, low + width)
        parts = [read(low, high, cap) for read in readers]
        if any(len(p) >= cap for p in parts) and high > low + 1:
            width = max(1, (high - low) // 2)
            continue
        yield high, parts
        low, width = high, nominal


def _row(scope: Scope, rid: int, rec: Record, stored: dict[str, Any] | None) -> dict[str, Any]:
    """The row to write for `rec` under id `rid`; attrs None keeps what `stored` has."""
    attrs = rec.attrs if rec.attrs is not None else ((stored or {}).get("attrs") or {})
    return {
        "id": rid,
        "key": rec.key,
        "md5": rec.md5,
        "filepath": rec.filepath,
        "vector": np.asarray(rec.vector, dtype=np.float32).tolist(),
        **scope.row_extras(attrs, rec.region),
    }


def _changed(row: dict[str, Any], stored: dict[str, Any], field: str) -> bool:
    """Whether writing `row` changes `field` of the stored row (an empty JSON object and a missing one are alike)."""
    if field in ("attrs", "region"):
        return (row.get(field) or {}) != (stored.get(field) or {})
    return row.get(field) != stored.get(field)


# --- ids --------------------------------------------------------------------------------
def derive_id(key: str, md5: str, attempt: int = 0, namespace: str = DEFAULT_NAMESPACE) -> int:
    """A stable positive id below 2^53 for (namespace, key, md5): JavaScript numbers hold it exactly.

    The same image under the same key always maps to the same id, which is what
    makes re-adding idempotent. `attempt` > 0 gives the alternative ids tried when
    a different record already owns the first choice. The default namespace hashes
    exactly what earlier versions hashed, so the ids stored before namespaces existed
    stay the ids of their records; other namespaces add their name, so the same key
    and image in two namespaces are two records with two ids.
    """
    text = f"{attempt}\x00{key}\x00{md5}"
    if namespace != DEFAULT_NAMESPACE:
        text += f"\x00{namespace}"  # keys and MD5s hold no NUL, so no namespaced text equals a default one
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    return (int.from_bytes(digest[:7], "big") >> 3) or 1  # 56 bits >> 3 = 53 bits


@dataclass(frozen=True)
class Slot:
    """Where one (namespace, key, md5) lives: the id it is stored under, or the free id it is to take."""

    id: int
    stored: dict[str, Any] | None  # the stored row (id, key, md5, filepath...) when it is stored already


def ref_of(row: dict[str, Any]) -> Ref:
    """The (namespace, key, md5) of a stored row; a row without a namespace field is in the default one."""
    return (row.get("namespace", DEFAULT_NAMESPACE), row["key"], row["md5"])


def allocate_ids(refs: Sequence[Ref], rows_by_id: Callable[[list[int]], dict[int, dict[str, Any]]]) -> list[Slot]:
    """The slot of each (namespace, key, md5), in order: its own stored row, or the first candidate id nobody owns.

    `rows_by_id` reads the stored rows (with their namespace, key and md5) of some
    ids, one call per round of candidates, in every namespace: ids are unique across
    namespaces. A ref listed twice gets the same slot. A candidate owned by a
    different record (a 53-bit hash collision, possibly another namespace's) is
    skipped, never overwritten, and never returned as this ref's row.
    """
    attempts = {i: 0 for i in range(len(refs))}
    slots: dict[int, Slot] = {}
    claimed: dict[int, Ref] = {}  # free ids taken by an earlier ref of this call
    while attempts:
        ids = {i: derive_id(refs[i][1], refs[i][2], attempt, refs[i][0]) for i, attempt in attempts.items()}
        owners = rows_by_id(sorted(set(ids.values())))
        retry: dict[int, int] = {}
        for i, rid in ids.items():
            owner = owners.get(rid)
            if owner is not None and ref_of(owner) == refs[i]:
                slots[i] = Slot(rid, owner)
            elif owner is None and claimed.setdefault(rid, refs[i]) == refs[i]:
                slots[i] = Slot(rid, None)
            elif attempts[i] >= MAX_ID_CANDIDATES:
                raise RuntimeError(f"no free id for key {refs[i][1]!r} after {MAX_ID_CANDIDATES} candidates")
            else:
                retry[i] = attempts[i] + 1
        attempts = retry
    return [slots[i] for i in range(len(refs))]


# --- pages ------------------------------------------------------------------------------
def list_page(query: QueryFn, remaining: int, after_id: int, limit: int, row_cap: int) -> Page:
    """The first `limit` records with an id above `after_id`, given that `remaining` such records exist.

    Milvus has no "order by": a 2.3 server happens to answer a query in id order, Milvus Lite does not,
    and neither promises to return the *smallest* ids when a limit cuts the answer. But ids are hashes,
    spread evenly over 1..2^53-1, so the next page lies in a window of ids just above `after_id` whose
    width follows from how many records are left: each round queries the next window (all of its rows,
    never cut by a limit), and widens the window until the page is full or the id range is exhausted.
    Sorting what was found gives the page; the order is the ids', so it is stable however the store
    changes between calls, and a record added meanwhile appears in a later page if its id is larger.
    """
    if remaining <= 0 or after_id >= JS_MAX_SAFE_INTEGER:
        return Page([], None)
    span = JS_MAX_SAFE_INTEGER - after_id
    width = max(1, span * min(1.0, WINDOW_OVERSHOOT * limit / remaining))
    low = after_id
    found: list[dict[str, Any]] = []
    while len(found) < limit and low < JS_MAX_SAFE_INTEGER:
        high = min(JS_MAX_SAFE_INTEGER, low + int(width))
        rows = query(f"id > {low} and id <= {high}", row_cap)
        if len(rows) >= row_cap and high > low + 1:
            width = max(1, (high - low) // WIDEN_FACTOR)  # the window was too wide to read whole: narrow it
            continue
        found.extend(rows)
        low, width = high, width * WIDEN_FACTOR
    page = sorted(found, key=lambda r: int(r["id"]))[:limit]
    more = remaining > len(page)
    return Page(page, int(page[-1]["id"]) if more and page else None)
