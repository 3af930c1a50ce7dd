"""The request's fields: read from JSON or a form, each validated into a clean value or a BadInput naming it."""

from __future__ import annotations

import re
from typing import Any

from flask import request

from conf.errors import BadInput
from conf.errors import json_type_name
from service.inputs import ImageInput
from service.inputs.base64 import Base64Image
from service.inputs.path import SharedPath
from service.inputs.upload import Upload
from service.inputs.url import Url
from service.store.filters import JS_MAX_SAFE_INTEGER

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def request_fields() -> dict[str, Any]:
    """The request's fields, from JSON, a urlencoded form or a multipart form."""
    if request.mimetype == "multipart/form-data":
        return request.form.to_dict()
    raw = request.get_data(cache=True)
    if not raw:
        return {}
    try:
        body = request.get_json(force=True, silent=True)
    except RecursionError:  # the json module recurses once per nesting level; silent=True does not cover this
        raise BadInput("the request body is JSON nested too deeply; send a flat JSON object") from None
    if body is None and request.mimetype == "application/x-www-form-urlencoded":
        # `curl -d '{...}'` sends JSON labelled as a form: accept both real forms and that.
        return request.form.to_dict()  # Werkzeug re-reads the cached body for this
    if body is None:
        raise BadInput("the request body is not valid JSON; send a JSON object with Content-Type: "
                       "application/json (or multipart/form-data for file uploads)")
    if not isinstance(body, dict):
        raise BadInput("the request body must be a JSON object like {\"url\": \"...\"}")
    return body


def image_input(kind: str, body: dict[str, Any]) -> ImageInput:
    """The image the request names, by input kind; read later, by the use case."""
    if kind == "file":
        return _upload()
    if kind == "url":
        return Url(text_field(body, "url", required=True, max_len=8192) or "")
    if kind == "path":
        return SharedPath(text_field(body, "path", required=True, max_len=4096) or "")
    return Base64Image(body.get("base64"))


def _upload() -> Upload:
    upload = request.files.get("file")
    if upload is None and request.mimetype == "multipart/form-data" and request.content_length \
            and not request.form and not request.files:
        # Werkzeug drops a multipart body it cannot parse without a word; say so rather than "missing".
        raise BadInput("the multipart/form-data body could not be parsed (no or wrong boundary, or part "
                       "headers that are not UTF-8, such as a Latin-1 file name); send the image as the "
                       "field 'file' (curl -F file=@photo.jpg)")
    if upload is None:
        raise BadInput("multipart field 'file' is required: send the image as multipart/form-data "
                       "with the field name 'file' (curl -F file=@photo.jpg)")
    return Upload(upload, upload.filename or "")


def text_field(body: dict[str, Any], name: str, *, required: bool = False, max_len: int = 2048) -> str | None:
    """A string field, None when absent or empty (and not required)."""
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise BadInput(f"field '{name}' is required")
        return None
    if not isinstance(value, str):
        raise BadInput(f"field '{name}' must be a string, not {json_type_name(value)}")
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
        raise BadInput(f"field '{field}' must be a string, not {json_type_name(value)}")
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


def required_key(body: dict[str, Any], max_len: int) -> str:
    """A required single `key` (set/key)."""
    value = body.get("key")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadInput("field 'key' is required: the key whose images the request sets")
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
        raise BadInput(f"field 'key' must be a string or an array of strings, not {json_type_name(value)}")
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
        raise BadInput(f"field 'id' must be a string or an array of integers, not {json_type_name(value)}")
    if len(items) > max_count:
        raise BadInput(f"field 'id' lists {len(items)} ids; at most {max_count} per request")
    ids = [id_value(item, "field 'id' contains", strict=False) for item in items]
    if not ids:
        raise BadInput("field 'id' lists no ids")
    return list(dict.fromkeys(ids))


def id_value(item: object, where: str = "the path has", strict: bool = True) -> int:
    """One record id (an integer from 1 to 2^53-1, or its digits); BadInput saying `where` it was otherwise.

    `strict` (a URL path segment): ASCII digits only, no surrounding white space, which a form value may have.
    """
    plain = isinstance(item, str) and re.fullmatch(r"[0-9]{1,16}", item) is not None
    number = None if strict and not plain else as_int(item)
    if number is None or not 1 <= number <= JS_MAX_SAFE_INTEGER:
        raise BadInput(f"{where} {str(item)[:50]!r}, which is not an id (ids are integers from 1 to "
                       f"{JS_MAX_SAFE_INTEGER})")
    return number


def as_int(item: object) -> int | None:
    """An integer from a JSON integer or a string of up to 16 digits (forms send text); None for anything else."""
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
    number = as_int(value)
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
