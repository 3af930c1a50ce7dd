"""The REST contract over real HTTP, on Milvus Lite and on the Milvus server (the `service` fixture)."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
from pathlib import Path

from tests.conftest import LiveService, photo

JS_MAX = 2**53 - 1


def add_file(svc: LiveService, data: bytes, key: str | None = None, name: str = "a.jpg", **fields: str):
    form = {"key": key} if key else {}
    form.update(fields)
    return svc.post("add/file", files={"file": (name, data)}, data=form)


def search_file(svc: LiveService, data: bytes, **fields: object) -> list[dict]:
    resp = svc.post("search/file", files={"file": ("q.jpg", data)}, data={k: str(v) for k, v in fields.items()})
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def test_add_then_search_finds_it_first_with_full_score(service: LiveService) -> None:
    for seed in range(4):
        resp = add_file(service, photo(seed), key=f"sku-{seed}", name=f"p{seed}.jpg")
        # bogv's envelope unchanged, and beside it the box the stored vector describes (here: the whole photo)
        whole = {"x": 0, "y": 0, "w": 320, "h": 240}
        assert resp.status_code == 200 and resp.json() == {"code": 200, "msg": "success", "data": True, "region": whole}
    hits = search_file(service, photo(2))
    assert [h["key"] for h in hits][0] == "sku-2"
    assert hits[0]["filepath"] == "p2.jpg"
    assert abs(hits[0]["score"] - 1.0) < 1e-4
    # bogv's fields, plus the verdict: the same bytes are an exact match (md5 itself is not exposed).
    assert set(hits[0]) == {"id", "key", "filepath", "score", "match"} and hits[0]["match"] == "exact"
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert len(hits) == 4


def test_every_input_kind_adds_and_searches(service: LiveService, tmp_path: Path) -> None:
    pool = service.runtime.settings.allowed_roots[0]
    (pool / "shelf").mkdir(exist_ok=True)
    (pool / "shelf" / "p1.png").write_bytes(photo(1, fmt="PNG"))
    b64 = base64.b64encode(photo(2)).decode()
    assert add_file(service, photo(0), key="f").status_code == 200
    assert service.post("add/path", json={"path": str(pool / "shelf" / "p1.png"), "key": "p"}).status_code == 200
    assert (
        service.post(
            "add/base64", json={"base64": "data:image/jpeg;base64," + b64, "key": "b", "imgPath": "/erp/b.jpg"}
        ).status_code
        == 200
    )
    records = {r["key"]: r for r in service.post("get/key", json={"key": "f,p,b"}).json()["data"]}
    assert records["f"]["filepath"] == "a.jpg"
    assert records["p"]["filepath"] == str(pool / "shelf" / "p1.png")
    assert records["b"]["filepath"] == "/erp/b.jpg"
    assert all(len(r["md5"]) == 32 for r in records.values())

    by_path = service.post("search/path", json={"path": str(pool / "shelf" / "p1.png"), "limit": 1}).json()
    assert [h["key"] for h in by_path["data"]] == ["p"]
    by_b64 = service.post("search/base64", json={"base64": b64, "limit": "2"}).json()
    assert by_b64["data"][0]["key"] == "b" and len(by_b64["data"]) == 2


def test_readd_same_image_and_key_is_idempotent_but_other_key_is_new(service: LiveService) -> None:
    img = photo(7)
    for _ in range(3):
        assert add_file(service, img, key="sku").json()["data"] is True
    assert service.count() == 1
    assert add_file(service, img, key="other").status_code == 200
    assert service.count() == 2


def test_concurrent_identical_adds_store_one_record(service: LiveService) -> None:
    img = photo(11)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: add_file(service, img, key="race").status_code, range(8)))
    assert codes == [200] * 8
    assert service.count() == 1


def test_key_defaults_to_md5_and_one_key_holds_many_images(service: LiveService) -> None:
    img = photo(3)
    add_file(service, img)
    md5 = hashlib.md5(img).hexdigest()
    [record] = service.post("get/key", json={"key": [md5]}).json()["data"]
    assert record["key"] == md5 and record["md5"] == md5
    for seed in (20, 21, 22):
        add_file(service, photo(seed), key="product-5")
    assert len(service.post("get/key", json={"key": "product-5"}).json()["data"]) == 3


def test_ids_are_js_safe_and_delete_by_id_counts_real_deletes(service: LiveService) -> None:
    for seed in (30, 31, 32):
        add_file(service, photo(seed), key=f"k{seed}")
    ids = [r["id"] for r in service.post("get/key", json={"key": "k30,k31,k32"}).json()["data"]]
    assert len(set(ids)) == 3 and all(isinstance(i, int) and 0 < i <= JS_MAX for i in ids)
    resp = service.post("del/id", json={"id": f"{ids[0]},{ids[1]},12345"})
    assert resp.json() == {"code": 200, "msg": "success", "data": 2}
    assert service.post("del/id", json={"id": [ids[0]]}).json()["data"] == 0
    assert service.count() == 1
    remaining = search_file(service, photo(30))
    assert [h["id"] for h in remaining] == [ids[2]]


def test_delete_by_key_removes_every_image_of_the_key_at_once(service: LiveService) -> None:
    for seed in (40, 41):
        add_file(service, photo(seed), key="gone")
    add_file(service, photo(42), key="kept")
    assert service.post("del/key", json={"key": ["gone", "never-there"]}).json()["data"] == 2
    assert service.post("del/key", json={"key": "gone"}).json()["data"] == 0
    # Read-after-delete: no search returns a deleted record.
    assert {h["key"] for h in search_file(service, photo(40))} == {"kept"}


def test_search_limit_and_min_score(service: LiveService) -> None:
    for seed in range(5):
        add_file(service, photo(50 + seed), key=f"s{seed}")
    assert len(search_file(service, photo(50), limit=2)) == 2
    best = search_file(service, photo(50), min_score=0.99999)
    assert [h["key"] for h in best] == ["s0"]


def test_count_and_probes(service: LiveService) -> None:
    assert service.count() == 0
    add_file(service, photo(60))
    assert service.count() == 1
    assert service.get("health").json()["data"] == {"status": "alive"}
    ready = service.get("ready").json()
    assert ready["code"] == 200 and ready["data"]["model"]["weights"] == "random"
    search_file(service, photo(60))
    batching = service.get("ready").json()["data"]["batching"]
    assert batching["embed"]["requests"] - ready["data"]["batching"]["embed"]["requests"] == 1
    assert batching["search"]["requests"] - ready["data"]["batching"]["search"]["requests"] == 1
    assert batching["embed"]["busy_seconds"] > ready["data"]["batching"]["embed"]["busy_seconds"]
    assert "random" in ready["msg"]


def test_concurrent_searches_each_get_exactly_their_own_answer(service: LiveService) -> None:
    # Searches arriving together share one model batch and one Milvus multi-vector search; each caller
    # must still get the answer it would get alone, with its own limit and min_score.
    for seed in range(8):
        add_file(service, photo(300 + seed), key=f"c{seed}")
    asks = [(seed, 1 + seed % 5, 0.9999 if seed % 4 == 3 else None) for seed in range(8)] * 3

    def ask(seed: int, limit: int, min_score: float | None) -> list[dict]:
        fields = {"limit": limit} | ({"min_score": min_score} if min_score is not None else {})
        return search_file(service, photo(300 + seed), **fields)

    alone = [ask(*a) for a in asks[:8]] * 3
    with concurrent.futures.ThreadPoolExecutor(len(asks)) as pool:
        together = list(pool.map(lambda a: ask(*a), asks))
    assert [[h["id"] for h in hits] for hits in together] == [[h["id"] for h in hits] for hits in alone]
    for (seed, limit, min_score), hits in zip(asks, together, strict=True):
        assert hits[0]["key"] == f"c{seed}"
        assert len(hits) == (1 if min_score else limit)
