"""The Flask application factory: blueprints, request ids, logs and metrics, the token check, the error handlers."""

from __future__ import annotations

from flask import Flask, request
from flask.json.provider import DefaultJSONProvider

from conf.settings import Settings
from service.api import console, docs
from service.api.auth import admit, token_table
from service.api.errors import register_error_handlers
from service.api.probes import probes
from service.api.routes import api
from service.api.telemetry import SCRAPE_ENDPOINT, install_request_hooks, metrics_blueprint
from service.metrics import Metrics
from service.usecases.deps import Deps

# Open without the token: the probes, and the console's and docs' pages and assets, which hold no data
# (each page asks for the token itself; every API call it makes is checked like any other).
OPEN_ENDPOINTS = frozenset({"probes.health", "probes.ready"}) | console.PUBLIC_ENDPOINTS | docs.PUBLIC_ENDPOINTS


def open_endpoints(settings: Settings) -> frozenset[str]:
    """The endpoints the token check lets through: OPEN_ENDPOINTS, and /metrics with METRICS_PUBLIC=1."""
    return OPEN_ENDPOINTS | ({SCRAPE_ENDPOINT} if settings.metrics_public else frozenset())


def create_app(settings: Settings, deps: Deps, metrics: Metrics | None = None) -> Flask:
    """Build the WSGI app around ready-made dependencies (model, store and metrics are built by service.runtime).

    Raises StartupError when TOKENS_FILE cannot be used.
    """
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes, MAX_FORM_MEMORY_SIZE=settings.max_body_bytes, JSON_SORT_KEYS=False
    )
    if isinstance(app.json, DefaultJSONProvider):  # Chinese keys and messages as text, not \u escapes
        app.json.ensure_ascii = False
    app.extensions["imgsim.deps"] = deps
    metrics = metrics or Metrics(process=False)
    # First, so that every request -- the ones the token check refuses too -- has an id, a log line and metrics.
    install_request_hooks(app, metrics)
    for blueprint in (
        api,
        probes,
        console.console_blueprint(),
        docs.docs_blueprint(),
        metrics_blueprint(metrics, public=settings.metrics_public),
    ):
        app.register_blueprint(blueprint)

    # Registered without any token too: open mode admits every request as an admin (service.api.auth).
    table = token_table(settings)
    unchecked = open_endpoints(settings)

    @app.before_request
    def require_token() -> None:
        """Refuse (401/403) a request without a token or the right its endpoint declares, unless it is open."""
        if request.endpoint not in unchecked:
            admit(request, table)

    register_error_handlers(app, settings)
    return app
