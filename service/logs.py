"""Structured logs and request ids, framework-free (the Flask hooks that feed them are service/api/telemetry.py).

`LOG_FORMAT=json` turns every log line into one JSON object (time, level, logger, message and, inside a
request, the request's id, method, path, status, duration, namespace and key count). The formatter only
ever writes the fields listed here, so a token or an image can reach a log line only through a message
text, and messages are scrubbed of token-looking and base64-looking runs as a second line of defence.
The default text format scrubs its messages and tracebacks the same way.

Every request gets an id: the caller's `X-Request-Id` when it is short and plain, else a new one. It is
echoed in the response header so a client can quote it, and the 500 handler uses it as its reference.
The request being handled is kept in a context variable (one per waitress thread), so any code that
logs while it runs -- a use case, the store -- gets the request's fields on its lines without knowing
about HTTP, and use cases can add notes (namespace, key count) for the access line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

REQUEST_ID_HEADER = "X-Request-Id"
# Letters, digits and a few separators, up to 64 characters: enough for UUIDs, trace ids and
# load-balancer ids, while nothing a client sends can forge log structure or flood a line.
_SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
# The request fields a JSON log line may carry; anything else on a record is ignored.
REQUEST_FIELDS = ("request_id", "method", "path", "status", "duration_ms", "namespace", "key_count")
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


# The fields of the request this thread is handling (None between requests).
_CURRENT: ContextVar[dict[str, Any] | None] = ContextVar("imgsim_request", default=None)


def bind_request(request_id: str, method: str, path: str) -> Token[dict[str, Any] | None]:
    """Mark the start of a request in this context; pass the returned token to `unbind_request`."""
    return _CURRENT.set({"request_id": request_id, "method": method, "path": path})


def unbind_request(token: Token[dict[str, Any] | None]) -> None:
    """The request of `bind_request` is over: its fields leave this context."""
    _CURRENT.reset(token)


def current_request() -> dict[str, Any]:
    """The fields of the request being handled (request_id, method, path and any notes); {} outside one."""
    return dict(_CURRENT.get() or {})


def current_request_id() -> str | None:
    """The id of the request being handled (None outside a request)."""
    fields = _CURRENT.get()
    return fields["request_id"] if fields else None


def note_request(namespace: str | None = None, key_count: int | None = None) -> None:
    """Add what the access log line should say about this request (its namespace, how many keys it named)."""
    fields = _CURRENT.get()
    if fields is None:
        return
    if namespace is not None:
        fields["namespace"] = namespace
    if key_count is not None:
        fields["key_count"] = int(key_count)


def scrub(text: str) -> str:
    """`text` with token values and long base64 runs replaced, cut to a bounded length."""
    text = _SECRET_PATTERN.sub(lambda m: m.group(1) + "[redacted]", text)
    text = _BLOB_PATTERN.sub(lambda m: f"[{len(m.group(0))} chars omitted]", text)
    if len(text) > _MAX_MESSAGE:
        text = text[:_MAX_MESSAGE] + f"... [{len(text) - _MAX_MESSAGE} chars omitted]"
    return text


class RequestContextFilter(logging.Filter):
    """Stamps the current request's fields (id, method, path, notes) on every record logged while it runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add request fields the record does not already carry; never drops a record."""
        for name, value in current_request().items():
            if value is not None and not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request fields present, and `exc`."""

    def format(self, record: logging.LogRecord) -> str:
        """Serialise the whitelisted fields of `record`; the message is scrubbed (see `scrub`)."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
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


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message` lines, message and traceback scrubbed like the JSON ones (see `scrub`)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The line for a copy of `record` whose message is scrubbed (other handlers still get the original)."""
        clean = logging.makeLogRecord(record.__dict__)
        clean.msg, clean.args, clean.exc_text = scrub(record.getMessage()), None, None
        return super().format(clean)

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        """The traceback, scrubbed: an exception's text can quote a request body or a header."""
        return scrub(super().formatException(ei))


def configure_logging(level: str = "INFO", fmt: str = "text") -> logging.Handler:
    """Set up the root logger once, for `LOG_FORMAT` `text` (today's format) or `json`; returns the handler."""
    if fmt not in ("text", "json"):
        raise ValueError(f"LOG_FORMAT must be 'text' or 'json', not {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):  # basicConfig or an earlier call: one handler, or lines come twice
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
