"""Milvus expressions from caller values: key lists, namespaces, record attributes (`attrs`) and filters;
and the namespace scope every expression the store sends starts with. Pure: nothing here calls Milvus.

One quoting routine (quote_literal) serves every caller value that reaches an expression.

A caller never writes Milvus syntax. It sends a JSON object of conditions, and this module
builds the expression itself: attribute names come only from a strict pattern (so they are
never quoted or escaped), and every value becomes a literal (strings escaped, numbers finite,
booleans `true`/`false`), so no input can turn into an operator.

Semantics of a filter (the same on Milvus Lite 3.x and on Milvus 2.3+ servers; tests/test_filters.py
checks both against a pure-Python reference):

* `{"category": "shoes"}`: the attribute equals the value. When the stored attribute is a list of
  strings, a string condition matches if the list contains it: `{"tags": "red"}` matches
  `tags: ["red", "sale"]` (json_contains).
* `{"shop": [3, 7]}`: any of the values (each as above); the list must not be empty.
* `{"price": {"gte": 10, "lt": 100}}`: a range with `gt`, `gte`, `lt`, `lte`. Bounds are all numbers
  or all strings; strings compare by Unicode code point (so ISO dates order correctly).
* Several keys: all must hold (AND). A record without the attribute never matches.
* Numbers compare by value (`10` equals `10.0`); a string never equals a number (`"12"` is not 12).
* Booleans compare as the numbers 1 and 0: `{"in_stock": true}` also matches `in_stock: 1`, and
  `{"qty": {"gte": 1}}` matches `qty: true`. Why: Milvus Lite evaluates filters with Python
  semantics, where `True == 1`, and no operator it offers can tell them apart; the 2.3 server is
  type-strict. Emitting the extra `== 1` / `== true` terms gives one answer on both.

Differences between the engines that shaped the output (see tests/test_filters.py): Lite rejects
`in` on a JSON path, chained comparisons (`1 < x < 5`) and `\\u` escapes; the 2.3 server fails on an
`in` list mixing ints and floats, rejects integer literals beyond int64, and the engines disagree on
`!=` for a missing key. So the compiler emits only `==`, `<`, `<=`, `>`, `>=`, `json_contains`,
`json_contains_any`, `and`, `or` and parentheses, with raw (unescaped) non-ASCII characters.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from conf.errors import Conflict

ATTRS_FIELD = "attrs"
NAMESPACE_FIELD = "namespace"
DEFAULT_NAMESPACE = ""

# Attribute names are emitted inside `attrs["..."]` unescaped, so this pattern is the guarantee
# that a name can never close the bracket or the quote.
ATTR_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# Namespace names never start with '-', so TOKENS_FILE can use a lone '-' for the default namespace.
NAMESPACE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")

# The largest integer a JavaScript number holds exactly. Record ids stay at or below it; integers beyond
# it lose precision in JSON (JavaScript clients, and Milvus compares JSON numbers as doubles when types
# mix), so attribute values beyond it would match unpredictably.
JS_MAX_SAFE_INTEGER = 2**53 - 1
MAX_STRING_BYTES = 1024
MAX_LIST_ITEMS = 64
MAX_FILTER_KEYS = 16
MAX_ANY_OF = 64
MAX_FILTER_VALUES = 256
MAX_FILTER_TEXT_BYTES = 16384

RANGE_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_COMPARE = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})
FILTER_EXAMPLE = '{"category": "shoes", "shop": [3, 7], "price": {"gte": 10, "lt": 100}}'


class AttrsError(ValueError):
    """`attrs` is not an acceptable attribute object; the message says what to change."""


class FilterError(ValueError):
    """`filter` is not an acceptable filter object; the message says what to change."""


class NamespaceError(ValueError):
    """A namespace name does not match NAMESPACE_RE."""


# --- namespaces --------------------------------------------------------------------------
def check_namespace(name: object) -> str:
    """Return `name` if it is a valid namespace ("" is the default one); raise NamespaceError otherwise."""
    if name == DEFAULT_NAMESPACE:
        return DEFAULT_NAMESPACE
    if not isinstance(name, str) or not NAMESPACE_RE.fullmatch(name):
        raise NamespaceError(
            "a namespace is 1-64 characters of letters, digits, '_', '.' and '-', "
            "not starting with '-' or '.' (or \"\" for the default namespace)"
        )
    return name


def namespace_expr(namespace: str) -> str:
    """The Milvus expression selecting the records of one namespace."""
    return f"{NAMESPACE_FIELD} == {quote_literal(check_namespace(namespace))}"


def all_of(*exprs: str) -> str:
    """AND of the non-empty expressions, each parenthesised; "" when there are none."""
    parts = [f"({e})" for e in exprs if e]
    return " and ".join(parts)


# --- namespace scope ---------------------------------------------------------------------
# Collections created since namespaces exist carry `namespace` and `attrs` fields. A collection created by
# an earlier imgsim has neither; rather than refuse to start on it (its ids and records stay valid), the
# store serves it as the default namespace without attributes, and anything that needs the new fields
# (another namespace, attrs, a filter) is refused with a Conflict naming the way out: a new
# MILVUS_COLLECTION and a re-import. The `region` field (the part of the photo a record's vector
# describes) came later still and is handled the same way: without it, records describe whole images.
TENANCY_ONLY = (NAMESPACE_FIELD, ATTRS_FIELD)
REGION_FIELD = "region"


@dataclass(frozen=True)
class Layout:
    """What the collection's schema offers: tenancy fields at all, a partition key on `namespace`, a `region` field."""

    tenancy: bool
    partition_key: bool
    regions: bool


def legacy_conflict(collection: str, what: str) -> Conflict:
    """The refusal for `what` (namespaces, attrs, filters) on a collection of an earlier imgsim."""
    return Conflict(
        f"collection {collection!r} was created by an earlier imgsim without the 'namespace' and "
        f"'attrs' fields, so it serves the default namespace only, without {what}. To use namespaces, "
        "attrs and filters, set MILVUS_COLLECTION to a new name and re-import the images (python "
        "main.py import DIR, or the add endpoints); the README section 'Namespaces' explains it.",
        reason="collection_without_namespaces",
    )


def regions_conflict(collection: str) -> Conflict:
    """The refusal to store a region in a collection created before regions existed."""
    return Conflict(
        f"collection {collection!r} was created by an earlier imgsim without the 'region' field, so its "
        "records describe whole images only and an add cannot store a region (searching with a region "
        "works). Add without 'region' (or with \"whole\"), or, to store regions, set MILVUS_COLLECTION to a "
        "new name and re-import the images (python main.py import DIR, or the add endpoints); when the model "
        "changes too, 'python main.py reindex --from OLD' copies every record into the new collection.",
        reason="collection_without_regions",
    )


class Scope:
    """One namespace of one collection, checked once: every expression the store sends for it starts here.

    Built by VectorStore.scope, once per request: it raises NamespaceError for a malformed name and
    Conflict when the collection (one of an earlier imgsim) cannot serve the namespace, attributes,
    filter or stored regions asked for. Store operations then take it and check nothing again.
    """

    def __init__(
        self,
        layout: Layout,
        collection: str,
        namespace: str = DEFAULT_NAMESPACE,
        attrs: bool = False,
        filtered: bool = False,
        regions: bool = False,
    ) -> None:
        self.namespace = check_namespace(namespace)
        self.layout = layout
        self.collection = collection
        if not layout.tenancy:
            if namespace != DEFAULT_NAMESPACE:
                raise legacy_conflict(collection, "other namespaces")
            if attrs:
                raise legacy_conflict(collection, "attributes ('attrs')")
            if filtered:
                raise legacy_conflict(collection, "attributes to filter on ('filter')")
        if regions and not layout.regions:
            raise regions_conflict(collection)
        self._condition = namespace_expr(namespace) if layout.tenancy else ""

    def expr(self, *conditions: str) -> str:
        """The namespace's records that also meet every (already safe) condition."""
        return all_of(self._condition, *conditions)

    def fields(self, names: Iterable[str]) -> list[str]:
        """The fields of `names` this collection has (an older one lacks namespace and attrs, or region)."""
        return [
            n
            for n in names
            if (self.layout.tenancy or n not in TENANCY_ONLY) and (self.layout.regions or n != REGION_FIELD)
        ]

    def row_extras(self, attrs: dict[str, Any], region: dict[str, int] | None = None) -> dict[str, Any]:
        """The fields of a row to write beyond id, key, md5, filepath and vector: the tenancy fields, and the
        region ({} for the whole image: Milvus 2.3 has no nullable fields). An older collection gets only
        those it has, and refuses attributes or a region it cannot store.
        """
        extras: dict[str, Any] = {}
        if self.layout.tenancy:
            extras.update({NAMESPACE_FIELD: self.namespace, ATTRS_FIELD: attrs})
        elif attrs:
            raise legacy_conflict(self.collection, "attributes ('attrs')")
        if self.layout.regions:
            extras[REGION_FIELD] = {name: int(value) for name, value in region.items()} if region else {}
        elif region:
            raise regions_conflict(self.collection)
        return extras


# --- literals ----------------------------------------------------------------------------
def quote_literal(text: str) -> str:
    """A double-quoted Milvus string literal for `text` that both Lite and the server read back verbatim.

    Only the escapes both parsers know are used (backslash, quote, \\n, \\r, \\t); everything else,
    other control characters and non-ASCII included, is passed through raw, since Lite has no
    `\\u` escape and both accept raw characters inside a string.
    """
    return '"' + text.translate(_ESCAPES) + '"'


def key_in(keys: Iterable[str]) -> str | None:
    """The expression matching every record of these keys; None for no keys."""
    return _text_in("key", keys)


def md5_in(md5s: Iterable[str]) -> str | None:
    """The expression matching every record of these image MD5s; None for none."""
    return _text_in("md5", md5s)


def _text_in(field: str, values: Iterable[str]) -> str | None:
    unique = sorted(set(values))
    return f"{field} in [{', '.join(quote_literal(v) for v in unique)}]" if unique else None


def _number_literal(value: int | float) -> str:
    # repr of a finite float always has '.' or an exponent, which both parsers read as a float.
    return repr(float(value)) if isinstance(value, float) else str(int(value))


def _literal(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quote_literal(value)
    return _number_literal(value)


def _show(text: object, limit: int = 40) -> str:
    """A short printable rendering of caller input for error messages."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _text_problem(text: str) -> str | None:
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid Unicode text (it contains a lone surrogate such as \\ud800)"
    if size > MAX_STRING_BYTES:
        return f"is {size} bytes long; the limit is {MAX_STRING_BYTES} bytes (UTF-8)"
    return None


def _number_problem(value: int | float) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return "is not a finite number (NaN and infinity are not allowed)"
    if isinstance(value, int) and abs(value) > JS_MAX_SAFE_INTEGER:
        return f"is outside +-{JS_MAX_SAFE_INTEGER} (2^53-1), where JSON numbers stop being exact; send it as a string"
    return None


def _scalar_problem(value: object) -> str | None:
    """Why `value` is not a string, finite number or boolean; None if it is one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return _number_problem(value)
    if isinstance(value, str):
        return _text_problem(value)
    if value is None:
        return "is null; leave the attribute out instead"
    if isinstance(value, dict):
        return 'is an object; attributes are flat (e.g. {"size_eu": 42} rather than {"size": {"eu": 42}})'
    return f"has type {type(value).__name__}; use a string, number or boolean"


# --- attrs -------------------------------------------------------------------------------
def _attr_value_problem(value: object) -> str | None:
    if not isinstance(value, list):
        return _scalar_problem(value)
    if len(value) > MAX_LIST_ITEMS:
        return f"is a list of {len(value)} items; the limit is {MAX_LIST_ITEMS}"
    for i, item in enumerate(value):
        if not isinstance(item, str):
            return f'is a list whose item {i} is not a string; lists hold strings only (e.g. ["red", "sale"])'
        if (problem := _text_problem(item)) is not None:
            return f"is a list whose item {i} {problem}"
    return None


def _check_attr_name(name: object, error: type[ValueError]) -> str:
    if not isinstance(name, str) or not ATTR_NAME_RE.fullmatch(name):
        raise error(
            f"attribute name {_show(name)} is not allowed: use 1-64 characters of letters, digits and "
            "'_', not starting with a digit (e.g. \"size_eu\")"
        )
    return name


def validate_attrs(value: object, max_keys: int = 32, max_bytes: int = 4096) -> dict[str, Any]:
    """Check `attrs` from a request and return a copy safe to store in the JSON field.

    A flat JSON object: names match ATTR_NAME_RE; values are strings, finite numbers (integers within
    +-(2^53-1)), booleans, or lists of strings. At most `max_keys` attributes and `max_bytes` bytes as
    compact JSON. None (JSON null) means "no attributes". Raises AttrsError saying what to fix.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise AttrsError(
            f'attrs must be a JSON object such as {{"category": "shoes", "tags": ["red"]}}, not {type(value).__name__}'
        )
    if len(value) > max_keys:
        raise AttrsError(f"attrs has {len(value)} attributes; the limit is {max_keys}")
    clean: dict[str, Any] = {}
    for name, item in value.items():
        _check_attr_name(name, AttrsError)
        if (problem := _attr_value_problem(item)) is not None:
            raise AttrsError(f"attribute {name!r} {problem}")
        clean[name] = list(item) if isinstance(item, list) else item
    size = len(json.dumps(clean, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > max_bytes:
        raise AttrsError(
            f"attrs is {size} bytes as JSON; the limit is {max_bytes} bytes: "
            "store less, or keep long texts in your own database"
        )
    return clean


# --- filters -----------------------------------------------------------------------------
class _Budget:
    """Counts the values of one filter so a single request cannot build a huge expression."""

    def __init__(self) -> None:
        self.values = 0
        self.text_bytes = 0

    def take(self, value: object) -> None:
        """Count one value; raise FilterError once the filter is over a cap."""
        self.values += 1
        if isinstance(value, str):
            self.text_bytes += len(value.encode("utf-8"))
        if self.values > MAX_FILTER_VALUES:
            raise FilterError(f"filter has more than {MAX_FILTER_VALUES} values in all; split the search")
        if self.text_bytes > MAX_FILTER_TEXT_BYTES:
            raise FilterError(f"filter strings add up to more than {MAX_FILTER_TEXT_BYTES} bytes; shorten them")


def _path(name: str) -> str:
    return f'{ATTRS_FIELD}["{name}"]'


def _checked_scalar(name: str, value: object, budget: _Budget) -> str | int | float | bool:
    if isinstance(value, (list, dict)):
        raise FilterError(
            f"filter on {name!r}: each alternative of a list must be a string, number or boolean "
            "(no nested lists or objects)"
        )
    if (problem := _scalar_problem(value)) is not None:
        raise FilterError(f"filter on {name!r}: the value {problem}")
    budget.take(value)
    return value  # type: ignore[return-value]  # _scalar_problem accepted it, so it is a scalar


def _equal_terms(name: str, value: str | int | float | bool) -> list[str]:
    """Terms (to be OR-ed) that match a record whose attribute equals `value` (see the module docstring)."""
    path = _path(name)
    terms = [f"{path} == {_literal(value)}"]
    if isinstance(value, str):
        terms.append(f"json_contains({path}, {_literal(value)})")
    elif isinstance(value, bool):
        terms.append(f"{path} == {int(value)}")  # the server is type-strict; Lite already treats true as 1
    elif value in (0, 1):
        terms.append(f"{path} == {'true' if value == 1 else 'false'}")
    return terms


def _any_of(name: str, values: list[Any], budget: _Budget) -> str:
    if not values:
        raise FilterError(f"filter on {name!r}: an empty list matches nothing; leave the condition out instead")
    if len(values) > MAX_ANY_OF:
        raise FilterError(f"filter on {name!r}: {len(values)} alternatives; the limit is {MAX_ANY_OF}")
    terms: list[str] = []
    strings: list[str] = []
    for value in values:
        scalar = _checked_scalar(name, value, budget)
        if isinstance(scalar, str):
            strings.append(scalar)
            terms.append(f"{_path(name)} == {_literal(scalar)}")
        else:
            terms.extend(_equal_terms(name, scalar))
    if strings:
        # One json_contains_any for all strings rather than one json_contains each: shorter to parse.
        terms.append(f"json_contains_any({_path(name)}, [{', '.join(_literal(s) for s in strings)}])")
    return " or ".join(dict.fromkeys(terms))  # drop repeated terms, keep the order


def _range_bounds(name: str, ops: dict[Any, Any], budget: _Budget) -> list[tuple[str, str | int | float]]:
    if not ops:
        raise FilterError(f"filter on {name!r}: an empty range; give at least one of gt, gte, lt, lte")
    bounds = []
    for op, bound in ops.items():
        if op not in RANGE_OPS:
            raise FilterError(
                f"filter on {name!r}: {_show(op)} is not a range operator; use gt, gte, lt or lte "
                "(an object value is always a range)"
            )
        if isinstance(bound, bool) or not isinstance(bound, (int, float, str)):
            raise FilterError(f"filter on {name!r}: range bound {op!r} must be a number or a string")
        bounds.append((op, _checked_scalar(name, bound, budget)))
    if len({isinstance(b, str) for _, b in bounds}) > 1:
        raise FilterError(f"filter on {name!r}: range bounds must be all numbers or all strings")
    return bounds


def _in_range(number: int, bounds: list[tuple[str, Any]]) -> bool:
    return all(_COMPARE[op](number, bound) for op, bound in bounds)


def _range(name: str, ops: dict[Any, Any], budget: _Budget) -> str:
    bounds = _range_bounds(name, ops, budget)
    path = _path(name)
    expr = " and ".join(f"{path} {RANGE_OPS[op]} {_literal(b)}" for op, b in bounds)
    if isinstance(bounds[0][1], str):
        return expr
    # Booleans count as 1 and 0 (module docstring): Lite does so by itself, the server needs the terms.
    extra = [f"{path} == {lit}" for lit, number in (("true", 1), ("false", 0)) if _in_range(number, bounds)]
    return " or ".join([f"({expr})", *extra]) if extra else expr


def _condition(name: str, cond: object, budget: _Budget) -> str:
    if isinstance(cond, list):
        return _any_of(name, cond, budget)
    if isinstance(cond, dict):
        return _range(name, cond, budget)
    scalar = _checked_scalar(name, cond, budget)
    return " or ".join(_equal_terms(name, scalar))


def compile_filter(value: object) -> str:
    """The Milvus expression (over the JSON field `attrs`) for a caller's filter object; "" if it is empty.

    `value` is the parsed JSON: an object mapping attribute names to a value (equality), a non-empty
    list of values (any of them) or an object of gt/gte/lt/lte bounds (a range); the conditions are
    AND-ed. None or {} means no filter. Anything else, notably a string (a raw Milvus expression is
    never accepted), raises FilterError with an example of the expected shape.
    """
    if value is None:
        return ""
    if not isinstance(value, dict):
        kind = "a string" if isinstance(value, str) else type(value).__name__
        raise FilterError(
            f"filter must be a JSON object of attribute conditions such as {FILTER_EXAMPLE}, not {kind} "
            "(Milvus expressions are not accepted)"
        )
    if len(value) > MAX_FILTER_KEYS:
        raise FilterError(f"filter has {len(value)} conditions; the limit is {MAX_FILTER_KEYS}")
    budget = _Budget()
    parts = [_condition(_check_attr_name(name, FilterError), cond, budget) for name, cond in value.items()]
    return all_of(*parts)
