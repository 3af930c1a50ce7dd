"""The HTTP side of observability: request ids, the access log line, request metrics and `GET /metrics`.

The metric families and the log formatting live outside the HTTP layer (service/metrics.py,
service/logs.py); this module only feeds them from Flask's request hooks.
"""

from __future__ import annotations

import logging
import re
import time

from flask import Blueprint, Flask, Response, g, request

from conf.errors import Forbidden
from service.api.tokens import ADMIN, Grant
from service.logs import ACCESS_LOGGER, bind_request, current_request, request_id_from, unbind_request
from service.metrics import Metrics

REQUEST_ID_HEADER = "X-Request-Id"
SCRAPE_ENDPOINT = "metrics.scrape"
_RULE_ARG = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")
_access = logging.getLogger(ACCESS_LOGGER)


def endpoint_label(rule: str | None, view_args: dict[str, object] | None) -> str:
    """A bounded label for a URL rule: `any(...)` arguments take their value, other arguments stay `<name>`."""
    if rule is None:
        return "unmatched"  # 404s: never the raw path, or scanners would mint a label per URL
    args = view_args or {}

    def fill(match: re.Match[str]) -> str:
        """One `<converter:name>` of the rule, as it appears in the label."""
        converter, name = match.group(1), match.group(2)
        if converter == "any" and name in args:
            return str(args[name])
        return f"<{name}>"

    return _RULE_ARG.sub(fill, rule)


def install_request_hooks(app: Flask, metrics: Metrics) -> None:
    """Every request of `app` gets an id (echoed as X-Request-Id), one access log line and its metrics.

    Call before any other before_request hook is registered (the token check above all), so that
    refused requests are timed, counted, logged and carry an id too.
    """

    def start() -> None:
        """Start the clock and bind the request's id, method and path to this context's log lines."""
        g.imgsim_started = time.perf_counter()
        request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        g.imgsim_log_binding = bind_request(request_id, request.method, request.path)

    def finish(response: Response) -> Response:
        """Echo the id, count and time the request, and write its access line."""
        fields = current_request()
        request_id = fields.get("request_id") or request_id_from(None)
        response.headers[REQUEST_ID_HEADER] = request_id
        seconds = time.perf_counter() - g.get("imgsim_started", time.perf_counter())
        rule = request.url_rule.rule if request.url_rule is not None else None
        metrics.observe_request(endpoint_label(rule, request.view_args), response.status_code, seconds)
        fields.update(request_id=request_id, status=response.status_code, duration_ms=round(seconds * 1000, 1))
        _access.info(
            "%s %s -> %d in %.1f ms (request %s)",
            request.method,
            request.path,
            response.status_code,
            fields["duration_ms"],
            request_id,
            extra=fields,
        )
        return response

    def end(_exc: BaseException | None) -> None:
        """Unbind the request's log fields, whatever happened."""
        binding = g.pop("imgsim_log_binding", None)
        if binding is not None:
            unbind_request(binding)  # a waitress thread serves the next request with a clean context

    app.before_request_funcs.setdefault(None, []).insert(0, start)
    app.after_request(finish)
    app.teardown_request(end)


SCRAPE_FORBIDDEN = (
    "/metrics counts the records and requests of every namespace, so it needs an admin token; "
    "this token is bound to one namespace or lacks the admin right. Scrape with an admin token "
    "(Authorization: Bearer <token>), or set METRICS_PUBLIC=true to open /metrics to anyone who "
    "can reach the port"
)


def metrics_blueprint(metrics: Metrics, public: bool = False) -> Blueprint:
    """`GET /metrics` in the Prometheus text format: for admin tokens only, unless `public` (METRICS_PUBLIC).

    The app's token check admits the caller first (401 without a known token); the metrics count every
    namespace, so a token bound to one namespace (or without the admin right) is refused here with 403.
    An open service (no token configured) admits every caller as an admin, so it keeps answering.
    """
    bp = Blueprint("metrics", __name__)

    @bp.get("/metrics", endpoint="scrape")
    def scrape() -> Response:
        """The registry, rendered now; never cached by a proxy."""
        if not public:
            grant: Grant | None = g.get("grant")  # set by the token check; absent would be a bug: refuse
            if grant is None or not grant.allows(ADMIN):
                raise Forbidden(SCRAPE_FORBIDDEN, reason="admin_required")
        body, content_type = metrics.render()
        return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})

    return bp
