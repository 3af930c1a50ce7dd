"""Embedding spaces on real collections (Milvus Lite and a Milvus server), /ready, and the duplicate threshold.

A collection records the fingerprint of the space its vectors belong to; a
service configured for another space refuses to start on it, and a collection
from before fingerprints is adopted with a warning.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conf.errors import StartupError
from conf.settings import Precision, Settings
from model.embedder import DIM, Embedder, load_embedder
from service.store.connection import MilvusClient, collection_schema
from service.store.meta import SPACE_PROPERTY, SpaceTag, stored_space
from service.store.records import VectorStore
from tests.conftest import ROOT, LiveService, make_settings, photo
from tests.procs import service_env

OTHER = SpaceTag("0123456789abcdef", "resnet50 weights=random-seed-1234 input=224 resize=pad pooling=gem ...")


@pytest.fixture(params=["lite", "server"])
def milvus_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Milvus Lite and the real Milvus server: what they can record differs (Lite drops descriptions)."""
    return request.getfixturevalue("milvus_server") if request.param == "server" else str(tmp_path / "m.db")


def space_of(embedder: Embedder) -> SpaceTag:
    """The session embedder's space as the store sees it."""
    return SpaceTag(embedder.fingerprint.digest, embedder.fingerprint.summary)


def connected(settings: Settings, space: SpaceTag | None) -> VectorStore:
    """A store connected to the settings' collection, checking (or not) its space."""
    store = VectorStore(settings, DIM, space)
    store.connect()
    return store


def test_a_collection_of_another_space_is_refused(embedder: Embedder, milvus_uri: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, milvus_uri=milvus_uri)
    connected(settings, OTHER).close()
    with pytest.raises(StartupError) as caught:
        connected(settings, space_of(embedder))
    message = str(caught.value)
    # Both spaces, readable, and both ways out.
    assert OTHER.digest in message and embedder.fingerprint.digest in message and "pooling=gem" in message
    assert "MILVUS_COLLECTION" in message and "re-embed" in message
    connected(settings, OTHER).close()  # its own space still opens it


def test_a_pre_fingerprint_collection_is_adopted(
    embedder: Embedder, milvus_uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, milvus_uri=milvus_uri)
    connected(settings, None).close()  # as imgsim created collections before it recorded spaces
    caplog.set_level(logging.WARNING, logger="service.store.meta")
    connected(settings, space_of(embedder)).close()
    assert "no embedding-space fingerprint" in caplog.text and "adopting it" in caplog.text
    client = MilvusClient(milvus_uri)
    try:
        assert stored_space(client.describe_collection(settings.milvus_collection))[0] == embedder.fingerprint.digest
    finally:
        client.close()
    with pytest.raises(StartupError):  # adopted: from now on another space is refused
        connected(settings, OTHER)


def test_the_space_is_read_from_the_description_where_properties_are_missing(
    milvus_server: str, tmp_path: Path
) -> None:
    # As on a server that refuses collection properties: the space is in the description only.
    settings = make_settings(tmp_path, milvus_uri=milvus_server)
    client = MilvusClient(milvus_server)
    try:
        client.create_collection(
            settings.milvus_collection, schema=collection_schema(settings, DIM, OTHER.description())
        )
        desc = client.describe_collection(settings.milvus_collection)
        assert SPACE_PROPERTY not in (desc.get("properties") or {})
        assert stored_space(desc) == (OTHER.digest, OTHER.summary)  # a server keeps descriptions (Lite does not)
    finally:
        client.close()
    with pytest.raises(StartupError, match=OTHER.digest):
        connected(settings, SpaceTag("fedcba9876543210", "another"))


def test_ready_reports_engine_precision_fingerprint_and_threshold(
    embedder: Embedder, start_service: Callable[..., LiveService]
) -> None:
    model = start_service().get("ready").json()["data"]
    assert model["model"]["engine"] == "openvino" and model["model"]["precision"] == "fp32"
    assert model["model"]["fingerprint"] == embedder.fingerprint.digest
    assert model["duplicate"]["score"] == embedder.duplicate_default
    assert model["duplicate"]["source"].startswith("default for resnet50")
    overridden = start_service(duplicate_score=0.97).get("ready").json()["data"]["duplicate"]
    assert overridden == {"score": 0.97, "source": "DUPLICATE_SCORE"}


def test_calibrate_stores_a_threshold_the_service_uses(
    embedder: Embedder, tmp_path: Path, start_service: Callable[..., LiveService]
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    for seed in range(12):
        (folder / f"{seed}.jpg").write_bytes(photo(seed, size=(320, 240)))
    env = service_env(tmp_path, str(tmp_path / "cal.db"), 7997, MILVUS_COLLECTION="calibrated")
    result = subprocess.run(
        [sys.executable, "main.py", "calibrate", str(folder), "--no-progress"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for row in ("copy: resize", "copy: jpeg", "copy: crop", "copy: flip", "copy: border", "distinct pairs"):
        assert row in result.stdout
    assert "duplicate threshold" in result.stdout and "stored in property imgsim.duplicate" in result.stdout
    ready = start_service(milvus_uri=str(tmp_path / "cal.db"), milvus_collection="calibrated").get("ready")
    duplicate = ready.json()["data"]["duplicate"]
    assert duplicate["source"].startswith("calibrated on 12 images") and -1.0 <= duplicate["score"] <= 1.0


def test_an_int8_model_calibrated_to_match_fp32_serves_the_fp32_collection(
    embedder: Embedder, tmp_path: Path, milvus_server: str, start_service: Callable[..., LiveService]
) -> None:
    where = {"milvus_uri": milvus_server, "milvus_collection": "matched"}
    fp32 = start_service(**where)
    added = fp32.post("add/file", files={"file": ("a.jpg", photo(3, size=(320, 240)))}, data={"key": "sku-3"})
    assert added.status_code == 200, added.text

    # `main.py calibrate --match-fp32` into a private copy of the session's model cache (its INT8 model must
    # not replace the session's own-space one).
    cache = tmp_path / "cache"
    shutil.copytree(Path(make_settings(tmp_path).model_cache_dir) / "openvino", cache / "openvino")
    folder = tmp_path / "mine"
    folder.mkdir()
    for seed in range(100, 132):
        (folder / f"{seed}.jpg").write_bytes(photo(seed, size=(320, 240)))
    env = service_env(tmp_path, milvus_server, 7996, MILVUS_COLLECTION="matched", MODEL_CACHE_DIR=str(cache))
    result = subprocess.run(
        [sys.executable, "main.py", "calibrate", str(folder), "--match-fp32", "--no-progress"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "shares FP32's embedding space" in result.stdout

    int8_settings = {"model_precision": Precision.INT8, "model_cache_dir": cache}
    int8 = start_service(load_embedder(make_settings(tmp_path, **int8_settings)), **where, **int8_settings)
    model = int8.get("ready").json()["data"]["model"]
    assert model["precision"] in ("int8", "fp32")  # fp32 only on CPUs without INT8 kernels
    assert model["fingerprint"] == embedder.fingerprint.digest  # the FP32 collection's space: not refused
    hits = int8.post("search/file", files={"file": ("q.jpg", photo(3, size=(320, 240)))}).json()["data"]
    assert hits[0]["key"] == "sku-3" and hits[0]["score"] > 0.99  # an FP32 vector, found by an INT8 query
