"""Namespaces bound to tokens (TOKENS_FILE), on Milvus Lite and on the Milvus server: a token of one tenant can
never read, count, list, search, delete or overwrite another tenant's records, on any endpoint, whatever ids
or keys it sends; and a collection created before namespaces existed keeps working in the default one."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from service.store.connection import DataType, MilvusClient
from service.store.records import derive_id
from tests.conftest import LiveService, photo
from tests.procs import wait_until
from tests.test_hostile_input import expect, ok

ADMIN, SHOP_A, SHOP_B, READER_A, DEFAULT_WRITER = "adm-0", "tok-a", "tok-b", "read-a", "dflt-w"
TOKENS = f"""# token namespace rights
{ADMIN} * admin
sha256:{hashlib.sha256(SHOP_A.encode()).hexdigest()} shop-a write
{SHOP_B} shop-b write   # a comment after the fields
{READER_A} shop-a read
{DEFAULT_WRITER} - write
"""


def b64(seed: int) -> str:
    return base64.b64encode(photo(seed, size=(96, 72))).decode()


def as_(svc: LiveService, token: str, path: str, **kwargs: object):
    return svc.post(path, headers={"token": token}, **kwargs)


@pytest.fixture(params=["lite", pytest.param("server", marks=pytest.mark.server)])
def tenants(request: pytest.FixtureRequest, start_service: Callable[..., LiveService], tmp_path: Path) -> LiveService:
    """The service with TOKENS_FILE, on Milvus Lite and on the Milvus server."""
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS, encoding="utf-8")
    overrides: dict[str, object] = {"tokens_file": tokens}
    if request.param == "server":
        overrides["milvus_uri"] = request.getfixturevalue("milvus_server")
    return start_service(**overrides)


def test_tenant_isolation_on_every_endpoint(tenants: LiveService) -> None:
    svc = tenants
    store = svc.runtime.store
    # Milvus Lite keeps rows upserted into a partition-key collection where a namespace filter finds them; the
    # 2.3.5 server does not (the upsert probe of service.store.connection), so there namespaces are a filter.
    assert store.layout.tenancy and store.layout.partition_key == store.server_version.startswith("milvus_lite")
    for token, key, seed in ((SHOP_A, "k1", 1), (SHOP_A, "k2", 2), (SHOP_B, "k1", 1), (DEFAULT_WRITER, "k1", 1)):
        ok(as_(svc, token, "add/base64", json={"base64": b64(seed), "key": key, "attrs": {"shop": token}}))
    a_ids = {r["key"]: r["id"] for r in ok(as_(svc, SHOP_A, "get/key", json={"key": "k1,k2"}))["data"]}
    [b_rec] = ok(as_(svc, SHOP_B, "get/key", json={"key": "k1,k2"}))["data"]
    assert b_rec["id"] not in a_ids.values() and b_rec["attrs"] == {"shop": SHOP_B}  # same (key, image): two records
    [d_rec] = ok(as_(svc, ADMIN, "get/key", json={"key": "k1"}))["data"]
    assert d_rec["id"] == derive_id("k1", d_rec["md5"])  # the default namespace keeps the ids of before

    # count (GET and POST), list, search, search/id: each namespace sees only its own records.
    counts = {t: ok(as_(svc, t, "count"))["data"] for t in (SHOP_A, SHOP_B, READER_A, DEFAULT_WRITER, ADMIN)}
    assert counts == {SHOP_A: 2, SHOP_B: 1, READER_A: 2, DEFAULT_WRITER: 1, ADMIN: 1}
    assert ok(svc.get("api/image/sim/count", headers={"token": SHOP_B}))["data"] == 1
    assert ok(as_(svc, ADMIN, "count", json={"namespace": "shop-a"}))["data"] == 2
    assert ok(as_(svc, ADMIN, "count", json={"namespace": "nobody"}))["data"] == 0
    listed = ok(as_(svc, SHOP_B, "list", json={"limit": 10}))["data"]
    assert [r["id"] for r in listed["records"]] == [b_rec["id"]] and listed["next_after_id"] is None
    hits = ok(as_(svc, SHOP_B, "search/base64", json={"base64": b64(2), "limit": 10}))["data"]
    assert [h["id"] for h in hits] == [b_rec["id"]]
    for rid in a_ids.values():
        expect(as_(svc, SHOP_B, "search/id", json={"id": rid}), 404, "no record with id")
        expect(svc.get(f"api/image/sim/thumb/{rid}", headers={"token": SHOP_B}), 404, "no record with id")
        assert svc.get(f"api/image/sim/thumb/{rid}", headers={"token": READER_A}).status_code == 200
        assert svc.get(f"api/image/sim/thumb/{rid}?namespace=shop-a", headers={"token": ADMIN}).status_code == 200
        expect(svc.get(f"api/image/sim/thumb/{rid}", headers={"token": ADMIN}), 404, "no record with id")
    assert [h["id"] for h in ok(as_(svc, READER_A, "search/id", json={"id": a_ids["k1"]}))["data"]] == [a_ids["k2"]]

    # Writes: B deleting or overwriting A's ids and keys changes nothing of A's.
    assert ok(as_(svc, SHOP_B, "del/id", json={"id": list(a_ids.values())}))["data"] == 0
    assert ok(as_(svc, SHOP_B, "del/key", json={"key": "k2"}))["data"] == 0
    ok(as_(svc, SHOP_B, "add/base64", json={"base64": b64(2), "key": "k2", "imgPath": "/b/k2.jpg"}))
    batch = ok(as_(svc, SHOP_B, "add/batch", json={"items": [{"base64": b64(1), "key": "k1", "attrs": {"x": 1}}]}))
    assert batch["data"][0]["id"] == b_rec["id"]
    synced = ok(as_(svc, SHOP_B, "set/key", json={"key": "k1", "items": [{"base64": b64(3)}]}))["data"]
    assert (synced["added"], synced["kept"], synced["deleted"]) == (1, 0, 1)
    a_after = ok(as_(svc, SHOP_A, "get/key", json={"key": "k1,k2"}))["data"]
    assert {r["key"]: r["id"] for r in a_after} == a_ids
    assert all(r["attrs"] == {"shop": SHOP_A} and r["filepath"] == "" for r in a_after)
    assert ok(as_(svc, SHOP_A, "count"))["data"] == 2 and ok(as_(svc, ADMIN, "count"))["data"] == 1

    # Duplicate scans: the same pictures are in A, B and the default namespace; a scan groups only its own.
    ok(as_(svc, SHOP_A, "add/base64", json={"base64": b64(1), "key": "k1-again"}))
    [again] = ok(as_(svc, SHOP_A, "get/key", json={"key": "k1-again"}))["data"]
    scans = {}
    for token in (SHOP_A, SHOP_B):
        answer = as_(svc, token, "duplicates/scan", json={"min_score": 1.0})
        assert answer.status_code == 202, answer.text
        scans[token] = answer.json()["data"]["job"]
    for token, job in scans.items():
        scan_path = f"api/image/sim/duplicates/scan/{job}"
        wait_until(lambda p=scan_path, t=token: ok(svc.get(p, headers={"token": t}))["data"]["state"] == "done", 60)
    [group] = ok(as_(svc, READER_A, "duplicates", json={}))["data"]["groups"]
    assert {r["id"] for r in group["records"]} == {a_ids["k1"], again["id"]}
    b_scan = ok(svc.get(f"api/image/sim/duplicates/scan/{scans[SHOP_B]}", headers={"token": SHOP_B}))["data"]
    assert (b_scan["records_total"], b_scan["groups"]) == (2, 0)  # B's k2 is A's k2's picture: not a group of B's
    assert ok(as_(svc, SHOP_B, "duplicates", json={}))["data"]["groups"] == []
    # Another namespace's job id is unknown, never forbidden: B cannot even learn that A's job exists.
    expect(svc.get(f"api/image/sim/duplicates/scan/{scans[SHOP_A]}", headers={"token": SHOP_B}), 404, "no scan job")
    expect(svc.get(f"api/image/sim/duplicates/scan/{scans[SHOP_B]}", headers={"token": READER_A}), 404, "no scan job")
    expect(as_(svc, SHOP_B, "duplicates", json={"cursor": f"{scans[SHOP_A]}.0"}), 409, "older scan")
    expect(as_(svc, ADMIN, "duplicates", json={}), 404, "no finished duplicate scan")  # the default namespace


def test_export_answers_every_namespace_to_admin_tokens_only(tenants: LiveService) -> None:
    """POST /export (what `main.py reindex --service` reads) hands every tenant's rows out: admin tokens only."""
    svc = tenants
    for token, key, seed in ((SHOP_A, "k1", 1), (SHOP_B, "k1", 2), (DEFAULT_WRITER, "d", 3)):
        ok(as_(svc, token, "add/base64", json={"base64": b64(seed), "key": key, "attrs": {"by": token}}))
    for token in (SHOP_A, SHOP_B, READER_A, DEFAULT_WRITER):
        for body in ({}, {"limit": 1000}, {"after": 0, "upto": 2**53 - 1}):
            expect(as_(svc, token, "export", json=body), 403, "admin right")
    expect(svc.post("export", headers={}, json={}), 401, "missing token")
    data = ok(as_(svc, ADMIN, "export", json={}))["data"]
    assert data["total"] == 3 and data["collection"]["name"] == svc.runtime.settings.milvus_collection
    assert data["collection"]["tenancy"] and data["collection"]["space"] == svc.runtime.store.space.digest
    rows = data["rows"]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert sorted((r["namespace"], r["key"], r["attrs"]["by"]) for r in rows) == [
        ("", "d", DEFAULT_WRITER),
        ("shop-a", "k1", SHOP_A),
        ("shop-b", "k1", SHOP_B),
    ]
    # A window: after < id <= upto, at most `limit` rows (the same rows as ids in that range).
    ids = [r["id"] for r in rows]
    window = ok(as_(svc, ADMIN, "export", json={"after": ids[0], "upto": ids[2]}))["data"]["rows"]
    assert [r["id"] for r in window] == ids[1:]
    assert len(ok(as_(svc, ADMIN, "export", json={"limit": 2}))["data"]["rows"]) == 2
    # A namespace is refused rather than ignored: the export is of every namespace.
    expect(as_(svc, ADMIN, "export", json={"namespace": "shop-a"}), 400, "'namespace'", "every namespace")


def test_tokens_rights_and_namespace_choice(tenants: LiveService) -> None:
    svc = tenants
    body = {"base64": b64(4), "key": "r"}
    expect(svc.post("count", headers={}), 401, "missing token")
    expect(as_(svc, "nope", "count"), 401, "invalid token")
    expect(as_(svc, SHOP_A, "count", json={"namespace": "shop-b"}), 403, "bound to one namespace")
    expect(as_(svc, SHOP_A, "count", json={"namespace": ""}), 403, "bound to one namespace")
    for path in ("add/base64", "add/batch", "set/key", "del/id", "del/key", "duplicates/scan"):
        expect(as_(svc, READER_A, path, json=body), 403, "write right")
    ok(as_(svc, SHOP_A, "add/base64", json={**body, "namespace": "shop-a"}))  # its own namespace, spelled out
    expect(as_(svc, ADMIN, "count", json={"namespace": "-bad"}), 400, "'namespace'")
    expect(as_(svc, ADMIN, "count", json={"namespace": ["shop-a"]}), 400, "'namespace'")
    assert ok(as_(svc, ADMIN, "get/key", json={"key": "r", "namespace": "shop-a"}))["data"][0]["key"] == "r"
    assert ok(as_(svc, ADMIN, "del/key", json={"key": "r", "namespace": "shop-a"}))["data"] == 1
    assert svc.get("health", headers={}).json()["data"] == {"status": "alive"}


def test_token_file_changes_apply_without_a_restart(start_service: Callable[..., LiveService], tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS, encoding="utf-8")
    svc = start_service(tokens_file=tokens)
    assert ok(as_(svc, SHOP_B, "count"))["data"] == 0
    staged = tmp_path / "tokens.new"
    staged.write_text(TOKENS.replace(f"{SHOP_B} shop-b write", ""), encoding="utf-8")
    staged.replace(tokens)  # atomically, as the tokens.py docstring asks
    wait_until(lambda: as_(svc, SHOP_B, "count").status_code == 401, timeout=10, what="the revoked token refused")
    expect(as_(svc, SHOP_B, "count"), 401, "invalid token")
    assert ok(as_(svc, SHOP_A, "count"))["data"] == 0


def test_a_collection_of_an_earlier_version_serves_the_default_namespace(
    start_service: Callable[..., LiveService], tmp_path: Path
) -> None:
    name = "legacy_images"
    client = MilvusClient(uri=str(tmp_path / "milvus.db"))
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    for field, kind, extra in (
        ("id", DataType.INT64, {"is_primary": True}),
        ("key", DataType.VARCHAR, {"max_length": 2048}),
        ("md5", DataType.VARCHAR, {"max_length": 32}),
        ("filepath", DataType.VARCHAR, {"max_length": 8192}),
    ):
        schema.add_field(field, kind, **extra)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2048)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
    client.create_collection(name, schema=schema, index_params=index)
    vec = np.ones(2048, dtype=np.float32) / np.sqrt(2048)
    old_id = derive_id("old", "0" * 32)
    client.insert(name, [{"id": old_id, "key": "old", "md5": "0" * 32, "filepath": "/old.jpg", "vector": vec.tolist()}])
    client.close()

    svc = start_service(milvus_collection=name)
    assert svc.count() == 1 and ok(svc.post("get/key", json={"key": "old"}))["data"][0]["id"] == old_id
    ok(svc.post("add/base64", json={"base64": b64(5), "key": "new"}))
    assert ok(svc.post("list", json={}))["data"]["records"][0]["attrs"] == {}
    for path, body, word in (
        ("add/base64", {"base64": b64(6), "namespace": "shop"}, "other namespaces"),
        ("add/base64", {"base64": b64(6), "attrs": {"a": 1}}, "attributes"),
        ("search/base64", {"base64": b64(6), "filter": {"a": 1}}, "filter"),
        ("count", {"namespace": "shop"}, "other namespaces"),
    ):
        body_ = expect(svc.post(path, json=body), 409, word, "MILVUS_COLLECTION", "re-import")
        assert body_["data"] is None
    assert svc.count() == 2
