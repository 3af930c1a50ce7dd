"""The `file` input kind: an image uploaded as a multipart/form-data part."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from conf.settings import Settings
from service.inputs import Source


# runtime_checkable: the request models (service/api/contract.py) hold an Upload, and pydantic builds an
# isinstance check for each of its fields.
@runtime_checkable
class Readable(Protocol):
    """What an upload is read through: a binary file, or Werkzeug's FileStorage (which passes read on to its
    stream)."""

    def read(self, size: int = -1, /) -> bytes:
        """Up to `size` bytes (all that is left for -1)."""
        ...


@dataclass(frozen=True)
class Upload:
    """An uploaded file; its recorded filepath defaults to the file name the client sent."""

    stream: Readable
    filename: str

    def load(self, settings: Settings) -> Source:
        """Read the upload, one byte past MAX_IMAGE_BYTES at most (so decoding can say it is too large)."""
        return Source(self.stream.read(settings.max_image_bytes + 1), self.filename)
