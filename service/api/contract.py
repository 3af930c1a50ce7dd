"""The request bodies of the HTTP API: one pydantic model per body, the one source of both the checks and the
OpenAPI document (service/api/openapi.py renders the models' JSON schema).

bogv's clients send forms as often as JSON, so every model also takes what a form can carry: numbers as
digit text ("10"), booleans as "true"/"false", lists as comma-separated text ("a,b,c"), and objects or
arrays (attrs, filter, items, a region's box) as JSON text. Those spellings are validators on the fields. Each validator
raises BadInput with the message the caller sees ("field 'limit' is 100000; it must be from 1 to 100"), so
the first faulty field, in the model's field order, is the one reported; `parse` turns anything pydantic
itself refuses into BadInput as well. The schema documents the JSON spelling; an absent field and an
empty one ("", as an empty form field arrives) mean the same.

Per-deployment limits (MAX_LIMIT, MAX_KEY_LENGTH, MAX_BATCH_KEYS, MAX_BATCH_ITEMS) are not part of the
models: they arrive as the validation context (`Limits`), built from Settings for each request.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    RootModel,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticUseDefault
from werkzeug.datastructures import FileStorage

from conf.errors import ApiError, BadInput, json_type_name
from conf.settings import SearchRegion, Settings
from service.inputs import ImageInput
from service.inputs.base64 import Base64Image
from service.inputs.path import SharedPath
from service.inputs.upload import Upload
from service.inputs.url import Url
from service.store.filters import FILTER_EXAMPLE, JS_MAX_SAFE_INTEGER, NAMESPACE_RE, AttrsError, validate_attrs
from service.usecases.add import AddRequest, OnDuplicate
from service.usecases.duplicates import PAGE_DEFAULT, PAGE_MAX
from service.usecases.prepare import Region, RegionBox
from service.usecases.search import SearchOptions

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
ATTRS_EXAMPLE = '{"category": "shoes", "price": 49.9, "in_stock": true, "tags": ["red", "sale"]}'
ITEMS_EXAMPLE = '[{"url": "https://...", "key": "SKU-1"}]'
REGION_EXAMPLE = '{"x": 40, "y": 60, "w": 200, "h": 150}'
BOX_KEYS = ("x", "y", "w", "h")
# A box side or offset beyond any image imgsim decodes (MAX_IMAGE_PIXELS caps far below a million pixels a side).
MAX_BOX_PIXELS = 1_000_000
REGION_SHAPES = f'"auto", "whole" or a box such as {REGION_EXAMPLE} (pixels of the image after its EXIF orientation)'
SEARCH_ID_REGION = (
    "field 'region' applies to an image you send; search/id searches with the record's stored vector: leave "
    "'region' out (to search with part of the picture, send the image to /search/{file,url,path,base64})"
)


@dataclass(frozen=True)
class Limits:
    """The validation context: this deployment's limits (defaults: Settings' defaults), and request facts."""

    max_limit: int = 100
    max_key_length: int = 512
    max_batch_keys: int = 1000
    max_batch_items: int = 100
    # A multipart body Werkzeug could not parse (it drops it without a word): the `file` field says so.
    unparsed_multipart: bool = False

    @classmethod
    def of(cls, settings: Settings, unparsed_multipart: bool = False) -> Limits:
        """The limits of `settings`."""
        return cls(
            settings.max_limit,
            settings.max_key_length,
            settings.max_batch_keys,
            settings.max_batch_items,
            unparsed_multipart,
        )


def _limits(info: ValidationInfo) -> Limits:
    return info.context if isinstance(info.context, Limits) else Limits()


def _absent(value: object) -> bool:
    return value is None or value == ""


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], fields: dict[str, Any], limits: Limits) -> M:
    """Validate a request's fields into `model`; every refusal is a BadInput with the caller's message."""
    try:
        return model.model_validate(fields, context=limits)
    except ValidationError as exc:
        # The validators raise BadInput themselves; this is what pydantic refuses on its own (a bug if ever).
        error = exc.errors()[0]
        name = ".".join(str(part) for part in error["loc"]) or "body"
        raise BadInput(f"field '{name}': {error['msg']}") from None


# --- one value each: the checks and their messages ---------------------------------------------------------
def text_value(value: object, name: str, *, required: bool = False, max_len: int = 2048) -> str | None:
    """A string field, None when absent or empty (and not required)."""
    if _absent(value):
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
        raise BadInput(f"field '{field}' is {len(key)} characters long; at most {max_len} are allowed (MAX_KEY_LENGTH)")
    if _CONTROL.search(key):
        raise BadInput(
            f"field '{field}' contains control characters (such as NUL, tab or newline); keys must be printable text"
        )
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(f"field '{field}' is not valid Unicode text (lone surrogate)") from None
    return key


def key_list(value: object, max_len: int, max_count: int) -> list[str]:
    """`key` as "a,b,c" or ["a", "b"]: the distinct keys, in order. Use the array form for keys with commas."""
    if value is None or value == "" or value == []:
        raise BadInput('field \'key\' is required: a comma-separated string "a,b" or an array ["a", "b"]')
    if isinstance(value, str):
        items: list[object] = [part for part in value.split(",") if part.strip()]
    elif isinstance(value, list):
        items = value
    else:
        raise BadInput(f"field 'key' must be a string or an array of strings, not {json_type_name(value)}")
    if len(items) > max_count:
        raise BadInput(f"field 'key' lists {len(items)} keys; at most {max_count} per request")
    keys = [
        key_value(item, max_len, field=f"key[{i}]" if isinstance(value, list) else "key")
        for i, item in enumerate(items)
    ]
    if not keys:
        raise BadInput("field 'key' lists no keys")
    return list(dict.fromkeys(keys))


def as_int(item: object) -> int | None:
    """An integer from a JSON integer or a string of up to 16 digits (forms send text); None for anything else."""
    if isinstance(item, bool):
        return None
    if isinstance(item, int):
        return item
    if isinstance(item, str) and re.fullmatch(r"\s*\d{1,16}\s*", item):
        return int(item)
    return None


def id_value(item: object, where: str = "the path has", strict: bool = True) -> int:
    """One record id (an integer from 1 to 2^53-1, or its digits); BadInput saying `where` it was otherwise.

    `strict` (a URL path segment): ASCII digits only, no surrounding white space, which a form value may have.
    """
    plain = isinstance(item, str) and re.fullmatch(r"[0-9]{1,16}", item) is not None
    number = None if strict and not plain else as_int(item)
    if number is None or not 1 <= number <= JS_MAX_SAFE_INTEGER:
        raise BadInput(
            f"{where} {str(item)[:50]!r}, which is not an id (ids are integers from 1 to {JS_MAX_SAFE_INTEGER})"
        )
    return number


def id_list(value: object, max_count: int) -> list[int]:
    """`id` as "1,2,3", [1, 2, 3] or a single number: distinct positive integers up to 2^53-1."""
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


def limit_value(value: object, max_limit: int, default: int) -> int:
    """`limit`: how many results to return, 1..max_limit (digit strings accepted, as multipart sends them).

    Absent: `default`, or max_limit when that is lower (a server may allow fewer than the default).
    """
    if _absent(value):
        return min(default, max_limit)
    number = as_int(value)
    if number is None:
        raise BadInput(f"field 'limit' must be a whole number from 1 to {max_limit}, not {str(value)[:50]!r}")
    if not 1 <= number <= max_limit:
        raise BadInput(f"field 'limit' is {number}; it must be from 1 to {max_limit}")
    return number


def min_score_value(value: object) -> float:
    """`min_score`: only return results with a cosine similarity at least this (-1..1)."""
    return score_value(value, "from -1 to 1", lambda n: -1.0 <= n <= 1.0, "it must be from -1 to 1")


def score_value(value: object, wanted: str, in_range: Callable[[float], bool], out_of_range: str) -> float:
    """A `min_score` field: a number (not a boolean) `wanted` ("from -1 to 1"), which `in_range` accepts; NaN never
    is. `out_of_range` follows "field 'min_score' is <number>; " when it is outside."""
    if isinstance(value, bool):
        raise BadInput(f"field 'min_score' must be a number {wanted}, not a boolean")
    try:
        number = float(value)  # type: ignore[arg-type]  # any JSON value; what float() refuses is answered below
    except (TypeError, ValueError, OverflowError):
        raise BadInput(f"field 'min_score' must be a number {wanted}, not {str(value)[:50]!r}") from None
    if not in_range(number):  # comparisons with NaN are false: NaN is refused too
        raise BadInput(f"field 'min_score' is {number}; {out_of_range}")
    return number


def bool_value(value: object, name: str) -> bool:
    """A boolean field: JSON true/false or the text "true"/"false"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise BadInput(f"field '{name}' must be true or false, not {str(value)[:50]!r}")


def on_duplicate_value(value: object) -> OnDuplicate:
    """`on_duplicate`: allow, skip or reject."""
    choices = [p.value for p in OnDuplicate]
    if not isinstance(value, str) or value not in choices:
        raise BadInput(f"field 'on_duplicate' must be one of {', '.join(choices)}, not {str(value)[:50]!r}")
    return OnDuplicate(value)


def json_text(value: object, name: str, example: str, what: str = "a JSON object", hint: str = "") -> Any:
    """The field's value, with JSON text parsed (forms send objects and arrays as JSON text)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            raise BadInput(
                f"field '{name}' must be {what} such as {example} (in a form: that value as JSON text); "
                f"the text sent is not JSON{hint}",
                reason=f"bad_{name}",
            ) from None
    return value


def _bad_region(what: str) -> BadInput:
    return BadInput(f"field 'region' {what}", reason="bad_region")


def region_value(value: object) -> Region:
    """`region`: "auto", "whole", or a box {x, y, w, h} in pixels (in a form: the box as JSON text)."""
    if isinstance(value, str) and value.strip() in (SearchRegion.AUTO, SearchRegion.WHOLE):
        return SearchRegion(value.strip())
    if isinstance(value, str) and not value.lstrip().startswith("{"):
        raise _bad_region(f"must be {REGION_SHAPES}, not {value[:50]!r}")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise _bad_region(
                f"must be {REGION_SHAPES}; the text sent is not JSON (in a form, send the box as JSON text "
                f"such as {REGION_EXAMPLE})"
            ) from None
    if not isinstance(value, dict):
        raise _bad_region(f"must be {REGION_SHAPES}, not {json_type_name(value)}")
    unknown = [str(k)[:30] for k in value if k not in BOX_KEYS]
    missing = [k for k in BOX_KEYS if k not in value]
    if unknown or missing:
        wrong = f"has the unknown key(s) {', '.join(map(repr, unknown))}" if unknown else f"lacks {', '.join(missing)}"
        raise _bad_region(f"{wrong}: a box has exactly the keys x, y, w and h, such as {REGION_EXAMPLE}")
    return RegionBox(*(_box_number(k, value[k]) for k in BOX_KEYS))


def _box_number(name: str, number: object) -> float:
    """One coordinate of a region box: a finite JSON number, x and y at least 0, w and h above 0."""
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        shown = (
            f"{name}={json.dumps(number[:30])} (a string)"
            if isinstance(number, str)
            else f"{name} as {json_type_name(number)}"
        )
        raise _bad_region(f"has {shown}; the box's x, y, w and h must be numbers of pixels, such as {REGION_EXAMPLE}")
    # abs() first: an integer too large for a float makes isfinite() raise.
    if abs(number) > MAX_BOX_PIXELS or not math.isfinite(number):
        raise _bad_region(
            f"has {name}={number if isinstance(number, float) else 'a huge integer'}; coordinates must be finite "
            f"numbers of at most {MAX_BOX_PIXELS} px"
        )
    if name in ("x", "y") and number < 0:
        raise _bad_region(
            f"has {name}={number:g}; x and y (the box's left and top edge) must be 0 or more, in pixels from the "
            "image's top-left corner"
        )
    if name in ("w", "h") and number <= 0:
        raise _bad_region(
            f"has {name}={number:g}; w and h (the box's width and height) must be more than 0 pixels (an empty box "
            'shows nothing: leave region out or send "whole" for the whole image)'
        )
    return float(number)


def attrs_value(value: object) -> dict[str, Any]:
    """`attrs`: a flat JSON object of the record's attributes."""
    try:
        return validate_attrs(json_text(value, "attrs", ATTRS_EXAMPLE))
    except AttrsError as exc:
        raise BadInput(f"field 'attrs': {exc}", reason="bad_attrs") from None


def filter_value(value: object) -> dict[str, Any]:
    """`filter`: the parsed JSON object of attribute conditions (checked and compiled by the search use case)."""
    parsed = json_text(value, "filter", FILTER_EXAMPLE, hint=" (Milvus expressions are not accepted)")
    if not isinstance(parsed, dict):
        raise BadInput(
            f"field 'filter' must be a JSON object of attribute conditions such as {FILTER_EXAMPLE}, "
            f"not {json_type_name(parsed)} (Milvus expressions are not accepted)",
            reason="bad_filter",
        )
    return parsed


def items_value(value: object, max_items: int) -> list[Any]:
    """`items`: a non-empty JSON array (JSON text in a form) of at most MAX_BATCH_ITEMS objects."""
    parsed = None if _absent(value) else json_text(value, "items", ITEMS_EXAMPLE, "a JSON array")
    if parsed is None or parsed == []:
        raise BadInput(
            'field \'items\' is required: an array of objects such as {"url": "https://...", "key": "SKU-1"}'
        )
    if not isinstance(parsed, list):
        raise BadInput(f"field 'items' must be an array of objects, not {json_type_name(parsed)}")
    if len(parsed) > max_items:
        raise BadInput(f"field 'items' lists {len(parsed)} items; at most {max_items} per request (MAX_BATCH_ITEMS)")
    return parsed


# --- the validators the fields carry: absent or "" -> the default, else the check above --------------------
def _optional(check: Any) -> Any:
    """A before-validator: an absent or empty value takes the field's default; anything else is checked."""

    def validate(value: object, info: ValidationInfo) -> Any:
        if _absent(value):
            raise PydanticUseDefault
        return check(value, info)

    return BeforeValidator(validate)


def _required(check: Any) -> Any:
    """A before-validator for a required field: the check answers absent values too (with its own message)."""
    return BeforeValidator(lambda value, info: check(value, info))


def _optional_key(value: object, info: ValidationInfo) -> str | None:
    if isinstance(value, str) and not value.strip():
        return None
    return key_value(value, _limits(info).max_key_length)


def _required_key(value: object, info: ValidationInfo) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadInput("field 'key' is required: the key whose images the request sets")
    return key_value(value, _limits(info).max_key_length)


def _record_id(value: object, _info: ValidationInfo) -> int:
    if _absent(value):
        raise BadInput("field 'id' is required: the id of a stored record")
    return id_value(value, "field 'id' is", strict=False)


def _after_id(value: object, _info: ValidationInfo) -> int:
    number = as_int(value)
    if number is None or not 0 <= number <= JS_MAX_SAFE_INTEGER:
        raise BadInput(
            f"field 'after_id' must be an integer from 0 to {JS_MAX_SAFE_INTEGER} (the next_after_id of "
            f"the previous page), not {str(value)[:50]!r}"
        )
    return number


def _upload(value: object, info: ValidationInfo) -> Upload:
    if isinstance(value, FileStorage):
        return Upload(value, value.filename or "")
    if _limits(info).unparsed_multipart:
        raise BadInput(
            "the multipart/form-data body could not be parsed (no or wrong boundary, or part "
            "headers that are not UTF-8, such as a Latin-1 file name); send the image as the "
            "field 'file' (curl -F file=@photo.jpg)"
        )
    raise BadInput(
        "multipart field 'file' is required: send the image as multipart/form-data "
        "with the field name 'file' (curl -F file=@photo.jpg)"
    )


# --- the documented shapes of the JSON values ----------------------------------------------------------------
DEFAULT = Limits()
KEY_DOC = "A record key: printable text, surrounding whitespace removed, at most MAX_KEY_LENGTH characters."
# `x-setting`: the Settings field whose value service/api/openapi.py puts in place of the default shown here.
KeyText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=DEFAULT.max_key_length,
        pattern=r"^[^\u0000-\u001F\u007F]*$",
        description=KEY_DOC,
        json_schema_extra={"x-setting": "MAX_KEY_LENGTH"},
    ),
]
Id = Annotated[
    int,
    Field(
        ge=1,
        le=JS_MAX_SAFE_INTEGER,
        description=(
            "A record id, below 2^53 so JavaScript numbers hold it exactly; derived from (namespace, key, MD5)."
        ),
    ),
]
Text1024 = Annotated[str, Field(max_length=1024)]


class Attrs(RootModel[dict[str, Text1024 | float | bool | Annotated[list[Text1024], Field(max_length=64)]]]):
    """The record's attributes: a flat object (names of 1-64 letters, digits and '_', not starting with a digit)
    of strings, finite numbers (integers within +-(2^53-1)), booleans or lists of strings; at most 32 attributes
    and 4096 bytes as JSON. On a re-add of a stored image, attrs replace the stored ones (absent: kept)."""

    root: Annotated[
        dict[str, Text1024 | float | bool | Annotated[list[Text1024], Field(max_length=64)]],
        Field(max_length=32, examples=[json.loads(ATTRS_EXAMPLE)]),
    ]


class Range(BaseModel):
    """A range condition: any of gt, gte, lt, lte (numbers, or strings compared as text)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})
    gt: float | str | None = None
    gte: float | str | None = None
    lt: float | str | None = None
    lte: float | str | None = None


Scalar = Text1024 | float | bool


class Filter(RootModel[dict[str, Scalar | list[Scalar] | Range]]):
    """Attribute conditions, all of which must hold: a value (equality; a string also matches a list attribute
    containing it), a non-empty list (any of them) or a range object of gt, gte, lt, lte. Every value is a
    literal, never Milvus syntax; booleans compare as 1 and 0."""

    root: Annotated[
        dict[str, Scalar | Annotated[list[Scalar], Field(min_length=1, max_length=64)] | Range],
        Field(max_length=16, examples=[json.loads(FILTER_EXAMPLE)]),
    ]


class RequestedBox(BaseModel):
    """A box in pixels of the image as decoded, after its EXIF orientation: left x, top y, width w, height h.
    Fractions are rounded outward to whole pixels; a box over the edge is clipped to the image, and a box with
    no pixel inside it is a 400."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [json.loads(REGION_EXAMPLE)]})
    x: Annotated[float, Field(ge=0, le=MAX_BOX_PIXELS)]
    y: Annotated[float, Field(ge=0, le=MAX_BOX_PIXELS)]
    w: Annotated[float, Field(gt=0, le=MAX_BOX_PIXELS)]
    h: Annotated[float, Field(gt=0, le=MAX_BOX_PIXELS)]


RegionShape = Literal["auto", "whole"] | RequestedBox


# --- the bodies ------------------------------------------------------------------------------------------------
class Body(BaseModel):
    """What every body shares: `namespace`, resolved with the token before the body is read (service.api.endpoint)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True, arbitrary_types_allowed=True)

    namespace: Annotated[
        str | None,
        Field(
            description='The namespace to act in (admin tokens, and an open service; default "", the default '
            "namespace). A token bound to a namespace may leave it out or name its own; any other "
            "answers 403."
        ),
        PlainValidator(
            lambda value: value,
            json_schema_input_type=Annotated[str, Field(max_length=64, pattern=f"^({NAMESPACE_RE.pattern})?$")],
        ),
    ] = None

    @model_validator(mode="before")
    @classmethod
    def _every_field_present(cls, data: Any) -> Any:
        """Absent fields enter as None, so each field's own check answers for them, in field order."""
        if not isinstance(data, dict):
            raise BadInput('the request body must be a JSON object like {"url": "..."}')
        return {(info.alias or name): data.get(info.alias or name) for name, info in cls.model_fields.items()}


def _doc(text: str, **extra: Any) -> Any:
    return Field(description=text, **extra)


def _wire(shape: Any) -> Any:
    """Take the value as the before-validator left it; document `shape`, what a JSON client sends."""
    return PlainValidator(lambda value: value, json_schema_input_type=shape)


# What the image fields that are text say they take.
IMAGE_TEXT_DOCS = {
    "url": "An http:// or https:// URL of the image. At most URL_MAX_REDIRECTS redirects are followed; the download "
    "is bounded by URL_TOTAL_TIMEOUT and MAX_IMAGE_BYTES.",
    "path": "Path of an image file below PATH_ROOTS (a relative path is taken relative to the first root, not the "
    "working directory). Symlinks are resolved before the check.",
}


def _image_text(name: str, max_len: int) -> tuple[Any, Any]:
    """The metadata of the required text field `name` naming an image (url, path): its doc, then its check."""
    return (
        _doc(IMAGE_TEXT_DOCS[name], min_length=1, max_length=max_len),
        _required(lambda v, _: text_value(v, name, required=True, max_len=max_len)),
    )


def _limit(doc: str, setting: str, default: int) -> tuple[Any, Any]:
    """The metadata of a page size: 1 up to the limit `setting` (MAX_LIMIT: the Limits field max_limit), documented
    at its default value; `default` when absent."""
    name = setting.lower()
    return (
        _doc(doc, ge=1, json_schema_extra={"maximum": getattr(DEFAULT, name), "x-setting": setting}),
        _required(lambda v, info: limit_value(v, getattr(_limits(info), name), default=default)),
    )


def _json_object(doc: str, shape: Any, check: Callable[[object], dict[str, Any] | None]) -> tuple[Any, Any, Any]:
    """The metadata of an optional JSON-object field (attrs, filter): documented as `shape`, sent as an object or, in
    a form, as JSON text, which `check` reads."""
    return _doc(doc), _wire(shape), _optional(lambda v, _: check(v))


def _batch(item: Any, *single: Any) -> Any:
    """The documented shape of a batch field: an array of 1..MAX_BATCH_KEYS `item`s, or one of `single`, or
    comma-separated text."""
    array = Annotated[
        list[item],
        Field(min_length=1, max_length=DEFAULT.max_batch_keys, json_schema_extra={"x-setting": "MAX_BATCH_KEYS"}),
    ]
    return functools.reduce(operator.or_, (array, *single, Annotated[str, Field(min_length=1)]))


# Annotated order matters (the helpers above return their parts in it): Field (constraints, checked again after
# ours and always true), then _wire (the documented shape, where it differs from the Python type), then our check,
# which runs first.
URL = Annotated[str, *_image_text("url", 8192)]
PATH = Annotated[str, *_image_text("path", 4096)]
# Decoded (and checked) when the image is read, by the use case: the field carries the raw value.
BASE64 = Annotated[
    object,
    _doc(
        "The image bytes in base64 (standard or URL-safe alphabet, padding optional, whitespace ignored), "
        "optionally as a data:image/...;base64, URL."
    ),
    _wire(Annotated[str, Field(min_length=1)]),
]
FILE = Annotated[Upload, _doc("The image file."), PlainValidator(_upload, json_schema_input_type=bytes)]
KEY = Annotated[
    str | None,
    _doc(
        "The record key (for example a SKU); a number is taken as its decimal text. "
        "Default: the MD5 of the image bytes."
    ),
    _wire(KeyText | int),
    _optional(_optional_key),
]
IMG_PATH = Annotated[
    str | None,
    _doc(
        "The filepath to record with the image (default: the file name, URL or path sent; empty for base64). "
        "No NUL bytes."
    ),
    _wire(Annotated[str, Field(max_length=4096)]),
    _optional(lambda v, _: text_value(v, "imgPath", max_len=4096)),
]
ATTRS = Annotated[
    dict[str, Any] | None,
    *_json_object("The record's attributes, a flat JSON object (in a form: JSON text).", Attrs, attrs_value),
]
ON_DUPLICATE = Annotated[
    OnDuplicate,
    _doc(
        "When the namespace already holds the same image (same MD5, or a score at or above the duplicate threshold in "
        "force: DUPLICATE_SCORE, else the calibrated one, else the model's default; /ready shows it) under another "
        "key: allow stores it anyway, skip stores nothing and answers 200 with that record, reject answers 409 with "
        "it."
    ),
    _optional(lambda v, _: on_duplicate_value(v)),
]
LIMIT = Annotated[
    int, *_limit("How many results at most, 1..MAX_LIMIT. A string of digits is accepted too.", "MAX_LIMIT", 10)
]
MIN_SCORE = Annotated[
    float | None,
    _doc("Only results with a cosine similarity of at least this. A numeric string is accepted too."),
    _wire(Annotated[float, Field(ge=-1, le=1)]),
    _optional(lambda v, _: min_score_value(v)),
]
FILTER = Annotated[
    dict[str, Any] | None,
    *_json_object(
        "Attribute conditions, a JSON object (in a form: JSON text); Milvus expressions are not accepted.",
        Filter,
        filter_value,
    ),
]
REGION_DOC = (
    'The part of the image to embed: "whole", "auto" (imgsim finds the main object) or a box {x, y, w, h} in '
    "pixels of the image after its EXIF orientation (clipped to the image; in a form: the box as JSON text)."
)
SEARCH_REGION = Annotated[
    Region | None,
    _doc(
        f"{REGION_DOC} Default: SEARCH_REGION (whole unless the server says otherwise). The answer's `region` is "
        "the box searched."
    ),
    _wire(RegionShape),
    _optional(lambda v, _: region_value(v)),
]
ADD_REGION = Annotated[
    Region,
    _doc(f"{REGION_DOC} The stored vector describes that part; the thumbnail stays the whole photo. Default: whole."),
    _wire(RegionShape),
    _optional(lambda v, _: region_value(v)),
]
GROUP_BY_KEY = Annotated[
    bool,
    _doc('At most one hit per key (its best image); limit then counts keys. In a form: "true" or "false".'),
    _optional(lambda v, _: bool_value(v, "group_by_key")),
]
INCLUDE_SELF = Annotated[
    bool, _doc("Also return the record itself (score 1.0)."), _optional(lambda v, _: bool_value(v, "include_self"))
]
KEYS = Annotated[
    list[str],
    _doc('The keys: an array (at most MAX_BATCH_KEYS), or comma-separated text "SKU-1,SKU-2".'),
    _wire(_batch(KeyText)),
    _required(lambda v, info: key_list(v, _limits(info).max_key_length, _limits(info).max_batch_keys)),
]
IDS = Annotated[
    list[int],
    _doc('Record ids: an array (at most MAX_BATCH_KEYS), one id, or comma-separated text "1,2,3".'),
    _wire(_batch(Id, Id)),
    _required(lambda v, info: id_list(v, _limits(info).max_batch_keys)),
]


# The image input each kind's field value becomes (an upload already is one).
READERS: dict[str, Callable[[Any], ImageInput]] = {
    "file": lambda upload: upload,
    "url": Url,
    "path": SharedPath,
    "base64": Base64Image,
}


class ImageOptions(Body):
    """A body naming an image: its subclasses add the field of their input kind (one of READERS)."""

    @classmethod
    def kind(cls) -> str:
        """The input kind of this body: the name of its image field."""
        return next(name for name in cls.model_fields if name in READERS)

    def image(self) -> ImageInput:
        """The image the request names; read later, by the use case."""
        kind = self.kind()
        return READERS[kind](getattr(self, kind))


class FileImage(ImageOptions):
    file: FILE


class UrlImage(ImageOptions):
    url: URL


class PathImage(ImageOptions):
    path: PATH


class Base64ImageField(ImageOptions):
    base64: BASE64


class AddFields(ImageOptions):
    """The fields of an add besides its image."""

    key: KEY = None
    img_path: IMG_PATH = Field(None, alias="imgPath")
    attrs: ATTRS = None
    on_duplicate: ON_DUPLICATE = OnDuplicate.ALLOW
    region: ADD_REGION = SearchRegion.WHOLE

    def add_request(self) -> AddRequest:
        """The add this body asks for."""
        return AddRequest(self.image(), self.key, self.img_path, self.attrs, self.on_duplicate, self.region)


class SearchFields(Body):
    """How a search ranks and filters its hits."""

    limit: LIMIT = 10
    min_score: MIN_SCORE = None
    filter: FILTER = None
    group_by_key: GROUP_BY_KEY = False

    def options(self) -> SearchOptions:
        """The search options of this body."""
        return SearchOptions(self.limit, self.min_score, self.filter, self.group_by_key)


class SearchImageFields(SearchFields, ImageOptions):
    """A search with an image."""

    region: SEARCH_REGION = None


class AddFileBody(AddFields, FileImage):
    """Add an uploaded image (multipart/form-data with the image as the field `file`)."""


class AddUrlBody(AddFields, UrlImage):
    """Add an image fetched from a URL."""


class AddPathBody(AddFields, PathImage):
    """Add an image file from the shared volume."""


class AddBase64Body(AddFields, Base64ImageField):
    """Add a base64 image."""


class SearchFileBody(SearchImageFields, FileImage):
    """Search with an uploaded image (multipart/form-data with the image as the field `file`)."""


class SearchUrlBody(SearchImageFields, UrlImage):
    """Search with an image fetched from a URL."""


class SearchPathBody(SearchImageFields, PathImage):
    """Search with an image file from the shared volume."""


class SearchBase64Body(SearchImageFields, Base64ImageField):
    """Search with a base64 image."""


ADD_BODIES: dict[str, type[AddFields]] = {m.kind(): m for m in (AddFileBody, AddUrlBody, AddPathBody, AddBase64Body)}
SEARCH_BODIES: dict[str, type[SearchImageFields]] = {
    m.kind(): m for m in (SearchFileBody, SearchUrlBody, SearchPathBody, SearchBase64Body)
}


class RecordIdField(Body):
    """A stored record named by its id."""

    id: Annotated[
        int,
        Field(ge=1, le=JS_MAX_SAFE_INTEGER, description="The id of a stored record of the namespace."),
        _required(_record_id),
    ]


class SearchByIdBody(SearchFields, RecordIdField):
    """Search with a stored record."""

    include_self: INCLUDE_SELF = False

    @model_validator(mode="before")
    @classmethod
    def _no_region(cls, data: Any) -> Any:
        """A region names part of a sent image; search/id sends none."""
        if isinstance(data, dict) and not _absent(data.get("region")):
            raise BadInput(SEARCH_ID_REGION, reason="bad_region")
        return data


class KeysBody(Body):
    """A list of keys: the records of get/key and del/key."""

    key: KEYS


class IdsBody(Body):
    """A list of record ids: del/id."""

    id: IDS


class CountBody(Body):
    """Count the records of a namespace (the body only names the namespace, for admin tokens)."""


class NamespaceQuery(Body):
    """The query string of a thumbnail (admin tokens: the namespace of the record)."""


class ListBody(Body):
    """A page of records in id order."""

    after_id: Annotated[
        int,
        _doc(
            "List records with a larger id (0: from the start): the previous page's next_after_id.",
            ge=0,
            le=JS_MAX_SAFE_INTEGER,
        ),
        _optional(_after_id),
    ] = 0
    limit: Annotated[
        int, *_limit("Records per page, 1..MAX_BATCH_KEYS. A string of digits is accepted too.", "MAX_BATCH_KEYS", 100)
    ] = 100


# Rows of one export answer (about 1 MB of JSON): on Milvus Lite every answer costs a pass over the whole
# collection, so a reindex reads few big answers.
EXPORT_MAX = 5000


def _bounded_id(name: str, low: int, what: str) -> Callable[[object, ValidationInfo], int]:
    """The check of an integer field from `low` to 2^53-1 (digits as text too), saying `what` it is."""

    def check(value: object, _info: ValidationInfo) -> int:
        number = as_int(value)
        if number is None or not low <= number <= JS_MAX_SAFE_INTEGER:
            wanted = f"an integer from {low} to {JS_MAX_SAFE_INTEGER} ({what})"
            raise BadInput(f"field '{name}' must be {wanted}, not {str(value)[:50]!r}")
        return number

    return check


class ExportBody(Body):
    """A window of the rows of every namespace, in id order (admin tokens only): what a reindex reads of a running
    service."""

    after: Annotated[
        int,
        _doc("Rows with an id above this (0: from the first).", ge=0, le=JS_MAX_SAFE_INTEGER),
        _optional(_bounded_id("after", 0, "rows with a larger id are answered")),
    ] = 0
    upto: Annotated[
        int,
        _doc(
            "Rows with an id up to and including this; above `after`. Default: the largest id.",
            ge=1,
            le=JS_MAX_SAFE_INTEGER,
        ),
        _optional(_bounded_id("upto", 1, "the largest id answered")),
    ] = JS_MAX_SAFE_INTEGER
    limit: Annotated[
        int,
        _doc(
            f"Rows at most, 1..{EXPORT_MAX}. A window holding more answers `limit` rows of it, not necessarily the "
            "smallest ids: ask again for a narrower window. A string of digits is accepted too.",
            ge=1,
            le=EXPORT_MAX,
        ),
        _required(lambda v, _: limit_value(v, EXPORT_MAX, EXPORT_MAX)),
    ] = EXPORT_MAX

    @model_validator(mode="before")
    @classmethod
    def _known_fields_only(cls, data: Any) -> Any:
        """Every namespace is exported: a `namespace` (or a misspelt field, like list's after_id) is refused rather
        than ignored, since ignoring it would answer rows the caller did not mean."""
        if isinstance(data, dict):
            for name, value in data.items():
                if name == "namespace" and not _absent(value):
                    raise BadInput(
                        "field 'namespace': export answers the rows of every namespace; leave 'namespace' out"
                    )
                if name not in cls.model_fields:
                    raise BadInput(f"field {str(name)[:64]!r} is unknown here; export takes after, upto and limit")
        return data

    @model_validator(mode="after")
    def _window(self) -> ExportBody:
        if self.upto <= self.after:
            raise BadInput(f"field 'upto' is {self.upto}; it must be above 'after' ({self.after})")
        return self


def scan_score_value(value: object) -> float:
    """`min_score` of a duplicate scan: a cosine similarity above 0 and at most 1 (0 would pair everything)."""
    return score_value(
        value,
        "above 0 and at most 1",
        lambda n: 0.0 < n <= 1.0,
        "a duplicate scan takes a score above 0 and at most 1 (leave it out for the duplicate threshold in force, "
        "which /ready shows)",
    )


def cursor_value(value: object) -> str:
    """`cursor`: the `next` of the previous page of groups, as text (its meaning is checked by the use case)."""
    if not isinstance(value, str) or len(value) > 64:
        raise BadInput(
            f"field 'cursor' must be the text `next` of the previous page, not {str(value)[:50]!r}", reason="bad_cursor"
        )
    return value


JobId = Annotated[
    str, Field(pattern="^[0-9a-f]{16}$", description="A scan job id, as POST /duplicates/scan answered it.")
]


class ScanBody(Body):
    """Start a duplicate scan of the namespace."""

    min_score: Annotated[
        float | None,
        _doc(
            "Two records are duplicates when their score is at least this (or their images have the same MD5). "
            "Default: the duplicate threshold in force (DUPLICATE_SCORE, else calibrated, else the model's "
            "default; /ready shows it). A numeric string is accepted too."
        ),
        _wire(Annotated[float, Field(gt=0, le=1)]),
        _optional(lambda v, _: scan_score_value(v)),
    ] = None
    filter: Annotated[
        dict[str, Any] | None,
        *_json_object(
            "Scan only the records whose attributes meet these conditions (the search filter's grammar; in a "
            "form: JSON text).",
            Filter,
            filter_value,
        ),
    ] = None


class DuplicatesBody(Body):
    """A page of the duplicate groups of the namespace's latest finished scan."""

    cursor: Annotated[
        str | None,
        _doc("The `next` of the previous page (absent: the first page)."),
        _wire(Annotated[str, Field(max_length=64)]),
        _optional(lambda v, _: cursor_value(v)),
    ] = None
    limit: Annotated[
        int,
        _doc(f"Groups per page, 1..{PAGE_MAX}. A string of digits is accepted too.", ge=1, le=PAGE_MAX),
        _required(lambda v, _: limit_value(v, PAGE_MAX, PAGE_DEFAULT)),
    ] = PAGE_DEFAULT


class SyncItem(BaseModel):
    """One image of the key, named by exactly one of url, path or base64."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    url: Annotated[str, Field(min_length=1, max_length=8192)] | None = None
    path: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    base64: Annotated[str, Field(min_length=1)] | None = None
    img_path: Annotated[str, Field(max_length=4096)] | None = Field(None, alias="imgPath")
    attrs: Attrs | None = None
    region: RegionShape | None = Field(None, description=f"{REGION_DOC} Default: whole.")


class BatchItem(SyncItem):
    """One image, named by exactly one of url, path or base64, with the fields of a single add."""

    key: KeyText | int | None = Field(None, description="The record key. Default: the MD5 of the image bytes.")


IMAGE_KINDS = ("url", "path", "base64")
ITEM_BODIES: dict[str, type[AddFields]] = {"url": AddUrlBody, "path": AddPathBody, "base64": AddBase64Body}


def item_request(raw: object, limits: Limits, on_duplicate: OnDuplicate, key: str | None = None) -> AddRequest:
    """One item of add/batch or set/key, read like the body of a single add of its kind."""
    if not isinstance(raw, dict):
        raise BadInput(
            f'an item must be a JSON object such as {{"url": "https://...", "key": "SKU-1"}}, not {json_type_name(raw)}'
        )
    kinds = [k for k in IMAGE_KINDS if raw.get(k) not in (None, "")]
    if len(kinds) != 1:
        raise BadInput(
            "an item names its image with exactly one of the fields 'url', 'path' or 'base64' "
            f"(this one has {len(kinds)})"
        )
    if key is not None and raw.get("key") not in (None, "", key):
        raise BadInput("the items of set/key take the request's key; leave 'key' out of the items")
    fields = {name: raw.get(name) for name in (kinds[0], "key", "imgPath", "attrs", "region")}
    if key is not None:
        fields["key"] = key
    body = parse(ITEM_BODIES[kinds[0]], fields, limits)
    return AddRequest(body.image(), body.key, body.img_path, body.attrs, on_duplicate, body.region)


def item_requests(
    raw_items: list[Any], limits: Limits, on_duplicate: OnDuplicate, key: str | None = None
) -> list[AddRequest | ApiError]:
    """Each item as an AddRequest, or the error a single add of it would have answered (one bad item does not
    fail the request). With `key` (set/key) every item takes that key."""
    out: list[AddRequest | ApiError] = []
    for raw in raw_items:
        try:
            out.append(item_request(raw, limits, on_duplicate, key))
        except ApiError as exc:
            out.append(exc)
    return out


ITEMS_COUNT = Field(
    min_length=1, max_length=DEFAULT.max_batch_items, json_schema_extra={"x-setting": "MAX_BATCH_ITEMS"}
)
ITEMS_DOC = (
    "The images, at most MAX_BATCH_ITEMS (in a form: JSON text). Each is checked like the body of a "
    "single add: a faulty item gets its error in the answer and does not fail the request."
)


def _batch_items(value: object, info: ValidationInfo) -> list[AddRequest | ApiError]:
    limits = _limits(info)
    return item_requests(
        items_value(value, limits.max_batch_items), limits, info.data.get("on_duplicate", OnDuplicate.ALLOW)
    )


def _sync_items(value: object, info: ValidationInfo) -> list[AddRequest | ApiError]:
    limits = _limits(info)
    return item_requests(items_value(value, limits.max_batch_items), limits, OnDuplicate.ALLOW, info.data["key"])


class AddBatchBody(Body):
    """Add many images in one request; `items` holds, per item, its AddRequest or its error (ApiError)."""

    on_duplicate: ON_DUPLICATE = OnDuplicate.ALLOW
    items: Annotated[
        list[Any], _doc(ITEMS_DOC), _wire(Annotated[list[BatchItem], ITEMS_COUNT]), _required(_batch_items)
    ]


class SetKeyBody(Body):
    """Make a key hold exactly these images; `items` holds, per item, its AddRequest or its error (ApiError)."""

    key: Annotated[
        str,
        _doc("The key whose images the request sets; a number is taken as its decimal text."),
        _wire(KeyText | int),
        _required(_required_key),
    ]
    items: Annotated[list[Any], _doc(ITEMS_DOC), _wire(Annotated[list[SyncItem], ITEMS_COUNT]), _required(_sync_items)]
