"""16 clients at once mixing adds (identical ones racing), searches, lookups and deletes by key and id, in two
tenants' namespaces.

Each client owns a key space no other client of its namespace touches, so a
sequential model of its own acknowledged operations predicts exactly what its
keys hold at any moment, whatever the interleaving; every lookup is checked
against it while the load runs. The two tenants mirror each other: client t of
tenant-a and client t of tenant-b use the same keys and images at the same time,
and also try to delete their ids in the other namespace, which must delete
nothing. Shared keys (default namespace) are only ever added, with identical
content by every client: each must end up stored exactly once. At the end each
namespace must equal the union of its clients' models.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from tests.conftest import LiveService, photo
from tests.reliability import Recorder

pytestmark = pytest.mark.slow

CLIENTS = 16
TENANTS = ("tenant-a", "tenant-b")  # clients t and t + 8 mirror each other, one in each
SECONDS = 20.0
RACE_ROUNDS = 4
SIZE = (128, 96)
SHARED = {"shared-0": 9000, "shared-1": 9001, "shared-2": 9000}  # the same image under two keys, too


def _img(seed: int) -> bytes:
    return photo(seed, size=SIZE)


def _md5(seed: int) -> str:
    return hashlib.md5(_img(seed)).hexdigest()


@dataclass
class Client:
    """One client thread's key space, its model of that space, and what it saw."""

    t: int
    ns: str
    keys: list[str]
    seeds: list[int]
    model: dict[str, dict[str, str]] = field(default_factory=dict)  # key -> {md5: filepath}
    ids: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> (key, md5) seen by a lookup
    shared: set[str] = field(default_factory=set)  # shared keys this client added
    ops: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def path(self, key: str, seed: int) -> str:
        return f"/img/{key}/{seed}.jpg"


class Run:
    def __init__(self, svc: LiveService) -> None:
        self.svc = svc
        self.url = f"{svc.base_url}/api/image/sim/"
        self.statuses: Counter = Counter()
        self.lock = threading.Lock()
        self.barrier = threading.Barrier(CLIENTS, timeout=120)
        half = CLIENTS // len(TENANTS)
        self.clients = [
            Client(
                t,
                TENANTS[t // half],
                [f"t{t % half}-k{j}" for j in range(4)],
                [100 * (t % half + 1) + j for j in range(3)],
            )
            for t in range(CLIENTS)
        ]
        self.md5 = {s: _md5(s) for c in self.clients for s in c.seeds} | {s: _md5(s) for s in SHARED.values()}
        self.md5 |= {s: _md5(s) for s in range(8000, 8000 + RACE_ROUNDS)}

    def post(self, http: requests.Session, c: Client, op: str, path: str, expect: int = 200, **kw: Any):
        resp = http.post(self.url + path, timeout=120, **kw)
        with self.lock:
            self.statuses[resp.status_code] += 1
        c.ops[op] += 1
        if resp.status_code != expect:
            c.errors.append(f"{op}: {resp.status_code} {resp.text[:200]}")
            raise AssertionError(c.errors[-1])
        return resp.json()["data"]

    def add(self, http: requests.Session, c: Client, op: str, key: str, seed: int, path: str, ns: str = "") -> None:
        self.post(
            http,
            c,
            op,
            "add/file",
            files={"file": ("x.jpg", _img(seed))},
            data={"key": key, "imgPath": path, "namespace": ns},
        )

    def client(self, c: Client, deadline: float) -> None:
        http = requests.Session()
        rng = random.Random(c.t)
        try:
            # Identical adds racing: every client adds the same new image under the same new key at once.
            for r in range(RACE_ROUNDS):
                self.barrier.wait()
                self.add(http, c, "add_race", f"race-{r}", 8000 + r, f"/race/{r}.jpg")
            while time.monotonic() < deadline:
                self.step(http, c, rng)
        except (AssertionError, requests.RequestException, threading.BrokenBarrierError) as exc:
            c.errors.append(repr(exc))
            self.barrier.abort()
        finally:
            http.close()

    def step(self, http: requests.Session, c: Client, rng: random.Random) -> None:
        roll = rng.random()
        if roll < 0.30:
            key, seed = rng.choice(c.keys), rng.choice(c.seeds)
            self.add(http, c, "add", key, seed, c.path(key, seed), c.ns)
            c.model.setdefault(key, {})[self.md5[seed]] = c.path(key, seed)
        elif roll < 0.42:
            key = rng.choice(list(SHARED))
            self.add(http, c, "add_shared", key, SHARED[key], f"/shared/{key}.jpg")
            c.shared.add(key)
        elif roll < 0.52:
            keys = rng.sample(c.keys, rng.choice((1, 2)))
            want = sum(len(c.model.get(k, {})) for k in keys)
            got = self.post(http, c, "del_key", "del/key", json={"key": ",".join(keys), "namespace": c.ns})
            self.expect(c, "del_key", got, want)
            for k in keys:
                c.model.pop(k, None)
        elif roll < 0.62 and c.ids:
            rid = rng.choice(list(c.ids))
            # The mirror tenant holds the same keys and images under other ids: deleting this id there is a no-op.
            other = next(ns for ns in TENANTS if ns != c.ns)
            self.expect(
                c,
                "del_id_other",
                self.post(http, c, "del_id_other", "del/id", json={"id": [rid], "namespace": other}),
                0,
            )
            key, md5 = c.ids.pop(rid)
            stored = md5 in c.model.get(key, {})
            got = self.post(http, c, "del_id", "del/id", json={"id": [rid], "namespace": c.ns})
            self.expect(c, "del_id", got, int(stored))
            c.model.get(key, {}).pop(md5, None)
        elif roll < 0.80:
            rows = self.post(http, c, "get_key", "get/key", json={"key": ",".join(c.keys), "namespace": c.ns})
            seen = {(r["key"], r["md5"], r["filepath"]) for r in rows}
            want = {(k, m, p) for k, files in c.model.items() for m, p in files.items()}
            self.expect(c, "get_key", seen, want)
            c.ids = {int(r["id"]): (r["key"], r["md5"]) for r in rows}
        else:
            seed = rng.choice(c.seeds)
            hits = self.post(
                http,
                c,
                "search",
                "search/file",
                files={"file": ("q.jpg", _img(seed))},
                data={"limit": "5", "namespace": c.ns},
            )
            scores = [h["score"] for h in hits]
            self.expect(c, "search_sorted", scores, sorted(scores, reverse=True))
            holders = {k for k, files in c.model.items() if self.md5[seed] in files}
            if holders:  # read-after-write: an image this client holds is found, with score 1
                found = {h["key"] for h in hits if h["score"] > 0.999}
                self.expect(c, "search_finds_own", bool(found & holders), True)

    @staticmethod
    def expect(c: Client, what: str, got: object, want: object) -> None:
        if got != want:
            c.errors.append(f"{what}: got {got!r}, model says {want!r}")
            raise AssertionError(c.errors[-1])


@pytest.mark.parametrize("backend", ["lite", pytest.param("server", marks=pytest.mark.server)])
def test_sixteen_clients_mixing_writes_end_as_the_sequential_model_predicts(
    backend: str, start_service: Callable[..., LiveService], request: pytest.FixtureRequest, recorder: Recorder
) -> None:
    overrides = {"milvus_uri": request.getfixturevalue("milvus_server")} if backend == "server" else {}
    svc = start_service(**overrides)
    run = Run(svc)
    deadline = time.monotonic() + RACE_ROUNDS * 2 + SECONDS
    threads = [threading.Thread(target=run.client, args=(c, deadline), daemon=True) for c in run.clients]
    started = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=SECONDS + 240)
    elapsed = time.monotonic() - started
    errors = [e for c in run.clients for e in c.errors]
    assert not errors, errors[:5]
    assert set(run.statuses) == {200}, run.statuses

    # Each namespace equals the union of its clients' models; the default one holds the shared and race keys.
    got_all: list[tuple[str, str, str, str]] = []
    want_all: set[tuple[str, str, str, str]] = set()
    for ns in TENANTS:
        want = {
            (ns, k, m, p) for c in run.clients if c.ns == ns for k, files in c.model.items() for m, p in files.items()
        }
        keys = sorted({k for c in run.clients if c.ns == ns for k in c.keys})
        rows = svc.post("get/key", json={"key": keys, "namespace": ns}).json()["data"]
        got_all += [(ns, r["key"], r["md5"], r["filepath"]) for r in rows]
        want_all |= want
        assert int(svc.post("count", json={"namespace": ns}).json()["data"]) == len(want), ns
    want = {("", k, _md5(s), f"/shared/{k}.jpg") for k, s in SHARED.items() if any(k in c.shared for c in run.clients)}
    want |= {("", f"race-{r}", _md5(8000 + r), f"/race/{r}.jpg") for r in range(RACE_ROUNDS)}
    keys = sorted(set(SHARED) | {f"race-{r}" for r in range(RACE_ROUNDS)} | {k for c in run.clients for k in c.keys})
    rows = svc.post("get/key", json={"key": keys}).json()["data"]
    got_all += [("", r["key"], r["md5"], r["filepath"]) for r in rows]
    want_all |= want
    assert svc.count() == len(want)  # the tenants' keys never reached the default namespace
    dup = len(got_all) - len(set(got_all))
    assert dup == 0, f"{dup} records stored twice"
    assert set(got_all) == want_all, (sorted(set(got_all) - want_all)[:5], sorted(want_all - set(got_all))[:5])
    want, got = want_all, got_all
    # Thumbnails: one file for each distinct image still stored (in any namespace) and none for a deleted one,
    # although adds and deletes of the same images raced (a thumbnail goes only with the last record of its MD5).
    thumbs = svc.runtime.deps.thumbs
    assert {p.stem for p in thumbs.root.rglob("*.webp")} == {m for _ns, _k, m, _p in want}
    assert not [p for p in thumbs.root.rglob("*.tmp")]

    ops = sum((c.ops for c in run.clients), Counter())
    recorder.record(
        f"concurrency.{backend}",
        operations_checked=sum(ops.values()) + len(keys) * (len(TENANTS) + 1),
        records_checked=len(want),
        records_lost=len(want - set(got)),
        records_duplicated=dup,
        unexpected_5xx=sum(n for s, n in run.statuses.items() if s >= 500),
        clients=CLIENTS,
        seconds=round(elapsed, 1),
        ops=dict(sorted(ops.items())),
    )
