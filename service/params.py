"""Validate request fields. Pure functions: each returns a clean value or raises BadInput naming the field."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from service.errors import BadInput, TooLarge
from service.store import JS_MAX_SAFE_INTEGER

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DATA_URL = re.compile(r"^data:[^,]{0,200};base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def _type_name(value: object) -> str:
    return {dict: "an object", list: "an array", bool: "a boolean", type(None): "null", float: "a number",
            int: "an integer", str: "a string"}.get(type(value), type(value).__name__)


def text_field(body: dict[str, Any], name: str, *, required: bool = False, max_len: int = 2048) -> str | None:
    """A string field, None when absent or empty (and not required)."""
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise BadInput(f"field '{name}' is required")
        return None
    if not isinstance(value, str):
        raise BadInput(f"field '{name}' must be a string, not {_type_name(value)}")
    if len(value) > max_len:
        raise BadInput(f"field '{name}' is {len(value)} characters long; at most {max_len} are allowed")
    if "\x00" in value:
        raise BadInput(f"field '{name}' contains a NUL byte")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(f"field '{name}' is not valid Unicode text (lone surrogate)") from None
    return value


def key_value(value: object, max_len: int, field: str = "key") -> str:
    """One record key: a non-empty string without control characters, at most max_len characters."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadInput(f"field '{field}' must be a string, not {_type_name(value)}")
    key = str(value).strip() if isinstance(value, str) else str(value)
    if not key:
        raise BadInput(f"field '{field}' must not be empty")
    if len(key) > max_len:
        raise BadInput(f"field '{field}' is {len(key)} characters long; at most {max_len} are allowed "
                       "(MAX_KEY_LENGTH)")
    if _CONTROL.search(key):
        raise BadInput(f"field '{field}' contains control characters (such as NUL, tab or newline); "
                       "keys must be printable text")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(f"field '{field}' is not valid Unicode text (lone surrogate)") from None
    return key


def optional_key(body: dict[str, Any], max_len: int) -> str | None:
    """The optional `key` of an add: None when absent or empty (the image MD5 is used then)."""
    value = body.get("key")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return key_value(value, max_len)


def key_list(body: dict[str, Any], max_len: int, max_count: int) -> list[str]:
    """`key` as "a,b,c" or ["a", "b"]: the distinct keys, in order. Use the array form for keys with commas."""
    value = body.get("key")
    if value is None or value == "" or value == []:
        raise BadInput("field 'key' is required: a comma-separated string \"a,b\" or an array [\"a\", \"b\"]")
    if isinstance(value, str):
        items: list[object] = [part for part in value.split(",") if part.strip()]
    elif isinstance(value, list):
        items = value
    else:
        raise BadInput(f"field 'key' must be a string or an array of strings, not {_type_name(value)}")
    if len(items) > max_count:
        raise BadInput(f"field 'key' lists {len(items)} keys; at most {max_count} per request")
    keys = [key_value(item, max_len, field=f"key[{i}]" if isinstance(value, list) else "key")
            for i, item in enumerate(items)]
    if not keys:
        raise BadInput("field 'key' lists no keys")
    return list(dict.fromkeys(keys))


def id_list(body: dict[str, Any], max_count: int) -> list[int]:
    """`id` as "1,2,3", [1, 2, 3] or a single number: distinct positive integers up to 2^53-1."""
    value = body.get("id")
    if value is None or value == "" or value == []:
        raise BadInput("field 'id' is required: a comma-separated string \"1,2\" or an array [1, 2]")
    if isinstance(value, str):
        items: list[object] = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, list):
        items = value
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    else:
        raise BadInput(f"field 'id' must be a string or an array of integers, not {_type_name(value)}")
    if len(items) > max_count:
        raise BadInput(f"field 'id' lists {len(items)} ids; at most {max_count} per request")
    ids = []
    for item in items:
        number = _as_int(item)
        if number is None or not 1 <= number <= JS_MAX_SAFE_INTEGER:
            raise BadInput(f"field 'id' contains {str(item)[:50]!r}, which is not an id (ids are integers "
                           f"from 1 to {JS_MAX_SAFE_INTEGER})")
        ids.append(number)
    if not ids:
        raise BadInput("field 'id' lists no ids")
    return list(dict.fromkeys(ids))


def _as_int(item: object) -> int | None:
    if isinstance(item, bool):
        return None
    if isinstance(item, int):
        return item
    if isinstance(item, str) and re.fullmatch(r"\s*\d{1,16}\s*", item):
        return int(item)
    return None


def limit_value(body: dict[str, Any], max_limit: int, default: int = 10) -> int:
    """`limit`: how many results to return, 1..max_limit (digit strings accepted, as multipart sends them)."""
    value = body.get("limit")
    if value is None or value == "":
        return default
    number = _as_int(value)
    if number is None:
        raise BadInput(f"field 'limit' must be a whole number from 1 to {max_limit}, not {str(value)[:50]!r}")
    if not 1 <= number <= max_limit:
        raise BadInput(f"field 'limit' is {number}; it must be from 1 to {max_limit}")
    return number


def min_score_value(body: dict[str, Any]) -> float | None:
    """`min_score`: only return results with a cosine similarity at least this (-1..1)."""
    value = body.get("min_score")
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise BadInput("field 'min_score' must be a number from -1 to 1, not a boolean")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise BadInput(f"field 'min_score' must be a number from -1 to 1, not {str(value)[:50]!r}") from None
    if not -1.0 <= number <= 1.0:  # also rejects NaN
        raise BadInput(f"field 'min_score' is {number}; it must be from -1 to 1")
    return number


def base64_image(value: object, max_bytes: int) -> bytes:
    """Decode the `base64` field (standard or URL-safe alphabet, optional data: URL prefix, padding optional)."""
    if value is None or value == "":
        raise BadInput("field 'base64' is required: the image bytes in base64, optionally as a "
                       "data:image/...;base64, URL")
    if not isinstance(value, str):
        raise BadInput(f"field 'base64' must be a string, not {_type_name(value)}")
    text = _WHITESPACE.sub("", _DATA_URL.sub("", value.strip(), count=1))
    if len(text) * 3 // 4 > max_bytes + 3:
        raise TooLarge(f"the base64 image decodes to about {len(text) * 3 // 4} bytes; the limit is {max_bytes} "
                       "(MAX_IMAGE_BYTES)")
    if "-" in text or "_" in text:
        text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput("field 'base64' is not valid base64 (only A-Z a-z 0-9 + / = are allowed, "
                       "or the URL-safe - _)") from None
