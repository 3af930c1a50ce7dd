"""Milvus filter expressions built from caller text: every value a quoted literal, never syntax."""

from __future__ import annotations

from collections.abc import Iterable


def quote(value: str) -> str:
    """A Milvus filter-expression string literal for `value`, so user text can never become syntax."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def key_in(keys: Iterable[str]) -> str | None:
    """The expression matching every record of these keys; None for no keys."""
    unique = sorted(set(keys))
    return f"key in [{', '.join(quote(k) for k in unique)}]" if unique else None
