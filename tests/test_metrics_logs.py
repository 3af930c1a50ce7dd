"""Prometheus metrics (service/metrics.py, service/api/telemetry.py) and structured logs with request ids
(service/logs.py), as the app factory wires them.

The metrics text must parse with prometheus_client's own parser, and the counters must move with real
requests over HTTP; JSON log lines must parse, carry the request fields, and never contain the token or
image bytes; the 500 reference is the request id.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify
from prometheus_client.parser import text_string_to_metric_families

from conf.errors import NotReady
from model.embedder import DIM
from service.api.telemetry import REQUEST_ID_HEADER, endpoint_label, install_request_hooks
from service.logs import (
    ACCESS_LOGGER,
    JsonFormatter,
    RequestContextFilter,
    configure_logging,
    current_request_id,
    note_request,
    request_id_from,
    scrub,
)
from service.metrics import Metrics
from service.runtime import import_hooks
from service.store.records import VectorStore
from service.usecases.importer import ImportHooks, Importer
from tests.conftest import LiveService, make_settings, photo

TOKEN = "metrics-S3cret_token.99"
Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Scrape:
    """Every sample of a scrape, keyed by (name, sorted labels); parsing fails loudly on bad text."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(scrape: Scrape, name: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(live: LiveService, **kwargs: Any) -> Scrape:
    """GET /metrics (with the token unless told), checked for status and content type, parsed."""
    answer = live.get("metrics", **kwargs)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain; version=")
    return samples(answer.text)


def test_metrics_count_real_requests(start_service: Callable[..., LiveService]) -> None:
    """Requests by endpoint and status, latency, model batches, Milvus calls and records stored move with real calls."""
    live = start_service(token=TOKEN)
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
    for endpoint, status, moved in [
        ("/api/image/sim/add/file", "200", 1),
        ("/api/image/sim/search/file", "200", 1),
        ("/api/image/sim/count", "200", 2),
        ("/api/image/sim/search/file", "401", 1),
        ("unmatched", "404", 1),
        ("/metrics", "401", 0),
    ]:
        delta = value(after, total, endpoint=endpoint, status=status) - value(
            before, total, endpoint=endpoint, status=status
        )
        assert delta == moved, (endpoint, status, delta)
    assert value(after, total, endpoint="/metrics", status="401") == 1  # the unauthenticated scrape above
    latency = "imgsim_http_request_duration_seconds_count"
    assert value(after, latency, endpoint="/api/image/sim/search/file") == 2
    assert value(after, "imgsim_http_request_duration_seconds_sum", endpoint="/api/image/sim/add/file") > 0
    assert value(after, "imgsim_records_stored") == 1
    # The batchers and the store report through their callbacks: two model batches, one Milvus search, one upsert.
    assert value(after, "imgsim_batch_size_count", batcher="embed") == 2
    assert value(after, "imgsim_batch_busy_seconds_total", batcher="embed") > 0
    assert value(after, "imgsim_batch_size_count", batcher="search") == 1
    for operation in ("search", "upsert", "count", "lookup"):
        assert value(after, "imgsim_milvus_call_duration_seconds_count", operation=operation) >= 1, operation
    assert value(after, "process_resident_memory_bytes") > 0
    assert not [key for key in after if "wrong" in str(key) or TOKEN in str(key)]


def test_metrics_public_needs_no_token(start_service: Callable[..., LiveService]) -> None:
    """METRICS_PUBLIC=1 opens /metrics only; the API keeps wanting the token."""
    live = start_service(token=TOKEN, metrics_public=True)
    assert value(scrape(live, headers={}), "imgsim_records_stored") == 0
    assert live.get("api/image/sim/count", headers={}).status_code == 401
    assert live.get("openapi.json", headers={}).status_code == 401


ADMIN_TOKEN, SHOP_READ, SHOP_WRITE = "metrics-admin-7f1", "metrics-shop1-read-2c9", "metrics-shop1-write-5b0"


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    """An admin token and two tokens bound to namespace shop-1 (read, write)."""
    path = tmp_path / "tokens"
    path.write_text(f"{ADMIN_TOKEN} * admin\n{SHOP_READ} shop-1 read\n{SHOP_WRITE} shop-1 write\n")
    return path


def test_metrics_need_an_admin_token(start_service: Callable[..., LiveService], tokens_file: Path) -> None:
    """The metrics count every namespace: a namespace-bound token gets 403 saying what is needed, an admin 200."""
    live = start_service(tokens_file=tokens_file)
    other = live.post(
        "add/base64",
        headers={"token": ADMIN_TOKEN},
        json={"base64": base64.b64encode(photo(5)).decode(), "key": "k", "namespace": "shop-2"},
    )
    assert other.status_code == 200, other.text
    for token in (SHOP_READ, SHOP_WRITE):
        for auth in ({"token": token}, {"Authorization": f"Bearer {token}"}):
            refused = live.get("metrics", headers=auth)
            assert refused.status_code == 403, refused.text
            assert refused.json()["code"] == 403 and refused.json()["data"] is None
            assert "admin token" in refused.json()["msg"] and "METRICS_PUBLIC" in refused.json()["msg"]
            assert "imgsim_records_stored" not in refused.text  # nothing of shop-2's count leaks
    assert live.get("metrics", headers={}).status_code == 401
    assert live.get("metrics", headers={"token": "not-a-token"}).status_code == 401
    # The bound tokens still do what they may: count their own namespace (empty), not shop-2's record.
    assert live.post("count", headers={"token": SHOP_READ}).json()["data"] == 0
    after = scrape(live, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})  # a Prometheus scrape config
    assert value(after, "imgsim_records_stored") == 1
    assert value(after, "imgsim_http_requests_total", endpoint="/metrics", status="403") == 4
    assert value(scrape(live, headers={"token": ADMIN_TOKEN}), "imgsim_records_stored") == 1


def test_metrics_public_opens_metrics_to_every_caller(
    start_service: Callable[..., LiveService], tokens_file: Path
) -> None:
    """METRICS_PUBLIC=true: no token and a namespace-bound token both scrape; the API keeps its checks."""
    live = start_service(tokens_file=tokens_file, metrics_public=True)
    for headers in ({}, {"token": SHOP_READ}, {"token": ADMIN_TOKEN}):
        assert value(scrape(live, headers=headers), "imgsim_records_stored") == 0, headers
    assert live.post("count", headers={}).status_code == 401
    assert live.post("count", headers={"token": SHOP_READ}, json={"namespace": "shop-2"}).status_code == 403


def test_metrics_of_an_open_service_answer_everyone(start_service: Callable[..., LiveService]) -> None:
    """No token configured: every caller is an admin, so /metrics answers as before."""
    live = start_service()
    assert value(scrape(live, headers={}), "imgsim_records_stored") == 0


def test_milvus_failures_are_counted_by_operation(tmp_path: Path) -> None:
    """A store whose Milvus is away reports each failed call, with its operation, to its observer."""
    calls: list[tuple[str, bool]] = []
    settings = make_settings(tmp_path, milvus_uri="http://127.0.0.1:9", milvus_timeout=1, milvus_retries=1)
    store = VectorStore(settings, DIM, on_call=lambda operation, seconds, failed: calls.append((operation, failed)))
    with pytest.raises(NotReady):
        store.scope()  # what every request asks for first
    with pytest.raises(NotReady):
        store.count_all()
    with pytest.raises(NotReady):
        store.md5s_in_use(["0" * 32])
    assert calls == [("connect", True), ("count", True), ("query", True)]
    metrics = Metrics(process=False)
    metrics.track_records(lambda: store.count_all(retry=False))
    assert math.isnan(value(samples(metrics.render()[0].decode()), "imgsim_records_stored"))


def test_import_reports_batches_and_progress(start_service: Callable[..., LiveService], tmp_path: Path) -> None:
    """A bulk import counts as in progress while it runs; its model batches are labelled "import"."""
    live = start_service(token=TOKEN)
    folder = tmp_path / "catalog"
    folder.mkdir()
    for i in range(3):
        (folder / f"p{i}.jpg").write_bytes(photo(40 + i))
    seen: list[float] = []
    wired = import_hooks(live.runtime.metrics)

    def batch(size: int, seconds: float) -> None:
        wired.batch(size, seconds)
        seen.append(value(scrape(live), "imgsim_imports_in_progress"))

    watching = ImportHooks(started=wired.started, finished=wired.finished, batch=batch)
    summary = Importer(
        live.runtime.settings, live.runtime.embedder, live.runtime.store, batch_size=2, hooks=watching
    ).run(folder, progress=False)
    assert summary.imported == 3
    after = scrape(live)
    assert seen == [1, 1] and value(after, "imgsim_imports_in_progress") == 0
    assert value(after, "imgsim_batch_size_count", batcher="import") == 2
    assert value(after, "imgsim_batch_size_sum", batcher="import") == 3


def test_metrics_helpers() -> None:
    """The call-site helpers: batch size and busy time, Milvus latency and failures, imports, records."""
    metrics = Metrics(process=False)
    metrics.observe_batch("embed", 8, 0.25)
    metrics.observe_batch("embed", 1, 0.05)
    metrics.observe_milvus("search", 0.002)
    metrics.observe_milvus("upsert", 0.5, failed=True)
    metrics.set_records(41)
    metrics.import_started()
    during = samples(metrics.render()[0].decode())
    metrics.import_finished()
    after = samples(metrics.render()[0].decode())

    assert value(after, "imgsim_batch_size_count", batcher="embed") == 2
    assert value(after, "imgsim_batch_size_sum", batcher="embed") == 9
    assert value(after, "imgsim_batch_size_bucket", batcher="embed", le="1.0") == 1
    assert value(after, "imgsim_batch_busy_seconds_total", batcher="embed") == pytest.approx(0.3)
    assert value(after, "imgsim_milvus_call_duration_seconds_count", operation="search") == 1
    assert value(after, "imgsim_milvus_call_failures_total", operation="upsert") == 1
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


def test_endpoint_label_is_bounded() -> None:
    """`any()` arguments keep their value, other arguments stay placeholders, unmatched paths are one label."""
    assert (
        endpoint_label("/api/image/sim/search/<any(file, url, path, base64):kind>", {"kind": "url"})
        == "/api/image/sim/search/url"
    )
    assert endpoint_label("/api/image/sim/thumb/<record_id>", {"record_id": "42"}) == "/api/image/sim/thumb/<record_id>"
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
def all_lines() -> Iterator[Lines]:
    """JSON lines of every logger (root at INFO) while the test runs."""
    handler = Lines()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_request_ids_and_json_access_lines(start_service: Callable[..., LiveService], all_lines: Lines) -> None:
    """X-Request-Id is kept when sane, replaced when not, echoed always; every line of a request carries its id;
    no line holds the token or the image."""
    live = start_service(token=TOKEN)
    image = photo(5)
    added = live.post(
        "add/base64",
        json={"base64": base64.b64encode(image).decode(), "key": "k"},
        headers={"token": TOKEN, REQUEST_ID_HEADER: "trace-42.a:b"},
    )
    assert added.status_code == 200 and added.headers[REQUEST_ID_HEADER] == "trace-42.a:b"
    for hostile in ["x" * 65, "has space", "-leading-dash", "tab\there", "ünï"]:
        answer = live.get("api/image/sim/count", headers={"token": TOKEN, REQUEST_ID_HEADER: hostile})
        assert re.fullmatch(r"[0-9a-f]{32}", answer.headers[REQUEST_ID_HEADER]), hostile
    refused = live.post("add/url", json={"url": "http://x"}, headers={"Authorization": f"Bearer {TOKEN}x"})
    assert refused.status_code == 401 and refused.headers[REQUEST_ID_HEADER]
    assert live.post("get/key", json={"key": ["a", "b", "c"]}).status_code == 200

    lines = [json.loads(line) for line in all_lines.lines]
    access = [line for line in lines if line["logger"] == ACCESS_LOGGER]
    assert len(access) == 8
    first = access[0]
    assert first["request_id"] == "trace-42.a:b" and first["method"] == "POST"
    assert first["path"] == "/api/image/sim/add/base64" and first["status"] == 200
    assert first["duration_ms"] > 0 and first["level"] == "INFO"
    assert access[-2]["status"] == 401 and access[-2]["request_id"] == refused.headers[REQUEST_ID_HEADER]
    assert access[-1]["key_count"] == 3
    # The use case's own line ("add key=... stored") carries the request's id without knowing about HTTP.
    [stored] = [line for line in lines if line["logger"] == "service.usecases.add"]
    assert stored["request_id"] == "trace-42.a:b" and stored["path"] == "/api/image/sim/add/base64"
    text = "\n".join(all_lines.lines)
    assert TOKEN not in text and base64.b64encode(image).decode()[:40] not in text


def test_500_reference_is_the_request_id(
    start_service: Callable[..., LiveService], all_lines: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug answers 500 whose reference is the request id; the log line with the traceback has the same id."""
    live = start_service(token=TOKEN)

    def broken(*_args: object) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr("service.api.routes.count_records", broken)
    answer = live.get("api/image/sim/count", headers={"token": TOKEN, REQUEST_ID_HEADER: "ticket-7"})
    assert answer.status_code == 500 and answer.headers[REQUEST_ID_HEADER] == "ticket-7"
    assert "reference ticket-7" in answer.json()["msg"] and "a bug" not in answer.json()["msg"]
    generated = live.get("api/image/sim/count")
    assert f"reference {generated.headers[REQUEST_ID_HEADER]}" in generated.json()["msg"]
    [bug] = [json.loads(line) for line in all_lines.lines if "unhandled error" in line and "ticket-7" in line]
    assert bug["request_id"] == "ticket-7" and bug["level"] == "ERROR" and "RuntimeError" in bug["exc"]


def test_json_formatter_scrubs_and_notes() -> None:
    """Notes (namespace, key count) reach the line; tokens and base64 in messages and tracebacks do not."""
    app = Flask("t")
    install_request_hooks(app, Metrics(process=False))
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
    assert answer.get_json() == "abc-1" and current_request_id() is None  # unbound after the request
    error, access = (json.loads(line) for line in handler.lines)
    assert error["request_id"] == "abc-1" and error["path"] == "/x" and error["level"] == "ERROR"
    assert "ValueError" in error["exc"] and "chars omitted" in error["exc"]
    assert access["namespace"] == "shop-a" and access["key_count"] == 3 and access["status"] == 200
    assert TOKEN not in "".join(handler.lines) and blob[:40] not in "".join(handler.lines)


@pytest.fixture
def root_stream() -> Iterator[Callable[[str], io.StringIO]]:
    """configure_logging for a format, writing to a string; the root logger is restored afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level

    def configure(fmt: str) -> io.StringIO:
        stream = io.StringIO()
        configure_logging("INFO", fmt).setStream(stream)  # type: ignore[attr-defined] - it is a StreamHandler
        return stream

    yield configure
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)


def test_text_lines_are_scrubbed_too(root_stream: Callable[[str], io.StringIO]) -> None:
    """LOG_FORMAT=text (the default): no token or image in a message or a traceback either."""
    blob = base64.b64encode(photo(3)).decode()
    stream = root_stream("text")
    try:
        raise ValueError(f"bad body {blob} with token={TOKEN}")
    except ValueError:
        logging.getLogger("imgsim.test").exception("failed with Authorization: Bearer %s", TOKEN)
    text = stream.getvalue()
    assert "imgsim.test: failed with Authorization: Bearer [redacted]" in text
    assert "ValueError: bad body [" in text and "chars omitted]" in text and "Traceback" in text
    assert TOKEN not in text and blob[:40] not in text


def test_scrub_and_request_id_rules() -> None:
    """scrub() keeps prose readable; request_id_from() keeps only short plain ids."""
    assert scrub("missing token: send it in the header") == "missing token: send it in the header"
    assert scrub('{"token": "abcdef123"}') == '{"token": "[redacted]"}'
    assert scrub("Authorization: Bearer abcdef123") == "Authorization: Bearer [redacted]"
    assert len(scrub("m" * 10_000)) < 4100
    assert request_id_from("a" * 64) == "a" * 64
    assert request_id_from(None) != request_id_from(None)
    assert re.fullmatch(r"[0-9a-f]{32}", request_id_from("a" * 65))


def test_configure_logging_json_to_a_stream(root_stream: Callable[[str], io.StringIO]) -> None:
    """LOG_FORMAT=json: the root logger writes one JSON object per line; other formats are refused."""
    stream = root_stream("json")
    logging.getLogger("imgsim.test").info("hello %s", "world")
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["message"] == "hello world" and line["logger"] == "imgsim.test" and "request_id" not in line
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        configure_logging("INFO", "xml")
