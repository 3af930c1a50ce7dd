"""The values the store takes and gives: a record to write, a search query and hit, and stored rows as dicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.store.filters import DEFAULT_NAMESPACE

# The scalar fields of a stored record, in the order answers list them.
RECORD_FIELDS = ("id", "namespace", "key", "md5", "filepath", "attrs")
HIT_FIELDS = ("key", "filepath", "md5", "attrs")


@dataclass(frozen=True)
class Record:
    """One image to store: the caller's key, the image MD5, where it came from, and its vector.

    `attrs` None means "keep what is stored" when the record exists already ({} for a new one);
    a dict replaces the stored attributes.
    """

    key: str
    md5: str
    filepath: str
    vector: np.ndarray
    namespace: str = DEFAULT_NAMESPACE
    attrs: dict[str, Any] | None = None


@dataclass(frozen=True)
class Hit:
    """One search result; `attrs` is {} for a record without attributes."""

    id: int
    key: str
    filepath: str
    score: float
    md5: str = ""  # of the stored image's bytes: tells an exact copy of the query from a near one
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Query:
    """One vector search: the `limit` best hits of a namespace, only those scoring at least `min_score`.

    `filter` is an expression built by service.store.filters (never caller text); `exclude_id` leaves
    one record out (a search by a stored record); `group_by_key` keeps each key's best hit only, and
    `limit` then counts keys.
    """

    vector: np.ndarray
    limit: int
    min_score: float | None = None
    namespace: str = DEFAULT_NAMESPACE
    filter: str = ""
    exclude_id: int | None = None
    group_by_key: bool = False


def public_record(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as answers show it: id, key, filepath, md5 and attrs ({} when it has none)."""
    return {"id": int(row["id"]), "key": row["key"], "filepath": row["filepath"], "md5": row["md5"],
            "attrs": row.get("attrs") or {}}


def hit_of(raw: dict[str, Any]) -> Hit:
    """A Milvus search hit as a Hit."""
    entity = raw["entity"]
    return Hit(id=int(raw["id"]), key=entity["key"], filepath=entity["filepath"],
               score=round(float(raw["distance"]), 6), md5=entity.get("md5", ""), attrs=entity.get("attrs") or {})
