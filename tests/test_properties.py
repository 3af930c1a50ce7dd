"""Property-based tests (hypothesis) of request parsing (the body models of service/api/contract.py,
service/inputs/base64.py) and of the id and key handling of the store (derive_id, quote), the latter through a
real Milvus Lite filter."""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conf.errors import ApiError, BadInput, NotAnImage, TooLarge
from conf.settings import SearchRegion
from model.embedder import DIM
from model.images import decode_image
from model.regions import clip_box
from service.api.contract import (
    MAX_BOX_PIXELS,
    AddBase64Body,
    AddBatchBody,
    IdsBody,
    KeysBody,
    Limits,
    ListBody,
    SearchByIdBody,
    key_value,
    parse,
    text_value,
)
from service.inputs.base64 import base64_image
from service.store.filters import (
    DEFAULT_NAMESPACE,
    JS_MAX_SAFE_INTEGER,
    FilterError,
    NamespaceError,
    check_namespace,
    compile_filter,
    quote_literal,
)
from service.store.records import Record, VectorStore, derive_id
from service.usecases.add import AddRequest
from service.usecases.prepare import RegionBox
from tests import hostile_counts
from tests.conftest import LiveService, make_settings, photo

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MILVUS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
MAX_KEY = 64
MAX_COUNT = 20
CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# Any JSON value a client can send (big integers, odd floats, nesting included).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=12,
)
# What key_value accepts: text without C0 controls, DEL or lone surrogates (C1 controls and every
# other printable or invisible character included).
key_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="".join(map(chr, range(32))) + "\x7f")
tricky_chars = st.sampled_from(
    list("\"'\\[](),=%_*` ")
    + ["\u00e9", "\u0301", "\u200d", "\u2028", "\u0085", "😀", '\\"', '"\\', "\\\\", " or 1==1", "key in "]
)
keys = st.lists(key_chars | tricky_chars, min_size=1, max_size=24).map("".join).map(str.strip).filter(bool)
ids = st.integers(min_value=1, max_value=JS_MAX_SAFE_INTEGER)


# The limits the models get as validation context (from Settings in the service).
LIMITS = Limits(max_limit=100, max_key_length=MAX_KEY, max_batch_keys=MAX_COUNT, max_batch_items=5)


# Each field as its body model reads it: the value of `body[name]`, parsed, or the BadInput it answers.
def key_list(body: dict[str, Any]) -> list[str]:
    return parse(KeysBody, {"key": body.get("key")}, LIMITS).key


def id_list(body: dict[str, Any]) -> list[int]:
    return parse(IdsBody, {"id": body.get("id")}, LIMITS).id


def limit_value(body: dict[str, Any]) -> int:
    return parse(SearchByIdBody, {"id": 1, "limit": body.get("limit")}, LIMITS).limit


def min_score_value(body: dict[str, Any]) -> float | None:
    return parse(SearchByIdBody, {"id": 1, "min_score": body.get("min_score")}, LIMITS).min_score


def optional_key(body: dict[str, Any]) -> str | None:
    return parse(AddBase64Body, {"key": body.get("key")}, LIMITS).key


def attrs_value(body: dict[str, Any]) -> dict[str, Any] | None:
    return parse(AddBase64Body, {"attrs": body.get("attrs")}, LIMITS).attrs


def on_duplicate_value(body: dict[str, Any]) -> Any:
    return parse(AddBase64Body, {"on_duplicate": body.get("on_duplicate")}, LIMITS).on_duplicate


def filter_value(body: dict[str, Any]) -> Any:
    return parse(SearchByIdBody, {"id": 1, "filter": body.get("filter")}, LIMITS).filter


def bool_value(body: dict[str, Any], name: str) -> bool:
    return bool(getattr(parse(SearchByIdBody, {"id": 1, name: body.get(name)}, LIMITS), name))


def record_id(body: dict[str, Any]) -> int:
    return parse(SearchByIdBody, {"id": body.get("id")}, LIMITS).id


def after_id_value(body: dict[str, Any]) -> int:
    return parse(ListBody, {"after_id": body.get("after_id")}, LIMITS).after_id


def add_requests(body: dict[str, Any]) -> list[Any]:
    return parse(AddBatchBody, {"items": body.get("items")}, LIMITS).items


@pytest.fixture(scope="session", autouse=True)
def _write_counts() -> Iterator[None]:
    yield
    hostile_counts.write()


def counted(value: Any) -> Any:
    hostile_counts.tried("property_examples")
    return value


def only_bad_input(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call fn; BadInput/TooLarge are fine answers, any other exception is a bug (a 500)."""
    counted(None)
    try:
        return fn(*args, **kwargs)
    except (BadInput, TooLarge) as exc:
        assert exc.msg and "Traceback" not in exc.msg
        return exc


# --- contract.py: total functions over any JSON ---------------------------------------------------
@FAST
@given(json_values)
def test_every_parser_answers_any_json_value_with_a_value_or_bad_input(value: Any) -> None:
    body = {"key": value, "id": value, "limit": value, "min_score": value, "url": value}
    keys_out = only_bad_input(key_list, body)
    if isinstance(keys_out, list):
        assert keys_out and len(keys_out) == len(set(keys_out)) <= MAX_COUNT
        for key in keys_out:
            assert key == key.strip() and 1 <= len(key) <= MAX_KEY and not CONTROL.search(key)
            key.encode("utf-8")
    ids_out = only_bad_input(id_list, body)
    if isinstance(ids_out, list):
        assert ids_out and len(ids_out) == len(set(ids_out)) <= MAX_COUNT
        assert all(type(i) is int and 1 <= i <= JS_MAX_SAFE_INTEGER for i in ids_out)
    limit = only_bad_input(limit_value, body)
    if not isinstance(limit, Exception):
        assert type(limit) is int and 1 <= limit <= 100
    score = only_bad_input(min_score_value, body)
    if not isinstance(score, Exception) and score is not None:
        assert -1.0 <= score <= 1.0 and not math.isnan(score)
    text = only_bad_input(text_value, body["url"], "url", max_len=50)
    if isinstance(text, str):
        assert "\x00" not in text and len(text) <= 50
        text.encode("utf-8")
    one_key = only_bad_input(optional_key, body)
    assert one_key is None or isinstance(one_key, (str, Exception))
    only_bad_input(base64_image, value, 1000)


@FAST
@given(st.text(max_size=80))
def test_key_value_accepts_exactly_the_printable_keys(text: str) -> None:
    result = only_bad_input(key_value, text, MAX_KEY)
    stripped = text.strip()
    valid = (
        bool(stripped)
        and len(stripped) <= MAX_KEY
        and not CONTROL.search(stripped)
        and not any(0xD800 <= ord(c) <= 0xDFFF for c in stripped)
    )
    if valid:
        assert result == stripped
    else:
        assert isinstance(result, BadInput) and "'key'" in result.msg


@FAST
@given(st.lists(keys, min_size=1, max_size=MAX_COUNT))
def test_key_list_keeps_distinct_keys_in_order_in_both_forms(items: list[str]) -> None:
    items = [k[:MAX_KEY].strip() or "k" for k in items]
    expected = list(dict.fromkeys(items))
    assert counted(key_list({"key": items})) == expected
    if all("," not in k for k in items):
        assert key_list({"key": ",".join(items)}) == expected


@FAST
@given(st.lists(ids, min_size=1, max_size=MAX_COUNT), st.sampled_from([",", ", ", " ,", " , "]))
def test_id_list_keeps_distinct_ids_in_order_in_every_form(items: list[int], sep: str) -> None:
    expected = list(dict.fromkeys(items))
    assert counted(id_list({"id": items})) == expected
    assert id_list({"id": sep.join(map(str, items))}) == expected
    assert id_list({"id": [str(i) for i in items]}) == expected
    assert id_list({"id": items[0]}) == [items[0]]


@FAST
@given(
    st.integers(min_value=-(10**30), max_value=10**30)
    | st.integers(min_value=JS_MAX_SAFE_INTEGER - 5, max_value=JS_MAX_SAFE_INTEGER + 5)
)
def test_id_list_refuses_every_integer_outside_the_js_safe_range(number: int) -> None:
    result = only_bad_input(id_list, {"id": [number]})
    if 1 <= number <= JS_MAX_SAFE_INTEGER:
        assert result == [number]
    else:
        assert isinstance(result, BadInput) and "'id'" in result.msg


@FAST
@given(st.integers(min_value=-(10**20), max_value=10**20), st.sampled_from(["{}", " {} ", "{}\n", "+{}", "{}.0"]))
def test_limit_value_takes_whole_numbers_in_range_only(number: int, spelling: str) -> None:
    as_int = only_bad_input(limit_value, {"limit": number})
    as_text = only_bad_input(limit_value, {"limit": spelling.format(number)})
    if 1 <= number <= 100:
        assert as_int == number
        assert as_text == number if spelling.strip() == "{}" else isinstance(as_text, BadInput)
    else:
        assert isinstance(as_int, BadInput) and isinstance(as_text, BadInput)


@FAST
@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(min_value=-(10**400), max_value=10**400))
def test_min_score_value_takes_numbers_from_minus_one_to_one(number: float) -> None:
    as_number = only_bad_input(min_score_value, {"min_score": number})
    as_text = only_bad_input(min_score_value, {"min_score": repr(number)})
    in_range = not (isinstance(number, float) and math.isnan(number)) and -1 <= number <= 1
    if in_range:
        assert as_number == float(number) and as_text == float(number)
    else:
        assert isinstance(as_number, BadInput) and isinstance(as_text, BadInput)


@FAST
@given(st.binary(max_size=3000), st.sampled_from(["standard", "urlsafe", "unpadded", "wrapped", "data-url"]))
def test_base64_image_round_trips_every_accepted_spelling(data: bytes, spelling: str) -> None:
    text = base64.b64encode(data).decode()
    if spelling == "urlsafe":
        text = base64.urlsafe_b64encode(data).decode()
    elif spelling == "unpadded":
        text = text.rstrip("=")
    elif spelling == "wrapped":
        text = "\r\n".join(text[i : i + 76] for i in range(0, len(text), 76)) + "\n"
    elif spelling == "data-url":
        text = "data:image/jpeg;base64," + text
    result = only_bad_input(base64_image, text, 2000)
    if not data:
        assert isinstance(result, BadInput) or result == b""  # the decoder then says "image is empty"
    elif len(data) <= 2000:
        assert result == data
    else:
        assert isinstance(result, TooLarge) or (isinstance(result, bytes) and len(result) <= 2003)


@FAST
@given(st.text(max_size=60))
def test_base64_image_refuses_text_outside_the_alphabet(text: str) -> None:
    assume(re.search(r"[^A-Za-z0-9+/=\-_\s]", text.removeprefix("data:image/png;base64,")))
    result = only_bad_input(base64_image, text, 2000)
    assert isinstance(result, BadInput)


# --- images.py: damaged images are 415 or 413, never anything else ---------------------------------
SEED_IMAGES = {fmt: photo(3, size=(40, 30), fmt=fmt) for fmt in ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")}
mutations = st.lists(
    st.tuples(
        st.sampled_from(["set", "delete", "insert", "truncate"]),
        st.integers(0, 10**6),
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=8,
)


@FAST
@given(st.sampled_from(sorted(SEED_IMAGES)), mutations)
def test_damaged_images_decode_or_are_refused_cleanly(fmt: str, changes: list[tuple[str, int, bytes]]) -> None:
    data = bytearray(SEED_IMAGES[fmt])
    for op, where, chunk in changes:
        at = where % max(len(data), 1)
        if op == "set":
            data[at : at + len(chunk)] = chunk
        elif op == "delete":
            del data[at : at + len(chunk)]
        elif op == "insert":
            data[at:at] = chunk
        else:
            del data[at:]
    counted(None)
    try:
        decoded = decode_image(bytes(data), max_bytes=10**6, max_pixels=4_000_000)
    except (NotAnImage, TooLarge) as exc:
        assert exc.msg
        return
    assert decoded.image.mode == "RGB" and decoded.image.width >= 1 and decoded.image.height >= 1


# --- store.py: ids and quoting ---------------------------------------------------------------------
@FAST
@given(
    st.text(max_size=100),
    st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
    st.integers(min_value=0, max_value=16),
)
def test_derive_id_is_a_deterministic_js_safe_positive_integer(key: str, md5: str, attempt: int) -> None:
    rid = counted(derive_id(key, md5, attempt))
    assert type(rid) is int and 1 <= rid <= JS_MAX_SAFE_INTEGER
    assert derive_id(key, md5, attempt) == rid
    assert float(rid) == rid  # survives a JavaScript number


@FAST
@given(keys)
def test_quote_is_one_string_literal(key: str) -> None:
    literal = counted(quote_literal(key))
    assert literal.startswith('"') and literal.endswith('"')
    body = literal[1:-1]
    assert not re.search(r"[\n\r\t]", body)  # line breaks and tabs are escaped, so a literal is one line
    named = {"n": "\n", "r": "\r", "t": "\t"}
    unescaped = re.sub(r"\\(.)", lambda m: named.get(m.group(1), m.group(1)), body, flags=re.S)
    assert unescaped == key  # every quote, backslash and line break is escaped, nothing else changes
    assert not re.search(r'(?<!\\)(\\\\)*"', body)  # no unescaped quote can end the literal early


@pytest.fixture(scope="module")
def lite_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VectorStore]:
    store = VectorStore(make_settings(tmp_path_factory.mktemp("props"), max_key_length=MAX_KEY), DIM)
    store.connect()
    yield store
    store.close()


def _vector(seed: int) -> np.ndarray:
    vec = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return vec / np.linalg.norm(vec)


@MILVUS
@given(st.lists(keys, min_size=1, max_size=6, unique=True), st.data())
def test_quote_round_trips_through_a_real_milvus_lite_filter(
    lite_store: VectorStore, batch: list[str], data: st.DataObject
) -> None:
    """Store records under arbitrary keys; each key's filter finds exactly its own records,
    nothing else, and deleting by key removes only them."""
    batch = [k[:MAX_KEY] for k in batch]
    batch = list(dict.fromkeys(batch))
    md5 = f"{data.draw(st.integers(0, 2**128 - 1)):032x}"
    bystander = Record("bystander" + md5[:6], md5, "/b", _vector(1))
    records = [Record(k, md5, f"/p/{i}", _vector(i + 2)) for i, k in enumerate(batch)] + [bystander]
    scope = lite_store.scope()
    results = lite_store.put_many(scope, records)
    assert [created for _, created in results] == [True] * len(records)
    for key, (rid, _) in zip(batch, results):
        counted(key)
        found = lite_store.get_keys(scope, [key])
        assert [(r["key"], r["id"]) for r in found] == [(key, rid)], (key, found)
        assert lite_store.find(scope, key, md5) is not None
        assert (
            lite_store._call(
                lambda c, k=key: c.query(
                    lite_store._settings.milvus_collection, filter=f"key == {quote_literal(k)}", output_fields=["key"]
                )
            )[0]["key"]
            == key
        )
    assert sorted(r["key"] for r in lite_store.get_keys(scope, batch)) == sorted(batch)
    victim = data.draw(st.sampled_from(batch))
    assert lite_store.delete_keys(scope, [victim]) == 1
    assert lite_store.get_keys(scope, [victim]) == []
    assert sorted(r["key"] for r in lite_store.get_keys(scope, batch)) == sorted(k for k in batch if k != victim)
    assert len(lite_store.get_keys(scope, [bystander.key])) == 1
    lite_store.delete_keys(scope, batch + [bystander.key])  # leave the collection empty for the next example
    assert lite_store.get_keys(scope, batch + [bystander.key]) == []


# --- contract.py: the tenancy fields are total functions too ----------------------------------------
json_texts = json_values.map(lambda v: json.dumps(v, allow_nan=True)) | st.text(max_size=40)


@FAST
@given(json_values | json_texts)
def test_every_tenancy_field_answers_any_value_with_a_value_or_bad_input(value: Any) -> None:
    body = {
        name: value
        for name in ("attrs", "filter", "group_by_key", "include_self", "on_duplicate", "id", "after_id", "items")
    }
    attrs = only_bad_input(attrs_value, body)
    if isinstance(attrs, dict):
        json.dumps(attrs, allow_nan=False)  # storable: finite, JSON-serialisable, flat
        assert all(not isinstance(v, dict) for v in attrs.values())
    parsed = only_bad_input(filter_value, body)
    if isinstance(parsed, dict):
        try:
            expr = compile_filter(parsed)
        except FilterError as exc:
            assert str(exc)
        else:
            assert expr == "" or expr.startswith("(")
    for name in ("group_by_key", "include_self"):
        flag = only_bad_input(bool_value, body, name)
        assert isinstance(flag, (bool, BadInput))
    only_bad_input(on_duplicate_value, body)
    rid = only_bad_input(record_id, body)
    assert isinstance(rid, BadInput) or 1 <= rid <= JS_MAX_SAFE_INTEGER
    after = only_bad_input(after_id_value, body)
    assert isinstance(after, BadInput) or 0 <= after <= JS_MAX_SAFE_INTEGER
    items = only_bad_input(add_requests, body)
    if isinstance(items, list):
        assert 1 <= len(items) <= LIMITS.max_batch_items
        for item in items:
            assert isinstance(item, (AddRequest, ApiError))


@FAST
@given(st.text(max_size=70) | json_values)
def test_namespaces_are_exactly_the_documented_names(name: Any) -> None:
    counted(name)
    valid = name == DEFAULT_NAMESPACE or (
        isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", name) is not None
    )
    try:
        assert check_namespace(name) == name and valid
    except NamespaceError:
        assert not valid


# --- regions: the box parser, clipping, and a box's way through add and get/key --------------------------------
@FAST
@given(json_values | json_texts)
def test_region_answers_any_value_with_a_region_or_bad_input(value: Any) -> None:
    region = only_bad_input(lambda: parse(AddBase64Body, {"region": value}, LIMITS).region)
    if isinstance(region, RegionBox):
        assert all(math.isfinite(v) and abs(v) <= MAX_BOX_PIXELS for v in (region.x, region.y, region.w, region.h))
        assert region.x >= 0 and region.y >= 0 and region.w > 0 and region.h > 0
    else:
        assert isinstance(region, (SearchRegion, BadInput))
        assert not isinstance(region, BadInput) or "'region'" in region.msg
    searched = only_bad_input(lambda: parse(SearchByIdBody, {"id": 1, "region": value}, LIMITS))
    assert value in (None, "") or isinstance(searched, BadInput)


# Quarter pixels: exact in binary floating point, so the expected edges below are exact too.
quarters = st.integers(min_value=-4000, max_value=4000).map(lambda n: n / 4)
sizes = st.integers(min_value=1, max_value=4000).map(lambda n: n / 4)
sides = st.integers(min_value=1, max_value=600)


@FAST
@given(quarters, quarters, sizes, sizes, sides, sides)
def test_clip_box_is_the_smallest_whole_pixel_box_inside_the_image_holding_the_overlap(
    x: float, y: float, w: float, h: float, width: int, height: int
) -> None:
    counted(None)
    box = clip_box(x, y, w, h, width, height)
    disjoint = x >= width or y >= height or x + w <= 0 or y + h <= 0
    assert (box is None) == disjoint
    if box is None:
        return
    assert box.x >= 0 and box.y >= 0 and box.w >= 1 and box.h >= 1
    assert box.x + box.w <= width and box.y + box.h <= height
    left, top, right, bottom = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    assert box.x <= left < box.x + 1 and box.y <= top < box.y + 1  # holds the overlap, no pixel more
    assert box.x + box.w - 1 < right <= box.x + box.w and box.y + box.h - 1 < bottom <= box.y + box.h


@MILVUS
@given(quarters, quarters, sizes, sizes)
def test_a_box_added_comes_back_clipped_from_get_key(
    lite_service: LiveService, x: float, y: float, w: float, h: float
) -> None:
    """Over real HTTP: the same image re-added under one key with each box (its region replaced every time)."""
    counted(None)
    assume(x >= 0 and y >= 0)
    image = base64.b64encode(photo(31, size=(96, 64))).decode()
    resp = lite_service.post(
        "add/base64", json={"base64": image, "key": "boxed", "region": {"x": x, "y": y, "w": w, "h": h}}
    )
    answer = resp.json()
    expected = clip_box(x, y, w, h, 96, 64)
    if expected is None:
        assert resp.status_code == 400 and "'region'" in answer["msg"] and "96 x 64 px" in answer["msg"], answer
        return
    assert resp.status_code == 200 and answer["region"] == expected.as_dict(), answer
    [record] = lite_service.post("get/key", json={"key": "boxed"}).json()["data"]
    assert record["region"] == (None if expected.is_whole(96, 64) else expected.as_dict())
