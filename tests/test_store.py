"""The Milvus store on embedded Milvus Lite and on a real Milvus 2.3 server."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pymilvus import DataType, MilvusClient

from conf.errors import Conflict, StartupError
from service.store import records as store_module
from service.store.filters import JS_MAX_SAFE_INTEGER, compile_filter
from service.store.lite import LiteFlusher
from service.store.records import Query, Record, VectorStore, derive_id, public_record
from tests.conftest import make_settings

DIM = 2048


def unit(seed: int) -> np.ndarray:
    vec = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return vec / np.linalg.norm(vec)


@pytest.fixture(params=["lite", "server"])
def settings(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "server":
        return make_settings(tmp_path, milvus_uri=request.getfixturevalue("milvus_server"))
    return make_settings(tmp_path)


def test_indexes_are_chosen_by_what_the_server_accepts(settings) -> None:
    store = VectorStore(settings, DIM)
    store.connect()
    assert store.vector_index == "HNSW"
    # Milvus 2.3 has no INVERTED index for VARCHAR, Lite and 2.4+ do: the store finds out by asking.
    expected_key_index = "INVERTED" if settings.milvus_is_lite else "Trie"
    assert store.key_index == expected_key_index
    store.close()


def test_refuses_a_collection_with_another_dimension(settings) -> None:
    client = MilvusClient(settings.milvus_uri)
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("key", DataType.VARCHAR, max_length=64)
    schema.add_field("md5", DataType.VARCHAR, max_length=32)
    schema.add_field("filepath", DataType.VARCHAR, max_length=64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=512)
    client.create_collection(settings.milvus_collection, schema=schema)
    with pytest.raises(StartupError, match="dimension 512, not 2048.*MILVUS_COLLECTION"):
        VectorStore(settings, DIM).connect()
    assert client.get_collection_stats(settings.milvus_collection)["row_count"] == 0
    assert client.list_indexes(settings.milvus_collection) == []  # nothing was added to it either
    client.drop_collection(settings.milvus_collection)


def test_refuses_a_collection_with_other_fields(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    client = MilvusClient(settings.milvus_uri)
    client.create_collection(settings.milvus_collection, dimension=DIM)  # pymilvus' quick-start schema
    with pytest.raises(StartupError, match="incompatible schema"):
        VectorStore(settings, DIM).connect()


def test_refuses_a_region_field_imgsim_did_not_make(tmp_path: Path) -> None:
    # A `region` that is not JSON is someone else's field: imgsim must not read boxes out of it or write into it.
    settings = make_settings(tmp_path)
    client = MilvusClient(settings.milvus_uri)
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    for name in ("namespace", "key", "md5", "filepath", "region"):
        schema.add_field(name, DataType.VARCHAR, max_length=64)
    schema.add_field("attrs", DataType.JSON)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    client.create_collection(settings.milvus_collection, schema=schema)
    with pytest.raises(StartupError, match="field 'region' is .*MILVUS_COLLECTION"):
        VectorStore(settings, DIM).connect()


def test_reopening_keeps_records_and_indexes(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    first = VectorStore(settings, DIM)
    first.put_many(first.scope(), [Record("k", "a" * 32, "f.jpg", unit(1))])
    first.close()
    again = VectorStore(settings, DIM)
    scope = again.scope()
    assert again.count(scope) == 1 and again.get_keys(scope, ["k"])[0]["filepath"] == "f.jpg"


def test_ids_fit_in_a_javascript_number() -> None:
    ids = {derive_id(f"key{i}", f"{i:032x}") for i in range(2000)}
    assert len(ids) == 2000 and all(1 <= i <= JS_MAX_SAFE_INTEGER for i in ids)


def test_a_colliding_id_never_overwrites_another_record(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real 53-bit collision is astronomically rare, so force one: the only stand-in in this file.
    real = store_module.derive_id
    monkeypatch.setattr(
        store_module,
        "derive_id",
        lambda key, md5, attempt=0, namespace="": 777 if attempt == 0 else real(key, md5, attempt, namespace),
    )
    store = VectorStore(settings, DIM)
    scope = store.scope()
    [(first_id, created_a)] = store.put_many(scope, [Record("a", "1" * 32, "a.jpg", unit(1))])
    [(second_id, created_b)] = store.put_many(scope, [Record("b", "2" * 32, "b.jpg", unit(2))])
    assert (first_id, created_a, created_b) == (777, True, True) and second_id != 777
    # Both survive, and re-adding either is still recognised as a duplicate.
    assert store.put_many(scope, [Record("b", "2" * 32, "b.jpg", unit(2))]) == [(second_id, False)]
    assert store.existing(scope, [("a", "1" * 32), ("b", "2" * 32), ("c", "3" * 32)]) == {
        ("a", "1" * 32),
        ("b", "2" * 32),
    }
    assert {r["key"] for r in store.get_keys(scope, ["a", "b"])} == {"a", "b"}
    store.close()


def test_readd_with_new_filepath_updates_it_without_a_second_record(settings) -> None:
    store = VectorStore(settings, DIM)
    scope = store.scope()
    [(rid, _)] = store.put_many(scope, [Record("k", "a" * 32, "old.jpg", unit(3))])
    assert store.put_many(scope, [Record("k", "a" * 32, "new.jpg", unit(3))]) == [(rid, False)]
    assert [(r["id"], r["filepath"]) for r in store.get_keys(scope, ["k"])] == [(rid, "new.jpg")]
    assert store.count(scope) == 1
    store.close()


def test_every_read_sees_the_write_just_acknowledged(settings) -> None:
    # Searches use Session consistency (MILVUS_CONSISTENCY's default) rather than waiting for the
    # server's next time tick; the service's own writes must still be visible at once, every time.
    assert settings.milvus_consistency.value == "session"
    store = VectorStore(settings, DIM)
    scope = store.scope()
    for i in range(25):
        vec = unit(100 + i)
        [(rid, created)] = store.put_many(scope, [Record(f"rw{i}", f"{i:032x}", f"{i}.jpg", vec)])
        assert created
        assert [h.id for h in store.search(scope, vec, 1)] == [rid], f"write {i} not visible to the next search"
        assert store.count(scope) == i + 1
        if i % 2:
            assert store.delete_ids(scope, [rid]) == 1
            assert rid not in [h.id for h in store.search(scope, vec, 5)], f"delete {i} visible too late"
            assert store.put_many(scope, [Record(f"rw{i}", f"{i:032x}", f"{i}.jpg", vec)]) == [(rid, True)]
    store.close()


def test_lite_reads_during_flushes_see_every_acknowledged_write_and_no_delete(tmp_path: Path) -> None:
    # Milvus Lite swaps its in-memory table out before the flushed segment is visible: without the
    # store's gate a read in between missed rows just written and returned rows just deleted.
    store = VectorStore(make_settings(tmp_path), DIM)
    scope = store.scope()
    present: list[str] = []  # keys whose put was acknowledged and that are not deleted
    gone: set[str] = set()  # keys whose delete was acknowledged (never added again)
    wrong: list[str] = []
    done = threading.Event()

    def write() -> None:
        try:
            for i in range(120):
                store.put_many(scope, [Record(f"g{i}", f"{i:032x}", "g.jpg", unit(500 + i))])
                present.append(f"g{i}")
                if i % 4 == 3:
                    victim = present.pop(0)
                    assert store.delete_keys(scope, [victim]) == 1
                    gone.add(victim)
                if i % 3 == 0:
                    store.connection.flush()  # what the background flusher does, made frequent
        finally:
            done.set()

    def read() -> None:
        while not done.is_set() and len(wrong) < 5:
            expected, deleted = list(present), set(gone)
            seen = {r["key"] for r in store.get_keys(scope, [*expected, *deleted])}
            missing = set(expected) - seen - gone  # a key deleted meanwhile may be missing
            if missing or seen & deleted:
                wrong.append(f"missing {sorted(missing)}, deleted but seen {sorted(seen & deleted)}")

    threads = [threading.Thread(target=write), *(threading.Thread(target=read) for _ in range(3))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not wrong, wrong
    assert store.count(scope) == len(present) == 90
    store.close()


def test_strong_consistency_can_be_chosen(tmp_path: Path, milvus_server: str) -> None:
    # For several API instances sharing one Milvus server (each sees the others' writes at once).
    store = VectorStore(
        make_settings(
            tmp_path, milvus_uri=milvus_server, milvus_consistency="Strong", milvus_collection="strong_reads"
        ),
        DIM,
    )
    scope = store.scope()
    [(rid, _)] = store.put_many(scope, [Record("s", "5" * 32, "s.jpg", unit(5))])
    assert [h.id for h in store.search(scope, unit(5), 1)] == [rid]
    store.close()


class RecordingFlush:
    """Records when the flusher flushes; fails on demand (a real Milvus Lite flush cannot be made to fail)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[float] = []
        self.fail_first = fail_first

    def __call__(self) -> None:
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.fail_first:
            raise RuntimeError("disk full")


def test_lite_rows_are_flushed_once_writes_pause() -> None:
    flush = RecordingFlush()
    flusher = LiteFlusher(flush, quiet_s=0.3, max_rows=100)
    start = time.monotonic()
    for _ in range(3):  # a burst of small writes is one flush, after the burst
        flusher.wrote(1)
        time.sleep(0.1)
    deadline = time.monotonic() + 10
    while not flush.calls and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(flush.calls) == 1 and flush.calls[0] - start >= 0.5
    time.sleep(0.5)
    assert len(flush.calls) == 1  # nothing written since: no more flushes
    flusher.close()
    assert len(flush.calls) == 1


def test_lite_flushes_at_once_when_many_rows_pile_up_and_on_close() -> None:
    flush = RecordingFlush()
    flusher = LiteFlusher(flush, quiet_s=60, max_rows=100)
    flusher.wrote(150)  # over max_rows: no waiting for a pause
    deadline = time.monotonic() + 10
    while not flush.calls and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(flush.calls) == 1
    flusher.wrote(5)
    flusher.close()  # the last rows are flushed before the store closes
    assert len(flush.calls) == 2


def test_a_failed_lite_flush_does_not_stop_later_ones() -> None:
    flush = RecordingFlush(fail_first=1)
    flusher = LiteFlusher(flush, quiet_s=0.05, max_rows=100)
    flusher.wrote(1)
    deadline = time.monotonic() + 10
    while not flush.calls and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert len(flush.calls) == 1  # failed: no retry loop hammering a broken store
    flusher.wrote(1)
    flusher.close()
    assert len(flush.calls) == 2


def test_the_store_flushes_milvus_lite_after_writes(tmp_path: Path) -> None:
    # What a user notices is search speed (measured in bench/perf.py); here: the rows the service
    # wrote leave Lite's unindexed in-memory table without a restart. Lite logs them to the collection's
    # write-ahead log until a flush writes them out as a segment, and empties the log then.
    settings = make_settings(tmp_path)
    store = VectorStore(settings, DIM)
    scope = store.scope()
    store.put_many(scope, [Record(f"f{i}", f"{i:032x}", "f.jpg", unit(200 + i)) for i in range(20)])
    wal = Path(settings.milvus_uri) / "collections" / settings.milvus_collection / "wal"
    assert unflushed_logs(wal) or store.count(scope) == 20  # the flush may already have run
    deadline = time.monotonic() + 20
    while unflushed_logs(wal) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not unflushed_logs(wal)
    assert store.count(scope) == 20
    store.close()


def unflushed_logs(wal: Path) -> list[Path]:
    """Lite's write-ahead log files of rows (and deletes) not flushed yet: the rows every search scans in Python."""
    assert wal.parent.is_dir(), f"no Milvus Lite collection folder at {wal.parent}"
    return [f for f in wal.glob("*") if f.stat().st_size] if wal.is_dir() else []


def test_searches_return_the_exact_nearest_live_records_of_the_namespace(settings) -> None:
    # Flushed and in-memory rows, deletes, updates, filters, exclusions and several namespaces in one
    # batch: a caller must get the same answer as brute force over what it stored.
    store = VectorStore(settings, DIM)
    scopes = {ns: store.scope(ns) for ns in ("a", "b")}
    live: dict[str, tuple[str, np.ndarray, dict[str, Any], str]] = {}  # key -> namespace, vector, attrs, filepath

    def put(keys: range, namespace: str) -> None:
        records = [Record(f"{namespace}{i}", f"{i:032x}", f"{i}.jpg", unit(300 + i), {"shop": i % 3}) for i in keys]
        store.put_many(scopes[namespace], records)
        live.update({r.key: (namespace, r.vector, r.attrs or {}, r.filepath) for r in records})

    put(range(0, 20), "a")
    store.connection.flush()  # some rows in a sealed segment, the rest in memory: both are searched
    put(range(20, 30), "a")
    put(range(30, 40), "b")
    assert store.delete_keys(scopes["a"], ["a5", "a25"]) == 2  # one flushed, one still in memory
    del live["a5"], live["a25"]
    store.put_many(scopes["a"], [Record("a7", f"{7:032x}", "moved.jpg", unit(307), {"shop": 2})])  # new filepath, attrs
    live["a7"] = ("a", unit(307), {"shop": 2}, "moved.jpg")
    by_key = {r["key"]: r["id"] for ns in ("a", "b") for r in store.get_keys(scopes[ns], list(live))}

    def expected(query: Query) -> list[tuple[str, float]]:
        ranked = sorted(
            (
                (float(vec @ query.vector), key)
                for key, (ns, vec, attrs, _) in live.items()
                if ns == query.scope.namespace
                and by_key[key] != query.exclude_id
                and (not query.filter or attrs["shop"] == 1)
            ),
            reverse=True,
        )
        return [(key, score) for score, key in ranked[: query.limit]]

    rng = np.random.default_rng(7)
    queries = []
    for i in (3, 7, 22, 33):
        vec = unit(300 + i) + 0.05 * rng.standard_normal(DIM).astype(np.float32)
        vec /= np.linalg.norm(vec)
        ns = "b" if i >= 30 else "a"
        queries += [
            Query(scopes[ns], vec, 5),
            Query(scopes[ns], vec, 50),
            Query(scopes[ns], vec, 4, filter=compile_filter({"shop": 1})),
            Query(scopes[ns], vec, 3, exclude_id=by_key[f"{ns}{i}"]),
        ]
    for query, hits in zip(queries, store.search_many(queries), strict=True):
        want = expected(query)
        assert [h.key for h in hits] == [key for key, _ in want]
        assert [h.score for h in hits] == pytest.approx([score for _, score in want], abs=1e-4)
        assert all(h.attrs == live[h.key][2] and h.filepath == live[h.key][3] and h.id == by_key[h.key] for h in hits)
    store.close()


BAG = {"x": 40, "y": 30, "w": 120, "h": 90}


def test_a_record_keeps_the_region_its_vector_describes(settings) -> None:
    # A lifestyle shot stored by the bag in it: get/key, get by id, list and the duplicate-skip record
    # all say which part of the photo the vector describes; a whole-image record says None.
    store = VectorStore(settings, DIM)
    assert store.layout.regions is False  # not connected yet
    scope = store.scope(regions=True)
    assert store.layout.regions
    [(bag_id, _), (whole_id, _)] = store.put_many(
        scope,
        [Record("bag", "b" * 32, "room.jpg", unit(11), region=BAG), Record("plain", "c" * 32, "p.jpg", unit(12))],
    )
    assert [(r["key"], r["region"]) for r in store.get_keys(scope, ["bag", "plain"])] == [("bag", BAG), ("plain", None)]
    assert [r["region"] for r in store.get_ids(scope, [bag_id, whole_id])] == [BAG, None]
    page = store.list_records(scope, 0, 10)
    assert {r["key"]: r["region"] for r in page.rows} == {"bag": BAG, "plain": None}
    assert public_record(store.find(scope, "bag", "b" * 32) or {})["region"] == BAG
    # The same image under another key is a duplicate: the record shown is the stored one, with its region.
    rid, created, other = store.put_unless_duplicate(scope, Record("bag-2", "b" * 32, "x.jpg", unit(11)), 0.99)
    assert (rid, created) == (bag_id, False) and other is not None and other["region"] == BAG
    # Searches answer hits without the region (it stays out of search answers), but find the record.
    assert [h.id for h in store.search(scope, unit(11), 1)] == [bag_id]
    store.close()


def test_readding_a_record_with_another_region_replaces_region_and_vector(settings) -> None:
    store = VectorStore(settings, DIM)
    scope = store.scope(regions=True)
    [(rid, _)] = store.put_many(scope, [Record("bag", "b" * 32, "room.jpg", unit(21), region=BAG)])
    other = {"x": 0, "y": 0, "w": 60, "h": 50}
    assert store.put_many(scope, [Record("bag", "b" * 32, "room.jpg", unit(22), region=other)]) == [(rid, False)]
    assert [(r["id"], r["region"]) for r in store.get_keys(scope, ["bag"])] == [(rid, other)]
    [hit] = store.search(scope, unit(22), 1)
    assert (hit.id, hit.score) == (rid, pytest.approx(1.0, abs=1e-4))  # the new box's vector, not the old one
    # No region is the whole image again: the stored box goes, with its vector.
    assert store.put_many(scope, [Record("bag", "b" * 32, "room.jpg", unit(23))]) == [(rid, False)]
    assert [r["region"] for r in store.get_keys(scope, ["bag"])] == [None]
    assert store.search(scope, unit(23), 1)[0].score == pytest.approx(1.0, abs=1e-4)
    assert store.count(scope) == 1
    store.close()


def test_a_collection_created_before_regions_keeps_serving_whole_images(settings) -> None:
    # Collections made by imgsim before regions existed have the namespace and attrs fields but no
    # `region`: such a collection cannot be made through today's code (collection_schema always adds
    # it), so the test builds the previous schema itself, field by field, and stores a record the way
    # the previous version did.
    client = MilvusClient(uri=settings.milvus_uri)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("namespace", DataType.VARCHAR, max_length=64)
    schema.add_field("key", DataType.VARCHAR, max_length=1024)
    schema.add_field("md5", DataType.VARCHAR, max_length=32)
    schema.add_field("filepath", DataType.VARCHAR, max_length=8192)
    schema.add_field("attrs", DataType.JSON)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    name = settings.milvus_collection
    client.create_collection(name, schema=schema, consistency_level="Strong")
    old_id = derive_id("old", "0" * 32)
    row = {"id": old_id, "namespace": "", "key": "old", "md5": "0" * 32, "filepath": "/old.jpg", "attrs": {"a": 1}}
    client.insert(name, [{**row, "vector": unit(31).tolist()}])
    try:
        store = VectorStore(settings, DIM)
        scope = store.scope()
        assert store.layout.tenancy and not store.layout.regions
        [(new_id, created)] = store.put_many(scope, [Record("new", "1" * 32, "/new.jpg", unit(32), {"b": 2})])
        assert created
        assert [(r["id"], r["attrs"], r["region"]) for r in store.get_keys(scope, ["old", "new"])] == [
            (new_id, {"b": 2}, None),
            (old_id, {"a": 1}, None),
        ]
        assert {r["key"]: r["region"] for r in store.list_records(scope, 0, 10).rows} == {"old": None, "new": None}
        assert [h.id for h in store.search(store.scope("shop"), unit(31), 1)] == []  # namespaces still work
        with pytest.raises(Conflict) as refused:
            store.scope(regions=True)
        assert refused.value.reason == "collection_without_regions"
        assert all(
            word in refused.value.msg for word in (name, "'region'", "MILVUS_COLLECTION", "re-import", "reindex")
        )
        # A region that reaches a write anyway is refused too, and nothing is written.
        with pytest.raises(Conflict):
            store.put_many(scope, [Record("bag", "2" * 32, "/bag.jpg", unit(33), region=BAG)])
        assert store.count(scope) == 2
        store.close()
        assert {f["name"] for f in client.describe_collection(name)["fields"]} == {*row, "vector"}  # left as it was
    finally:
        client.drop_collection(name)
        client.close()
