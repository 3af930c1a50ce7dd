"""One exception type per kind of failure, and the one table mapping each to its HTTP status.

Service code raises these with a message written for the caller: what was wrong
and how to fix it. `service/app.py` turns them into the `{code, msg, data}` envelope.
"""

from __future__ import annotations


class ApiError(Exception):
    """Base of every failure the caller is told about; `msg` is safe to show."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


class BadInput(ApiError):
    """A field is missing, has the wrong type, or is out of range."""


class Unauthorized(ApiError):
    """The token is missing or wrong."""


class PathForbidden(ApiError):
    """A path endpoint was asked for a file outside PATH_ROOTS."""


class TooLarge(ApiError):
    """The image is over MAX_IMAGE_BYTES or MAX_IMAGE_PIXELS."""


class NotAnImage(ApiError):
    """The bytes do not decode as a supported image format."""


class NotReady(ApiError):
    """Milvus is unreachable or the model is not loaded yet: try again later."""


class StartupError(Exception):
    """A configuration problem that must stop the service from starting (never sent to a client)."""


STATUS: dict[type[ApiError], int] = {
    BadInput: 400,
    Unauthorized: 401,
    PathForbidden: 403,
    TooLarge: 413,
    NotAnImage: 415,
    NotReady: 503,
}


def status_of(error: ApiError) -> int:
    """The HTTP status for an ApiError (500 for a subclass nobody mapped: that is a bug)."""
    for kind in type(error).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500
