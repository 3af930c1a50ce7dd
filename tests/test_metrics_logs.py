"""Prometheus metrics (service/metrics.py) and structured logs with request ids (service/logs.py).

The metrics text must parse with prometheus_client's own parser, and the counters must move with real
requests over HTTP; JSON log lines must parse, carry the request fields, and never contain the token or
image bytes. Until the coordinator wires these into the app factory, the tests install them on the live
test app themselves (before its first request, as the factory will).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, jsonify
from prometheus_client.parser import text_string_to_metric_families

from service.logs import (ACCESS_LOGGER, REQUEST_ID_HEADER, JsonFormatter, RequestContextFilter, configure_logging,
                          current_request_id, install_request_logging, note_request, request_id_from, scrub)
from service.metrics import (SCRAPE_ENDPOINT, Metrics, endpoint_label, install_request_metrics,
                             metrics_blueprint)
from tests.conftest import LiveService, photo

TOKEN = "metrics-S3cret_token.99"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by (name, sorted labels); parsing fails loudly on bad text."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def observed(start_service: Callable[..., LiveService]) -> tuple[LiveService, Metrics]:
    """A token-protected live service with request metrics and GET /metrics installed."""
    live = start_service(token=TOKEN)
    metrics = Metrics()
    install_request_metrics(live.runtime.app, metrics)
    live.runtime.app.register_blueprint(metrics_blueprint(metrics, public=False))
    metrics.track_records(live.runtime.catalog.count)
    return live, metrics


def scrape(live: LiveService) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics with the token, checked for status and content type, parsed."""
    answer = live.get("metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain; version=")
    return samples(answer.text)


def test_metrics_count_real_requests(observed: tuple[LiveService, Metrics]) -> None:
    """Requests by endpoint and status and their latency move with real HTTP calls; records_stored follows."""
    live, _ = observed
    assert live.get("metrics", headers={}).status_code == 401  # protected: METRICS_PUBLIC is not set
    before = scrape(live)
    assert live.post("add/file", files={"file": ("a.jpg", photo(3))}, data={"key": "m1"}).status_code == 200
    assert live.post("search/file", files={"file": ("a.jpg", photo(3))}).status_code == 200
    for _ in range(2):
        assert live.get("api/image/sim/count").status_code == 200
    assert live.post("search/file", headers={"token": "wrong"}).status_code == 401
    assert live.post("nowhere/at/all").status_code == 404
    after = scrape(live)

    total = "imgsim_http_requests_total"
    for endpoint, status, moved in [("/api/image/sim/add/file", "200", 1), ("/api/image/sim/search/file", "200", 1),
                                    ("/api/image/sim/count", "200", 2), ("/api/image/sim/search/file", "401", 1),
                                    ("unmatched", "404", 1), ("/metrics", "401", 0)]:
        delta = value(after, total, endpoint=endpoint, status=status) - value(before, total, endpoint=endpoint,
                                                                              status=status)
        assert delta == moved, (endpoint, status, delta)
    assert value(after, total, endpoint="/metrics", status="401") == 1  # the unauthenticated scrape above
    latency = "imgsim_http_request_duration_seconds_count"
    assert value(after, latency, endpoint="/api/image/sim/search/file") == 2
    assert value(after, "imgsim_http_request_duration_seconds_sum", endpoint="/api/image/sim/add/file") > 0
    assert value(after, "imgsim_records_stored") == 1
    assert not [key for key in after if "wrong" in str(key) or TOKEN in str(key)]


def test_metrics_batches_milvus_imports() -> None:
    """The call-site helpers: batch size and busy time, Milvus latency and failures, imports in progress."""
    metrics = Metrics(process=False)
    metrics.observe_batch("embed", 8, 0.25)
    metrics.observe_batch("embed", 1, 0.05)
    with metrics.milvus_call("search"):
        pass
    with pytest.raises(RuntimeError), metrics.milvus_call("insert"):
        raise RuntimeError("Milvus went away")
    metrics.set_records(41)
    with metrics.import_running():
        during = samples(metrics.render()[0].decode())
    after = samples(metrics.render()[0].decode())

    assert value(after, "imgsim_batch_size_count", batcher="embed") == 2
    assert value(after, "imgsim_batch_size_sum", batcher="embed") == 9
    assert value(after, "imgsim_batch_size_bucket", batcher="embed", le="1.0") == 1
    assert value(after, "imgsim_batch_busy_seconds_total", batcher="embed") == pytest.approx(0.3)
    assert value(after, "imgsim_milvus_call_duration_seconds_count", operation="search") == 1
    assert value(after, "imgsim_milvus_call_duration_seconds_count", operation="insert") == 1
    assert value(after, "imgsim_milvus_call_failures_total", operation="insert") == 1
    assert value(after, "imgsim_milvus_call_failures_total", operation="search") == 0
    assert value(after, "imgsim_records_stored") == 41
    assert value(during, "imgsim_imports_in_progress") == 1 and value(after, "imgsim_imports_in_progress") == 0


def test_metrics_registries_are_separate_and_a_failing_count_is_nan() -> None:
    """Two apps in one process each have their own families; a count that raises does not break the scrape."""
    first, second = Metrics(process=False), Metrics(process=False)
    first.observe_request("/x", 200, 0.01)

    def broken() -> int:
        raise ConnectionError("Milvus is down")

    second.track_records(broken)
    assert value(samples(first.render()[0].decode()), "imgsim_http_requests_total", endpoint="/x", status="200") == 1
    other = samples(second.render()[0].decode())
    assert value(other, "imgsim_http_requests_total", endpoint="/x", status="200") == 0
    assert math.isnan(value(other, "imgsim_records_stored"))


@pytest.mark.parametrize("public, guarded", [(False, True), (True, False)])
def test_metrics_guard_unless_public(public: bool, guarded: bool) -> None:
    """Without METRICS_PUBLIC the blueprint runs the guard (the token check); with it, it does not."""
    calls: list[str] = []

    def guard() -> None:
        calls.append("checked")

    app = Flask("t")
    app.register_blueprint(metrics_blueprint(Metrics(process=False), public=public, guard=guard))
    answer = app.test_client().get("/metrics")
    assert answer.status_code == 200 and bool(calls) == guarded
    assert SCRAPE_ENDPOINT in app.view_functions


def test_endpoint_label_is_bounded() -> None:
    """`any()` arguments keep their value, other arguments stay placeholders, unmatched paths are one label."""
    assert endpoint_label("/api/image/sim/search/<any(file, url, path, base64):kind>", {"kind": "url"}) \
        == "/api/image/sim/search/url"
    assert endpoint_label("/api/image/sim/thumb/<int:record_id>", {"record_id": 42}) \
        == "/api/image/sim/thumb/<record_id>"
    assert endpoint_label("/console/static/<name>", {"name": "x.js"}) == "/console/static/<name>"
    assert endpoint_label(None, None) == "unmatched"


# ----------------------------------------------------------------------------------------- logs

class Lines(logging.Handler):
    """Collects formatted lines (JSON) from the loggers it is attached to."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(JsonFormatter())
        self.addFilter(RequestContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the formatted line."""
        self.lines.append(self.format(record))


@pytest.fixture
def access_lines() -> Iterator[Lines]:
    """JSON lines of the access logger while the test runs."""
    handler = Lines()
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def test_request_ids_and_json_access_lines(start_service: Callable[..., LiveService], access_lines: Lines) -> None:
    """X-Request-Id is kept when sane, replaced when not, echoed always; access lines parse and hold no secret."""
    live = start_service(token=TOKEN)
    install_request_logging(live.runtime.app)
    image = photo(5)
    ok = live.post("search/base64", json={"base64": base64.b64encode(image).decode()},
                   headers={"token": TOKEN, REQUEST_ID_HEADER: "trace-42.a:b"})
    assert ok.status_code == 200 and ok.headers[REQUEST_ID_HEADER] == "trace-42.a:b"
    for hostile in ["x" * 65, "has space", "-leading-dash", "new\tline", "ünï"]:
        answer = live.get("api/image/sim/count", headers={"token": TOKEN, REQUEST_ID_HEADER: hostile})
        assert re.fullmatch(r"[0-9a-f]{32}", answer.headers[REQUEST_ID_HEADER]), hostile
    refused = live.post("add/url", json={"url": "http://x"}, headers={"Authorization": f"Bearer {TOKEN}x"})
    assert refused.status_code == 401 and refused.headers[REQUEST_ID_HEADER]

    lines = [json.loads(line) for line in access_lines.lines]
    assert len(lines) == 7
    first = lines[0]
    assert first["request_id"] == "trace-42.a:b" and first["method"] == "POST"
    assert first["path"] == "/api/image/sim/search/base64" and first["status"] == 200
    assert first["duration_ms"] > 0 and first["level"] == "INFO" and first["logger"] == ACCESS_LOGGER
    assert lines[-1]["status"] == 401 and lines[-1]["request_id"] == refused.headers[REQUEST_ID_HEADER]
    text = "\n".join(access_lines.lines)
    assert TOKEN not in text and base64.b64encode(image).decode()[:40] not in text


def test_json_formatter_scrubs_and_notes() -> None:
    """Notes (namespace, key count) reach the line; tokens and base64 in messages and tracebacks do not."""
    app = Flask("t")
    install_request_logging(app)
    log = logging.getLogger("imgsim.test")
    handler = Lines()
    for logger in (log, logging.getLogger(ACCESS_LOGGER)):
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    blob = base64.b64encode(photo(2)).decode()

    @app.post("/x")
    def handle() -> Any:
        note_request(namespace="shop-a", key_count=3)
        try:
            raise ValueError(f"bad body {blob}")
        except ValueError:
            log.exception("failed with token: %s and Authorization: Bearer %s", TOKEN, TOKEN)
        return jsonify(current_request_id())

    try:
        answer = app.test_client().post("/x", headers={REQUEST_ID_HEADER: "abc-1"})
    finally:
        for logger in (log, logging.getLogger(ACCESS_LOGGER)):
            logger.removeHandler(handler)
    assert answer.get_json() == "abc-1"
    error, access = (json.loads(line) for line in handler.lines)
    assert error["request_id"] == "abc-1" and error["path"] == "/x" and error["level"] == "ERROR"
    assert "ValueError" in error["exc"] and "chars omitted" in error["exc"]
    assert access["namespace"] == "shop-a" and access["key_count"] == 3 and access["status"] == 200
    assert TOKEN not in "".join(handler.lines) and blob[:40] not in "".join(handler.lines)


def test_scrub_and_request_id_rules() -> None:
    """scrub() keeps prose readable; request_id_from() keeps only short plain ids."""
    assert scrub("missing token: send it in the header") == "missing token: send it in the header"
    assert scrub('{"token": "abcdef123"}') == '{"token": "[redacted]"}'
    assert scrub("Authorization: Bearer abcdef123") == "Authorization: Bearer [redacted]"
    assert len(scrub("m" * 10_000)) < 4100
    assert request_id_from("a" * 64) == "a" * 64
    assert request_id_from(None) != request_id_from(None)
    assert re.fullmatch(r"[0-9a-f]{32}", request_id_from("a" * 65))


def test_configure_logging_json_to_a_stream() -> None:
    """LOG_FORMAT=json: the root logger writes one JSON object per line; other formats are refused."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    try:
        handler = configure_logging("INFO", "json")
        stream = io.StringIO()
        handler.setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("imgsim.test").info("hello %s", "world")
        line = json.loads(stream.getvalue().strip().splitlines()[-1])
        assert line["message"] == "hello world" and line["logger"] == "imgsim.test" and "request_id" not in line
        with pytest.raises(ValueError, match="LOG_FORMAT"):
            configure_logging("INFO", "xml")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
