"""The `base64` input kind: image bytes in a text field (standard or URL-safe alphabet, data: URL prefix)."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from conf.errors import BadInput, TooLarge, json_type_name
from conf.settings import Settings
from service.inputs import Source

_DATA_URL = re.compile(r"^data:[^,]{0,200};base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Base64Image:
    """The raw value of the `base64` field, decoded when loaded; nothing is recorded as its filepath."""

    value: object

    def load(self, settings: Settings) -> Source:
        """Decode the field (see `base64_image`)."""
        return Source(base64_image(self.value, settings.max_image_bytes), "")


def base64_image(value: object, max_bytes: int) -> bytes:
    """Decode the `base64` field (standard or URL-safe alphabet, optional data: URL prefix, padding optional)."""
    if value is None or value == "":
        raise BadInput(
            "field 'base64' is required: the image bytes in base64, optionally as a data:image/...;base64, URL"
        )
    if not isinstance(value, str):
        raise BadInput(f"field 'base64' must be a string, not {json_type_name(value)}")
    text = _WHITESPACE.sub("", _DATA_URL.sub("", value.strip(), count=1))
    if len(text) * 3 // 4 > max_bytes + 3:
        raise TooLarge(
            f"the base64 image decodes to about {len(text) * 3 // 4} bytes; the limit is {max_bytes} (MAX_IMAGE_BYTES)",
            reason="too_many_bytes",
        )
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(
            "field 'base64' is not valid base64 (only A-Z a-z 0-9 + / = are allowed, or the URL-safe - _)"
        ) from None
