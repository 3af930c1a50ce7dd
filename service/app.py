"""The Flask application factory: blueprints, token check, and the one place errors become responses."""

from __future__ import annotations

import logging
import uuid

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from conf.settings import Settings
from service.auth import check_token
from service.catalog import Catalog
from service.errors import ApiError, status_of
from service.routes import api, envelope, probes

log = logging.getLogger(__name__)

OPEN_ENDPOINTS = frozenset({"probes.health", "probes.ready"})


def create_app(settings: Settings, catalog: Catalog) -> Flask:
    """Build the WSGI app around a ready-made catalog (model and store are built by the caller)."""
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, MAX_FORM_MEMORY_SIZE=settings.max_body_bytes,
                      JSON_SORT_KEYS=False)
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.extensions["imgsim.catalog"] = catalog
    app.register_blueprint(api)
    app.register_blueprint(probes)

    token = settings.token.get_secret_value() if settings.token else None
    if token:
        @app.before_request
        def require_token() -> None:
            if request.endpoint not in OPEN_ENDPOINTS:
                check_token(request, token)

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> tuple[Response, int]:
        code = status_of(exc)
        if code >= 500:
            log.warning("%s %s -> %d: %s", request.method, request.path, code, exc.msg)
        return envelope(None, msg=exc.msg, code=code)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_exc: RequestEntityTooLarge) -> tuple[Response, int]:
        if request.content_length is not None and request.content_length <= settings.max_body_bytes:
            # Werkzeug also raises this for a form with too many parts: the body itself was not too big.
            return envelope(None, code=413, msg=f"the form has more than {app.config['MAX_FORM_PARTS']} fields; "
                                                "send only the fields the endpoint documents")
        return envelope(None, code=413, msg=f"the request body is over {settings.max_body_bytes} bytes; images "
                                            f"may be at most {settings.max_image_bytes} bytes (MAX_IMAGE_BYTES)")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        code = exc.code or 500
        msg = {404: f"no such endpoint: {request.method} {request.path}",
               405: f"{request.method} is not allowed on {request.path}"}.get(code, exc.description or exc.name)
        return envelope(None, msg=msg, code=code)

    @app.errorhandler(Exception)
    def bug(exc: Exception) -> tuple[Response, int]:
        ref = uuid.uuid4().hex[:12]
        log.exception("unhandled error ref=%s on %s %s", ref, request.method, request.path)
        return envelope(None, code=500, msg=f"internal error (reference {ref}); the server log has the details")

    return app
