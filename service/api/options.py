"""The request fields of namespaces, attributes and the newer endpoints: attrs, filter, booleans, on_duplicate,
single ids and paging. Each is read into a clean value or a BadInput naming the field.

JSON bodies carry `attrs` and `filter` as JSON objects; a form (multipart or urlencoded) can only carry
text, so there they are JSON text. Both spellings are accepted everywhere, as digit strings are for
numbers. Booleans are JSON true/false or the text "true"/"false".
"""

from __future__ import annotations

import json
from typing import Any

from conf.errors import BadInput, json_type_name
from service.api.fields import as_int, id_value
from service.store.filters import FILTER_EXAMPLE, JS_MAX_SAFE_INTEGER, AttrsError, validate_attrs
from service.usecases.add import OnDuplicate

ATTRS_EXAMPLE = '{"category": "shoes", "price": 49.9, "in_stock": true, "tags": ["red", "sale"]}'


def json_object_text(body: dict[str, Any], name: str, example: str, what: str = "a JSON object",
                     hint: str = "") -> Any:
    """The field's value, with JSON text parsed (forms); None when absent or empty."""
    value = body.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            raise BadInput(f"field '{name}' must be {what} such as {example} (in a form: that value as JSON text); "
                           f"the text sent is not JSON{hint}", reason=f"bad_{name}") from None
    return value


def attrs_value(body: dict[str, Any]) -> dict[str, Any] | None:
    """`attrs`: a flat JSON object of the record's attributes; None when absent (keep what is stored)."""
    value = json_object_text(body, "attrs", ATTRS_EXAMPLE)
    if value is None:
        return None
    try:
        return validate_attrs(value)
    except AttrsError as exc:
        raise BadInput(f"field 'attrs': {exc}", reason="bad_attrs") from None


def filter_value(body: dict[str, Any]) -> Any:
    """`filter`: the parsed JSON object of attribute conditions (checked and compiled by the search use case)."""
    value = json_object_text(body, "filter", FILTER_EXAMPLE, hint=" (Milvus expressions are not accepted)")
    if value is not None and not isinstance(value, dict):
        raise BadInput(f"field 'filter' must be a JSON object of attribute conditions such as {FILTER_EXAMPLE}, "
                       f"not {json_type_name(value)} (Milvus expressions are not accepted)", reason="bad_filter")
    return value


def bool_value(body: dict[str, Any], name: str) -> bool:
    """A boolean field: JSON true/false or the text "true"/"false"; false when absent."""
    value = body.get(name)
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise BadInput(f"field '{name}' must be true or false, not {str(value)[:50]!r}")


def on_duplicate_value(body: dict[str, Any]) -> OnDuplicate:
    """`on_duplicate`: allow (default), skip or reject."""
    value = body.get("on_duplicate")
    if value is None or value == "":
        return OnDuplicate.ALLOW
    choices = [p.value for p in OnDuplicate]
    if not isinstance(value, str) or value not in choices:
        raise BadInput(f"field 'on_duplicate' must be one of {', '.join(choices)}, not {str(value)[:50]!r}")
    return OnDuplicate(value)


def record_id(body: dict[str, Any], name: str = "id") -> int:
    """One record id (required): an integer from 1 to 2^53-1, or its digits as text."""
    value = body.get(name)
    if value is None or value == "":
        raise BadInput(f"field '{name}' is required: the id of a stored record")
    return id_value(value, f"field '{name}' is", strict=False)


def after_id_value(body: dict[str, Any]) -> int:
    """`after_id`: list records with a larger id (0 or absent: from the start)."""
    value = body.get("after_id")
    if value is None or value == "":
        return 0
    number = as_int(value)
    if number is None or not 0 <= number <= JS_MAX_SAFE_INTEGER:
        raise BadInput(f"field 'after_id' must be an integer from 0 to {JS_MAX_SAFE_INTEGER} (the next_after_id of "
                       f"the previous page), not {str(value)[:50]!r}")
    return number
