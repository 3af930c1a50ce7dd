"""What integrators build catalogs with, on Milvus Lite and on the Milvus server: attributes and filters, one hit
per key, search by a stored record, listing, batch add, syncing a key, and the duplicate policy."""

from __future__ import annotations

import base64
import concurrent.futures
import io
from collections.abc import Callable

import pytest
from PIL import Image

from tests.conftest import LiveService, photo
from tests.test_hostile_input import expect, ok

SMALL = (64, 48)


def b64(seed: int) -> str:
    return base64.b64encode(photo(seed, size=SMALL)).decode()


def add(svc: LiveService, seed: int, key: str, **fields: object) -> dict:
    return ok(svc.post("add/base64", json={"base64": b64(seed), "key": key, **fields}))


def search(svc: LiveService, seed: int, **fields: object) -> list[dict]:
    return ok(svc.post("search/base64", json={"base64": b64(seed), "limit": 50, **fields}))["data"]


SHOES = {"category": "shoes", "price": 20, "tags": ["red", "sale"], "in_stock": True}
SHIRTS = {"category": "shirts", "price": 120.5, "tags": ["blue"], "in_stock": False}
TRICKY = {"category": '" or 1==1 or "', "price": 5, "note": 'x") or (id > 0'}


def test_attrs_are_stored_returned_and_filtered(service: LiveService) -> None:
    svc = service
    for seed, key, attrs in ((1, "shoe", SHOES), (2, "shirt", SHIRTS), (3, "tricky", TRICKY)):
        add(svc, seed, key, attrs=attrs)
    add(svc, 4, "plain")
    records = {r["key"]: r for r in ok(svc.post("get/key", json={"key": "shoe,shirt,tricky,plain"}))["data"]}
    assert records["shoe"]["attrs"] == SHOES and records["tricky"]["attrs"] == TRICKY
    assert "attrs" not in records["plain"]  # a record without attributes keeps bogv's shape
    hits = {h["key"]: h for h in search(svc, 1)}
    assert hits["shirt"]["attrs"] == SHIRTS and set(hits["plain"]) == {"id", "key", "filepath", "score", "match"}
    cases = [
        ({"category": "shoes"}, {"shoe"}),
        ({"price": {"gte": 10, "lt": 100}}, {"shoe"}),
        ({"tags": "red"}, {"shoe"}),
        ({"category": ["shoes", "shirts"]}, {"shoe", "shirt"}),
        ({"in_stock": True}, {"shoe"}),
        ({"in_stock": False}, {"shirt"}),
        ({"price": {"lte": 5}}, {"tricky"}),
        ({"category": "shoes", "price": {"gt": 50}}, set()),
        ({"missing": 1}, set()),
        # Values that look like Milvus syntax stay values: they match only records holding them verbatim.
        ({"category": '" or 1==1 or "'}, {"tricky"}),
        ({"note": 'x") or (id > 0'}, {"tricky"}),
        ({"category": 'x" or key != "'}, set()),
        ({"category": "shoes\\"}, set()),
    ]
    for condition, keys in cases:
        assert {h["key"] for h in search(svc, 2, filter=condition)} == keys, condition
    # In a form, filter and attrs are JSON text; booleans are true/false.
    ok(
        svc.post(
            "add/file",
            files={"file": ("f.jpg", photo(5, size=SMALL))},
            data={"key": "form", "attrs": '{"category": "boots"}'},
        )
    )
    form_hits = ok(
        svc.post(
            "search/file",
            files={"file": ("q.jpg", photo(5, size=SMALL))},
            data={"filter": '{"category": "boots"}', "group_by_key": "true"},
        )
    )["data"]
    assert [(h["key"], h["attrs"]) for h in form_hits] == [("form", {"category": "boots"})]
    # Re-adding a stored image with new attrs replaces them; without attrs they are kept.
    add(svc, 1, "shoe", attrs={"category": "sneakers"})
    add(svc, 1, "shoe", imgPath="/moved.jpg")
    [shoe] = ok(svc.post("get/key", json={"key": "shoe"}))["data"]
    assert shoe["attrs"] == {"category": "sneakers"} and shoe["filepath"] == "/moved.jpg"
    assert svc.count() == 5


def test_bad_attrs_and_filters_are_400_naming_the_field(lite_service: LiveService) -> None:
    svc = lite_service
    add(svc, 6, "target", attrs={"a": 1})
    for attrs, words in (
        ("category=shoes", ["'attrs'", "not JSON"]),
        ([1], ["'attrs'", "JSON object"]),
        ({"a b": 1}, ["'attrs'", "name"]),
        ({"a": {"b": 1}}, ["'attrs'", "flat"]),
        ({"a": None}, ["'attrs'", "null"]),
        ({f"k{i}": 1 for i in range(40)}, ["'attrs'", "32"]),
    ):
        expect(svc.post("add/base64", json={"base64": b64(6), "attrs": attrs}), 400, *words)
    for bad, words in (
        ('category == "shoes"', ["'filter'", "Milvus expressions are not accepted"]),
        (["a"], ["'filter'", "JSON object"]),
        ({"a": []}, ["'filter'", "empty list"]),
        ({"a": {"like": "x%"}}, ["'filter'", "range operator"]),
        ({"a": {"gt": True}}, ["'filter'"]),
        ({"a;drop": 1}, ["'filter'", "name"]),
        ({"a": [[1]]}, ["'filter'", "nested"]),
    ):
        expect(svc.post("search/base64", json={"base64": b64(6), "filter": bad}), 400, *words)
    expect(svc.post("search/base64", json={"base64": b64(6), "group_by_key": "yes"}), 400, "'group_by_key'")
    expect(svc.post("add/base64", json={"base64": b64(6), "on_duplicate": "ignore"}), 400, "'on_duplicate'")
    expect(svc.post("search/id", json={"id": 1, "include_self": 1}), 400, "'include_self'")
    assert svc.count() == 1


def _grouped_reference(svc: LiveService, seed: int, limit: int) -> list[tuple[str, int]]:
    """Each key's best hit, from one plain search over everything."""
    best: dict[str, int] = {}
    for hit in search(svc, seed, limit=100):
        best.setdefault(hit["key"], hit["id"])
    return list(best.items())[:limit]


def test_group_by_key_gives_the_same_answer_on_lite_and_on_the_server(
    start_service: Callable[..., LiveService], request: pytest.FixtureRequest
) -> None:
    answers = []
    for overrides in ({}, {"milvus_uri": request.getfixturevalue("milvus_server")}):
        svc = start_service(**overrides)
        # One key holds most images, so a plain top-k is mostly that key and grouping must look further.
        items = [{"base64": b64(1000 + i), "key": "many"} for i in range(40)]
        items += [{"base64": b64(1100 + i), "key": f"single-{i}", "attrs": {"odd": i % 2}} for i in range(4)]
        assert all(r["code"] == 200 for r in ok(svc.post("add/batch", json={"items": items}))["data"])
        answer: dict[object, list] = {}
        for limit in (1, 3, 5, 10):
            hits = search(svc, 2000, limit=limit, group_by_key=True)
            assert [(h["key"], h["id"]) for h in hits] == _grouped_reference(svc, 2000, limit), limit
            answer[limit] = [(h["key"], h["id"], round(h["score"], 4)) for h in hits]
        answer["filtered"] = [h["key"] for h in search(svc, 2000, limit=2, group_by_key=True, filter={"odd": 1})]
        floor = search(svc, 2000, limit=10, group_by_key=True)[2]["score"]
        answer["min_score"] = [h["key"] for h in search(svc, 2000, limit=10, group_by_key=True, min_score=floor)]
        assert (
            answer["filtered"]
            == [k for k, _i in _grouped_reference(svc, 2000, 10) if k in ("single-1", "single-3")][:2]
        )
        assert len(answer["min_score"]) == 3
        answers.append(answer)
    assert answers[0] == answers[1]


def test_search_by_stored_id(service: LiveService) -> None:
    svc = service
    for seed in range(3):
        add(svc, 10 + seed, f"s{seed}")
    add(svc, 13, "s0")
    ids = {r["id"]: r["key"] for r in ok(svc.post("get/key", json={"key": "s0,s1,s2"}))["data"]}
    rid = next(i for i, k in ids.items() if k == "s1")
    hits = ok(svc.post("search/id", json={"id": rid}))["data"]
    assert rid not in [h["id"] for h in hits] and len(hits) == 3
    with_self = ok(svc.post("search/id", json={"id": str(rid), "include_self": True, "limit": 2}))["data"]
    assert with_self[0]["id"] == rid and with_self[0]["score"] > 0.9999 and len(with_self) == 2
    grouped = ok(svc.post("search/id", json={"id": rid, "group_by_key": True}))["data"]
    assert sorted(h["key"] for h in grouped) == ["s0", "s2"]
    expect(svc.post("search/id", json={"id": 12345}), 404, "no record with id 12345")
    expect(svc.post("search/id", json={"id": rid, "namespace": "elsewhere"}), 404, "no record")
    for bad in (None, "x", 0, [rid], 2**53, True):
        expect(svc.post("search/id", json={"id": bad}), 400, "'id'")


def test_list_pages_through_a_namespace_in_id_order(service: LiveService) -> None:
    svc = service
    items = [{"base64": b64(200 + i), "key": f"p{i}", "attrs": {"i": i}} for i in range(23)]
    ok(svc.post("add/batch", json={"items": items}))
    ok(svc.post("add/base64", json={"base64": b64(300), "key": "elsewhere", "namespace": "other"}))
    seen, after, pages = [], 0, 0
    while True:
        page = ok(svc.post("list", json={"after_id": after, "limit": 7}))["data"]
        pages += 1
        seen += page["records"]
        if page["next_after_id"] is None:
            break
        after = page["next_after_id"]
        assert after == page["records"][-1]["id"]
    assert pages == 4 and [r["id"] for r in seen] == sorted(r["id"] for r in seen)
    assert sorted(r["key"] for r in seen) == sorted(f"p{i}" for i in range(23))
    assert all(
        set(r) == {"id", "key", "filepath", "md5", "attrs", "region"}
        and r["attrs"] == {"i": int(r["key"][1:])}
        and r["region"] is None  # added without a region: the whole image
        for r in seen
    )
    assert ok(svc.post("list", json={"after_id": seen[-1]["id"]}))["data"] == {"records": [], "next_after_id": None}
    assert [r["key"] for r in ok(svc.post("list", data={"namespace": "other"}))["data"]["records"]] == ["elsewhere"]
    for field, bad in (("after_id", -1), ("after_id", "x"), ("limit", 0), ("limit", 1001)):
        expect(svc.post("list", json={field: bad}), 400, f"'{field}'")


def test_batch_answers_each_item_as_a_single_add_would(service: LiveService) -> None:
    svc = service
    outside = str(svc.runtime.settings.allowed_roots[0].parent / "outside.jpg")
    items = [
        {"base64": b64(20), "key": "b1", "attrs": {"n": 1}},
        {"base64": "!!!"},
        {"path": outside},
        {"base64": base64.b64encode(b"not an image").decode()},
        {"base64": b64(20), "key": "b1"},
        {"url": "http://127.0.0.1:1/x.jpg"},
        {"base64": b64(21), "key": "b2"},
        "not an object",
        {"base64": b64(22), "url": "http://127.0.0.1/x.jpg"},
        {"key": "no image"},
    ]
    results = ok(svc.post("add/batch", json={"items": items}))["data"]
    assert [r["code"] for r in results] == [200, 400, 403, 415, 200, 400, 200, 400, 400, 400]
    assert [r["created"] for r in results] == [True] + [False] * 5 + [True, False, False, False]
    assert results[0]["id"] == results[4]["id"] and results[1]["id"] is None
    for item, result in zip(items[1:4] + items[5:6], results[1:4] + results[5:6], strict=True):
        kind = next(k for k in ("base64", "path", "url") if k in item)
        single = svc.post(f"add/{kind}", json=item).json()
        assert (result["code"], result["msg"]) == (single["code"], single["msg"]), item
    assert svc.count() == 2
    too_many = [{"base64": "x"}] * (svc.runtime.settings.max_batch_items + 1)
    for body, words in (
        ({"items": too_many}, ["at most 100", "MAX_BATCH_ITEMS"]),
        ({"items": []}, ["required"]),
        ({"items": {"base64": "x"}}, ["array"]),
        ({}, ["'items' is required"]),
    ):
        expect(svc.post("add/batch", json=body), 400, *words)


def test_set_key_makes_a_key_hold_exactly_the_listed_images(service: LiveService) -> None:
    svc = service
    ok(svc.post("add/batch", json={"items": [{"base64": b64(30 + i), "key": "P"} for i in range(3)]}))
    add(svc, 30, "other-product")
    synced = ok(svc.post("set/key", json={"key": "P", "items": [{"base64": b64(30)}, {"base64": b64(33)}]}))["data"]
    assert (synced["added"], synced["kept"], synced["deleted"]) == (1, 1, 2)
    assert [i["code"] for i in synced["items"]] == [200, 200]
    md5s = {r["md5"] for r in ok(svc.post("get/key", json={"key": "P"}))["data"]}
    assert len(md5s) == 2 and svc.count() == 3
    # One item failing: the others are added, nothing of the key is deleted.
    failing = ok(svc.post("set/key", json={"key": "P", "items": [{"base64": b64(34)}, {"base64": "!!"}]}))["data"]
    assert (failing["added"], failing["kept"], failing["deleted"]) == (1, 0, 0)
    assert [i["code"] for i in failing["items"]] == [200, 400]
    assert len(ok(svc.post("get/key", json={"key": "P"}))["data"]) == 3
    expect(svc.post("set/key", json={"items": [{"base64": b64(30)}]}), 400, "'key' is required")
    expect(svc.post("set/key", json={"key": "P", "items": []}), 400, "'items' is required")
    mixed = ok(svc.post("set/key", json={"key": "P", "items": [{"base64": b64(30), "key": "Q"}]}))["data"]
    assert mixed["items"][0]["code"] == 400 and mixed["deleted"] == 0


def _png_of(seed: int) -> str:
    """The same pixels as b64(seed), re-encoded losslessly: another MD5, a score of 1.0."""
    img = Image.open(io.BytesIO(photo(seed, size=SMALL)))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize("backend", ["lite", pytest.param("server", marks=pytest.mark.server)])
def test_on_duplicate_skip_and_reject(
    backend: str, start_service: Callable[..., LiveService], request: pytest.FixtureRequest
) -> None:
    overrides = {"milvus_uri": request.getfixturevalue("milvus_server")} if backend == "server" else {}
    svc = start_service(duplicate_score=0.9999, **overrides)
    add(svc, 40, "first")
    [first] = ok(svc.post("get/key", json={"key": "first"}))["data"]
    skipped = svc.post("add/base64", json={"base64": b64(40), "key": "second", "on_duplicate": "skip"}).json()
    assert (
        skipped["code"] == 200
        and skipped["data"] == {**first, "attrs": {}, "region": None}
        and "skipped" in skipped["msg"]
    )
    rejected = svc.post("add/base64", json={"base64": _png_of(40), "key": "third", "on_duplicate": "reject"})
    assert rejected.status_code == 409 and rejected.json()["data"]["id"] == first["id"]
    assert "already stored under key 'first'" in rejected.json()["msg"]
    assert add(svc, 40, "first", on_duplicate="reject")["data"] is True  # its own key: idempotent, not a duplicate
    assert add(svc, 41, "other", on_duplicate="reject")["data"] is True  # another picture
    assert add(svc, 40, "first", on_duplicate="reject", namespace="shop-2")["data"] is True  # another namespace
    assert svc.count() == 2
    # Identical adds racing under different keys: exactly one is stored (the write lock covers check and write).
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda i: svc.post(
                    "add/base64", json={"base64": b64(42), "key": f"race-{i}", "on_duplicate": "reject"}
                ),
                range(8),
            )
        )
    assert sorted(a.status_code for a in answers) == [200] + [409] * 7
    batch = ok(
        svc.post(
            "add/batch",
            json={
                "on_duplicate": "skip",
                "items": [
                    {"base64": b64(43), "key": "b1"},
                    {"base64": b64(43), "key": "b2"},
                    {"base64": b64(40), "key": "b3"},
                ],
            },
        )
    )
    assert [(r["code"], r["created"]) for r in batch["data"]] == [(200, True), (200, False), (200, False)]
    assert batch["data"][2]["id"] == first["id"] and "skipped" in batch["data"][2]["msg"]
    assert add(svc, 40, "allowed")["data"] is True  # allow (the default) stores it anyway
    assert svc.count() == 5
