"""One collection on one Milvus: connected on first use, loaded when released, calls retried while Milvus is away."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from conf.errors import NotReady, StartupError
from conf.settings import Consistency, Settings
from service.store.client import (MilvusClient, MilvusException, describe_target, is_transient, not_loaded,
                                  open_client, short)
from service.store.capabilities import grouping_supported
from service.store.gate import SharedExclusiveLock
from service.store.meta import DuplicateThreshold, SpaceTag, read_threshold, write_threshold
from service.store.schema import Indexes, Layout, prepare_collection

log = logging.getLogger(__name__)

T = TypeVar("T")
# Told of every Milvus call: (operation, seconds including retries, failed). Metrics are fed through it.
CallObserver = Callable[[str, float, bool], None]

QUERY_PAGE = 16384  # the largest `limit` a Milvus query accepts
MILVUS_LEVELS = {Consistency.SESSION: "Session", Consistency.STRONG: "Strong"}


class Connection:
    """The Milvus client of one collection, and the one way to call it (`call`)."""

    def __init__(self, settings: Settings, dim: int, space: SpaceTag | None = None,
                 on_call: CallObserver | None = None) -> None:
        self.settings = settings
        self._on_call = on_call
        self.collection = settings.milvus_collection
        self.target = describe_target(settings)
        self.read_level = MILVUS_LEVELS[settings.milvus_consistency]
        self.client: MilvusClient | None = None
        self.server_version = ""
        self.indexes = Indexes("", "")
        self.layout = Layout(tenancy=False, partition_key=False)
        self.native_grouping = False
        self._dim = dim
        self.space = space
        # The duplicate score calibrated for this collection and space, read at connection.
        self.threshold: DuplicateThreshold | None = None
        self._connect_lock = threading.Lock()
        self._load_lock = threading.Lock()
        # Milvus Lite only: its reads must not overlap its writes and flushes (see service.store.gate).
        self._gate = SharedExclusiveLock() if settings.milvus_is_lite else None

    def connect(self) -> None:
        """Connect, create or verify the collection, and load it. Idempotent.

        Raises NotReady when Milvus cannot be reached and StartupError when the
        collection exists with an incompatible schema.
        """
        with self._connect_lock:
            if self.client is not None:
                return
            client: MilvusClient | None = None
            try:
                client = open_client(self.settings)
                self.server_version = str(client.get_server_version(timeout=self.settings.milvus_timeout))
                self.indexes, self.layout = prepare_collection(client, self.settings, self._dim, self.space,
                                                               self.server_version)
                self.native_grouping = grouping_supported(self.server_version)
                if self.space is not None:
                    self.threshold = read_threshold(client, self.settings, self.space)
            except Exception as exc:
                if client is not None:  # opened, then failed: the next try opens a new one, so drop this one
                    _close_quietly(client)
                if isinstance(exc, (StartupError, NotReady)):
                    raise
                # Any other connection failure means "not ready yet".
                raise NotReady(f"{self.target} is unreachable ({short(exc)}); retry later") from exc
            self.client = client
            log.info("connected to %s (server %s), collection %r, vector index %s, key index %s, namespaces %s",
                     self.target, self.server_version, self.collection, self.indexes.vector,
                     self.indexes.key or "none", _namespaces(self.layout))

    def save_threshold(self, threshold: DuplicateThreshold) -> str:
        """Store a calibrated duplicate threshold with the collection; returns where it went."""
        where = self.call(lambda client: write_threshold(client, self.settings, threshold), writes=True)
        self.threshold = threshold
        return where

    def ping(self) -> None:
        """Raise NotReady unless Milvus serves the collection now: loaded, and a read answers in time."""
        self.connect()
        self.call(self._probe, retry=False, operation="ping")

    def _probe(self, client: MilvusClient) -> None:
        self.ensure_loaded(client)
        # A restarted server reports the collection loaded some seconds before reads stop timing out;
        # only a real (strongly consistent) read tells that requests will work.
        self.query(client, "id in [0]", ("id",), limit=1)

    def ensure_loaded(self, client: MilvusClient) -> None:
        """Load the collection if the server released it; NotReady while it is loading or gone."""
        t = self.settings.milvus_timeout
        with self._load_lock:  # one check (and load) at a time, however many requests noticed
            state = client.get_load_state(self.collection, timeout=t)
            name = str(getattr(state.get("state"), "name", state.get("state"))).lower()
            if name == "notexist":
                # Milvus came back without its data: the next call reconnects and creates the collection again.
                with self._connect_lock:
                    if self.client is client:
                        self.client = None
                raise NotReady(f"collection {self.collection!r} no longer exists in {self.target} (was its data "
                               "reset?); it is created again on the next request. Retry when /ready answers 200.")
            if name == "loading":
                raise NotReady(f"{self.target} is loading collection {self.collection!r} (progress "
                               f"{state.get('progress', '?')}%; it was restarted?). Retry when /ready answers 200.")
            if name != "loaded":
                log.warning("collection %r in %s is not loaded (%s); loading it", self.collection, self.target, name)
                client.load_collection(self.collection, timeout=max(t, 60))

    def call(self, fn: Callable[[MilvusClient], T], retry: bool = True, operation: str = "other",
             writes: bool = False) -> T:
        """Run one Milvus call, retrying transient failures with backoff; NotReady if Milvus stays away.

        `writes`: `fn` writes or deletes (on Milvus Lite it then runs alone). The call's time
        (retries included) and outcome are reported to `on_call` under `operation`.
        """
        with self._observed(operation):
            return self._call(fn, retry, writes)

    def _gated(self, writes: bool) -> AbstractContextManager[None]:
        """On Milvus Lite, the gate in the mode this call needs; elsewhere nothing."""
        if self._gate is None:
            return nullcontext()
        return self._gate.exclusive() if writes else self._gate.shared()

    @contextmanager
    def _observed(self, operation: str) -> Iterator[None]:
        """Report the block to `on_call` as one Milvus call: its duration, and whether it raised."""
        started = time.perf_counter()
        failed = True
        try:
            yield
            failed = False
        finally:
            if self._on_call is not None:
                self._on_call(operation, time.perf_counter() - started, failed)

    def _call(self, fn: Callable[[MilvusClient], T], retry: bool, writes: bool) -> T:
        self.connect()
        client = self.client
        assert client is not None
        attempts = self.settings.milvus_retries if retry else 1
        try:
            for attempt in Retrying(stop=stop_after_attempt(attempts), wait=wait_exponential(0.2, max=2.0),
                                    retry=retry_if_exception(is_transient), reraise=True,
                                    before_sleep=_log_retry):
                with attempt, self._gated(writes):
                    try:
                        return fn(client)
                    except MilvusException as exc:
                        if not not_loaded(exc):
                            raise
                        self.ensure_loaded(client)
                        return fn(client)
        except Exception as exc:
            if is_transient(exc) or not_loaded(exc):
                raise NotReady(f"{self.target} is not answering ({short(exc)}); nothing was changed. "
                               "Retry when /ready answers 200.") from exc
            raise
        raise AssertionError("unreachable")  # pragma: no cover - Retrying either returns or raises

    def query(self, client: MilvusClient, expr: str, fields: Sequence[str], limit: int = QUERY_PAGE,
              level: str | None = None) -> list[dict[str, Any]]:
        """The rows matching `expr` (at most `limit`), read at the store's consistency level unless told."""
        return list(client.query(self.collection, filter=expr, output_fields=list(fields), limit=limit,
                                 consistency_level=level or self.read_level, timeout=self.settings.milvus_timeout))

    def flush(self) -> None:
        """Seal what was written (Milvus Lite: move it out of the in-memory table); nothing before connecting."""
        client = self.client
        if client is not None:
            with self._observed("flush"), self._gated(writes=True):
                client.flush(self.collection, timeout=max(self.settings.milvus_timeout, 60))

    def close(self) -> None:
        """Drop the connection (Milvus Lite flushes its file)."""
        with self._connect_lock:
            if self.client is not None:
                self.client.close()
                self.client = None


def _close_quietly(client: MilvusClient) -> None:
    try:
        client.close()
    except Exception as exc:  # noqa: BLE001 - the failure being reported matters more than this one
        log.debug("closing a half-opened Milvus client failed: %s", short(exc))


def _namespaces(layout: Layout) -> str:
    if not layout.tenancy:
        return "unavailable (a collection of an earlier imgsim: default namespace only)"
    return "by partition key" if layout.partition_key else "by filter"


def _log_retry(state: Any) -> None:
    # A retried call costs the request its backoff: an operator should see that it happens.
    exc = state.outcome.exception() if state.outcome is not None else None
    log.warning("a Milvus call failed (%s); retry %d", short(exc) if exc else "?", state.attempt_number)
