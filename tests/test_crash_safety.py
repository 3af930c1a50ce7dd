"""SIGKILL in the middle of work on Milvus Lite: the bulk import, and the service during a burst of writes.

`kill -9` gives the process no chance to flush or close anything. Afterwards the
stored records must be exactly what was acknowledged: nothing lost, nothing twice.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from model.embedder import DIM, Embedder
from service.store.records import VectorStore
from service.usecases.importer import Importer
from tests.conftest import make_settings, photo
from tests.procs import ServeProcess, kill_group_safe, run_import, wait_until
from tests.reliability import Recorder, recorder  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow

SIZE = (160, 120)
COLLECTION = "reliability"  # what tests.procs.service_env sets


def _store(tmp: Path, db: Path) -> VectorStore:
    return VectorStore(make_settings(tmp / "reader", milvus_uri=str(db), milvus_collection=COLLECTION), DIM)


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_import_killed_twice_then_rerun_stores_every_image_exactly_once(tmp_path: Path, recorder: Recorder) -> None:
    inbox, pool, db = tmp_path / "inbox", tmp_path / "pool", tmp_path / "milvus.db"
    images: dict[str, bytes] = {}
    for i in range(48):
        name = f"shelf{i % 3}/p{i:03d}.jpg"
        images[name] = photo(500 + i, size=SIZE)
        (inbox / name).parent.mkdir(parents=True, exist_ok=True)
        (inbox / name).write_bytes(images[name])
    (inbox / "shelf0" / "copy-of-p000.jpg").write_bytes(images["shelf0/p000.jpg"])  # same image twice: one record
    md5s = {hashlib.md5(d).hexdigest() for d in images.values()}
    args = ("--move-to", str(pool), "--batch-size", "4")

    rng = random.Random(7)
    moved_at_kill = []
    for target in (10, 30):
        proc = run_import(tmp_path, str(db), inbox, *args)
        try:
            wait_until(
                lambda: len(_files(pool)) >= target or proc.poll() is not None,
                300,
                0.01,
                f"{target} files moved by the import",
            )
            assert proc.poll() is None, "the import finished before it could be killed; give it more images"
            time.sleep(rng.uniform(0, 0.3))  # land anywhere in a batch: decoding, embedding, upsert or moving
        finally:
            kill_group_safe(proc)
        assert proc.returncode == -signal.SIGKILL
        moved_at_kill.append(len(_files(pool)))
    assert 0 < moved_at_kill[0] < moved_at_kill[1] < len(images) + 1

    final = run_import(tmp_path, str(db), inbox, *args)
    assert final.wait(timeout=600) == 0
    assert _files(inbox) == []  # every file was moved (the copy too, under its own name)
    pooled: dict[str, set[Path]] = {}
    for p in _files(pool):
        pooled.setdefault(hashlib.md5(p.read_bytes()).hexdigest(), set()).add(p.resolve())
    assert set(pooled) == md5s and len(_files(pool)) == len(images) + 1

    store = _store(tmp_path, db)
    try:
        records = store.get_keys(store.scope(), sorted(md5s))
        total = store.count(store.scope())
    finally:
        store.close()
    stored = [r["md5"] for r in records]
    lost = md5s - set(stored)
    dup = len(stored) - len(set(stored))
    assert not lost, f"{len(lost)} images missing after kill -9 and rerun"
    assert dup == 0 and total == len(md5s), f"{dup} duplicates, {total} records for {len(md5s)} images"
    for r in records:  # each record names the pool file that holds its image
        assert r["key"] == r["md5"] and Path(r["filepath"]) in pooled[r["md5"]]

    recorder.record(
        "crash.import_kill9",
        faults_injected=len(moved_at_kill),
        operations_checked=len(images) + 1,
        records_checked=len(records),
        records_lost=len(lost),
        records_duplicated=dup,
        moved_when_killed=moved_at_kill,
    )


class Killed(BaseException):
    """Stands for the process dying at this point (nothing in the importer catches it)."""


def test_import_killed_while_copying_to_another_filesystem_never_records_a_partial_file(
    embedder: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorder: Recorder
) -> None:
    """A pool on another filesystem (a separate volume) is filled by copying: a kill mid-copy must not
    leave a half-written image where a record points."""
    if not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a filesystem of its own")
    pool = Path(tempfile.mkdtemp(prefix="imgsim-pool-", dir="/dev/shm"))
    try:
        inbox = tmp_path / "inbox"
        inbox.mkdir()
        images = {f"p{i}.jpg": photo(700 + i, size=SIZE) for i in range(6)}
        for name, data in images.items():
            (inbox / name).write_bytes(data)
        md5s = {hashlib.md5(d).hexdigest() for d in images.values()}
        settings = make_settings(tmp_path)
        store = VectorStore(settings, DIM)
        store.connect()

        copies = []
        real_copyfile = shutil.copyfile

        def dying_copyfile(src: str, dst: str, *args: object, **kwargs: object) -> str:
            copies.append(dst)
            if len(copies) == 4:  # the fourth copy: half of it reaches the disk, then the process dies
                data = Path(src).read_bytes()
                Path(dst).write_bytes(data[: len(data) // 2])
                raise Killed
            return real_copyfile(src, dst, *args, **kwargs)

        monkeypatch.setattr(shutil, "copyfile", dying_copyfile)
        with pytest.raises(Killed):
            Importer(settings, embedder, store, batch_size=2).run(inbox, move_to=pool, progress=False)
        monkeypatch.setattr(shutil, "copyfile", real_copyfile)
        summary = Importer(settings, embedder, store, batch_size=2).run(inbox, move_to=pool, progress=False)
        assert not summary.failed

        records = store.get_keys(store.scope(), sorted(md5s))
        assert {r["md5"] for r in records} == md5s and len(records) == len(md5s) == store.count(store.scope())
        for r in records:  # every record names a whole copy of its image
            assert hashlib.md5(Path(r["filepath"]).read_bytes()).hexdigest() == r["md5"], r["filepath"]
        assert sorted(p.name for p in inbox.iterdir()) == []
        leftovers = [p for p in pool.rglob("*") if p.is_file() and hashlib.md5(p.read_bytes()).hexdigest() not in md5s]
        assert not leftovers, f"partial files left in the pool: {leftovers}"
        store.close()
    finally:
        shutil.rmtree(pool, ignore_errors=True)
    recorder.record(
        "crash.import_killed_mid_copy",
        faults_injected=1,
        operations_checked=len(images),
        records_checked=len(records),
        records_lost=0,
        records_duplicated=0,
    )


@dataclass
class Ledger:
    """What the clients were told: keys whose add (or delete) returned 200, and keys whose fate is unknown."""

    present: dict[str, int] = field(default_factory=dict)  # key -> photo seed
    deleted: set[str] = field(default_factory=set)
    unknown: dict[str, int] = field(default_factory=dict)  # the request died with the server
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    unexpected: list[str] = field(default_factory=list)  # answers other than 200 and 503


def _burst(svc: ServeProcess, ledger: Ledger, rnd: int, threads: int, stop: threading.Event) -> None:
    def client(t: int) -> None:
        http = requests.Session()
        n = 0
        while not stop.is_set():
            n += 1
            key, seed = f"r{rnd}-t{t}-{n}", 1000 * (rnd + 1) + 100 * t + n
            try:
                resp = http.post(
                    svc.url("api/image/sim/add/file"),
                    files={"file": ("a.jpg", photo(seed, size=SIZE))},
                    data={"key": key},
                    timeout=60,
                )
                ok = resp.status_code == 200
                if resp.status_code not in (200, 503):
                    with ledger.lock:
                        ledger.unexpected.append(f"add {resp.status_code}: {resp.text[:200]}")
            except requests.RequestException:
                ok = False
            with ledger.lock:
                ledger.requests += 1
                (ledger.present if ok else ledger.unknown)[key] = seed
            if ok and n % 4 == 0:  # delete some acknowledged keys again
                try:
                    gone = http.post(svc.url("api/image/sim/del/key"), json={"key": key}, timeout=60)
                    done = gone.status_code == 200 and gone.json()["data"] == 1
                    if gone.status_code not in (200, 503) or (gone.status_code == 200 and not done):
                        with ledger.lock:
                            ledger.unexpected.append(f"del {gone.status_code}: {gone.text[:200]}")
                except requests.RequestException:
                    done = False
                with ledger.lock:
                    ledger.requests += 1
                    del ledger.present[key]
                    if done:
                        ledger.deleted.add(key)
                    else:
                        ledger.unknown[key] = seed
        http.close()

    workers = [threading.Thread(target=client, args=(t,), daemon=True) for t in range(threads)]
    for w in workers:
        w.start()
    stop.wait()
    for w in workers:
        w.join(timeout=120)


def _check(svc: ServeProcess, ledger: Ledger) -> tuple[int, int, int]:
    """(records checked, acknowledged records lost, duplicates); asserts the store matches the ledger."""
    assert not ledger.unexpected, ledger.unexpected[:5]
    keys = sorted({*ledger.present, *ledger.deleted, *ledger.unknown})
    records = []
    for i in range(0, len(keys), 500):
        resp = svc.post("get/key", json={"key": ",".join(keys[i : i + 500])})
        assert resp.status_code == 200, resp.text
        records += resp.json()["data"]
    by_key: dict[str, list[dict]] = {}
    for r in records:
        by_key.setdefault(r["key"], []).append(r)
    lost = [k for k in ledger.present if k not in by_key]
    dup = [k for k, rs in by_key.items() if len(rs) > 1]
    resurrected = [k for k in ledger.deleted if k in by_key]
    assert not lost, f"{len(lost)} acknowledged adds lost after kill -9: {lost[:10]}"
    assert not dup and not resurrected, (dup[:10], resurrected[:10])
    for key, rs in by_key.items():
        seed = ledger.present.get(key, ledger.unknown.get(key))
        assert seed is not None and rs[0]["md5"] == hashlib.md5(photo(seed, size=SIZE)).hexdigest()
    count = svc.get("api/image/sim/count").json()["data"]
    assert count == len(by_key), (count, len(by_key))
    return len(records), len(lost), len(dup)


def test_service_killed_during_a_burst_keeps_every_acknowledged_write(tmp_path: Path, recorder: Recorder) -> None:
    db = tmp_path / "milvus.db"
    ledger = Ledger()
    kills = 0
    checked = 0
    for rnd in range(2):
        svc = ServeProcess(tmp_path, str(db), name=f"serve{rnd}")
        try:
            svc.wait_ready(timeout=240)
            if rnd:
                checked += _check(svc, ledger)[0]  # what the last killed process acknowledged is all there
            before = len(ledger.present) + len(ledger.deleted)
            stop = threading.Event()
            burst = threading.Thread(target=_burst, args=(svc, ledger, rnd, 8, stop), daemon=True)
            burst.start()
            wait_until(
                lambda: len(ledger.present) + len(ledger.deleted) - before >= 40, 240, 0.01, "40 acknowledged writes"
            )
            svc.kill(signal.SIGKILL)  # mid-burst: requests are in flight
            kills += 1
            stop.set()
            burst.join(timeout=180)
        finally:
            svc.stop()

    svc = ServeProcess(tmp_path, str(db), name="serve-final")
    try:
        svc.wait_ready(timeout=240)
        records, lost, dup = _check(svc, ledger)
    finally:
        svc.stop()
    recorder.record(
        "crash.serve_kill9",
        faults_injected=kills,
        operations_checked=ledger.requests,
        records_checked=checked + records,
        records_lost=lost,
        records_duplicated=dup,
        unexpected_5xx=0,
        acknowledged_adds=len(ledger.present) + len(ledger.deleted),
        acknowledged_deletes=len(ledger.deleted),
        in_flight_at_kill=len(ledger.unknown),
    )
