"""Prometheus metrics: what the service is doing and where its time goes, scraped at `GET /metrics`.

Framework-free on purpose: the store, the batchers and the importer never import this module (nor Flask);
service.runtime hands them plain callbacks bound to one `Metrics` object (`observe_milvus`,
`observe_batch`, `import_started`/`import_finished`). The Flask side (request hooks, the /metrics route)
is service/api/telemetry.py.

One `Metrics` object per app, each with its own CollectorRegistry, so tests can build several apps in one
process (the global registry refuses a second metric of the same name).

Families (all prefixed `imgsim_`):
    http_requests_total{endpoint,status}          counter   requests answered
    http_request_duration_seconds{endpoint}       histogram time from first hook to response
    batch_size{batcher}                           histogram items per batch (embed, search, import)
    batch_busy_seconds_total{batcher}             counter   seconds the batch worker was running batches
    milvus_call_duration_seconds{operation}       histogram one Milvus call, retries included
    milvus_call_failures_total{operation}         counter   Milvus calls that raised
    records_stored                                gauge     records in the collection (counted at scrape)
    imports_in_progress                           gauge     bulk imports running now
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

log = logging.getLogger(__name__)

# Latency buckets span a cached hit (a few ms) to a queued URL fetch with retries (tens of seconds).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MILVUS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128)


class Metrics:
    """The service's metric families in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None, process: bool = True) -> None:
        """Create every family in `registry` (a new one by default); `process` adds CPU/RSS/fd metrics."""
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry

        def histogram(name: str, documentation: str, label: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, documentation, [label], buckets=buckets, registry=r)

        self.requests = Counter(
            "imgsim_http_requests", "HTTP requests answered, by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.latency = histogram(
            "imgsim_http_request_duration_seconds", "HTTP request latency by endpoint", "endpoint", LATENCY_BUCKETS
        )
        self.batch_size = histogram(
            "imgsim_batch_size",
            "Items per batch run by a batcher (embed: the model for requests, import: the model for bulk imports, "
            "search: Milvus)",
            "batcher",
            BATCH_BUCKETS,
        )
        self.batch_busy = Counter(
            "imgsim_batch_busy_seconds", "Seconds a batcher spent running batches", ["batcher"], registry=r
        )
        self.milvus_latency = histogram(
            "imgsim_milvus_call_duration_seconds", "Milvus call latency by operation", "operation", MILVUS_BUCKETS
        )
        self.milvus_failures = Counter(
            "imgsim_milvus_call_failures", "Milvus calls that failed, by operation", ["operation"], registry=r
        )
        self.records = Gauge("imgsim_records_stored", "Records in the collection (counted at each scrape)", registry=r)
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
        """Record one Milvus call (`operation` e.g. "search", "upsert", "delete", "query", "count")."""
        self.milvus_latency.labels(operation).observe(seconds)
        if failed:
            self.milvus_failures.labels(operation).inc()

    def import_started(self) -> None:
        """One more bulk import is running."""
        self.imports.inc()

    def import_finished(self) -> None:
        """A bulk import ended (done or failed)."""
        self.imports.dec()

    def set_records(self, count: int) -> None:
        """Set the record count by hand (for callers without a store to ask)."""
        self.records.set(count)

    def track_records(self, count: Callable[[], int | None]) -> None:
        """Ask `count()` at every scrape; None or an exception reports NaN (unknown) instead of failing the scrape."""

        def read() -> float:
            """The count now, as the gauge's value."""
            try:
                value = count()
            except Exception as exc:  # noqa: BLE001 - Milvus down must not turn /metrics into a 500
                log.debug("records_stored: count failed: %s", exc)
                return math.nan
            return math.nan if value is None else float(value)

        self.records.set_function(read)

    def render(self) -> tuple[bytes, str]:
        """The registry in the Prometheus text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
