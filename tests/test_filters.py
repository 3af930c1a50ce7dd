"""attrs validation and filter compilation: unit tests, and property tests against real Milvus.

The property tests insert records with varied attributes into Milvus Lite and into the Milvus 2.3
server, then check that for hypothesis-generated filters (quotes, backslashes, `" or 1==1 or "`,
unicode, numbers, lists, ranges) Milvus returns exactly the records a pure-Python reference
evaluation of the documented semantics selects, and never answers with a syntax error.
"""

from __future__ import annotations

import operator
import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from milvus_lite.search.filter.tokens import TokenKind, tokenize
from pymilvus import DataType, MilvusClient, MilvusException

from service.store.filters import (
    JS_MAX_SAFE_INTEGER,
    MAX_ANY_OF,
    MAX_FILTER_KEYS,
    MAX_FILTER_TEXT_BYTES,
    MAX_FILTER_VALUES,
    MAX_LIST_ITEMS,
    MAX_STRING_BYTES,
    RANGE_OPS,
    AttrsError,
    FilterError,
    NamespaceError,
    all_of,
    check_namespace,
    compile_filter,
    namespace_expr,
    quote_literal,
    validate_attrs,
)

# --- unit: validate_attrs ----------------------------------------------------------------


def test_validate_attrs_accepts_flat_values_and_returns_a_copy() -> None:
    attrs = {"category": "shoes", "price": 19.5, "qty": 3, "in_stock": True, "tags": ["red", "sale"], "_x": ""}
    clean = validate_attrs(attrs)
    assert clean == attrs
    clean["tags"].append("changed")
    assert attrs["tags"] == ["red", "sale"]
    assert validate_attrs(None) == {} and validate_attrs({}) == {}


@pytest.mark.parametrize(
    ("attrs", "words"),
    [
        ("category=shoes", ["JSON object", "str"]),
        ([["a", 1]], ["JSON object", "list"]),
        ({"1abc": 1}, ["name", "not starting with a digit"]),
        ({"a-b": 1}, ["name", "letters, digits and '_'"]),
        ({'a"]': 1}, ["name"]),
        ({"x" * 65: 1}, ["name", "1-64"]),
        ({"a": None}, ["'a'", "null", "leave the attribute out"]),
        ({"a": {"b": 1}}, ["object", "flat"]),
        ({"a": float("nan")}, ["finite"]),
        ({"a": float("inf")}, ["finite"]),
        ({"a": 2**53}, ["2^53", "send it as a string"]),
        ({"a": [1, 2]}, ["lists hold strings only"]),
        ({"a": ["ok", ["nested"]]}, ["item 1"]),
        ({"a": ["x"] * (MAX_LIST_ITEMS + 1)}, [f"limit is {MAX_LIST_ITEMS}"]),
        ({"a": "\ud800"}, ["lone surrogate"]),
        ({"a": "é" * MAX_STRING_BYTES}, [f"{MAX_STRING_BYTES} bytes"]),
        ({"a": b"bytes"}, ["bytes", "string, number or boolean"]),
    ],
)
def test_validate_attrs_says_what_is_wrong(attrs: Any, words: list[str]) -> None:
    with pytest.raises(AttrsError) as info:
        validate_attrs(attrs)
    for word in words:
        assert word in str(info.value)


def test_validate_attrs_caps_count_and_size() -> None:
    with pytest.raises(AttrsError, match="33 attributes; the limit is 32"):
        validate_attrs({f"k{i}": i for i in range(33)})
    assert len(validate_attrs({f"k{i}": i for i in range(3)}, max_keys=3)) == 3
    with pytest.raises(AttrsError, match="limit is 4096 bytes"):
        validate_attrs({f"k{i}": "x" * 500 for i in range(9)})
    with pytest.raises(AttrsError, match="limit is 20 bytes"):
        validate_attrs({"a": "0123456789abc"}, max_bytes=20)


# --- unit: compile_filter ----------------------------------------------------------------


def test_compile_filter_examples() -> None:
    assert compile_filter(None) == compile_filter({}) == ""
    assert (
        compile_filter({"category": "shoes"})
        == '(attrs["category"] == "shoes" or json_contains(attrs["category"], "shoes"))'
    )
    assert compile_filter({"shop": [3, 7]}) == '(attrs["shop"] == 3 or attrs["shop"] == 7)'
    assert compile_filter({"price": {"gte": 10, "lt": 100}}) == '(attrs["price"] >= 10 and attrs["price"] < 100)'
    assert compile_filter({"in_stock": True, "price": {"lte": 2.5}}) == (
        '(attrs["in_stock"] == true or attrs["in_stock"] == 1) and '
        '((attrs["price"] <= 2.5) or attrs["price"] == true or attrs["price"] == false)'
    )
    assert compile_filter({"n": 1.0}) == '(attrs["n"] == 1.0 or attrs["n"] == true)'
    assert (
        compile_filter({"d": {"gte": "2024-01-01", "lt": "2024-02-01"}})
        == '(attrs["d"] >= "2024-01-01" and attrs["d"] < "2024-02-01")'
    )
    assert (
        compile_filter({"c": ["a", "b", "a"]})
        == '(attrs["c"] == "a" or attrs["c"] == "b" or json_contains_any(attrs["c"], ["a", "b", "a"]))'
    )


def test_compile_filter_escapes_values_into_single_literals() -> None:
    hostile = '" or 1==1 or "\\\n\r\tü😀'
    expr = compile_filter({"k": hostile})
    assert expr == (
        '(attrs["k"] == "\\" or 1==1 or \\"\\\\\\n\\r\\tü😀" or '
        'json_contains(attrs["k"], "\\" or 1==1 or \\"\\\\\\n\\r\\tü😀"))'
    )


@pytest.mark.parametrize(
    ("flt", "words"),
    [
        ('attrs["a"] == 1', ["JSON object", "not a string", "not accepted"]),
        ([{"a": 1}], ["JSON object", "not list"]),
        (7, ["JSON object", "not int"]),
        ({"a": []}, ["empty list", "leave the condition out"]),
        ({"a": {}}, ["empty range", "gt, gte, lt, lte"]),
        ({"a": {"eq": 1}}, ["'eq' is not a range operator"]),
        ({"a": {"$ne": 1}}, ["not a range operator"]),
        ({"a": {"gt": {"lt": 1}}}, ["number or a string"]),
        ({"a": {"gt": True}}, ["number or a string"]),
        ({"a": {"gt": 1, "lt": "z"}}, ["all numbers or all strings"]),
        ({"a": [[1]]}, ["no nested lists"]),
        ({"a": [{"gt": 1}]}, ["no nested lists or objects"]),
        ({"a": None}, ["null"]),
        ({"a": float("nan")}, ["finite"]),
        ({"a": [1, float("-inf")]}, ["finite"]),
        ({"a": -(2**53)}, ["2^53"]),
        ({"a": "\udfff"}, ["lone surrogate"]),
        ({'a"] or 1==1 or attrs["b': 1}, ["attribute name", "not allowed"]),
        ({"": 1}, ["attribute name"]),
        ({"a": list(range(MAX_ANY_OF + 1))}, [f"limit is {MAX_ANY_OF}"]),
        ({f"k{i}": 1 for i in range(MAX_FILTER_KEYS + 1)}, [f"limit is {MAX_FILTER_KEYS}"]),
        ({f"k{i}": list(range(60)) for i in range(5)}, [f"more than {MAX_FILTER_VALUES} values"]),
        ({f"k{i}": ["x" * 1000] * 5 for i in range(4)}, [f"more than {MAX_FILTER_TEXT_BYTES} bytes"]),
    ],
)
def test_compile_filter_refuses_with_a_helpful_message(flt: Any, words: list[str]) -> None:
    with pytest.raises(FilterError) as info:
        compile_filter(flt)
    for word in words:
        assert word in str(info.value)


def test_namespaces() -> None:
    assert namespace_expr("") == 'namespace == ""'
    assert namespace_expr("shop-1.eu_2") == 'namespace == "shop-1.eu_2"'
    assert check_namespace("A" * 64) == "A" * 64
    for bad in ["-", ".x", "-a", "a b", 'a"', "a\n", "ü", "A" * 65, None, 3, "*"]:
        with pytest.raises(NamespaceError):
            check_namespace(bad)
    assert all_of("", "a == 1", "", "b == 2") == "(a == 1) and (b == 2)"
    assert all_of("", "") == ""


_VALUE_KINDS = {TokenKind.STRING, TokenKind.INT, TokenKind.FLOAT, TokenKind.BOOL}


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_text_lexes_as_exactly_one_string_literal(text: str) -> None:
    """Read with Milvus Lite's own lexer: a value is one STRING token holding the text, never syntax."""
    [token, end] = tokenize(quote_literal(text))
    assert (token.kind, token.value, end.kind) == (TokenKind.STRING, text, TokenKind.EOF)
    kinds = [t.kind for t in tokenize(compile_filter({"k": text}))]
    strings = [t.value for t in tokenize(compile_filter({"k": text})) if t.kind == TokenKind.STRING]
    assert strings == ["k", text, "k", text]
    assert TokenKind.IDENT in kinds and not (
        set(kinds)
        - _VALUE_KINDS
        - {
            TokenKind.IDENT,
            TokenKind.LPAREN,
            TokenKind.RPAREN,
            TokenKind.LBRACKET,
            TokenKind.RBRACKET,
            TokenKind.COMMA,
            TokenKind.EQ,
            TokenKind.OR,
            TokenKind.EOF,
        }
    )


# --- the pure-Python reference of the documented semantics -------------------------------
_COMPARE = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


def _as_number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return int(value)  # booleans count as 1 and 0 (filters.py docstring)
    return value if isinstance(value, (int, float)) else None


def _equal(stored: Any, wanted: Any) -> bool:
    if isinstance(wanted, str):
        return stored == wanted if isinstance(stored, str) else isinstance(stored, list) and wanted in stored
    number = _as_number(stored)
    return number is not None and number == _as_number(wanted)


def _holds(stored: Any, cond: Any) -> bool:
    if stored is None:
        return False
    if isinstance(cond, list):
        return any(_equal(stored, c) for c in cond)
    if isinstance(cond, dict):
        if isinstance(next(iter(cond.values())), str):
            return isinstance(stored, str) and all(_COMPARE[op](stored, b) for op, b in cond.items())
        number = _as_number(stored)
        return number is not None and all(_COMPARE[op](number, b) for op, b in cond.items())
    return _equal(stored, cond)


def reference(records: list[dict[str, Any]], flt: dict[str, Any], namespace: str | None) -> list[int]:
    """Ids of the records the filter (and namespace, if given) selects, by the documented semantics."""
    return sorted(
        r["id"]
        for r in records
        if (namespace is None or r["namespace"] == namespace)
        and all(_holds(r["attrs"].get(k), c) for k, c in (flt or {}).items())
    )


# --- real Milvus -------------------------------------------------------------------------
KEYS = ("category", "price", "tags", "shop", "flag", "date")
NAMESPACES = ("", "shop-1", "x.y_2")
STRINGS = [
    "shoes",
    "hats",
    "",
    'a"b',
    "back\\slash",
    '" or 1==1 or "',
    "new\nline",
    "cr\r",
    "tab\t",
    "ünï😀",
    "é",
    "ｅ",
    "2024-01-05",
    "2024-02-29",
    "\x00nul",
    "'single'",
    '"]) or (',
    'attrs["x"] == 1',
    "\\",
    '\\"',
    "z",
    "\u2028",
    "١٢٣",
]
NUMBERS = [
    0,
    1,
    -1,
    3,
    7,
    2.5,
    -0.0,
    0.1,
    1e-300,
    1e300,
    10,
    10.0,
    99.5,
    JS_MAX_SAFE_INTEGER,
    -JS_MAX_SAFE_INTEGER,
    1.0,
    0.0,
    5e-324,
    -1e300,
]


def _random_value(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.35:
        return rng.choice(STRINGS)
    if roll < 0.65:
        return rng.choice(NUMBERS)
    if roll < 0.8:
        return rng.choice([True, False])
    return rng.sample(STRINGS, rng.randint(0, 3))


def make_records(count: int = 150, seed: int = 20261124) -> list[dict[str, Any]]:
    """Records whose attributes mix types per key (string here, number or list there), plus edge cases."""
    rng = random.Random(seed)
    records = []
    for i in range(count):
        attrs = {k: _random_value(rng) for k in KEYS if rng.random() < 0.7}
        records.append({"id": i + 1, "namespace": NAMESPACES[i % len(NAMESPACES)], "attrs": validate_attrs(attrs)})
    records.append({"id": count + 1, "namespace": "", "attrs": {}})
    records.append({"id": count + 2, "namespace": "", "attrs": {"tags": ["red", "sale"], "category": "shoes"}})
    return records


def _create(client: MilvusClient, name: str, records: list[dict[str, Any]]) -> None:
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("namespace", DataType.VARCHAR, max_length=256)
    schema.add_field("attrs", DataType.JSON)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=4)
    client.create_collection(name, schema=schema, consistency_level="Strong")
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
    client.create_index(name, index)
    client.insert(name, [{**r, "vector": [1.0, 0.0, 0.0, 0.0]} for r in records])
    client.load_collection(name)


class Backend:
    """One Milvus engine holding the test records."""

    def __init__(self, kind: str, client: MilvusClient, records: list[dict[str, Any]]) -> None:
        self.kind = kind
        self.client = client
        self.records = records
        self.name = f"f_{uuid.uuid4().hex[:10]}"

    def ids(self, expr: str) -> list[int]:
        """Ids of the records matching a Milvus expression ("" = all)."""
        rows = self.client.query(self.name, filter=expr, output_fields=["id"], limit=16384)
        return sorted(int(r["id"]) for r in rows)

    def search_ids(self, expr: str) -> list[int]:
        """Ids a filtered vector search returns when its limit covers every record."""
        [hits] = self.client.search(
            self.name,
            data=[[1.0, 0.0, 0.0, 0.0]],
            anns_field="vector",
            filter=expr,
            limit=len(self.records),
            search_params={"metric_type": "IP"},
        )
        return sorted(int(h["id"]) for h in hits)


@pytest.fixture(scope="module", params=["lite", pytest.param("server", marks=pytest.mark.server)])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """The test records in Milvus Lite, then in the Milvus 2.3 server."""
    if request.param == "server":
        client = MilvusClient(uri=request.getfixturevalue("milvus_server"), timeout=30)
    else:
        client = MilvusClient(uri=str(tmp_path_factory.mktemp("filters") / "lite.db"))
    store = Backend(request.param, client, make_records())
    _create(client, store.name, store.records)
    yield store
    client.drop_collection(store.name)
    client.close()


def _check(backend: Backend, flt: Any, namespace: str | None, search: bool = False) -> None:
    expr = all_of(namespace_expr(namespace) if namespace is not None else "", compile_filter(flt))
    expected = reference(backend.records, flt, namespace)
    try:
        assert backend.ids(expr) == expected, expr
        if search:  # searches filter with the same engine as queries; check it once per hand-picked case
            assert backend.search_ids(expr) == expected, expr
    except MilvusException as exc:  # a syntax or plan error here is a compiler bug
        pytest.fail(f"{backend.kind} refused {expr!r}: {exc}")


# Values already stored are drawn more often than fresh ones, so that many filters match something.
stored_texts, stored_numbers = st.sampled_from(STRINGS), st.sampled_from(NUMBERS)
texts = st.one_of(stored_texts, stored_texts, st.text(max_size=12))
numbers = st.one_of(
    stored_numbers,
    stored_numbers,
    st.integers(-JS_MAX_SAFE_INTEGER, JS_MAX_SAFE_INTEGER),
    st.floats(allow_nan=False, allow_infinity=False),
)
scalars = st.one_of(texts, numbers, st.booleans())
ops = st.sampled_from(sorted(RANGE_OPS))
ranges = st.one_of(st.dictionaries(ops, numbers, min_size=1), st.dictionaries(ops, texts, min_size=1))
conditions = st.one_of(scalars, st.lists(scalars, min_size=1, max_size=5), ranges)
filters = st.dictionaries(st.sampled_from((*KEYS, "missing")), conditions, max_size=2)
namespaces = st.sampled_from((None, None, None, *NAMESPACES))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flt=filters, namespace=namespaces)
def test_milvus_agrees_with_the_reference(backend: Backend, flt: dict[str, Any], namespace: str | None) -> None:
    _check(backend, flt, namespace)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from((*RANGE_OPS, "eq", "x")), inner, max_size=3)
    ),
    max_leaves=6,
)
arbitrary_filters = st.one_of(
    json_values, st.dictionaries(st.sampled_from((*KEYS, "a b", 'x"]')), json_values, max_size=3)
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flt=arbitrary_filters)
def test_any_json_is_refused_or_runs_correctly(backend: Backend, flt: Any) -> None:
    """Whatever JSON a caller sends: a FilterError, or an expression Milvus runs with the reference's answer."""
    try:
        compile_filter(flt)
    except FilterError:
        return
    _check(backend, flt, None)


def test_hand_picked_cases(backend: Backend) -> None:
    cases: list[dict[str, Any]] = [
        {"tags": "red"},
        {"category": "shoes", "tags": ["sale", "x"]},
        {"category": '" or 1==1 or "'},
        {"category": {"gte": "", "lt": "\U0010ffff"}},
        {"price": {"gt": -1e308}},
        {"flag": True},
        {"flag": 1},
        {"flag": {"gte": 1}},
        {"price": 10},
        {"price": [0, "0", False]},
        {"date": {"gte": "2024-01-01"}},
        {"shop": [JS_MAX_SAFE_INTEGER, -JS_MAX_SAFE_INTEGER, 5e-324]},
        {"price": {"gt": 2, "lt": 3}},
        {},
    ]
    for flt in cases:
        _check(backend, flt, None, search=True)
        _check(backend, flt, "shop-1")


def test_the_largest_filter_allowed_runs(backend: Backend) -> None:
    """Every cap reached at once (values, text bytes, alternatives): both engines still parse and run it."""
    width = MAX_FILTER_TEXT_BYTES // MAX_FILTER_VALUES  # ASCII, so characters == bytes
    flt = {k: [f'{i:03d}" or 1==1 or "'.ljust(width, "\\") for i in range(MAX_ANY_OF)] for k in KEYS[:4]}
    flt["category"][0] = "shoes"
    _check(backend, flt, None)
    broad = {k: [*range(MAX_ANY_OF - 2), True, "red"] for k in KEYS[:4]}
    _check(backend, broad, None)


# What each engine does with the constructs compile_filter avoids; if an upgrade changes one of these,
# the compiler may be simplified (or must change). None = the expression fails.
ENGINE_FACTS: dict[str, dict[str, list[int] | None]] = {
    "lite": {
        'attrs["n"] in [1]': None,
        '0 < attrs["n"] < 2': None,
        'attrs["s"] == "\\u00e9"': None,
        'attrs["n"] in [1, 2.5]': None,
        'attrs["n"] >= 100000000000000000000': [],
        'attrs["n"] == 1': [1, 3],
        'attrs["n"] == true': [1, 3],
        'attrs["n"] != 1': [2],
    },
    "server": {
        'attrs["n"] in [1]': [1],
        '0 < attrs["n"] < 2': [1],
        'attrs["s"] == "\\u00e9"': [2],
        'attrs["n"] in [1, 2.5]': None,
        'attrs["n"] >= 100000000000000000000': None,
        'attrs["n"] == 1': [1],
        'attrs["n"] == true': [3],
        'attrs["n"] != 1': [2, 3, 4],
    },
}


def test_engine_differences_that_shaped_the_compiler(backend: Backend) -> None:
    name = f"e_{uuid.uuid4().hex[:10]}"
    facts = [
        {"id": 1, "namespace": "", "attrs": {"n": 1}},
        {"id": 2, "namespace": "", "attrs": {"n": 2, "s": "é"}},
        {"id": 3, "namespace": "", "attrs": {"n": True}},
        {"id": 4, "namespace": "", "attrs": {}},
    ]
    _create(backend.client, name, facts)
    try:
        seen: dict[str, list[int] | None] = {}
        for expr in ENGINE_FACTS[backend.kind]:
            try:
                rows = backend.client.query(name, filter=expr, output_fields=["id"], limit=100)
                seen[expr] = sorted(int(r["id"]) for r in rows)
            except MilvusException:
                seen[expr] = None
        assert seen == ENGINE_FACTS[backend.kind]
    finally:
        backend.client.drop_collection(name)


def test_reference_helpers_are_sane() -> None:
    records = [
        {"id": 1, "namespace": "", "attrs": {"a": ["x", "y"], "n": True}},
        {"id": 2, "namespace": "b", "attrs": {"a": "x", "n": 1.0}},
    ]
    assert reference(records, {"a": "x"}, None) == [1, 2]
    assert reference(records, {"n": 1}, "b") == [2]
    assert reference(records, {"n": {"gt": 0.5}}, None) == [1, 2]
    assert reference(records, {"a": {"gte": "x"}}, None) == [2]
