"""Everything that speaks Milvus: schema, indexes, and the record operations.

Works against embedded Milvus Lite (a local file), a Milvus 2.3 standalone
server and Milvus 2.5+ servers or clusters. Their index support differs, so
index types are chosen by asking the server (trying the best first), not by
assuming. All writes of one request are a single Milvus call, so a failure
never leaves half a request written.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np

# pymilvus parses MILVUS_URI from the environment (and from .env) when it is imported, and
# rejects a Milvus Lite file path there. imgsim passes the URI explicitly, so hide the
# variable from pymilvus during its import and put it back afterwards.
_saved_uri = os.environ.get("MILVUS_URI")
os.environ["MILVUS_URI"] = ""  # empty (not absent) so pymilvus' load_dotenv cannot fill it from .env
from pymilvus import DataType, MilvusClient, MilvusException  # noqa: E402

if _saved_uri is None:
    del os.environ["MILVUS_URI"]
else:
    os.environ["MILVUS_URI"] = _saved_uri
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential  # noqa: E402

from conf.settings import Consistency, Settings  # noqa: E402
from service.errors import NotReady, StartupError  # noqa: E402

log = logging.getLogger(__name__)

T = TypeVar("T")

JS_MAX_SAFE_INTEGER = 2**53 - 1
MD5_LEN = 32
FILEPATH_MAX_CHARS = 2048
# Milvus counts VARCHAR length in bytes; a character is at most 4 bytes in UTF-8.
_UTF8_MAX = 4
QUERY_PAGE = 16384  # the largest `limit` a Milvus query accepts

# (index type, build params), best first; the first one the server accepts is used.
VECTOR_INDEXES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("HNSW", {"M": 16, "efConstruction": 200}),
    ("AUTOINDEX", {}),
    ("FLAT", {}),
)
# INVERTED is the 2.4+ scalar index; 2.3 servers only know Trie for VARCHAR.
KEY_INDEXES = ("INVERTED", "Trie")
MILVUS_LEVELS = {Consistency.SESSION: "Session", Consistency.STRONG: "Strong"}
# Milvus Lite keeps written rows in an unindexed in-memory table until 128 MB (~15,000
# vectors) pile up, and every search scans that table row by row in Python: ~160 ms per
# 1,000 unflushed rows (the write probe of bench/perf.py). A flush once writes pause, or
# every LITE_FLUSH_ROWS rows, moves them into an indexed segment (~20 ms for a few rows).
LITE_FLUSH_QUIET_S = 0.5
LITE_FLUSH_ROWS = 256


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


def derive_id(key: str, md5: str, attempt: int = 0) -> int:
    """A stable positive id below 2^53 for (key, md5): JavaScript numbers hold it exactly.

    The same image under the same key always maps to the same id, which is what
    makes re-adding idempotent. `attempt` > 0 gives the alternative ids tried when
    a different record already owns the first choice.
    """
    digest = hashlib.sha256(f"{attempt}\x00{key}\x00{md5}".encode("utf-8", "surrogatepass")).digest()
    return (int.from_bytes(digest[:7], "big") >> 3) or 1  # 56 bits >> 3 = 53 bits


def quote(value: str) -> str:
    """A Milvus filter-expression string literal for `value`, so user text can never become syntax."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, grpc.RpcError):
        return True
    if isinstance(exc, MilvusException):
        text = str(exc).lower()
        return any(word in text for word in ("connect", "unavailable", "deadline", "timeout", "not ready",
                                             "closed channel", "server is not", "node not found", "context done"))
    return isinstance(exc, (ConnectionError, TimeoutError))


def _not_loaded(exc: BaseException) -> bool:
    # A restarted Milvus server can come back with the collection released: every search and
    # query then fails with "collection not loaded" (code 101) until someone loads it again.
    return isinstance(exc, MilvusException) and "not loaded" in str(exc).lower()


class LiteFlusher:
    """Flushes a Milvus Lite collection in the background shortly after writes, so searches stay fast."""

    def __init__(self, flush: Callable[[], None], quiet_s: float = LITE_FLUSH_QUIET_S,
                 max_rows: int = LITE_FLUSH_ROWS) -> None:
        self._flush = flush
        self._quiet_s = quiet_s
        self._max_rows = max_rows
        self._cond = threading.Condition()
        self._pending = 0
        self._last_write = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="milvus-lite-flusher", daemon=True)
        self._thread.start()

    def wrote(self, rows: int) -> None:
        """Note that `rows` rows were written or deleted."""
        with self._cond:
            self._pending += max(rows, 1)
            self._last_write = time.monotonic()
            self._cond.notify()

    def close(self) -> None:
        """Stop the thread after a last flush of whatever is pending."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=60)

    def _due_in(self) -> float | None:
        """Seconds until the next flush is due (0.0: now); None when nothing is pending."""
        if self._pending == 0:
            return None
        if self._closed or self._pending >= self._max_rows:
            return 0.0
        return max(0.0, self._last_write + self._quiet_s - time.monotonic())

    def _run(self) -> None:
        while True:
            with self._cond:
                while (due := self._due_in()) != 0.0:
                    if due is None and self._closed:
                        return
                    self._cond.wait(due)
                self._pending = 0
            try:
                self._flush()
            except Exception as exc:  # noqa: BLE001 - a failed flush only costs speed
                # Not retried in a loop: the next write schedules another flush, and Lite flushes on
                # its own at 128 MB and on close.
                log.warning("flushing Milvus Lite failed (%s); searches stay slower until the next flush", _short(exc))


class VectorStore:
    """The image records in one Milvus collection."""

    FIELDS = ("id", "key", "md5", "filepath", "vector")

    def __init__(self, settings: Settings, dim: int) -> None:
        self._settings = settings
        self._dim = dim
        self._collection = settings.milvus_collection
        self._client: MilvusClient | None = None
        self._connect_lock = threading.Lock()
        self._load_lock = threading.Lock()
        # Check-then-write sequences (id probing, counted deletes) run one at a time
        # so that identical concurrent adds cannot both insert.
        self._write_lock = threading.Lock()
        self._search_params: dict[str, Any] = {}
        self._read_level = MILVUS_LEVELS[settings.milvus_consistency]
        self._flusher: LiteFlusher | None = None
        self.server_version = ""
        self.vector_index = ""
        self.key_index = ""

    # --- connection -------------------------------------------------------------------
    @property
    def target(self) -> str:
        """Where the vectors live, for logs and messages (never includes credentials)."""
        uri = self._settings.milvus_uri
        return f"Milvus Lite file {uri}" if self._settings.milvus_is_lite else f"Milvus at {uri.split('@')[-1]}"

    def connect(self) -> None:
        """Connect, create or verify the collection, and load it. Idempotent.

        Raises NotReady when Milvus cannot be reached and StartupError when the
        collection exists with an incompatible schema.
        """
        with self._connect_lock:
            if self._client is not None:
                return
            s = self._settings
            try:
                client = MilvusClient(
                    uri=s.milvus_uri,
                    token=s.milvus_token.get_secret_value() if s.milvus_token else "",
                    user=s.milvus_user or "",
                    password=s.milvus_password.get_secret_value() if s.milvus_password else "",
                    db_name=s.milvus_db or "",
                    timeout=s.milvus_timeout,
                )
                self.server_version = str(client.get_server_version(timeout=s.milvus_timeout))
                self._prepare_collection(client)
            except (StartupError, NotReady):
                raise
            except Exception as exc:  # noqa: BLE001 - any connection failure means "not ready yet"
                raise NotReady(f"{self.target} is unreachable ({_short(exc)}); retry later") from exc
            self._client = client
            if s.milvus_is_lite and self._flusher is None:
                self._flusher = LiteFlusher(self._flush)
            log.info("connected to %s (server %s), collection %r, vector index %s, key index %s",
                     self.target, self.server_version, self._collection, self.vector_index,
                     self.key_index or "none")

    def ping(self) -> None:
        """Raise NotReady unless Milvus serves the collection now: loaded, and a read answers in time."""
        self.connect()
        self._call(self._probe, retry=False)

    def _probe(self, client: MilvusClient) -> None:
        self._ensure_loaded(client)
        # A restarted server reports the collection loaded some seconds before reads stop timing out;
        # only a real (strongly consistent) read tells that requests will work.
        self._query(client, "id in [0]", ("id",), limit=1)

    def _ensure_loaded(self, client: MilvusClient) -> None:
        t = self._settings.milvus_timeout
        with self._load_lock:  # one check (and load) at a time, however many requests noticed
            state = client.get_load_state(self._collection, timeout=t)
            name = str(getattr(state.get("state"), "name", state.get("state"))).lower()
            if name == "notexist":
                # Milvus came back without its data: the next call reconnects and creates the collection again.
                with self._connect_lock:
                    if self._client is client:
                        self._client = None
                raise NotReady(f"collection {self._collection!r} no longer exists in {self.target} (was its data "
                               "reset?); it is created again on the next request. Retry when /ready answers 200.")
            if name == "loading":
                raise NotReady(f"{self.target} is loading collection {self._collection!r} (progress "
                               f"{state.get('progress', '?')}%; it was restarted?). Retry when /ready answers 200.")
            if name != "loaded":
                log.warning("collection %r in %s is not loaded (%s); loading it", self._collection, self.target, name)
                client.load_collection(self._collection, timeout=max(t, 60))

    def _flush(self) -> None:
        client = self._client
        if client is not None:
            client.flush(self._collection, timeout=max(self._settings.milvus_timeout, 60))

    def _wrote(self, rows: int) -> None:
        if self._flusher is not None:
            self._flusher.wrote(rows)

    def close(self) -> None:
        """Drop the connection (Milvus Lite flushes its file)."""
        if self._flusher is not None:
            self._flusher.close()
            self._flusher = None
        with self._connect_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # --- schema -----------------------------------------------------------------------
    def _schema(self) -> Any:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("key", DataType.VARCHAR, max_length=self._settings.max_key_length * _UTF8_MAX)
        schema.add_field("md5", DataType.VARCHAR, max_length=MD5_LEN)
        schema.add_field("filepath", DataType.VARCHAR, max_length=FILEPATH_MAX_CHARS * _UTF8_MAX)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self._dim)
        return schema

    def _prepare_collection(self, client: MilvusClient) -> None:
        t = self._settings.milvus_timeout
        if client.has_collection(self._collection, timeout=t):
            self._check_schema(client.describe_collection(self._collection, timeout=t))
        else:
            # Strong consistency: a search right after an add or delete sees it (read-after-write).
            client.create_collection(self._collection, schema=self._schema(), consistency_level="Strong",
                                     timeout=t)
            log.info("created collection %r in %s", self._collection, self.target)
        existing = set(client.list_indexes(self._collection, timeout=t))
        if "vector" not in existing:
            self._create_first_accepted(client, "vector", [(n, p, "IP") for n, p in VECTOR_INDEXES], required=True)
        if "key" not in existing:
            self._create_first_accepted(client, "key", [(n, {}, None) for n in KEY_INDEXES], required=False)
        vec = client.describe_index(self._collection, "vector", timeout=t) or {}
        if str(vec.get("metric_type", "IP")).upper() != "IP":
            raise StartupError(self._incompatible(f"its vector index uses metric {vec.get('metric_type')}, "
                                                  "but imgsim needs IP (cosine on unit vectors)"))
        self.vector_index = str(vec.get("index_type", "?"))
        self.key_index = str((client.describe_index(self._collection, "key", timeout=t) or {}).get("index_type", ""))
        self._search_params = {"metric_type": "IP"}
        client.load_collection(self._collection, timeout=max(t, 60))

    def _create_first_accepted(self, client: MilvusClient, field: str,
                               candidates: Sequence[tuple[str, dict[str, Any], str | None]], required: bool) -> None:
        errors = []
        for index_type, params, metric in candidates:
            index = client.prepare_index_params()
            extra = {"metric_type": metric} if metric else {}
            index.add_index(field_name=field, index_name=field, index_type=index_type, params=params, **extra)
            try:
                client.create_index(self._collection, index, timeout=self._settings.milvus_timeout)
                return
            except MilvusException as exc:
                errors.append(f"{index_type}: {_short(exc)}")
                log.info("%s does not accept a %s index on %r; trying the next kind", self.target, index_type, field)
        if required:
            raise StartupError(f"{self.target} accepted none of the vector index types "
                               f"{[c[0] for c in candidates]}: {'; '.join(errors)}")
        log.warning("no scalar index on 'key' (%s); deletes and lookups by key will scan", "; ".join(errors))

    def _check_schema(self, desc: dict[str, Any]) -> None:
        fields = {f["name"]: f for f in desc.get("fields", [])}
        expected = {"id": DataType.INT64, "key": DataType.VARCHAR, "md5": DataType.VARCHAR,
                    "filepath": DataType.VARCHAR, "vector": DataType.FLOAT_VECTOR}
        for name, dtype in expected.items():
            if name not in fields:
                raise StartupError(self._incompatible(f"it has no field {name!r} (fields: {sorted(fields)})"))
            if fields[name]["type"] != dtype:
                raise StartupError(self._incompatible(f"field {name!r} is {fields[name]['type']!r}, not {dtype!r}"))
        if not fields["id"].get("is_primary") or fields["id"].get("auto_id"):
            raise StartupError(self._incompatible("'id' must be the primary key with auto_id off"))
        dim = int(fields["vector"].get("params", {}).get("dim", 0))
        if dim != self._dim:
            raise StartupError(self._incompatible(f"its vectors have dimension {dim}, not {self._dim}"))
        extra = sorted(set(fields) - set(expected))
        if extra:
            raise StartupError(self._incompatible(f"it has fields imgsim does not write: {extra}"))

    def _incompatible(self, why: str) -> str:
        return (f"collection {self._collection!r} in {self.target} has an incompatible schema: {why}. "
                "imgsim will not write into it. Set MILVUS_COLLECTION to a new name, or drop that "
                "collection if it is safe to lose.")

    # --- calls ------------------------------------------------------------------------
    def _call(self, fn: Callable[[MilvusClient], T], retry: bool = True) -> T:
        """Run one Milvus call, retrying transient failures with backoff; NotReady if Milvus stays away."""
        self.connect()
        client = self._client
        assert client is not None
        attempts = self._settings.milvus_retries if retry else 1
        try:
            for attempt in Retrying(stop=stop_after_attempt(attempts), wait=wait_exponential(0.2, max=2.0),
                                    retry=retry_if_exception(_is_transient), reraise=True):
                with attempt:
                    try:
                        return fn(client)
                    except MilvusException as exc:
                        if not _not_loaded(exc):
                            raise
                        self._ensure_loaded(client)
                        return fn(client)
        except Exception as exc:
            if _is_transient(exc) or _not_loaded(exc):
                raise NotReady(f"{self.target} is not answering ({_short(exc)}); nothing was changed. "
                               "Retry when /ready answers 200.") from exc
            raise
        raise AssertionError("unreachable")  # pragma: no cover - Retrying either returns or raises

    def _query(self, client: MilvusClient, expr: str, fields: Sequence[str], limit: int = QUERY_PAGE,
               level: str | None = None) -> list[dict]:
        return list(client.query(self._collection, filter=expr, output_fields=list(fields), limit=limit,
                                 consistency_level=level or self._read_level, timeout=self._settings.milvus_timeout))

    def _deleted(self, client: MilvusClient, rows: int) -> None:
        """After a delete: make sure the next Session-level reads cannot still see the deleted rows."""
        self._wrote(rows)
        if self._read_level != "Strong" and not self._settings.milvus_is_lite:
            # Session reads wait for this client's last write timestamp, but a Milvus 2.3 server
            # returns none for deletes. One Strong read returns only once the query node has
            # applied everything up to now, the delete included; later reads are served from there.
            try:
                self._query(client, "id in [0]", ("id",), limit=1, level="Strong")
            except Exception as exc:  # noqa: BLE001 - the delete is done; do not retry (and recount) it
                log.warning("read barrier after a delete failed (%s); a search in the next moment may still "
                            "return the deleted rows", _short(exc))

    # --- records ----------------------------------------------------------------------
    def find(self, key: str, md5: str) -> dict[str, Any] | None:
        """The stored record for exactly this key and image, if any."""
        rows = self._call(lambda c: self._query(c, f"key == {quote(key)} and md5 == {quote(md5)}",
                                                ("id", "filepath"), limit=1))
        return rows[0] if rows else None

    def existing(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (key, md5) pairs are stored already (one query for the lot)."""
        if not pairs:
            return set()
        first = {pair: derive_id(*pair) for pair in set(pairs)}
        rows = self._call(lambda c: self._query(c, f"id in {sorted(set(first.values()))}", ("id", "key", "md5")))
        owner = {r["id"]: (r["key"], r["md5"]) for r in rows}
        found = set()
        for pair, rid in first.items():
            if owner.get(rid) == pair:
                found.add(pair)
            elif rid in owner and self.find(*pair) is not None:
                found.add(pair)  # its first-choice id belongs to another record; it sits under a later one
        return found

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
        pending = {i: 0 for i in range(len(records))}  # record index -> id attempt
        result: dict[int, tuple[int, bool]] = {}
        rows: dict[int, dict[str, Any]] = {}
        claimed: dict[int, tuple[str, str]] = {}
        while pending:
            ids = {i: derive_id(records[i].key, records[i].md5, a) for i, a in pending.items()}
            found = {r["id"]: r for r in self._query(client, f"id in {sorted(set(ids.values()))}",
                                                     ("id", "key", "md5", "filepath"))}
            retry: dict[int, int] = {}
            for i, rid in ids.items():
                rec = records[i]
                owner = found.get(rid)
                taken = claimed.get(rid)
                if owner is not None and (owner["key"], owner["md5"]) == (rec.key, rec.md5):
                    result[i] = (rid, False)
                    if owner["filepath"] != rec.filepath:
                        rows[rid] = self._row(rid, rec)
                elif taken is not None and taken == (rec.key, rec.md5):
                    result[i] = (rid, False)  # the same image twice in one batch
                elif owner is None and taken is None:
                    claimed[rid] = (rec.key, rec.md5)
                    rows[rid] = self._row(rid, rec)
                    result[i] = (rid, True)
                else:
                    # A different record owns this id (a 53-bit hash collision): take the next candidate
                    # rather than overwrite it.
                    if pending[i] >= 16:
                        raise RuntimeError(f"no free id for key {rec.key!r} after 16 candidates")
                    retry[i] = pending[i] + 1
            pending = retry
        if rows:
            client.upsert(self._collection, list(rows.values()), timeout=self._settings.milvus_timeout)
            self._wrote(len(rows))
        return [result[i] for i in range(len(records))]

    @staticmethod
    def _row(rid: int, rec: Record) -> dict[str, Any]:
        return {"id": rid, "key": rec.key, "md5": rec.md5, "filepath": rec.filepath,
                "vector": np.asarray(rec.vector, dtype=np.float32).tolist()}

    def search(self, vector: np.ndarray, limit: int, min_score: float | None = None) -> list[Hit]:
        """The `limit` stored images most similar to `vector`, best first, optionally above min_score."""
        [hits] = self.search_many([vector], limit)
        return [h for h in hits if min_score is None or h.score >= min_score]

    def search_many(self, vectors: Sequence[np.ndarray], limit: int) -> list[list[Hit]]:
        """The `limit` best hits for each vector, in one Milvus call (far cheaper than one call each)."""
        params = dict(self._search_params)
        if self.vector_index == "HNSW":
            params["params"] = {"ef": max(self._settings.milvus_hnsw_ef, limit)}
        data = [np.asarray(v, dtype=np.float32).tolist() for v in vectors]
        result = self._call(lambda c: c.search(
            self._collection, data=data, anns_field="vector", limit=limit, output_fields=["key", "filepath"],
            search_params=params, consistency_level=self._read_level, timeout=self._settings.milvus_timeout))
        return [[Hit(id=int(h["id"]), key=h["entity"]["key"], filepath=h["entity"]["filepath"],
                     score=round(float(h["distance"]), 6)) for h in hits] for hits in result]

    def delete_ids(self, ids: Iterable[int]) -> int:
        """Delete records by id; returns how many existed (and so were really deleted)."""
        wanted = sorted(set(ids))
        if not wanted:
            return 0
        with self._write_lock:
            def run(c: MilvusClient) -> int:
                found = [r["id"] for r in self._query(c, f"id in {wanted}", ("id",))]
                if found:
                    c.delete(self._collection, ids=found, timeout=self._settings.milvus_timeout)
                    self._deleted(c, len(found))
                return len(found)
            return self._call(run)

    def delete_keys(self, keys: Iterable[str]) -> int:
        """Delete every record of these keys; returns how many records were deleted."""
        expr = self._keys_expr(keys)
        if expr is None:
            return 0
        with self._write_lock:
            def run(c: MilvusClient) -> int:
                count = self._count(c, expr)
                if count:
                    c.delete(self._collection, filter=expr, timeout=self._settings.milvus_timeout)
                    self._deleted(c, count)
                return count
            return self._call(run)

    def get_keys(self, keys: Iterable[str]) -> list[dict[str, Any]]:
        """The records (id, key, filepath, md5) of these keys, ordered by key then id."""
        expr = self._keys_expr(keys)
        if expr is None:
            return []
        rows = self._call(lambda c: self._query(c, expr, ("id", "key", "filepath", "md5")))
        return sorted(({f: r[f] for f in ("id", "key", "filepath", "md5")} for r in rows),
                      key=lambda r: (r["key"], r["id"]))

    def count(self) -> int:
        """How many records are stored."""
        return self._call(lambda c: self._count(c, ""))

    def _count(self, client: MilvusClient, expr: str) -> int:
        rows = client.query(self._collection, filter=expr, output_fields=["count(*)"],
                            consistency_level=self._read_level, timeout=self._settings.milvus_timeout)
        return int(rows[0]["count(*)"]) if rows else 0

    @staticmethod
    def _keys_expr(keys: Iterable[str]) -> str | None:
        unique = sorted(set(keys))
        return f"key in [{', '.join(quote(k) for k in unique)}]" if unique else None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] + "...") if len(text) > 300 else text or type(exc).__name__
