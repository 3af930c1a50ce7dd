"""Duplicate-group scan at scale: a namespace of 100,000 records scanned on Milvus Lite and on a Milvus server.

The records are the vector benchmark's synthetic vectors (bench.vectors.synthetic_vectors: clustered, most of
their variance in a few dozen directions) at EfficientNet-Lite0's dimension, stored the way the service stores
them (ids derived from key and MD5, one namespace). Planted among them: groups whose copies carry the source's
MD5 and vector (the exact bytes under another key), groups of near copies (cosine 0.97-0.995 to the source),
and exact copies of some sources in another namespace, which no group may include. The scan runs at a
min_score above the synthetic vectors' own nearest neighbours (their p99.9 is about 0.92), so the planted
groups are what it should find; groups of unplanted records are counted beside them.

Measured per backend: the scan's seconds and its phases (reading the vectors in chunks, the blockwise matrix
products, reading the grouped records' details), the RSS the scan adds to this process (psutil sampled every
50 ms, and the kernel's exact peak, VmHWM, reset before the scan; Milvus Lite 3 runs inside this process, so its
share is counted) and to the Milvus server's process (a child of this one), and
searches run back to back from another thread against the same store (`VectorStore.search`, the service's own
call, in process) while the scan runs: their count and p50, beside the p50 of the same searches idle before.

    python -m bench.duplicates [--small]      # writes results/bench/duplicates.json
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.cli import RESULTS, bench_arguments, bench_settings, ms_stats, parse_and_log, rnd, write_json
from bench.vectors import (
    insert_rows,
    lite_load,
    nullctx,
    open_store,
    release_lite,
    server_settle,
    synthetic_queries,
    synthetic_vectors,
)
from conf.settings import ModelName, Settings
from model.backbones import backbone
from tests.procs import milvus_server_on_loopback, reset_peak_rss, rss_bytes

log = logging.getLogger("bench.duplicates")

MODEL = ModelName.EFFICIENTNET_LITE0
NAMESPACE = "bench-dups"
OTHER_NAMESPACE = "bench-dups-other"
COLLECTION = "bench_duplicates"
SEED = 21
BATCH = 5000  # rows per insert
MB = 1024 * 1024
RSS_EVERY_S = 0.05


@dataclass
class DupPlan:
    """The catalog and the measurements; `small()` is the seconds-long variant `make test` runs."""

    records: int = 100_000  # in the scanned namespace, planted copies included
    exact_groups: int = 300  # groups whose 1-3 copies are the source's exact bytes (same MD5) under other keys
    near_groups: int = 300  # groups of 1-3 near copies (cosine 0.97-0.995 to the source, another MD5)
    foreign: int = 100  # exact copies of planted sources in another namespace: no group may include them
    min_score: float = 0.95
    backends: tuple[str, ...] = ("lite", "server")
    queries: int = 200  # distinct search vectors (half near stored ones, half fresh), cycled
    idle_searches: int = 200
    settle_timeout: float = 900.0

    @classmethod
    def small(cls) -> DupPlan:
        """Every code path on Milvus Lite, a few seconds."""
        return cls(
            records=3000,
            exact_groups=12,
            near_groups=12,
            foreign=5,
            backends=("lite",),
            queries=20,
            idle_searches=20,
            settle_timeout=20.0,
        )


@dataclass
class Catalog:
    """The rows to store: vectors, keys, MD5s, ids per namespace, and the planted groups (as id sets)."""

    vectors: np.ndarray
    keys: list[str]
    md5s: list[str]
    ids: np.ndarray
    planted: list[frozenset[int]]
    planted_kinds: list[str]
    foreign: list[int]  # rows (of `vectors`) stored again in OTHER_NAMESPACE
    foreign_ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


def _md5(r: int) -> str:
    return hashlib.md5(f"bench-dups-{r}".encode(), usedforsecurity=False).hexdigest()


def _near(v: np.ndarray, cos: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at exactly cosine `cos` to unit vector `v` (a random direction orthogonal to it)."""
    u = rng.standard_normal(v.shape).astype(np.float32)
    u -= (u @ v) * v
    u /= np.linalg.norm(u)
    return (cos * v + np.sqrt(1 - cos * cos) * u).astype(np.float32)


def catalog(plan: DupPlan, dim: int) -> Catalog:
    """The synthetic catalog: unique records first, then the planted copies, `plan.records` rows in all."""
    from service.store.records import derive_id  # noqa: PLC0415

    rng = np.random.default_rng(SEED)
    copies = rng.integers(1, 4, plan.exact_groups + plan.near_groups)
    base_n = plan.records - int(copies.sum())
    vectors = np.empty((plan.records, dim), np.float32)
    vectors[:base_n] = synthetic_vectors(base_n, dim, seed=SEED)
    keys = [f"p{r:06d}" for r in range(plan.records)]
    md5s = [_md5(r) for r in range(plan.records)]
    sources = rng.choice(base_n, len(copies), replace=False)
    groups: list[list[int]] = []
    kinds: list[str] = []
    row = base_n
    for g, (src, n) in enumerate(zip(sources, copies, strict=True)):
        exact = g < plan.exact_groups
        members = [int(src)]
        for _ in range(int(n)):
            if exact:
                vectors[row], md5s[row] = vectors[src], md5s[src]
            else:
                vectors[row] = _near(vectors[src], float(rng.uniform(0.97, 0.995)), rng)
            members.append(row)
            row += 1
        groups.append(members)
        kinds.append("exact" if exact else "near")
    ids = np.array([derive_id(k, m, 0, NAMESPACE) for k, m in zip(keys, md5s, strict=True)], np.int64)
    if len(np.unique(ids)) != len(ids):
        raise RuntimeError("two synthetic records derived the same id: change SEED")
    foreign = [int(s) for s in sources[: plan.foreign]]
    return Catalog(
        vectors,
        keys,
        md5s,
        ids,
        [frozenset(int(ids[m]) for m in members) for members in groups],
        kinds,
        foreign,
        np.array([derive_id(keys[r], md5s[r], 0, OTHER_NAMESPACE) for r in foreign], np.int64),
    )


def row_batches(cat: Catalog, store: Any) -> Iterator[list[dict[str, Any]]]:
    """The catalog's rows as the service writes them, in batches: the namespace's, then the other namespace's.
    The namespaces' fields are read from the store now (lite_load closes it before it takes the rows)."""
    extras = {
        NAMESPACE: store.scope(NAMESPACE).row_extras({}),
        OTHER_NAMESPACE: store.scope(OTHER_NAMESPACE).row_extras({}),
    }

    def rows(ns: str, pairs: Iterable[tuple[int, int]]) -> list[dict[str, Any]]:
        return [
            {
                "id": rid,
                "key": cat.keys[r],
                "md5": cat.md5s[r],
                "filepath": f"/bench/{cat.keys[r]}.jpg",
                "vector": cat.vectors[r].tolist(),
                **extras[ns],
            }
            for r, rid in pairs
        ]

    def batches() -> Iterator[list[dict[str, Any]]]:
        for start in range(0, len(cat.keys), BATCH):
            stop = min(len(cat.keys), start + BATCH)
            yield rows(NAMESPACE, ((r, int(cat.ids[r])) for r in range(start, stop)))
        yield rows(OTHER_NAMESPACE, zip(cat.foreign, (int(i) for i in cat.foreign_ids), strict=True))

    return batches()


# --------------------------------------------------------------------------------------------
# The scan, timed by phase
# --------------------------------------------------------------------------------------------


@dataclass
class ScanOutcome:
    """What the scan found (each group's size and listed member ids) and how long its phases took."""

    records: int
    groups: list[tuple[int, list[int]]]
    described: int  # records of the groups read back with their details
    seconds: float
    phases: dict[str, float]


class TimedReads:
    """The store, with its `vector_chunks` timed: when the last window was read (the scan compares the rows
    already read meanwhile, on another thread), and how long the reading itself took."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.last_read: float | None = None
        self.reading_s = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def vector_chunks(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        chunks = self.store.vector_chunks(*args, **kwargs)
        while True:
            t0 = time.perf_counter()
            chunk = next(chunks, None)
            self.last_read = time.perf_counter()
            self.reading_s += self.last_read - t0
            if chunk is None:
                return
            yield chunk


def scan(store: Any, min_score: float) -> ScanOutcome:
    """The namespace's duplicate groups as the service finds them: its scan job (`scan_namespace` without
    details, BLAS on one thread: a reader thread reads the vectors in id windows while the rows already read
    are compared blockwise, then the groups), then every group's records read back (`describe_groups`, what the
    pages of groups and the CLI read). Phases: until the last window was read, the comparing left after it, and
    the groups' records."""
    from service.usecases.duplicates import describe_groups, one_blas_thread, scan_namespace  # noqa: PLC0415

    timed = TimedReads(store)
    scope = store.scope(NAMESPACE)
    logged = [time.perf_counter()]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - logged[0] >= 30:
            logged[0] = now
            log.info("scan: %d of %d rows compared, %.0f s", done, total, now - t0)

    t0 = time.perf_counter()
    with one_blas_thread():
        result = scan_namespace(timed, scope, min_score, on_progress=progress, details=False)
    job = time.perf_counter()
    described = describe_groups(store, scope, result.groups)
    end = time.perf_counter()
    read = timed.last_read or t0
    return ScanOutcome(
        result.records_total,
        [(g.size, [m.id for m in g.members]) for g in result.groups],
        sum(len(g["records"]) for g in described),
        end - t0,
        {
            "job_s": job - t0,
            "read_vectors_s": read - t0,  # the rows read so far are compared meanwhile
            "reading_busy_s": timed.reading_s,  # the reader thread's own time in vector_chunks
            "find_groups_s": job - read,  # the comparing left after the last window, then the groups
            "read_details_s": end - job,
        },
    )


# --------------------------------------------------------------------------------------------
# What runs beside the scan: the RSS sampler and the searching client
# --------------------------------------------------------------------------------------------


class RssSampler(threading.Thread):
    """This process's RSS and its children's (Milvus Lite's server), every RSS_EVERY_S, until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.me = psutil.Process()
        self.stop = threading.Event()
        self.peak_self = self.peak_children = 0

    def children_rss(self) -> int:
        total = 0
        for child in self.me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:  # a child that just exited
                continue
        return total

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak_self = max(self.peak_self, self.me.memory_info().rss)
            self.peak_children = max(self.peak_children, self.children_rss())
            self.stop.wait(RSS_EVERY_S)


class Searcher(threading.Thread):
    """One client searching back to back (the service's VectorStore.search, top 10) until stopped."""

    def __init__(self, search: Callable[[np.ndarray], Any], queries: np.ndarray) -> None:
        super().__init__(daemon=True)
        self.search, self.queries = search, queries
        self.stop = threading.Event()
        self.seconds: list[float] = []
        self.errors: list[str] = []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                self.search(self.queries[n % len(self.queries)])
                self.seconds.append(time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - counted and reported, the scan goes on
                self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
            n += 1


def measure(store: Any, cat: Catalog, plan: DupPlan, queries: np.ndarray) -> dict[str, Any]:
    """Idle searches, then the scan with the sampler and the searching client running beside it."""
    scope = store.scope(NAMESPACE)

    def search(q: np.ndarray) -> Any:
        return store.search(scope, q, 10)

    for q in queries[:10]:
        search(q)  # warm-up
    idle = []
    for n in range(plan.idle_searches):
        t0 = time.perf_counter()
        search(queries[n % len(queries)])
        idle.append(time.perf_counter() - t0)

    gc.collect()
    sampler, searcher = RssSampler(), Searcher(search, queries)
    base_self, base_children = sampler.me.memory_info().rss, sampler.children_rss()
    reset_peak_rss(os.getpid())
    sampler.start()
    searcher.start()
    try:
        outcome = scan(store, plan.min_score)
    finally:
        searcher.stop.set()
        sampler.stop.set()
        searcher.join()
        sampler.join()
    _cur, hwm = rss_bytes(os.getpid())
    return {
        "records_scanned": outcome.records,
        "scan_s": rnd(outcome.seconds, 1),
        "phases": {k: rnd(v, 1) for k, v in outcome.phases.items()},
        "rss": {
            "baseline_mb": rnd(base_self / MB, 0),
            "added_mb": rnd((max(hwm, sampler.peak_self) - base_self) / MB, 0),
            "added_sampled_mb": rnd((sampler.peak_self - base_self) / MB, 0),
            "children_baseline_mb": rnd(base_children / MB, 0),
            "children_added_mb": rnd(max(0, sampler.peak_children - base_children) / MB, 0),
        },
        "searches": {
            "idle": ms_stats(idle),
            "during_scan": {**ms_stats(searcher.seconds), "errors": len(searcher.errors)},
            "error_samples": searcher.errors[:3],
        },
        "groups": {**judge(outcome, cat), "described_records": outcome.described},
    }


def judge(outcome: ScanOutcome, cat: Catalog) -> dict[str, Any]:
    """The groups found against the planted ones: each planted group found exactly, groups of unplanted
    records, and whether any group holds a record of another namespace or of none of the catalog."""
    found = [frozenset(members) for _size, members in outcome.groups]
    found_set = set(found)
    planted_ids = set().union(*cat.planted) if cat.planted else set()
    known = set(cat.ids.tolist())
    exact = [g in found_set for g in cat.planted]
    return {
        "found": len(found),
        "grouped_records": sum(size for size, _m in outcome.groups),
        "largest": max((size for size, _m in outcome.groups), default=0),
        "planted": len(cat.planted),
        "planted_found_exactly": sum(exact),
        "planted_found_by_kind": {
            kind: sum(e for e, k in zip(exact, cat.planted_kinds, strict=True) if k == kind)
            for kind in ("exact", "near")
        },
        "other_groups": sum(1 for g in found if not g & planted_ids),
        "foreign_records": sum(len(g - known) for g in found),
    }


# --------------------------------------------------------------------------------------------
# Per backend, and the whole run
# --------------------------------------------------------------------------------------------


def _backend(settings: Settings, backend: str, plan: DupPlan, workdir: Path, cat: Catalog) -> dict[str, Any]:
    """Load the catalog into one backend, then measure the scan there."""
    bdir = workdir / f"duplicates-{backend}"
    shutil.rmtree(bdir, ignore_errors=True)
    bdir.mkdir(parents=True)
    dim = cat.vectors.shape[1]
    queries = synthetic_queries(cat.vectors, plan.queries, seed=SEED + 1)
    total = len(cat.keys) + len(cat.foreign)
    with milvus_server_on_loopback(bdir) if backend == "server" else nullctx(str(bdir / "duplicates.db")) as uri:
        store = open_store(settings, uri, dim, COLLECTION)
        try:
            entry: dict[str, Any] = {"index": store.vector_index, "server_version": store.server_version}
            if backend == "lite":
                store, insert_s, settle = lite_load(store, uri, row_batches(cat, store), dim)
            else:
                insert_s = insert_rows(store, row_batches(cat, store))
                settle = server_settle(store, total, plan.settle_timeout)
            entry.update({"load_s": rnd(insert_s, 1), "settle_s": rnd(settle, 1)})
            log.info("duplicates on %s: %d records loaded in %.0f s + %.0f s", backend, total, insert_s, settle)
            entry["loadavg_before"] = [round(x, 2) for x in os.getloadavg()]
            entry.update(measure(store, cat, plan, queries))
            entry["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        finally:
            store.close()
            if backend == "lite":
                release_lite(uri)
    log.info("duplicates on %s: %s", backend, entry)
    return entry


def run(settings: Settings, plan: DupPlan, workdir: Path | None = None) -> dict[str, Any]:
    """The catalog, then each backend of the plan (a backend that fails is reported, the others still run)."""
    t0 = time.perf_counter()
    spec = backbone(MODEL)
    cat = catalog(plan, spec.dim)
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="bench-dups-")) if workdir is None else workdir
    result: dict[str, Any] = {
        "records": plan.records,
        "dim": spec.dim,
        "model": MODEL.value,
        "data": "synthetic clustered unit vectors (bench.vectors.synthetic_vectors) with planted copies",
        "namespace": NAMESPACE,
        "min_score": plan.min_score,
        "model_duplicate_default": spec.duplicate_default,
        "planted": {
            "exact_groups": plan.exact_groups,
            "near_groups": plan.near_groups,
            "copies": sum(len(g) - 1 for g in cat.planted),
            "foreign_copies": len(cat.foreign),
            "near_cosine": [0.97, 0.995],
        },
        "cpus": os.cpu_count(),
        "search_client": "VectorStore.search in process, one thread back to back, top 10",
        "backends": {},
    }
    try:
        for backend in plan.backends:
            log.info("duplicates: %s", backend)
            try:
                result["backends"][backend] = _backend(settings, backend, plan, work, cat)
            except Exception as exc:
                log.exception("duplicates on %s failed", backend)
                result["backends"][backend] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    result["small"] = plan.records < 100_000
    result["date"] = dt.date.today().isoformat()
    result["seconds"] = rnd(time.perf_counter() - t0, 1)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.duplicates`: build the catalog, load it into each backend, scan, write the JSON."""
    ap = bench_arguments("python -m bench.duplicates", __doc__, RESULTS / "duplicates.json")
    ap.add_argument("--small", action="store_true", help="3,000 records on Milvus Lite only (seconds)")
    ap.add_argument("--backend", choices=("lite", "server"), action="append", help="only these backends")
    args = parse_and_log(ap, argv)
    plan = DupPlan.small() if args.small else DupPlan()
    if args.backend:
        plan.backends = tuple(args.backend)
    result = run(bench_settings(args.weights), plan)
    write_json(args.out, result)
    for backend, e in result["backends"].items():
        if "error" in e:
            print(f"{backend}: failed: {e['error']}")
            continue
        g, s = e["groups"], e["searches"]
        print(
            f"{backend}: scan of {e['records_scanned']:,} records {e['scan_s']} s {e['phases']}; "
            f"RSS +{e['rss']['added_mb']} MB; groups {g['found']} "
            f"(planted {g['planted_found_exactly']}/{g['planted']}, others {g['other_groups']}); "
            f"searches during the scan {s['during_scan']['n']} p50 {s['during_scan']['p50_ms']} ms "
            f"(idle {s['idle']['p50_ms']} ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
