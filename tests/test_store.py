"""The Milvus store on embedded Milvus Lite and on a real Milvus 2.3 server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pymilvus import DataType, MilvusClient

from service import store as store_module
from service.errors import StartupError
from service.store import JS_MAX_SAFE_INTEGER, Record, VectorStore, derive_id
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


def test_reopening_keeps_records_and_indexes(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    first = VectorStore(settings, DIM)
    first.put_many([Record("k", "a" * 32, "f.jpg", unit(1))])
    first.close()
    again = VectorStore(settings, DIM)
    assert again.count() == 1 and again.get_keys(["k"])[0]["filepath"] == "f.jpg"


def test_ids_fit_in_a_javascript_number() -> None:
    ids = {derive_id(f"key{i}", f"{i:032x}") for i in range(2000)}
    assert len(ids) == 2000 and all(1 <= i <= JS_MAX_SAFE_INTEGER for i in ids)


def test_a_colliding_id_never_overwrites_another_record(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real 53-bit collision is astronomically rare, so force one: the only stand-in in this file.
    real = store_module.derive_id
    monkeypatch.setattr(store_module, "derive_id", lambda key, md5, attempt=0: 777 if attempt == 0
                        else real(key, md5, attempt))
    store = VectorStore(settings, DIM)
    [(first_id, created_a)] = store.put_many([Record("a", "1" * 32, "a.jpg", unit(1))])
    [(second_id, created_b)] = store.put_many([Record("b", "2" * 32, "b.jpg", unit(2))])
    assert (first_id, created_a, created_b) == (777, True, True) and second_id != 777
    # Both survive, and re-adding either is still recognised as a duplicate.
    assert store.put_many([Record("b", "2" * 32, "b.jpg", unit(2))]) == [(second_id, False)]
    assert store.existing([("a", "1" * 32), ("b", "2" * 32), ("c", "3" * 32)]) == {("a", "1" * 32), ("b", "2" * 32)}
    assert {r["key"] for r in store.get_keys(["a", "b"])} == {"a", "b"}
    store.close()


def test_readd_with_new_filepath_updates_it_without_a_second_record(settings) -> None:
    store = VectorStore(settings, DIM)
    [(rid, _)] = store.put_many([Record("k", "a" * 32, "old.jpg", unit(3))])
    assert store.put_many([Record("k", "a" * 32, "new.jpg", unit(3))]) == [(rid, False)]
    assert [(r["id"], r["filepath"]) for r in store.get_keys(["k"])] == [(rid, "new.jpg")]
    assert store.count() == 1
    store.close()
