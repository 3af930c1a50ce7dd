"""Pages of a namespace's records in id order, for reconciling a catalog with the store.

Milvus has no "order by": a 2.3 server happens to answer a query in id order, Milvus Lite does not,
and neither promises to return the *smallest* ids when a limit cuts the answer. But ids are hashes,
spread evenly over 1..2^53-1, so the next page lies in a window of ids just above `after_id` whose
width follows from how many records are left: each round queries the next window (all of its rows,
never cut by a limit), and widens the window until the page is full or the id range is exhausted.
Sorting what was found gives the page; the order is the ids', so it is stable however the store
changes between calls, and a record added meanwhile appears in a later page if its id is larger.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.store.ids import JS_MAX_SAFE_INTEGER

# Aim each window at this many times the page size, so one round usually fills the page.
WINDOW_OVERSHOOT = 2
WIDEN_FACTOR = 4

# query(expression over id, row cap) -> rows
QueryFn = Callable[[str, int], list[dict[str, Any]]]


@dataclass(frozen=True)
class Page:
    """Records in id order, and the `after_id` of the next page (None on the last one)."""

    rows: list[dict[str, Any]]
    next_after_id: int | None


def list_page(query: QueryFn, remaining: int, after_id: int, limit: int, row_cap: int) -> Page:
    """The first `limit` records with an id above `after_id`, given that `remaining` such records exist."""
    if remaining <= 0 or after_id >= JS_MAX_SAFE_INTEGER:
        return Page([], None)
    span = JS_MAX_SAFE_INTEGER - after_id
    width = max(1, span * min(1.0, WINDOW_OVERSHOOT * limit / remaining))
    low, found = after_id, []
    while len(found) < limit and low < JS_MAX_SAFE_INTEGER:
        high = min(JS_MAX_SAFE_INTEGER, low + int(width))
        rows = query(f"id > {low} and id <= {high}", row_cap)
        if len(rows) >= row_cap and high > low + 1:
            width = max(1, (high - low) // WIDEN_FACTOR)  # the window was too wide to read whole: narrow it
            continue
        found.extend(rows)
        low, width = high, width * WIDEN_FACTOR
    page = sorted(found, key=lambda r: int(r["id"]))[:limit]
    more = remaining > len(page)
    return Page(page, int(page[-1]["id"]) if more and page else None)
