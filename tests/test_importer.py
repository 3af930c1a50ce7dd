"""`python main.py import` and the start-up import of IMAGE_INC_PATH, end to end."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from service.store.records import VectorStore
from tests.conftest import ROOT, LiveService, make_settings, photo


def run_import(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python main.py import ...` as a user runs it, on the test's own Milvus Lite file (`env` adds settings)."""
    settings = {
        "MODEL_WEIGHTS": "random",
        "MILVUS_URI": str(tmp / "milvus.db"),
        "MILVUS_COLLECTION": "imported",
        "THUMB_DIR": str(tmp / "thumbs"),
        "SOURCE_DIR": str(tmp / "sources"),
        **env,
    }
    return subprocess.run(
        [sys.executable, "main.py", "import", *args, "--no-progress"],
        cwd=ROOT,
        env={**os.environ, **settings},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_import_moves_stores_and_reruns_without_duplicates(tmp_path: Path) -> None:
    inbox, pool = tmp_path / "inbox", tmp_path / "pool"
    (inbox / "sub").mkdir(parents=True)
    images = {f"sub/p{i}.jpg" if i % 2 else f"p{i}.jpg": photo(100 + i) for i in range(5)}
    for name, data in images.items():
        (inbox / name).write_bytes(data)
    (inbox / "notes.txt").write_text("not an image")

    first = run_import(tmp_path, str(inbox), "--move-to", str(pool), "--batch-size", "2")
    assert first.returncode == 1, first.stderr  # 1: some files failed
    assert "imported: 5" in first.stdout and "failed: 1" in first.stdout
    assert "not a decodable image" in first.stdout
    assert sorted(p.name for p in pool.rglob("*.jpg")) == sorted(Path(n).name for n in images)
    assert [p.name for p in inbox.rglob("*") if p.is_file()] == ["notes.txt"]

    # Put the originals back, as a crashed-and-restarted copy job would: nothing is stored twice.
    for name, data in images.items():
        (inbox / name).write_bytes(data)
    again = run_import(tmp_path, str(inbox), "--move-to", str(pool))
    assert "imported: 0" in again.stdout and "skipped as duplicates: 5" in again.stdout

    store = VectorStore(make_settings(tmp_path, milvus_collection="imported"), 2048)
    md5s = {hashlib.md5(d).hexdigest() for d in images.values()}
    records = store.get_keys(store.scope(), sorted(md5s))
    assert {r["md5"] for r in records} == md5s and len(records) == 5
    assert {r["filepath"] for r in records} == {str(pool / n) for n in images}
    store.close()
    # Each imported image has its thumbnail and its kept source, named by its MD5 (the same store path as add).
    assert {p.stem for p in (tmp_path / "thumbs").rglob("*.webp")} == md5s
    assert {p.stem for p in (tmp_path / "sources").rglob("*.jpg")} == md5s


def test_same_image_in_consecutive_batches_is_stored_once(tmp_path: Path) -> None:
    # Batch n+1 is checked against the store while the writer may still be storing batch n:
    # the copy must still come out as one record and one duplicate.
    folder = tmp_path / "catalog"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (folder / name).write_bytes(photo(7))
    (folder / "d.jpg").write_bytes(photo(8))
    result = run_import(tmp_path, str(folder), "--batch-size", "1")
    assert result.returncode == 0, result.stderr
    assert "imported: 2" in result.stdout and "skipped as duplicates: 2" in result.stdout
    assert "took: " in result.stdout and "for 4 files" in result.stdout and "model busy " in result.stdout
    store = VectorStore(make_settings(tmp_path, milvus_collection="imported"), 2048)
    assert store.count(store.scope()) == 2
    store.close()


def test_import_with_filename_keys(tmp_path: Path) -> None:
    folder = tmp_path / "catalog"
    folder.mkdir()
    (folder / "SKU-1.png").write_bytes(photo(1, fmt="PNG"))
    (folder / "SKU-2.jpg").write_bytes(photo(2))
    result = run_import(tmp_path, str(folder), "--key", "filename", KEEP_SOURCES="false")
    assert result.returncode == 0 and "imported: 2" in result.stdout
    assert not (tmp_path / "sources").exists() and len(list((tmp_path / "thumbs").rglob("*.webp"))) == 2
    store = VectorStore(make_settings(tmp_path, milvus_collection="imported"), 2048)
    assert [r["key"] for r in store.get_keys(store.scope(), ["SKU-1", "SKU-2"])] == ["SKU-1", "SKU-2"]
    assert (folder / "SKU-1.png").exists()  # without --move-to nothing moves
    store.close()


def test_import_into_a_namespace_stays_in_it(tmp_path: Path) -> None:
    folder = tmp_path / "catalog"
    folder.mkdir()
    (folder / "SKU-1.jpg").write_bytes(photo(31))
    (folder / "SKU-2.jpg").write_bytes(photo(32))
    result = run_import(tmp_path, str(folder), "--key", "filename", "--namespace", "shop-a")
    assert result.returncode == 0, result.stderr
    assert "imported: 2" in result.stdout
    # The same folder into another namespace is stored again there, not skipped as a duplicate of shop-a's.
    other = run_import(tmp_path, str(folder), "--key", "filename", "--namespace", "shop-b")
    assert "imported: 2" in other.stdout and "skipped as duplicates: 0" in other.stdout
    store = VectorStore(make_settings(tmp_path, milvus_collection="imported"), 2048)
    for namespace in ("shop-a", "shop-b"):
        assert [r["key"] for r in store.get_keys(store.scope(namespace), ["SKU-1", "SKU-2"])] == ["SKU-1", "SKU-2"]
    assert (
        store.get_keys(store.scope(), ["SKU-1", "SKU-2"]) == [] and store.count(store.scope()) == 0
    )  # the default namespace holds none
    store.close()


def test_import_refuses_a_malformed_namespace_before_reading_anything(tmp_path: Path) -> None:
    folder = tmp_path / "catalog"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(photo(33))
    result = run_import(tmp_path, str(folder), "--namespace", "shop a' or 1==1")
    assert result.returncode == 2
    assert "--namespace" in result.stderr and "1-64 characters" in result.stderr
    assert not (tmp_path / "milvus.db").exists()  # refused before the store was opened


def test_startup_import_of_image_inc_path(start_service: Callable[..., LiveService], tmp_path: Path) -> None:
    from service.runtime import start_background  # noqa: PLC0415 - the runtime pulls in the HTTP layer; only this test

    inbox = tmp_path / "inc"
    inbox.mkdir()
    for i in range(3):
        (inbox / f"new{i}.jpg").write_bytes(photo(200 + i))
    svc = start_service(image_inc_path=inbox)
    stop = start_background(svc.runtime)
    try:
        deadline = time.monotonic() + 120
        while svc.count() < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert svc.count() == 3
        pool = svc.runtime.settings.image_pool_path.resolve()
        deadline = time.monotonic() + 30
        while list(inbox.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sorted(p.name for p in pool.iterdir()) == ["new0.jpg", "new1.jpg", "new2.jpg"]
        hits = svc.post("search/file", files={"file": ("q.jpg", photo(201))}).json()["data"]
        assert hits[0]["filepath"] == str(pool / "new1.jpg")
        assert hits[0]["key"] == hashlib.md5(photo(201)).hexdigest()
        thumb = svc.get(f"api/image/sim/thumb/{hits[0]['id']}")  # the start-up import kept thumbnails too
        assert thumb.status_code == 200 and thumb.headers["Content-Type"] == "image/webp"
        metrics = svc.get("metrics").text
        assert 'imgsim_batch_size_count{batcher="import"}' in metrics and "imgsim_imports_in_progress 0.0" in metrics
    finally:
        stop.set()
