"""Milvus failures while the API runs: a server stopped under traffic, and an API started before Milvus.

Each module run starts a Milvus standalone server of its own (the session's
shared one is never stopped) and stops and starts it for real.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import LiveService, photo
from tests.procs import ServeProcess, StoppableMilvus, wait_until
from tests.reliability import Recorder

pytestmark = [pytest.mark.slow, pytest.mark.server]

SIZE = (160, 120)


@pytest.fixture(scope="module")
def own_milvus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoppableMilvus]:
    milvus = StoppableMilvus(tmp_path_factory.mktemp("own-milvus"))
    milvus.start()
    try:
        yield milvus
    finally:
        milvus.stop()


@dataclass
class Call:
    """One request of the traffic and what it got."""

    op: str
    phase: str
    status: int
    msg: str
    key: str = ""
    seed: int = -1


def _image(seed: int) -> bytes:
    return photo(seed, size=SIZE)


def _md5(seed: int) -> str:
    return hashlib.md5(_image(seed)).hexdigest()


def _assert_clear_503(call: Call, target_word: str = "Milvus") -> None:
    assert call.status == 503, call
    assert target_word in call.msg and "retry" in call.msg.lower(), f"503 without a clear message: {call}"


class Traffic:
    """Client threads sending adds (each a new key and image), searches, lookups and counts until stopped."""

    def __init__(self, svc: LiveService, threads: int, base_keys: list[str]) -> None:
        self.svc = svc
        self.calls: list[Call] = []
        self.phase = "up"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._base_keys = base_keys
        self._threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(threads)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=120)

    def _run(self, t: int) -> None:
        http = requests.Session()
        n = 0
        while not self._stop.is_set():
            n += 1
            seed = 10_000 + t * 10_000 + n
            op = ("add", "add", "search", "get", "count")[n % 5]
            phase = self.phase
            key = ""
            try:
                url = f"{self.svc.base_url}/api/image/sim/"
                if op == "add":
                    key = f"w{t}-{n}"
                    resp = http.post(
                        url + "add/file", files={"file": (f"{key}.jpg", _image(seed))}, data={"key": key}, timeout=120
                    )
                elif op == "search":
                    resp = http.post(
                        url + "search/file", files={"file": ("q.jpg", _image(n % 6))}, data={"limit": "3"}, timeout=120
                    )
                elif op == "get":
                    resp = http.post(url + "get/key", json={"key": ",".join(self._base_keys)}, timeout=120)
                else:
                    resp = http.get(url + "count", timeout=120)
                status, msg = resp.status_code, resp.json()["msg"]
            except requests.RequestException as exc:
                status, msg = 0, repr(exc)
            with self._lock:
                self.calls.append(Call(op, phase, status, msg, key, seed if op == "add" else -1))
            time.sleep(0.05)
        http.close()


def test_milvus_stopped_under_traffic_gives_503_and_recovers_without_restart(
    start_service: Callable[..., LiveService], own_milvus: StoppableMilvus, recorder: Recorder
) -> None:
    if not own_milvus.running:
        own_milvus.start()
    svc = start_service(milvus_uri=own_milvus.uri, milvus_timeout=3.0, milvus_retries=2)
    base = {f"base-{i}": i for i in range(6)}
    for key, seed in base.items():
        assert svc.post("add/file", files={"file": ("b.jpg", _image(seed))}, data={"key": key}).status_code == 200
    assert svc.get("ready").status_code == 200

    traffic = Traffic(svc, threads=4, base_keys=list(base))
    traffic.start()
    time.sleep(4)

    # Fault: the Milvus server goes away under traffic (requests started before it is gone count as "up").
    traffic.phase = "stopping"
    own_milvus.stop()
    traffic.phase = "down"
    down_checks: list[Call] = []
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        ready = svc.get("ready")
        down_checks.append(Call("ready", "down", ready.status_code, ready.json()["msg"]))
        gone = svc.post("del/key", json={"key": "base-0"})
        down_checks.append(Call("del/key", "down", gone.status_code, gone.json()["msg"]))
        assert svc.get("health").status_code == 200
        time.sleep(0.5)

    # Back: the same service (no restart) must turn ready again by itself.
    traffic.phase = "restarting"
    restart_s = own_milvus.start()
    recovered_s = wait_until(lambda: svc.get("ready").status_code == 200, 120, 0.5, "/ready after Milvus came back")
    traffic.phase = "recovered"
    time.sleep(6)
    traffic.stop()

    calls = traffic.calls
    # Nothing is ever a 500; every failure is a 503 that says what is wrong and what to do.
    assert not [c for c in calls + down_checks if c.status not in (200, 503)], [
        c for c in calls + down_checks if c.status not in (200, 503)
    ][:5]
    for c in calls + down_checks:
        if c.status == 503:
            _assert_clear_503(c)
    assert all(c.status == 503 for c in down_checks), [c for c in down_checks if c.status != 503][:3]
    down = [c for c in calls if c.phase == "down"]
    assert down and all(c.status == 503 for c in down), [c for c in down if c.status != 503][:3]
    after = [c for c in calls if c.phase == "recovered"]
    assert len(after) >= 10 and all(c.status == 200 for c in after), [c for c in after if c.status != 200][:5]

    # The store: every acknowledged add exactly once and complete; the failed deletes changed nothing;
    # a failed add left no record behind (or, if Milvus applied it before the connection broke, a whole one).
    adds = [c for c in calls if c.op == "add"]
    acked = {c.key: c.seed for c in adds if c.status == 200}
    failed = {c.key: c.seed for c in adds if c.status != 200}
    want = {**acked, **base}
    records = svc.post("get/key", json={"key": ",".join([*want, *failed])}).json()["data"]
    by_key: dict[str, list[dict]] = {}
    for r in records:
        by_key.setdefault(r["key"], []).append(r)
    lost = [k for k in want if k not in by_key]
    dup = [k for k, rs in by_key.items() if len(rs) != 1]
    assert not lost, f"acknowledged adds missing after the outage: {lost[:10]}"
    assert not dup, f"records stored twice: {dup[:10]}"
    for key, seed in {**want, **failed}.items():
        for r in by_key.get(key, []):
            assert r["md5"] == _md5(seed) and r["filepath"] in (f"{key}.jpg", "b.jpg"), r
    half = [k for k in failed if k in by_key]
    # Every stored vector is whole: searching with the image finds its own record first with score 1.
    for key in list(by_key)[:: max(1, len(by_key) // 25)]:
        hits = svc.post(
            "search/file", files={"file": ("q.jpg", _image({**want, **failed}[key]))}, data={"limit": "1"}
        ).json()["data"]
        assert hits and abs(hits[0]["score"] - 1.0) < 1e-3
    assert svc.count() == len(by_key)

    recorder.record(
        "faults.milvus_stopped_under_traffic",
        faults_injected=1,
        operations_checked=len(calls) + len(down_checks),
        records_checked=len(by_key),
        records_lost=len(lost),
        records_duplicated=len(dup),
        unexpected_5xx=0,
        failed_adds_found_stored=len(half),
        answered_503=sum(c.status == 503 for c in calls + down_checks),
        milvus_restart_s=round(restart_s, 1),
        ready_after_restart_s=round(recovered_s, 1),
    )


def test_api_started_while_milvus_is_down_waits_and_becomes_ready(
    own_milvus: StoppableMilvus, tmp_path: Path, recorder: Recorder
) -> None:
    if own_milvus.running:
        own_milvus.stop()
    svc = ServeProcess(
        tmp_path, own_milvus.uri, MILVUS_TIMEOUT="3", MILVUS_RETRIES="2", MILVUS_COLLECTION="started_early"
    )
    try:
        startup_s = svc.wait_healthy(timeout=240)
        checks: list[Call] = []
        for _ in range(3):
            ready = svc.get("ready")
            checks.append(Call("ready", "down", ready.status_code, ready.json()["msg"]))
            add = svc.post("add/file", files={"file": ("x.jpg", _image(1))}, data={"key": "early"})
            checks.append(Call("add", "down", add.status_code, add.json()["msg"]))
            search = svc.post("search/file", files={"file": ("x.jpg", _image(1))})
            checks.append(Call("search", "down", search.status_code, search.json()["msg"]))
            count = svc.get("api/image/sim/count")
            checks.append(Call("count", "down", count.status_code, count.json()["msg"]))
            assert svc.get("health").status_code == 200
            time.sleep(1)
        for c in checks:
            _assert_clear_503(c)

        own_milvus.start()
        ready_s = svc.wait_ready(timeout=120)
        add = svc.post("add/file", files={"file": ("x.jpg", _image(1))}, data={"key": "early"})
        assert add.status_code == 200, add.text
        hits = svc.post("search/file", files={"file": ("x.jpg", _image(1))}).json()["data"]
        assert [h["key"] for h in hits] == ["early"]
        assert svc.post("get/key", json={"key": "early"}).json()["data"][0]["md5"] == _md5(1)
        assert svc.proc.poll() is None  # the same process all along
        assert "answers 503 until Milvus is reachable" in svc.log_text()
    finally:
        svc.stop()
    recorder.record(
        "faults.api_started_before_milvus",
        faults_injected=1,
        operations_checked=len(checks) + 3,
        records_checked=1,
        records_lost=0,
        unexpected_5xx=0,
        api_healthy_s=round(startup_s, 1),
        ready_after_milvus_up_s=round(ready_s, 1),
    )
