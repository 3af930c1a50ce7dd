"""Structured logs and request ids.

`LOG_FORMAT=json` turns every log line into one JSON object (time, level, logger, message and, inside a
request, the request's id, method, path, status, duration, namespace and key count). The formatter only
ever writes the fields listed here, so a token or an image can reach a log line only through a message
text, and messages are scrubbed of token-looking and base64-looking runs as a second line of defence.

Every request gets an id: the caller's `X-Request-Id` when it is short and plain, else a new one. It is
echoed in the response header so a client can quote it, and the 500 handler can use it as its reference.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from flask import Flask, Response, g, has_request_context, request

REQUEST_ID_HEADER = "X-Request-Id"
# Letters, digits and a few separators, up to 64 characters: enough for UUIDs, trace ids and
# load-balancer ids, while nothing a client sends can forge log structure or flood a line.
_SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
# The request fields a JSON log line may carry; anything else on a record is ignored.
REQUEST_FIELDS = ("request_id", "method", "path", "status", "duration_ms", "namespace", "key_count")
_NOTE_FIELDS = frozenset({"namespace", "key_count"})
_MAX_MESSAGE = 4000
# "token: x", "token=x", "Bearer x" (any case): the value is replaced, the word kept for context. Values
# under 6 characters are left alone, so prose such as "missing token: send it ..." stays readable.
_SECRET_PATTERN = re.compile(r"(?i)(\btoken\b[\"']?\s*[:=]\s*[\"']?|\bbearer\s+)[^\s\"',;}]{6,}")
# 200+ characters of the base64 alphabet is an image (or other blob), never prose.
_BLOB_PATTERN = re.compile(r"[A-Za-z0-9+/=_-]{200,}")
ACCESS_LOGGER = "imgsim.access"


def request_id_from(value: str | None) -> str:
    """The caller's request id when it is sane (1-64 of [A-Za-z0-9._:-], starting alphanumeric), else a new one."""
    if value is not None and _SANE_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    """The id of the request being handled (None outside a request, or before the hooks ran)."""
    if not has_request_context():
        return None
    return g.get("imgsim_request_id")


def note_request(namespace: str | None = None, key_count: int | None = None) -> None:
    """Add what the access log line should say about this request (its namespace, how many keys it named)."""
    if not has_request_context():
        return
    notes = g.setdefault("imgsim_log_notes", {})
    if namespace is not None:
        notes["namespace"] = namespace
    if key_count is not None:
        notes["key_count"] = int(key_count)


def scrub(text: str) -> str:
    """`text` with token values and long base64 runs replaced, cut to a bounded length."""
    text = _SECRET_PATTERN.sub(lambda m: m.group(1) + "[redacted]", text)
    text = _BLOB_PATTERN.sub(lambda m: f"[{len(m.group(0))} chars omitted]", text)
    if len(text) > _MAX_MESSAGE:
        text = text[:_MAX_MESSAGE] + f"... [{len(text) - _MAX_MESSAGE} chars omitted]"
    return text


class RequestContextFilter(logging.Filter):
    """Stamps the current request's id, method and path on every record logged while a request runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add request fields the record does not already carry; never drops a record."""
        if has_request_context():
            for name, value in (("request_id", current_request_id()), ("method", request.method),
                                ("path", request.path)):
                if value is not None and not hasattr(record, name):
                    setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request fields present, and `exc`."""

    def format(self, record: logging.LogRecord) -> str:
        """Serialise the whitelisted fields of `record`; the message is scrubbed (see `scrub`)."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        for name in REQUEST_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(level: str = "INFO", fmt: str = "text") -> logging.Handler:
    """Set up the root logger once, for `LOG_FORMAT` `text` (today's format) or `json`; returns the handler."""
    if fmt not in ("text", "json"):
        raise ValueError(f"LOG_FORMAT must be 'text' or 'json', not {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):  # basicConfig or an earlier call: one handler, or lines come twice
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def install_request_logging(app: Flask, access_log: bool = True) -> None:
    """Give every request of `app` an id (echoed as X-Request-Id) and, if `access_log`, one log line at the end."""
    access = logging.getLogger(ACCESS_LOGGER)

    def start() -> None:
        g.imgsim_request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        g.imgsim_started = time.perf_counter()

    def finish(response: Response) -> Response:
        request_id = current_request_id() or request_id_from(None)
        response.headers[REQUEST_ID_HEADER] = request_id
        if access_log:
            started = g.get("imgsim_started", time.perf_counter())
            fields: dict[str, Any] = {"request_id": request_id, "method": request.method, "path": request.path,
                                      "status": response.status_code,
                                      "duration_ms": round((time.perf_counter() - started) * 1000, 1)}
            fields.update({k: v for k, v in g.get("imgsim_log_notes", {}).items() if k in _NOTE_FIELDS})
            access.info("%s %s -> %d in %.1f ms", request.method, request.path, response.status_code,
                        fields["duration_ms"], extra=fields)
        return response

    # First in line, so the id and the clock exist even when the token check (registered earlier) refuses.
    app.before_request_funcs.setdefault(None, []).insert(0, start)
    app.after_request(finish)
