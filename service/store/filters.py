"""Milvus filter expressions built from caller text: every value a quoted literal, never syntax."""

from __future__ import annotations

from collections.abc import Iterable


def quote(value: str) -> str:
    """A Milvus filter-expression string literal for `value`, so user text can never become syntax."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def key_in(keys: Iterable[str]) -> str | None:
    """The expression matching every record of these keys; None for no keys."""
    return _text_in("key", keys)


def md5_in(md5s: Iterable[str]) -> str | None:
    """The expression matching every record of these image MD5s; None for none."""
    return _text_in("md5", md5s)


def _text_in(field: str, values: Iterable[str]) -> str | None:
    unique = sorted(set(values))
    return f"{field} in [{', '.join(quote(v) for v in unique)}]" if unique else None
