"""The kinds of failure imgsim tells a caller about, importable from every layer.

Code raises these with a message written for the caller (what was wrong and how
to fix it) and a machine-readable `reason` (a short snake_case word such as
`too_many_pixels`) for code that must tell failures apart without reading the
message. The HTTP layer maps each kind to its status (service/api/errors.py).
"""

from __future__ import annotations

import re


class ApiError(Exception):
    """Base of every failure the caller is told about; `msg` is safe to show, `reason` is for code.

    `data` is what the answer's `data` carries (None for most failures; a 409 for a duplicate image
    carries the record it duplicates, so the caller need not look it up).
    """

    reason = "error"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "reason" not in cls.__dict__:
            # A kind's default reason is its name in snake_case: NotAnImage -> not_an_image.
            cls.reason = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()

    def __init__(self, msg: str, reason: str | None = None, data: object = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.data = data
        if reason is not None:
            self.reason = reason


class BadInput(ApiError):
    """A field is missing, has the wrong type, or is out of range; a URL or path cannot be read."""


class Unauthorized(ApiError):
    """The token is missing or wrong."""


class Forbidden(ApiError):
    """The caller may not have this: a path outside PATH_ROOTS, a private URL target with URL_DENY_PRIVATE."""


class NotFound(ApiError):
    """What the request names does not exist."""


class Conflict(ApiError):
    """The request contradicts what is stored: a duplicate image under on_duplicate=reject, or namespaces and
    attributes asked of a collection created before they existed."""


class TooLarge(ApiError):
    """The image is over MAX_IMAGE_BYTES or MAX_IMAGE_PIXELS."""


class NotAnImage(ApiError):
    """The bytes do not decode as a supported image format."""


class NotReady(ApiError):
    """Milvus is unreachable or the service is shutting down: try again later."""


class CollectionMoved(NotReady):
    """MILVUS_COLLECTION is an alias that now points at a collection of another embedding space: this service
    will not answer from it until the alias points at a collection of its own space again (or it is restarted
    with that space's model settings)."""


class StartupError(Exception):
    """A configuration problem that must stop the service from starting (never sent to a client)."""


def json_type_name(value: object) -> str:
    """How messages name the type of a JSON value the caller sent: 'an object', 'a string', 'null'..."""
    return {
        dict: "an object",
        list: "an array",
        bool: "a boolean",
        type(None): "null",
        float: "a number",
        int: "an integer",
        str: "a string",
    }.get(type(value), type(value).__name__)
