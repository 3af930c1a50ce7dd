"""The image records: VectorStore stores, finds, searches and deletes them in one Milvus collection.

Works against embedded Milvus Lite (a local file), a Milvus 2.3 standalone
server and Milvus 2.5+ servers or clusters. All writes of one request are a
single Milvus call, so a failure never leaves half a request written.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from conf.settings import Settings
from service.store.client import MilvusClient, short
from service.store.connection import Connection
from service.store.filters import key_in
from service.store.flusher import LiteFlusher
from service.store.ids import Slot, allocate_ids
from service.store.meta import DuplicateThreshold, SpaceTag

log = logging.getLogger(__name__)

T = TypeVar("T")

SEARCH_PARAMS = {"metric_type": "IP"}  # cosine similarity: the stored vectors have unit length


@dataclass(frozen=True)
class Record:
    """One stored image: the caller's key, the image MD5, where it came from, and its vector."""

    key: str
    md5: str
    filepath: str
    vector: np.ndarray


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: int
    key: str
    filepath: str
    score: float
    md5: str = ""  # of the stored image's bytes: tells an exact copy of the query from a near one


@dataclass(frozen=True)
class Query:
    """One vector search: the `limit` best hits, only those scoring at least `min_score` (when given)."""

    vector: np.ndarray
    limit: int
    min_score: float | None = None


class VectorStore:
    """The image records in one Milvus collection."""

    def __init__(self, settings: Settings, dim: int, space: SpaceTag | None = None) -> None:
        """A store of `dim`-d vectors; with `space`, the collection must belong to that embedding space."""
        self._settings = settings
        self.connection = Connection(settings, dim, space)
        # Check-then-write sequences (id probing, counted deletes) run one at a time
        # so that identical concurrent adds cannot both insert.
        self._write_lock = threading.Lock()
        self._flusher = LiteFlusher(self.connection.flush) if settings.milvus_is_lite else None

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
    def duplicate_threshold(self) -> DuplicateThreshold | None:
        """The duplicate score calibrated for this collection and space (None before connecting or if none)."""
        return self.connection.threshold

    def save_duplicate_threshold(self, threshold: DuplicateThreshold) -> str:
        """Store a calibrated duplicate threshold with the collection; returns where it went."""
        return self.connection.save_threshold(threshold)

    def connect(self) -> None:
        """Connect, create or verify the collection, and load it (see Connection.connect)."""
        self.connection.connect()

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

    # --- ids --------------------------------------------------------------------------
    def _slots(self, client: MilvusClient, pairs: Sequence[tuple[str, str]]) -> list[Slot]:
        def rows_by_id(ids: list[int]) -> dict[int, dict[str, Any]]:
            rows = self.connection.query(client, f"id in {ids}", ("id", "key", "md5", "filepath"))
            return {r["id"]: r for r in rows}
        return allocate_ids(pairs, rows_by_id)

    def stored(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """The stored record (id, key, md5, filepath) of each of these (key, md5) pairs that is stored."""
        unique = list(dict.fromkeys(pairs))
        if not unique:
            return {}
        slots = self._call(lambda c: self._slots(c, unique))
        return {pair: slot.stored for pair, slot in zip(unique, slots, strict=True) if slot.stored is not None}

    def existing(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (key, md5) pairs are stored already."""
        return set(self.stored(pairs))

    def find(self, key: str, md5: str) -> dict[str, Any] | None:
        """The stored record for exactly this key and image, if any."""
        return self.stored([(key, md5)]).get((key, md5))

    # --- writes -----------------------------------------------------------------------
    def put_many(self, records: Sequence[Record]) -> list[tuple[int, bool]]:
        """Store records; returns (id, created) for each. Re-putting a stored (key, md5) creates nothing.

        A record whose (key, md5) is already stored keeps its id; only its
        filepath is updated when it changed. The whole batch is one upsert.
        """
        if not records:
            return []
        with self._write_lock:
            return self._call(lambda c: self._put_locked(c, records))

    def _put_locked(self, client: MilvusClient, records: Sequence[Record]) -> list[tuple[int, bool]]:
        slots = self._slots(client, [(r.key, r.md5) for r in records])
        rows: dict[int, dict[str, Any]] = {}
        result = []
        for rec, slot in zip(records, slots, strict=True):
            if slot.stored is not None:
                if slot.stored["filepath"] != rec.filepath:
                    rows[slot.id] = _row(slot.id, rec)
                result.append((slot.id, False))
            elif slot.id not in rows:
                rows[slot.id] = _row(slot.id, rec)
                result.append((slot.id, True))
            else:
                result.append((slot.id, False))  # the same image twice in one batch
        if rows:
            client.upsert(self.connection.collection, list(rows.values()), timeout=self._settings.milvus_timeout)
            self._wrote(len(rows))
        return result

    def delete_ids(self, ids: Iterable[int]) -> int:
        """Delete records by id; returns how many existed (and so were really deleted)."""
        wanted = sorted(set(ids))
        if not wanted:
            return 0
        with self._write_lock:
            def run(c: MilvusClient) -> int:
                found = [r["id"] for r in self.connection.query(c, f"id in {wanted}", ("id",))]
                if found:
                    c.delete(self.connection.collection, ids=found, timeout=self._settings.milvus_timeout)
                    self._deleted(c, len(found))
                return len(found)
            return self._call(run)

    def delete_keys(self, keys: Iterable[str]) -> int:
        """Delete every record of these keys; returns how many records were deleted."""
        expr = key_in(keys)
        if expr is None:
            return 0
        with self._write_lock:
            def run(c: MilvusClient) -> int:
                count = self._count(c, expr)
                if count:
                    c.delete(self.connection.collection, filter=expr, timeout=self._settings.milvus_timeout)
                    self._deleted(c, count)
                return count
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
    def search(self, vector: np.ndarray, limit: int, min_score: float | None = None) -> list[Hit]:
        """The `limit` stored images most similar to `vector`, best first, optionally above min_score."""
        [hits] = self.search_many([Query(vector, limit, min_score)])
        return hits

    def search_many(self, queries: Sequence[Query]) -> list[list[Hit]]:
        """The hits of each query, in one Milvus call (far cheaper than one call each)."""
        widest = max(q.limit for q in queries)
        params: dict[str, Any] = dict(SEARCH_PARAMS)
        if self.vector_index == "HNSW":
            params["params"] = {"ef": max(self._settings.milvus_hnsw_ef, widest)}
        data = [np.asarray(q.vector, dtype=np.float32).tolist() for q in queries]
        result = self._call(lambda c: c.search(
            self.connection.collection, data=data, anns_field="vector", limit=widest,
            output_fields=["key", "filepath", "md5"], search_params=params, consistency_level=self.connection.read_level,
            timeout=self._settings.milvus_timeout))
        return [[hit for hit in (_hit(h) for h in hits[:q.limit]) if q.min_score is None or hit.score >= q.min_score]
                for hits, q in zip(result, queries, strict=True)]

    def get_keys(self, keys: Iterable[str]) -> list[dict[str, Any]]:
        """The records (id, key, filepath, md5) of these keys, ordered by key then id."""
        expr = key_in(keys)
        if expr is None:
            return []
        rows = self._call(lambda c: self.connection.query(c, expr, ("id", "key", "filepath", "md5")))
        return sorted(({f: r[f] for f in ("id", "key", "filepath", "md5")} for r in rows),
                      key=lambda r: (r["key"], r["id"]))

    def count(self) -> int:
        """How many records are stored."""
        return self._call(lambda c: self._count(c, ""))

    def _count(self, client: MilvusClient, expr: str) -> int:
        rows = client.query(self.connection.collection, filter=expr, output_fields=["count(*)"],
                            consistency_level=self.connection.read_level, timeout=self._settings.milvus_timeout)
        return int(rows[0]["count(*)"]) if rows else 0


def _row(rid: int, rec: Record) -> dict[str, Any]:
    return {"id": rid, "key": rec.key, "md5": rec.md5, "filepath": rec.filepath,
            "vector": np.asarray(rec.vector, dtype=np.float32).tolist()}


def _hit(raw: dict[str, Any]) -> Hit:
    entity = raw["entity"]
    return Hit(id=int(raw["id"]), key=entity["key"], filepath=entity["filepath"],
               score=round(float(raw["distance"]), 6), md5=entity.get("md5", ""))

