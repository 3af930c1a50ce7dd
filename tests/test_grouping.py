"""The pure parts of one-hit-per-key search and of id-ordered paging, against reference answers (no Milvus):
native grouping trusted only when it holds up, growing over-fetch rounds, and id windows that narrow and widen."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from service.store.connection import grouping_supported
from service.store.filters import JS_MAX_SAFE_INTEGER
from service.store.records import list_page
from service.store.search import MAX_GROUP_FETCH, Hit, best_per_key, grouped_search


def ranked(keys: list[str]) -> list[Hit]:
    return [Hit(i + 1, key, "", round(1 - i / 1000, 6)) for i, key in enumerate(keys)]


class FakeMilvus:
    """Plain top-k over fixed hits; its grouping search is Lite's (group within ten times the limit) or none."""

    def __init__(self, hits: list[Hit], grouping: str) -> None:
        self.hits, self.grouping, self.calls = hits, grouping, []

    def search(self, top_k: int, native: bool) -> list[Hit]:
        self.calls.append((top_k, native))
        if native and self.grouping == "lite":
            return best_per_key(self.hits[: top_k * 10])[:top_k]
        return self.hits[:top_k]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from("abcdefghij"), max_size=300),
    st.integers(1, 12),
    st.sampled_from(["lite", "none"]),
    st.none() | st.floats(0.7, 1.0),
)
def test_grouped_search_equals_best_per_key_of_everything(
    keys: list[str], limit: int, grouping: str, min_score: float | None
) -> None:
    hits = ranked(keys)
    milvus = FakeMilvus(hits, grouping)
    got, still_native = grouped_search(milvus.search, limit, min_score, native=True)
    want = [h for h in best_per_key(hits)[:limit] if min_score is None or h.score >= min_score]
    assert got == want
    # A server that ignores group_by_field is caught by its repeated keys, and not asked again.
    assert still_native == (grouping == "lite" or len(set(k for k in keys[:limit])) == len(keys[:limit]))
    assert all(top_k <= MAX_GROUP_FETCH for top_k, _ in milvus.calls)


def test_over_fetch_stops_at_the_largest_top_k() -> None:
    hits = ranked(["many"] * 20000 + ["rare"])
    milvus = FakeMilvus(hits, "none")
    got, _ = grouped_search(milvus.search, 2, None, native=False)
    assert [h.key for h in got] == ["many"] and milvus.calls[-1] == (MAX_GROUP_FETCH, False)


def test_grouping_support_by_version() -> None:
    assert grouping_supported("milvus_lite-3.2.2") and grouping_supported("v2.4.0") and grouping_supported("v2.5.4")
    assert not grouping_supported("v2.3.5-lite") and not grouping_supported("") and not grouping_supported("x")


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 400), st.integers(1, 50), st.integers(0, 3), st.randoms(use_true_random=False))
def test_list_page_is_the_next_ids_in_order(n: int, limit: int, skip: int, rng: random.Random) -> None:
    ids = sorted(rng.sample(range(1, JS_MAX_SAFE_INTEGER), n)) if rng.random() < 0.8 else list(range(1, n + 1))
    after = ids[skip * limit - 1] if 0 < skip * limit <= len(ids) else 0
    cap = 64

    def query(expr: str, limit_: int) -> list[dict]:
        low, high = (int(part.split()[-1]) for part in expr.split(" and "))
        rows = [{"id": i} for i in ids if low < i <= high]
        rng.shuffle(rows)  # Milvus promises no order
        return rows[:limit_]

    remaining = sum(1 for i in ids if i > after)
    page = list_page(query, remaining, after, limit, cap)
    want = [i for i in ids if i > after][:limit]
    assert [r["id"] for r in page.rows] == want
    assert page.next_after_id == (want[-1] if remaining > len(want) else None)
