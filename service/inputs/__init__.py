"""Where a request's image comes from: each input kind turns a request field into image bytes.

Every kind is a small object whose `load(settings)` reads the image (an upload
is read, base64 decoded, a URL fetched, a shared path read) within the limits
in force and returns a `Source`. The HTTP layer only builds these objects; the
use cases load them, so a request that names a URL or path is read inside the
one use case the route calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from conf.settings import Settings


@dataclass(frozen=True)
class Source:
    """Image bytes, and the filepath to record when the caller gives no imgPath."""

    data: bytes
    default_filepath: str


class ImageInput(Protocol):
    """One input kind, not read yet."""

    def load(self, settings: Settings) -> Source:
        """Read the image; raises BadInput, Forbidden or TooLarge with a message for the caller."""
        ...
