"""Duplicate groups: the blockwise pair search against a brute-force reference, reading a namespace's vectors in
id windows on Milvus Lite and the Milvus server, and `python main.py duplicates`."""

from __future__ import annotations

import base64
import csv
import functools
import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conf.errors import NotReady
from service.store.filters import compile_filter
from service.store.records import Record, VectorStore
from service.usecases import duplicates
from service.usecases.duplicates import GROUP_CAP, FoundGroup, find_groups, scan_namespace
from tests.conftest import ROOT, LiveService, make_settings, photo

THRESHOLD = 0.95
# Pairs closer than this to the threshold are left out of the generated data: the reference multiplies in
# float64, find_groups in float32 blocks, and a score on the edge may round either way.
EDGE = 1e-4


def reference(md5s: Sequence[str], vectors: np.ndarray, min_score: float) -> dict[frozenset[int], dict[int, float]]:
    """Every group as {record index: best score to another member}, from all pairs of a float64 product."""
    n = len(md5s)
    scores = vectors.astype(np.float64) @ vectors.astype(np.float64).T
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    best = [-np.inf] * n
    for i in range(n):
        for j in range(i + 1, n):
            score = 1.0 if md5s[i] == md5s[j] else scores[i, j]
            if md5s[i] == md5s[j] or scores[i, j] >= min_score:
                parent[root(i)] = root(j)
                best[i], best[j] = max(best[i], score), max(best[j], score)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(root(i), []).append(i)
    return {frozenset(ms): {i: best[i] for i in ms} for ms in members.values() if len(ms) > 1}


def unit_rows(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@st.composite
def catalogs(draw: st.DrawFn) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Random unit vectors, some near copies of others (noise), chains (each a step from the previous one, the
    ends too far apart to pair directly), and records sharing an MD5 whose vectors differ."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dim = 12
    originals = draw(st.integers(1, 25))
    rows = list(rng.standard_normal((originals, dim)))
    md5s = [f"{i:032x}" for i in range(originals)]
    for _ in range(draw(st.integers(0, 15))):
        source = int(rng.integers(len(rows)))
        kind = draw(st.sampled_from(["copy", "chain", "same_bytes"]))
        if kind == "same_bytes":  # the same file under another key: one MD5, a vector that need not be close
            rows.append(rng.standard_normal(dim))
            md5s.append(md5s[source])
            continue
        base = rows[source] / np.linalg.norm(rows[source])
        step = 0.05 if kind == "copy" else 0.28  # chain: ~0.96 to the previous link, less two links apart
        link = base + step * rng.standard_normal(dim) / np.sqrt(dim)
        rows.append(link)
        md5s.append(f"{len(md5s):032x}")
    vectors = unit_rows(np.asarray(rows))
    order = rng.permutation(len(rows))  # copies are not next to their originals
    ids = rng.choice(2**40, size=len(rows), replace=False).astype(np.int64) + 1
    return ids, [md5s[i] for i in order], vectors[order]


def as_sets(ids: np.ndarray, groups: list[FoundGroup]) -> dict[frozenset[int], dict[int, float]]:
    index = {int(v): i for i, v in enumerate(ids)}
    return {frozenset(index[m.id] for m in g.members): {index[m.id]: m.score for m in g.members} for g in groups}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(catalogs(), st.integers(1, 9), st.integers(1, 13), st.booleans())
def test_find_groups_matches_all_pairs(
    catalog: tuple[np.ndarray, list[str], np.ndarray], block: int, columns: int, fold: bool
) -> None:
    ids, md5s, vectors = catalog
    scores = vectors.astype(np.float64) @ vectors.astype(np.float64).T
    assume(not np.any(np.abs(scores - THRESHOLD) < EDGE))
    expected = reference(md5s, vectors, THRESHOLD)
    done: list[int] = []
    with pytest.MonkeyPatch.context() as patch:
        if fold:  # fold the edges into components after every few pairs, as a catalog with huge groups does
            patch.setattr(duplicates, "EDGE_FOLD", 2)
        groups = find_groups(ids, md5s, vectors, THRESHOLD, block=block, on_rows=done.append, columns=columns)
    found = as_sets(ids, groups)
    assert found.keys() == expected.keys()
    for members, best in expected.items():
        assert found[members] == pytest.approx(best, abs=1e-5)
    # Largest first, then by best score, then by smallest id; members by score, then id.
    keys = [(-g.size, -g.best, min(m.id for m in g.members)) for g in groups]
    assert keys == sorted(keys)
    for g in groups:
        assert [(-m.score, m.id) for m in g.members] == sorted((-m.score, m.id) for m in g.members)
        assert g.best == g.members[0].score and not g.capped
    assert done[-1] == len(ids) and done == sorted(done)


def test_a_chain_is_one_group_though_its_ends_are_far_apart() -> None:
    angles = np.radians([0.0, 15.0, 30.0, 45.0, 120.0])  # cos 15 deg = 0.966: neighbours pair, 0 and 30 do not
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    ids = np.array([50, 40, 30, 20, 10], dtype=np.int64)
    groups = find_groups(ids, [f"{i:032x}" for i in range(5)], vectors, THRESHOLD)
    assert [[m.id for m in g.members] for g in groups] == [[20, 30, 40, 50]]  # all ~0.966: by id
    assert groups[0].best == pytest.approx(np.cos(np.radians(15.0)), abs=1e-6)


def test_equal_md5s_group_however_far_their_vectors() -> None:
    vectors = unit_rows(np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]]))
    groups = find_groups(np.array([3, 2, 1]), ["a" * 32, "b" * 32, "a" * 32], vectors, THRESHOLD)
    assert [(g.size, [(m.id, m.score) for m in g.members]) for g in groups] == [(2, [(1, 1.0), (3, 1.0)])]


def test_a_group_bigger_than_the_cap_lists_the_cap_and_says_its_size() -> None:
    rng = np.random.default_rng(3)
    copies = GROUP_CAP + 37
    base = rng.standard_normal(16)
    vectors = unit_rows(np.vstack([base + 0.01 * rng.standard_normal((copies, 16)), rng.standard_normal((3, 16))]))
    ids = np.arange(1, copies + 4, dtype=np.int64)[::-1].copy()
    small = unit_rows(np.array([[1.0] + [0.0] * 15, [0.999, 0.04] + [0.0] * 14]))
    groups = find_groups(
        np.concatenate([ids, [9001, 9002]]),
        [f"{i:032x}" for i in range(copies + 5)],
        np.vstack([vectors, small]),
        THRESHOLD,
        block=64,
    )
    big, pair = groups[0], groups[1]
    assert (big.size, big.capped, len(big.members)) == (copies, True, GROUP_CAP)
    assert (pair.size, pair.capped, [m.id for m in pair.members]) == (2, False, [9001, 9002])
    assert len(groups) == 2  # the 3 random vectors pair with nothing


def test_nothing_to_group() -> None:
    assert find_groups(np.empty(0, np.int64), [], np.empty((0, 4), np.float32), THRESHOLD) == []
    assert find_groups(np.array([1]), ["a" * 32], unit_rows(np.ones((1, 4))), THRESHOLD) == []


# --- reading a namespace in id windows -----------------------------------------------------------------------
DIM = 8


@pytest.fixture(params=["lite", pytest.param("server", marks=pytest.mark.server)])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    overrides = {"milvus_uri": request.getfixturevalue("milvus_server")} if request.param == "server" else {}
    store = VectorStore(make_settings(tmp_path, **overrides), DIM)
    store.connect()
    yield store
    store.connection.client.drop_collection(store.connection.collection)
    store.close()


def fill(store: VectorStore, namespace: str, count: int, seed: int) -> dict[int, tuple[str, np.ndarray]]:
    """`count` records with random vectors, every third with attrs {"shop": "x"}; returns id -> (md5, vector)."""
    rng = np.random.default_rng(seed)
    scope = store.scope(namespace, attrs=True)
    vectors = unit_rows(rng.standard_normal((count, DIM)))
    records = [
        Record(f"k{seed}-{i}", f"{seed:08x}{i:024x}", f"f{i}.jpg", vectors[i], {"shop": "x" if i % 3 == 0 else "y"})
        for i in range(count)
    ]
    ids = [rid for rid, _created in store.put_many(scope, records)]
    return {rid: (rec.md5, rec.vector) for rid, rec in zip(ids, records, strict=True)}


def test_vector_chunks_read_every_record_of_the_namespace_once(store: VectorStore) -> None:
    mine = fill(store, "shop-a", 240, seed=1)
    fill(store, "shop-b", 60, seed=2)
    scope = store.scope("shop-a")
    cap = 4
    # Windows are aimed at cap/2 = 2 records; over ~120 windows, some hold 4 or more (P ~ 0.14 each) and are
    # read again as halves. Were a full window not split, its rows beyond the cap would be missing below.
    chunks = list(store.vector_chunks(scope, chunk=cap))
    seen = np.concatenate([c.ids for c in chunks])
    assert sorted(seen.tolist()) == sorted(mine)  # each once, none of shop-b's
    if store.connection.settings.milvus_is_lite:  # Lite reads listed ids by id, `cap` at a time: no windows
        assert [len(c.ids) for c in chunks] == [cap] * (len(mine) // cap)
    else:
        assert all(len(c.ids) < cap for c in chunks)
    for chunk in chunks:
        assert chunk.vectors.dtype == np.float32 and chunk.vectors.shape == (len(chunk.ids), DIM)
        for rid, md5, vector in zip(chunk.ids.tolist(), chunk.md5s, chunk.vectors, strict=True):
            assert md5 == mine[rid][0]
            np.testing.assert_allclose(vector, mine[rid][1], atol=1e-6)


def test_vector_chunks_honour_the_filter(store: VectorStore) -> None:
    mine = fill(store, "shop-a", 90, seed=3)
    expr = compile_filter({"shop": "x"})
    scope = store.scope("shop-a", filtered=True)
    seen = [rid for c in store.vector_chunks(scope, expr, chunk=16) for rid in c.ids.tolist()]
    wanted = [rid for rid, (md5, _v) in mine.items() if int(md5[8:], 16) % 3 == 0]
    assert sorted(seen) == sorted(wanted) and len(wanted) == 30
    assert store.count(scope, filter_expr=expr) == 30
    assert list(store.vector_chunks(store.scope("nobody"))) == []


def test_a_scan_finds_the_copies_stored_in_its_namespace_only(store: VectorStore) -> None:
    fill(store, "shop-a", 50, seed=4)
    rng = np.random.default_rng(5)
    base = unit_rows(rng.standard_normal((1, DIM)))[0]
    near = unit_rows((base + 0.02 * rng.standard_normal(DIM))[None, :])[0]
    a, b = store.scope("shop-a", attrs=True), store.scope("shop-b", attrs=True)
    store.put_many(a, [Record("orig", "1" * 32, "o.jpg", base), Record("copy", "2" * 32, "c.jpg", near)])
    store.put_many(a, [Record("same-bytes", "1" * 32, "s.jpg", unit_rows(rng.standard_normal((1, DIM)))[0])])
    store.put_many(b, [Record("theirs", "3" * 32, "t.jpg", base)])  # the same picture in another namespace
    result = scan_namespace(store, store.scope("shop-a"), 0.99)
    assert result.records_total == 53
    [group] = [g for g in result.described if any(r["key"] == "orig" for r in g["records"])]
    assert sorted(r["key"] for r in group["records"]) == ["copy", "orig", "same-bytes"]
    assert all(r["key"] != "theirs" for g in result.described for r in g["records"])
    assert {r["key"]: r["score"] for r in group["records"]}["same-bytes"] == 1.0


# --- python main.py duplicates -------------------------------------------------------------------------------
def run_cli(tmp: Path, *args: str, uri: str = "", collection: str = "catalog") -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MODEL_WEIGHTS": "random",
        "MILVUS_URI": uri or str(tmp / "milvus.db"),
        "MILVUS_COLLECTION": collection,
        "THUMB_DIR": str(tmp / "thumbs"),
    }
    return subprocess.run(
        [sys.executable, "main.py", "duplicates", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.server
def test_the_cli_writes_the_groups_as_json_and_csv(
    start_service: Callable[..., LiveService], milvus_server: str, tmp_path: Path
) -> None:
    # On the Milvus server: a Milvus Lite file stays locked by the process that opened it until that process ends,
    # and the service that fills the catalog here runs inside the test's process.
    collection = f"cli_{uuid.uuid4().hex[:12]}"
    svc = start_service(milvus_uri=milvus_server, milvus_collection=collection)
    image = {seed: base64.b64encode(photo(seed, size=(96, 72))).decode() for seed in (1, 2, 3)}
    for key, seed, shop in (("a", 1, "x"), ("b", 1, "x"), ("c", 3, "x"), ("d", 2, "y"), ("e", 2, "y"), ("f", 2, "y")):
        resp = svc.post("add/base64", json={"base64": image[seed], "key": key, "attrs": {"shop": shop}})
        assert resp.status_code == 200, resp.text
    cli = functools.partial(run_cli, tmp_path, uri=milvus_server, collection=collection)

    out = tmp_path / "groups.json"
    done = cli("--min-score", "1", "--json", str(out), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "2 duplicate groups holding 5 of 6 records" in done.stderr and str(out) in done.stderr
    written = json.loads(out.read_text(encoding="utf-8"))
    assert (written["namespace"], written["min_score"], written["records_total"]) == ("", 1.0, 6)
    assert [[r["key"] for r in g["records"]] for g in written["groups"]] == [["d", "e", "f"], ["a", "b"]]
    assert written["groups"][0]["size"] == 3 and written["groups"][0]["capped"] is False
    assert written["groups"][1]["records"][0]["attrs"] == {"shop": "x"}

    table = tmp_path / "groups.csv"
    done = cli("--filter", '{"shop": "x"}', "--min-score", "1", "--csv", str(table), "--no-progress")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(table.open(encoding="utf-8")))
    assert [(r["group"], r["size"], r["capped"], r["key"], r["score"]) for r in rows] == [
        ("1", "2", "false", "a", "1.0"),
        ("1", "2", "false", "b", "1.0"),
    ]
    assert json.loads(rows[0]["attrs"]) == {"shop": "x"} and rows[0]["region"] == "null"

    # Neither file: the JSON goes to stdout; without --min-score the duplicate threshold in force applies
    # (DUPLICATE_SCORE, else calibrated, else the model's default: ResNet50's 0.90 here), as in the service.
    done = cli("--namespace", "nobody")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"namespace": "nobody", "min_score": 0.9, "records_total": 0, "groups": []}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--min-score", "0"), "above 0 and at most 1"),
        (("--min-score", "1.5"), "above 0 and at most 1"),
        (("--filter", "{"), "is not JSON"),
        (("--filter", '"shop == 1"'), "JSON object of attribute conditions"),
        (("--namespace", "-bad"), "--namespace"),
        (("--csv", "a.csv", "--json", "a.json"), "not allowed with"),
    ],
)
def test_the_cli_refuses_bad_arguments_with_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    done = run_cli(tmp_path, *args)
    assert done.returncode == 2 and message in done.stderr, (done.returncode, done.stderr)
    assert not (tmp_path / "milvus.db").exists()  # refused before the store (or the model) was opened


def test_theread_ahead_hands_over_a_reader_failure_and_stops_with_its_consumer() -> None:
    from service.store.records import VectorChunk  # noqa: PLC0415 - only this test builds chunks by hand

    def chunk(n: int) -> VectorChunk:
        return VectorChunk(np.array([n]), [f"{n:032x}"], unit_rows(np.ones((1, 4))))

    def failing() -> Iterator[VectorChunk]:
        yield chunk(1)
        raise NotReady("Milvus went away")

    got = []
    with pytest.raises(NotReady, match="went away"):
        got.extend(int(c.ids[0]) for c in duplicates.read_ahead(failing()))
    assert got == [1]

    read: list[int] = []

    def endless() -> Iterator[VectorChunk]:
        for n in itertools.count():
            read.append(n)
            yield chunk(n)

    for c in duplicates.read_ahead(endless(), ahead=2):
        if int(c.ids[0]) == 3:
            break  # the consumer stops (a cancelled scan): the reader must stop too, not read on for ever
    stopped_at = len(read)
    assert stopped_at <= 3 + 2 + 2  # what was consumed, what the queue holds, and the chunk in hand
    time.sleep(0.3)
    assert len(read) == stopped_at
