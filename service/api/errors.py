"""The one table mapping each error kind to its HTTP status, and the handlers that answer with it."""

from __future__ import annotations

import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from conf.errors import (
    ApiError,
    BadInput,
    CollectionMoved,
    Conflict,
    Forbidden,
    NotAnImage,
    NotFound,
    NotReady,
    TooLarge,
    Unauthorized,
)
from conf.settings import Settings
from service.api.envelope import envelope
from service.logs import current_request_id, request_id_from

log = logging.getLogger(__name__)

STATUS: dict[type[ApiError], int] = {
    BadInput: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    NotAnImage: 415,
    NotReady: 503,
    CollectionMoved: 503,
}


def status_of(error: ApiError) -> int:
    """The HTTP status for an ApiError (500 for a subclass nobody mapped: that is a bug)."""
    for kind in type(error).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500


def register_error_handlers(app: Flask, settings: Settings) -> None:
    """Every failure becomes the `{code, msg, data: null}` envelope with its status; a bug gets a log reference."""

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> tuple[Response, int]:
        """An error kind: its status, and its message for the caller."""
        code = status_of(exc)
        if code >= 500:
            log.warning("%s %s -> %d: %s", request.method, request.path, code, exc.msg)
        return envelope(exc.data, msg=exc.msg, code=code)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_exc: RequestEntityTooLarge) -> tuple[Response, int]:
        """A body over the limit, or a form with too many parts: 413 saying which."""
        if request.content_length is not None and request.content_length <= settings.max_body_bytes:
            # Werkzeug also raises this for a form with too many parts: the body itself was not too big.
            return envelope(
                None,
                code=413,
                msg=f"the form has more than {app.config['MAX_FORM_PARTS']} fields; "
                "send only the fields the endpoint documents",
            )
        return envelope(
            None,
            code=413,
            msg=f"the request body is over {settings.max_body_bytes} bytes; images "
            f"may be at most {settings.max_image_bytes} bytes (MAX_IMAGE_BYTES)",
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        """Werkzeug's own errors (404, 405...) in the envelope."""
        code = exc.code or 500
        msg = {
            404: f"no such endpoint: {request.method} {request.path}",
            405: f"{request.method} is not allowed on {request.path}",
        }.get(code, exc.description or exc.name)
        return envelope(None, msg=msg, code=code)

    @app.errorhandler(Exception)
    def bug(exc: Exception) -> tuple[Response, int]:
        """Anything else is a bug: 500 with a reference to the log, never a stack trace.

        The reference is the request id (the X-Request-Id header of the answer), so a caller's own id
        finds the log lines of its request.
        """
        ref = current_request_id() or request_id_from(None)
        log.exception("unhandled error ref=%s on %s %s", ref, request.method, request.path)
        return envelope(None, code=500, msg=f"internal error (reference {ref}); the server log has the details")
