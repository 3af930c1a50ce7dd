"""The kinds of failure imgsim tells a caller about, importable from every layer.

Code raises these with a message written for the caller (what was wrong and how
to fix it) and a machine-readable `reason` (a short snake_case word such as
`too_many_pixels`) for code that must tell failures apart without reading the
message. The HTTP layer maps each kind to its status (service/api/errors.py).
"""

from __future__ import annotations


class ApiError(Exception):
    """Base of every failure the caller is told about; `msg` is safe to show, `reason` is for code."""

    reason = "error"

    def __init__(self, msg: str, reason: str | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        if reason is not None:
            self.reason = reason


class BadInput(ApiError):
    """A field is missing, has the wrong type, or is out of range; a URL or path cannot be read."""

    reason = "bad_input"


class Unauthorized(ApiError):
    """The token is missing or wrong."""

    reason = "unauthorized"


class Forbidden(ApiError):
    """The caller may not have this: a path outside PATH_ROOTS, a private URL target with URL_DENY_PRIVATE."""

    reason = "forbidden"


class NotFound(ApiError):
    """What the request names does not exist."""

    reason = "not_found"


class Conflict(ApiError):
    """The request contradicts what is stored."""

    reason = "conflict"


class TooLarge(ApiError):
    """The image is over MAX_IMAGE_BYTES or MAX_IMAGE_PIXELS."""

    reason = "too_large"


class NotAnImage(ApiError):
    """The bytes do not decode as a supported image format."""

    reason = "not_an_image"


class NotReady(ApiError):
    """Milvus is unreachable or the service is shutting down: try again later."""

    reason = "not_ready"


class StartupError(Exception):
    """A configuration problem that must stop the service from starting (never sent to a client)."""


def json_type_name(value: object) -> str:
    """How messages name the type of a JSON value the caller sent: 'an object', 'a string', 'null'..."""
    return {dict: "an object", list: "an array", bool: "a boolean", type(None): "null", float: "a number",
            int: "an integer", str: "a string"}.get(type(value), type(value).__name__)
