"""Duplicate groups over real HTTP (real model, real Milvus Lite): start a scan, follow it to done, page through the
groups; one scan of a namespace at a time, searches answered meanwhile, deleted records left out of pages, rights.

The groups here are the same image bytes under several keys (equal MD5s), scanned with min_score 1.0 so that
distinct pictures never pair however the random-weight model scores them; scores of real copies are the acceptance
test's business (tests/test_duplicates_real.py).
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conf.errors import NotReady
from service.usecases.duplicates import ScanJob, Scans
from tests.conftest import LiveService, photo
from tests.procs import wait_until
from tests.test_hostile_input import expect, ok

SCAN, PAGE = "duplicates/scan", "duplicates"


def b64(seed: int) -> str:
    return base64.b64encode(photo(seed, size=(96, 72))).decode()


def add(svc: LiveService, seed: int, key: str, **fields: Any) -> None:
    ok(svc.post("add/base64", json={"base64": b64(seed), "key": key, **fields}))


def started(resp: Any) -> dict[str, Any]:
    """The 202 answer of a scan start: the job, queued or already further."""
    body = resp.json()
    assert resp.status_code == 202 and body["code"] == 202 and body["msg"] == "success", body
    assert body["data"]["state"] in ("queued", "running", "done") and len(body["data"]["job"]) == 16
    return body["data"]


def state(svc: LiveService, job: str, **kwargs: Any) -> dict[str, Any]:
    return ok(svc.get(f"api/image/sim/duplicates/scan/{job}", **kwargs))["data"]


def finished(svc: LiveService, job: str, **kwargs: Any) -> dict[str, Any]:
    """Poll the job until it is done or failed; its last state."""
    last: dict[str, Any] = {}

    def over() -> bool:
        last.update(state(svc, job, **kwargs))
        return last["state"] in ("done", "failed")

    wait_until(over, timeout=60, interval=0.05, what=f"scan {job} to finish")
    return last


def scan(svc: LiveService, **body: Any) -> dict[str, Any]:
    """Start a scan and wait for it: its final state, which must be done."""
    done = finished(svc, started(svc.post(SCAN, json={"min_score": 1.0, **body}))["job"])
    assert done["state"] == "done", done
    return done


def keys_of(groups: list[dict[str, Any]]) -> list[list[str]]:
    return [[r["key"] for r in g["records"]] for g in groups]


@pytest.fixture
def held(lite_service: LiveService) -> Iterator[tuple[LiveService, threading.Event]]:
    """The service with its scans held at their first step until the event is set.

    A test hook, not a stand-in for Milvus: scans still read the real store and compare for real, they just wait
    at each step (Scans' `pace`). Without it, a scan of a small namespace finishes in milliseconds and a test of
    what happens *while* one runs would race it; a namespace big enough to be slow on every machine would cost
    minutes to fill.
    """
    gate = threading.Event()

    def pace(_job: ScanJob) -> None:
        assert gate.wait(60), "the test never released the scan"

    lite_service.runtime.deps.scans = Scans(pace=pace)
    yield lite_service, gate
    gate.set()


def test_scan_then_page_through_the_groups(lite_service: LiveService) -> None:
    svc = lite_service
    expect(svc.post(PAGE, json={}), 404, "no finished duplicate scan", "POST /api/image/sim/duplicates/scan")
    # Groups of 4, 3, 2, 2 and 2 records (one picture under several keys), and 3 pictures of their own.
    sizes = {10: 4, 11: 3, 12: 2, 13: 2, 14: 2, 15: 1, 16: 1, 17: 1}
    for seed, copies in sizes.items():
        for n in range(copies):
            add(svc, seed, f"p{seed}-{n}", attrs={"shop": "x" if seed % 2 else "y"})
    done = scan(svc)
    assert (done["records_total"], done["records_done"], done["groups"], done["grouped_records"]) == (16, 16, 5, 13)
    assert done["min_score"] == 1.0 and done["filter"] is None and done["error"] is None and done["seconds"] >= 0
    assert done["started"].endswith("Z") and done["finished"] >= done["started"]

    pages, cursor = [], None
    while True:
        body = {"limit": 2} if cursor is None else {"limit": "2", "cursor": cursor}
        page = ok(svc.post(PAGE, json=body))["data"]
        assert page["scan"]["job"] == done["job"] and page["scan"]["state"] == "done"
        pages.append(page["groups"])
        cursor = page["next"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    groups = [g for p in pages for g in p]
    assert [g["size"] for g in groups] == [4, 3, 2, 2, 2] and not any(g["capped"] for g in groups)
    assert keys_of(groups)[:2] == [[f"p10-{n}" for n in range(4)], [f"p11-{n}" for n in range(3)]]  # score, key
    assert sorted(map(sorted, keys_of(groups)[2:])) == [["p12-0", "p12-1"], ["p13-0", "p13-1"], ["p14-0", "p14-1"]]
    record = groups[0]["records"][0]
    assert set(record) == {"id", "key", "filepath", "md5", "attrs", "region", "score"}
    assert record["score"] == 1.0 and record["attrs"] == {"shop": "y"} and record["region"] is None
    assert len({r["md5"] for r in groups[0]["records"]}) == 1

    # A filter scans only the records meeting it: the odd seeds' groups (11, 13).
    filtered = scan(svc, filter={"shop": "x"})
    assert (filtered["records_total"], filtered["groups"], filtered["filter"]) == (7, 2, {"shop": "x"})
    page = ok(svc.post(PAGE, json={"limit": 20}))["data"]
    assert keys_of(page["groups"]) == [["p11-0", "p11-1", "p11-2"], ["p13-0", "p13-1"]] and page["next"] is None
    # The newer scan replaced the older one: its cursors are refused, saying how to go on.
    expect(svc.post(PAGE, json={"cursor": f"{done['job']}.2"}), 409, "start again from the first page")
    expect(svc.post(PAGE, json={"cursor": "nonsense"}), 400, "'cursor'", "next")


def test_records_deleted_since_the_scan_leave_the_pages(lite_service: LiveService) -> None:
    svc = lite_service
    for seed, copies in ((20, 3), (21, 2)):
        for n in range(copies):
            add(svc, seed, f"d{seed}-{n}")
    scan(svc)
    groups = ok(svc.post(PAGE, json={}))["data"]["groups"]
    ids = {r["key"]: r["id"] for g in groups for r in g["records"]}
    assert ok(svc.post("del/id", json={"id": [ids["d20-0"], ids["d21-1"]]}))["data"] == 2
    groups = ok(svc.post(PAGE, json={}))["data"]["groups"]
    assert [(g["size"], sorted(keys_of([g])[0])) for g in groups] == [(2, ["d20-1", "d20-2"])]  # d21 is alone now


def test_one_scan_of_a_namespace_at_a_time_and_searches_answer_meanwhile(
    held: tuple[LiveService, threading.Event],
) -> None:
    svc, gate = held
    for n in range(3):
        add(svc, 30, f"s-{n}")
    add(svc, 31, "other")
    first = started(svc.post(SCAN, json={"min_score": 1.0}))
    wait_until(lambda: state(svc, first["job"])["state"] == "running", timeout=30, what="the scan to run")
    refused = svc.post(SCAN, json={}).json()
    assert refused["code"] == 409 and refused["data"] == {"job": first["job"], "state": "running"}, refused
    assert "scan of this namespace is running" in refused["msg"] and first["job"] in refused["msg"]
    # Another namespace's scan waits its turn (one worker, bounded memory) without being refused.
    theirs = started(svc.post(SCAN, json={"namespace": "shop-b", "min_score": 1.0}))
    assert state(svc, theirs["job"], params={"namespace": "shop-b"})["state"] == "queued"
    # The service keeps serving while the scan is in progress: searches, adds, counts.
    hits = ok(svc.post("search/base64", json={"base64": b64(31), "limit": 2}))["data"]
    assert hits[0]["key"] == "other" and hits[0]["match"] == "exact"
    add(svc, 32, "during")
    assert ok(svc.post("count"))["data"] == 5
    expect(svc.post(PAGE, json={}), 404, "no finished duplicate scan")  # nothing done yet
    gate.set()
    done = finished(svc, first["job"])
    assert done["state"] == "done" and done["groups"] == 1
    assert finished(svc, theirs["job"], params={"namespace": "shop-b"})["state"] == "done"
    [group] = ok(svc.post(PAGE, json={}))["data"]["groups"]
    assert sorted(r["key"] for r in group["records"]) == ["s-0", "s-1", "s-2"]


def test_a_failed_scan_reports_why_and_keeps_the_previous_groups(lite_service: LiveService) -> None:
    svc = lite_service
    failing = threading.Event()

    def pace(_job: ScanJob) -> None:
        # A test hook: once set, a scan fails mid-way the way it does when Milvus goes away during its reads.
        if failing.is_set():
            raise NotReady("Milvus at test is unreachable")

    svc.runtime.deps.scans = Scans(pace=pace)
    for n in range(2):
        add(svc, 40, f"f-{n}")
    good = scan(svc)
    failing.set()
    failed = finished(svc, started(svc.post(SCAN, json={"min_score": 1.0}))["job"])
    assert failed["state"] == "failed" and failed["groups"] is None
    assert failed["error"] == {"reason": "not_ready", "msg": "Milvus at test is unreachable"}
    page = ok(svc.post(PAGE, json={}))["data"]
    assert page["scan"]["job"] == good["job"] and keys_of(page["groups"]) == [["f-0", "f-1"]]


TOKENS = """adm-0 * admin
wr-a shop-a write
rd-a shop-a read
wr-b shop-b write
"""


@pytest.fixture
def tenants(start_service: Callable[..., LiveService], tmp_path: Path) -> LiveService:
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS, encoding="utf-8")
    return start_service(tokens_file=tokens)


def test_rights_write_to_scan_read_to_look(tenants: LiveService) -> None:
    svc = tenants
    for token in ("wr-a", "wr-b"):
        for n in range(2):
            ok(svc.post("add/base64", headers={"token": token}, json={"base64": b64(50), "key": f"{token}-{n}"}))
    expect(svc.post(SCAN, headers={"token": "rd-a"}, json={}), 403, "write right")
    expect(svc.post(SCAN, headers={}, json={}), 401, "missing token")
    job = started(svc.post(SCAN, headers={"token": "wr-a"}, json={"min_score": 1.0}))["job"]
    assert finished(svc, job, headers={"token": "rd-a"})["state"] == "done"  # read may follow it
    page = ok(svc.post(PAGE, headers={"token": "rd-a"}, json={}))["data"]
    assert keys_of(page["groups"]) == [["wr-a-0", "wr-a-1"]]  # never shop-b's copies of the same picture
    # Another namespace's job is "not found", never "forbidden": it does not tell the job exists.
    expect(svc.get(f"api/image/sim/duplicates/scan/{job}", headers={"token": "wr-b"}), 404, "no scan job")
    expect(svc.post(PAGE, headers={"token": "wr-b"}, json={}), 404, "no finished duplicate scan")
    expect(svc.post(PAGE, headers={"token": "wr-b"}, json={"cursor": page["scan"]["job"] + ".0"}), 404, "no finished")
    # The admin names the namespace: in the body to start and page, in the query string to follow.
    assert state(svc, job, headers={"token": "adm-0"}, params={"namespace": "shop-a"})["state"] == "done"
    expect(svc.get(f"api/image/sim/duplicates/scan/{job}", headers={"token": "adm-0"}), 404, "no scan job")
    b_job = started(svc.post(SCAN, headers={"token": "adm-0"}, json={"namespace": "shop-b", "min_score": 1}))["job"]
    finished(svc, b_job, headers={"token": "wr-b"})
    page = ok(svc.post(PAGE, headers={"token": "adm-0"}, json={"namespace": "shop-b"}))["data"]
    assert keys_of(page["groups"]) == [["wr-b-0", "wr-b-1"]]
