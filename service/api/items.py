"""The `items` of add/batch and set/key: each item read like the body of a single add, or the error a single
add of it would have answered with (so one bad item does not fail the request)."""

from __future__ import annotations

from typing import Any

from conf.errors import ApiError, BadInput, json_type_name
from conf.settings import Settings
from service.api.fields import image_input, optional_key, text_field
from service.api.options import attrs_value, json_object_text
from service.usecases.add import AddRequest, OnDuplicate

IMAGE_KINDS = ("url", "path", "base64")


def items_value(body: dict[str, Any], max_items: int) -> list[Any]:
    """`items`: a non-empty JSON array (JSON text in a form) of at most MAX_BATCH_ITEMS objects."""
    value = json_object_text(body, "items", '[{"url": "https://...", "key": "SKU-1"}]', "a JSON array")
    if value is None or value == []:
        raise BadInput("field 'items' is required: an array of objects such as {\"url\": \"https://...\", "
                       "\"key\": \"SKU-1\"}")
    if not isinstance(value, list):
        raise BadInput(f"field 'items' must be an array of objects, not {json_type_name(value)}")
    if len(value) > max_items:
        raise BadInput(f"field 'items' lists {len(value)} items; at most {max_items} per request (MAX_BATCH_ITEMS)")
    return value


def add_requests(raw_items: list[Any], settings: Settings, on_duplicate: OnDuplicate,
                 key: str | None = None) -> list[AddRequest | ApiError]:
    """Each item as an AddRequest, or its error. With `key` (set/key) every item takes that key."""
    out: list[AddRequest | ApiError] = []
    for raw in raw_items:
        try:
            out.append(_add_request(raw, settings, on_duplicate, key))
        except ApiError as exc:
            out.append(exc)
    return out


def _add_request(raw: object, settings: Settings, on_duplicate: OnDuplicate, key: str | None) -> AddRequest:
    if not isinstance(raw, dict):
        raise BadInput(f"an item must be a JSON object such as {{\"url\": \"https://...\", \"key\": \"SKU-1\"}}, "
                       f"not {json_type_name(raw)}")
    kinds = [k for k in IMAGE_KINDS if raw.get(k) not in (None, "")]
    if len(kinds) != 1:
        raise BadInput("an item names its image with exactly one of the fields 'url', 'path' or 'base64' "
                       f"(this one has {len(kinds)})")
    if key is not None and raw.get("key") not in (None, "", key):
        raise BadInput("the items of set/key take the request's key; leave 'key' out of the items")
    item_key = key if key is not None else optional_key(raw, settings.max_key_length)
    return AddRequest(image_input(kinds[0], raw), item_key, text_field(raw, "imgPath", max_len=4096),
                      attrs_value(raw), on_duplicate)
