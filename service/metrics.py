"""Prometheus metrics: what the service is doing and where its time goes, scraped at `GET /metrics`.

One `Metrics` object per app, each with its own CollectorRegistry, so tests can build several apps in one
process (the global registry refuses a second metric of the same name). The methods the app, batchers,
store and importer call are one-liners, so a call site costs a line and no Prometheus knowledge.

Families (all prefixed `imgsim_`):
    http_requests_total{endpoint,status}          counter   requests answered
    http_request_duration_seconds{endpoint}       histogram time from first hook to response
    batch_size{batcher}                           histogram items per batch (embed, search, import)
    batch_busy_seconds_total{batcher}             counter   seconds the batch worker was running batches
    milvus_call_duration_seconds{operation}       histogram one Milvus call, retries included
    milvus_call_failures_total{operation}         counter   Milvus calls that raised
    records_stored                                gauge     records in the collection (last known)
    imports_in_progress                           gauge     bulk imports running now
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import ProcessCollector

log = logging.getLogger(__name__)

SCRAPE_ENDPOINT = "metrics.scrape"
# Latency buckets span a cached hit (a few ms) to a queued URL fetch with retries (tens of seconds).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MILVUS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128)
_RULE_ARG = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")


class Metrics:
    """The service's metric families in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None, process: bool = True) -> None:
        """Create every family in `registry` (a new one by default); `process` adds CPU/RSS/fd metrics."""
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("imgsim_http_requests", "HTTP requests answered, by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("imgsim_http_request_duration_seconds", "HTTP request latency by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("imgsim_batch_size", "Items per batch run by a batcher (embed: the model "
                                    "for requests, import: the model for bulk imports, search: Milvus)",
                                    ["batcher"], buckets=BATCH_BUCKETS, registry=r)
        self.batch_busy = Counter("imgsim_batch_busy_seconds", "Seconds a batcher spent running batches",
                                  ["batcher"], registry=r)
        self.milvus_latency = Histogram("imgsim_milvus_call_duration_seconds", "Milvus call latency by operation",
                                        ["operation"], buckets=MILVUS_BUCKETS, registry=r)
        self.milvus_failures = Counter("imgsim_milvus_call_failures", "Milvus calls that failed, by operation",
                                       ["operation"], registry=r)
        self.records = Gauge("imgsim_records_stored", "Records in the collection (as last counted)", registry=r)
        self.imports = Gauge("imgsim_imports_in_progress", "Bulk imports running now", registry=r)
        if process:
            ProcessCollector(registry=r)  # Linux /proc: CPU seconds, RSS, open fds of this process

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_batch(self, batcher: str, size: int, busy_seconds: float) -> None:
        """Record one batch run by `batcher` ("embed", "search", "import"): its size and how long it ran."""
        self.batch_size.labels(batcher).observe(size)
        self.batch_busy.labels(batcher).inc(max(busy_seconds, 0.0))

    def observe_milvus(self, operation: str, seconds: float, failed: bool = False) -> None:
        """Record one Milvus call (`operation` e.g. "search", "insert", "delete", "query", "count")."""
        self.milvus_latency.labels(operation).observe(seconds)
        if failed:
            self.milvus_failures.labels(operation).inc()

    @contextmanager
    def milvus_call(self, operation: str) -> Iterator[None]:
        """Time the block as one Milvus call; an exception counts as a failure and is re-raised."""
        started = time.perf_counter()
        failed = True
        try:
            yield
            failed = False
        finally:
            self.observe_milvus(operation, time.perf_counter() - started, failed)

    def set_records(self, count: int) -> None:
        """Remember the latest record count (call it wherever the service counts, e.g. GET count)."""
        self.records.set(count)

    def track_records(self, count: Callable[[], int]) -> None:
        """Ask `count()` at every scrape instead; a failing count reports NaN rather than breaking the scrape."""
        def read() -> float:
            try:
                return float(count())
            except Exception as exc:  # noqa: BLE001 - Milvus down must not turn /metrics into a 500
                log.debug("records_stored: count failed: %s", exc)
                return math.nan

        self.records.set_function(read)

    @contextmanager
    def import_running(self) -> Iterator[None]:
        """Count the block as one import in progress."""
        self.imports.inc()
        try:
            yield
        finally:
            self.imports.dec()

    def render(self) -> tuple[bytes, str]:
        """The registry in the Prometheus text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def endpoint_label(rule: str | None, view_args: dict[str, object] | None) -> str:
    """A bounded label for a URL rule: `any(...)` arguments take their value, other arguments stay `<name>`."""
    if rule is None:
        return "unmatched"  # 404s: never the raw path, or scanners would mint a label per URL
    args = view_args or {}

    def fill(match: re.Match[str]) -> str:
        converter, name = match.group(1), match.group(2)
        if converter == "any" and name in args:
            return str(args[name])
        return f"<{name}>"

    return _RULE_ARG.sub(fill, rule)


def install_request_metrics(app: Flask, metrics: Metrics) -> None:
    """Observe every request of `app` (count by endpoint and status, latency by endpoint)."""
    def start() -> None:
        g.imgsim_metrics_started = time.perf_counter()

    def finish(response: Response) -> Response:
        started = g.get("imgsim_metrics_started")
        if started is not None:
            rule = request.url_rule.rule if request.url_rule is not None else None
            metrics.observe_request(endpoint_label(rule, request.view_args), response.status_code,
                                    time.perf_counter() - started)
        return response

    # First in line, so requests the token check refuses are timed and counted too.
    app.before_request_funcs.setdefault(None, []).insert(0, start)
    app.after_request(finish)


def metrics_blueprint(metrics: Metrics, public: bool, guard: Callable[[], None] | None = None) -> Blueprint:
    """`GET /metrics`. Unless `public`, `guard()` runs first (it raises to refuse, e.g. the token check).

    With `public` the app's own token check must skip SCRAPE_ENDPOINT; without it, either pass `guard` and
    skip SCRAPE_ENDPOINT, or pass no guard and leave the endpoint under the app-wide check.
    """
    bp = Blueprint("metrics", __name__)

    @bp.get("/metrics", endpoint="scrape")
    def scrape() -> Response:
        if not public and guard is not None:
            guard()
        body, content_type = metrics.render()
        return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})

    return bp
