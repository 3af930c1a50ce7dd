"""The Flask application factory: blueprints, the token check, and the error handlers."""

from __future__ import annotations

from flask import Flask, request

from conf.settings import Settings
from service.api.auth import admit, token_table
from service.api.bulk import bulk
from service.api.errors import register_error_handlers
from service.api.probes import probes
from service.api.routes import api
from service.usecases.deps import Deps

OPEN_ENDPOINTS = frozenset({"probes.health", "probes.ready"})


def create_app(settings: Settings, deps: Deps) -> Flask:
    """Build the WSGI app around ready-made dependencies (model and store are built by service.runtime).

    Raises StartupError when TOKENS_FILE cannot be used.
    """
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, MAX_FORM_MEMORY_SIZE=settings.max_body_bytes,
                      JSON_SORT_KEYS=False)
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.extensions["imgsim.deps"] = deps
    app.register_blueprint(api)
    app.register_blueprint(bulk)
    app.register_blueprint(probes)
    table = token_table(settings)

    @app.before_request
    def require_token() -> None:
        if request.endpoint not in OPEN_ENDPOINTS:
            admit(request, table)

    register_error_handlers(app, settings)
    return app
