"""Vector search alone: the service's `VectorStore.search` on Milvus Lite and a Milvus server, against numpy.

Synthetic vectors shaped like image embeddings (clustered, most variance in a
few dozen directions) are loaded to each size; every backend answers the same
queries, and recall@10 is measured against exact search. Also: the HNSW `ef`
sweep, Strong against Session consistency on the server, and how the store's
background flush keeps Milvus Lite's search fast after writes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.cli import ms_stats, rnd
from conf.settings import MODEL_BATCH, Settings
from model.embedder import DIM
from service.store.search import HIT_FIELDS, SEARCH_PARAMS
from tests.procs import milvus_server_on_loopback

log = logging.getLogger("bench.vectors")


@dataclass
class VectorPlan:
    """Sizes, queries and backends of the vector-search measurements; `smoke()` is the seconds-long variant."""

    sizes: tuple[int, ...] = (10_000, 100_000)
    queries: int = 200
    backends: tuple[str, ...] = ("lite", "server")
    hnsw_ef_sweep: tuple[int, ...] = (32, 64, 128, 256)
    settle_timeout: float = 900.0  # wait for the Milvus server to index every row
    write_probe: tuple[int, ...] = (1000, 3000)  # rows written with put_many, then searched (Lite)

    @classmethod
    def smoke(cls) -> VectorPlan:
        """Every code path on Milvus Lite, a few seconds."""
        return cls(
            sizes=(2_000,),
            queries=20,
            backends=("lite",),
            hnsw_ef_sweep=(16, 64),
            settle_timeout=20.0,
            write_probe=(100, 300),
        )


def synthetic_vectors(n: int, dim: int, seed: int, clusters: int = 2000, chunk: int = 20_000) -> np.ndarray:
    """Unit vectors shaped like image embeddings: clustered, with a power-law spectrum (low intrinsic dimension).

    Uniform random unit vectors in 2048-d are the one distribution no index can
    search well (every point is about as far as every other), and nothing like
    a CNN's embeddings; these have clusters of near neighbours and most of
    their variance in a few dozen directions.
    """
    rng = np.random.default_rng(seed)
    scale = np.arange(1, dim + 1, dtype=np.float32) ** -0.5  # coordinate j has variance 1/j
    centres = rng.standard_normal((clusters, dim), dtype=np.float32) * scale
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        labels = rng.integers(0, clusters, m)
        block = centres[labels] + 0.6 * rng.standard_normal((m, dim), dtype=np.float32) * scale
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def synthetic_queries(base: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Half near-copies of stored vectors (a re-shot of a stored product), half fresh draws."""
    rng = np.random.default_rng(seed)
    dim = base.shape[1]
    near = base[rng.integers(0, len(base), n // 2)]
    noise = rng.standard_normal(near.shape, dtype=np.float32) * (np.arange(1, dim + 1, dtype=np.float32) ** -0.5)
    near = near + 0.3 * noise / np.linalg.norm(noise, axis=1, keepdims=True)  # cosine ~0.95 to its source
    fresh = synthetic_vectors(n - n // 2, dim, seed + 1)
    q = np.concatenate([near, fresh]).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[float]]:
    """Exact top-k ids by inner product with numpy (one query at a time, as a service would), and the times."""
    ids = np.empty((len(queries), k), dtype=np.int64)
    times = []
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        scores = base @ q
        top = np.argpartition(-scores, k)[:k]
        ids[i] = top[np.argsort(-scores[top])]
        times.append(time.perf_counter() - t0)
    return ids, times


def open_store(settings: Settings, uri: str, dim: int = DIM, collection: str = "bench_vectors") -> Any:
    """The service's VectorStore of `dim`-d vectors on `uri` (`collection`), connected."""
    from service.store.records import VectorStore  # noqa: PLC0415

    store = VectorStore(
        settings.model_copy(update={"milvus_uri": uri, "milvus_collection": collection, "milvus_timeout": 300.0}),
        dim,
    )
    store.connect()
    return store


SearchFn = Callable[[np.ndarray], list[int]]


def store_search(store: Any, k: int = 10) -> SearchFn:
    """The service's own search call (its output fields, MILVUS_HNSW_EF and MILVUS_CONSISTENCY)."""
    scope = store.scope()
    return lambda q: [h.id for h in store.search(scope, q, k)]


def raw_search(store: Any, ef: int | None, consistency: str | None, k: int = 10) -> SearchFn:
    """The same request as VectorStore.search, with another `ef` or consistency level (what-if runs)."""
    client, name = store.connection.client, store.connection.collection  # bench-only what-if
    params: dict[str, Any] = dict(SEARCH_PARAMS)
    if store.vector_index == "HNSW":
        params["params"] = {"ef": max(ef or store.connection.settings.milvus_hnsw_ef, k)}
    extra = {"consistency_level": consistency} if consistency else {}
    scope = store.scope()  # the service's namespace condition and output fields, as its searches have them
    expr, fields = scope.expr(), scope.fields(HIT_FIELDS)

    def search(q: np.ndarray) -> list[int]:
        res = client.search(
            name,
            data=[q.tolist()],
            anns_field="vector",
            limit=k,
            filter=expr,
            output_fields=fields,
            search_params=params,
            timeout=300,
            **extra,
        )
        return [int(h["id"]) for h in res[0]]

    return search


def timed_searches(search: SearchFn, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, list[float]]:
    """Row indexes (primary key - 1) found for every query, and the time of each search."""
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    times = []
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        found = search(q)
        times.append(time.perf_counter() - t0)
        ids[i, : len(found)] = [f - 1 for f in found]
    return ids, times


def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of the exact top-k present in the found top-k."""
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact, strict=True)]))


def _rows(base: np.ndarray, start: int, stop: int, extras: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows start..stop as the service writes them (primary key = row + 1, the default namespace's fields)."""
    return [
        {
            "id": r + 1,
            "key": f"v{r}",
            "md5": f"{r:032x}",
            "filepath": f"/bench/{r}.jpg",
            "vector": base[r].tolist(),
            **extras,
        }
        for r in range(start, stop)
    ]


def row_batches(base: np.ndarray, start: int, stop: int, extras: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
    """Rows start..stop (see _rows) in batches of 5,000, what `insert_rows` and `lite_load` take."""
    for i in range(start, stop, 5000):
        yield _rows(base, i, min(stop, i + 5000), extras)


def insert_rows(store: Any, batches: Iterable[list[dict[str, Any]]]) -> float:
    """Insert batches of rows straight through pymilvus: setup, not measured."""
    client, name = store.connection.client, store.connection.collection  # bench-only bulk load
    t0 = time.perf_counter()
    for rows in batches:
        client.insert(name, rows, timeout=600)
    return time.perf_counter() - t0


def lite_load(
    store: Any, uri: str, batches: Iterable[list[dict[str, Any]]], dim: int = DIM
) -> tuple[Any, float, float]:
    """Bulk-load batches of rows into the Lite file through milvus_lite's public embedded `MilvusLite` (5x faster
    than over gRPC), then reconnect the service's store, which loads the collection and builds the missing HNSW
    index. Returns (store, insert seconds, flush + index seconds).

    Lite flushes its memtable every 128 MB (~15k vectors of 2048-d) and compacts the small segments in the
    background; an earlier version raised those limits through milvus_lite's engine module to get one segment
    per load, but that module is not public, so the load now takes Lite's own segmenting (slower, and the
    state a real import leaves)."""
    from milvus_lite import MilvusLite, server_manager_instance  # noqa: PLC0415 - public API; only where Lite runs

    settings, name = store.connection.settings, store.connection.collection
    store.close()
    server_manager_instance.release_server(uri)  # the in-process Lite server holds the file's lock
    t0 = time.perf_counter()
    db = MilvusLite(uri)
    try:
        col = db.get_collection(name)
        for rows in batches:
            col.insert(rows)
        inserted = time.perf_counter()
        col.flush()
    finally:
        db.close()
    store = open_store(settings, uri, dim, name)  # load_collection: builds the new segment's HNSW index
    return store, inserted - t0, time.perf_counter() - inserted


def server_settle(store: Any, total: int, timeout: float) -> float:
    """Flush (seal the segments) and wait until the server reports every row indexed; returns seconds.

    Only indexed_rows counts: the server keeps compacting sealed segments in the
    background and re-indexing the merged ones (pending_index_rows), while the
    already indexed segments serve searches.
    """
    client, name = store.connection.client, store.connection.collection
    t0 = time.perf_counter()
    client.flush(name, timeout=600)
    while time.perf_counter() - t0 < timeout:
        info = client.describe_index(name, "vector") or {}
        if int(info.get("indexed_rows", 0)) >= total:
            break
        time.sleep(1)
    return time.perf_counter() - t0


def _write_probe(
    settings: Settings, workdir: Path, base: np.ndarray, queries: np.ndarray, rows: Sequence[int]
) -> list[dict]:
    """Milvus Lite search latency after rows were written the way the importer writes them (put_many in
    batches of MODEL_BATCH), with the store's background flush, and with it switched off (how it was before)."""
    from service.store.lite import LITE_FLUSH_QUIET_S  # noqa: PLC0415
    from service.store.records import Record  # noqa: PLC0415

    out: dict[int, dict[str, Any]] = {n: {"rows_written": n} for n in rows}
    for flushing in (True, False):
        uri = str(workdir / f"writes-{'flushed' if flushing else 'unflushed'}.db")
        store = open_store(settings, uri)
        if not flushing:
            store._flusher.close()  # noqa: SLF001 - bench-only: the store as it was without the flusher
            store._flusher = None  # noqa: SLF001 - as above
        try:
            written = 0
            for n in rows:
                for i in range(written, n, MODEL_BATCH):
                    store.put_many(
                        store.scope(),
                        [Record(f"m{r}", f"{r:032x}", "/m.jpg", base[r]) for r in range(i, min(n, i + MODEL_BATCH))],
                    )
                written = n
                time.sleep(LITE_FLUSH_QUIET_S * 4)  # a pause in the writes: the flusher's cue
                _ids, times = timed_searches(store_search(store), queries[:10])
                out[n]["flushed_by_store" if flushing else "never_flushed"] = ms_stats(times)
        finally:
            store.close()
            release_lite(uri)
    return list(out.values())


def release_lite(uri: str) -> None:
    """Stop the in-process Milvus Lite server of `uri` (VectorStore.close leaves it running until exit)."""
    from milvus_lite import server_manager_instance  # noqa: PLC0415 - public API; only where Lite runs

    server_manager_instance.release_server(uri)


def vector_search(plan: VectorPlan, workdir: Path, settings: Settings) -> dict[str, Any]:
    """Item 4: the service's store.search at each size, per backend, against numpy exact search."""
    top = max(plan.sizes)
    log.info("vector search: generating %d synthetic %d-d vectors", top, DIM)
    base = synthetic_vectors(top, DIM, seed=7)
    queries = synthetic_queries(base, plan.queries, seed=8)
    sweep_q = queries[: max(10, len(queries) // 2)]
    exact: dict[int, np.ndarray] = {}
    result: dict[str, Any] = {
        "dim": DIM,
        "queries": len(queries),
        "k": 10,
        "sizes": list(plan.sizes),
        "data": "synthetic clustered unit vectors (2,000 clusters, coordinate variance 1/j); "
        "queries: half perturbed stored vectors, half fresh draws",
        "numpy_exact": {},
        "backends": {},
    }
    for n in plan.sizes:
        ids, times = exact_topk(base[:n], queries, 10)
        exact[n] = ids
        result["numpy_exact"][str(n)] = ms_stats(times)

    for backend in plan.backends:
        log.info("vector search: %s", backend)
        try:
            result["backends"][backend] = _backend(settings, backend, plan, workdir, base, queries, sweep_q, exact)
        except Exception as exc:
            log.exception("vector search on %s failed", backend)
            result["backends"][backend] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    return result


def _backend(
    settings: Settings,
    backend: str,
    plan: VectorPlan,
    workdir: Path,
    base: np.ndarray,
    queries: np.ndarray,
    sweep_q: np.ndarray,
    exact: dict[int, np.ndarray],
) -> dict[str, Any]:
    """Load one backend to each size in turn and measure its search there; then the ef sweep."""
    bdir = workdir / f"vectors-{backend}"
    bdir.mkdir(parents=True, exist_ok=True)
    with milvus_server_on_loopback(bdir) if backend == "server" else nullctx(str(bdir / "vectors.db")) as uri:
        store = open_store(settings, uri)
        entry: dict[str, Any] = {
            "index": store.vector_index,
            "server_version": store.server_version,
            "hnsw_ef": settings.milvus_hnsw_ef,
            "sizes": {},
        }
        loaded = 0
        try:
            for n in plan.sizes:
                batches = row_batches(base, loaded, n, store.scope().row_extras({}))
                if backend == "lite":
                    store, insert_s, settle = lite_load(store, uri, batches)
                else:
                    insert_s = insert_rows(store, batches)
                    settle = server_settle(store, n, plan.settle_timeout)
                loaded = n
                found, times = timed_searches(store_search(store), queries)
                row = {
                    "insert_s": rnd(insert_s),
                    "settle_s": rnd(settle),
                    **ms_stats(times),
                    "recall_at_10": round(recall_at(found, exact[n]), 4),
                }
                if backend == "server":  # what MILVUS_CONSISTENCY=strong would cost
                    found, times = timed_searches(raw_search(store, None, "Strong"), queries)
                    row["strong_consistency"] = {
                        **ms_stats(times),
                        "recall_at_10": round(recall_at(found, exact[n]), 4),
                    }
                entry["sizes"][str(n)] = row
                log.info("  %s %d: %s", backend, n, row)
            if store.vector_index == "HNSW":
                sweep = {}
                for ef in plan.hnsw_ef_sweep:
                    found, times = timed_searches(raw_search(store, ef, store.connection.read_level), sweep_q)
                    sweep[str(ef)] = {
                        **ms_stats(times),
                        "recall_at_10": round(recall_at(found, exact[loaded][: len(sweep_q)]), 4),
                    }
                entry["ef_sweep"] = {
                    "vectors": loaded,
                    "queries": len(sweep_q),
                    "consistency": settings.milvus_consistency.value,
                    "by_ef": sweep,
                }
        finally:
            store.close()
            if backend == "lite":
                release_lite(uri)
        if backend == "lite" and plan.write_probe:
            entry["write_probe"] = _write_probe(settings, bdir, base, queries, plan.write_probe)
    return entry


@contextmanager
def nullctx(value: str) -> Iterator[str]:
    """`value`, as a context manager (Milvus Lite's file path beside milvus_server_on_loopback's URI)."""
    yield value
