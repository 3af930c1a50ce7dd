"""The vector-search part of the README's Benchmarks section (from perf.json's `vector_search`)."""

from __future__ import annotations

from typing import Any

from bench.report import fmt


def vector_tables(vs: dict[str, Any]) -> list[str]:
    """Vector search alone: per backend and size, the ef sweep, and what the numbers mean."""
    out: list[str] = []
    out += ["", f"Vector search alone (the service's `VectorStore.search`, top {vs['k']}, {vs['queries']} queries; "
            f"{vs['data']}; recall@10 against exact search):", "",
            "| backend | index | vectors | p50 (ms) | p95 (ms) | recall@10 |", "|---|---|---:|---:|---:|---:|"]
    for n in vs["sizes"]:
        e = vs["numpy_exact"][str(n)]
        out.append(f"| numpy brute force (exact floor) | - | {n:,} | {fmt(e['p50_ms'])} | {fmt(e['p95_ms'])} | 1.000 |")
    for backend, b in vs["backends"].items():
        label = {"lite": "Milvus Lite (embedded default)", "server": "Milvus standalone server"}.get(backend, backend)
        if "error" in b:
            out.append(f"| {label} | failed: {b['error']} | | | | |")
            continue
        for n, e in b["sizes"].items():
            out.append(f"| {label} {b['server_version']} | {b['index']} ef={b['hnsw_ef']} | {int(n):,} | "
                       f"{fmt(e['p50_ms'])} | {fmt(e['p95_ms'])} | {fmt(e['recall_at_10'], 3)} |")
            if e.get("strong_consistency"):
                st = e["strong_consistency"]
                out.append(f"| {label}, `MILVUS_CONSISTENCY=strong` | {b['index']} ef={b['hnsw_ef']} | "
                           f"{int(n):,} | {fmt(st['p50_ms'])} | {fmt(st['p95_ms'])} | {fmt(st['recall_at_10'], 3)} |")
    sweeps = [(backend, b["ef_sweep"]) for backend, b in vs["backends"].items() if b.get("ef_sweep")]
    if sweeps:
        efs = list(sweeps[0][1]["by_ef"])
        out += ["", f"HNSW `ef` (MILVUS_HNSW_EF) at {sweeps[0][1]['vectors']:,} vectors, "
                f"{sweeps[0][1]['queries']} queries: p50 ms / recall@10", "",
                "| backend | " + " | ".join(f"ef={ef}" for ef in efs) + " |", "|---|" + "---:|" * len(efs)]
        for backend, sw in sweeps:
            out.append(f"| {backend} ({sw['consistency']} consistency) | " + " | ".join(
                f"{fmt(v['p50_ms'])} / {fmt(v['recall_at_10'], 3)}" for v in sw["by_ef"].values()) + " |")
    out += vector_findings(vs)
    return out


def vector_findings(vs: dict[str, Any]) -> list[str]:
    """What the vector-search numbers mean, with the numbers in it (only the findings the data shows)."""
    out: list[str] = []
    sizes = [str(n) for n in vs["sizes"]]
    lite = vs["backends"].get("lite", {})
    server = vs["backends"].get("server", {})
    lo, hi = sizes[0], sizes[-1]
    if lo != hi and hi in lite.get("sizes", {}) and lo in lite["sizes"]:
        p_lo, p_hi = lite["sizes"][lo]["p50_ms"], lite["sizes"][hi]["p50_ms"]
        sweep = lite.get("ef_sweep", {}).get("by_ef", {})
        flat = ", ".join(f"ef={ef}: {fmt(v['p50_ms'], 0)} ms" for ef, v in sweep.items())
        slope = (p_hi - p_lo) / (int(hi) - int(lo))
        limit = int(int(lo) + (50 - p_lo) / slope) // 1000 * 1000 if slope > 0 else None
        why = (f"Milvus Lite {lite.get('server_version', '')} is a pure-Python engine that runs inside the "
               f"service process. Its HNSW lookup is a few milliseconds, but every search also builds a per-row "
               f"visibility mask in Python (upsert de-duplication and the delete bitmap, "
               f"`milvus_lite/search/executor_indexed.py`), so its latency grows linearly with the rows stored: "
               f"p50 {fmt(p_lo)} ms at {int(lo):,} vectors, {fmt(p_hi)} ms at {int(hi):,} ({slope * 1000:.2f} ms "
               f"per 1,000 vectors). The index type and `ef` do not change that ({flat}); sealing and loading do "
               f"not either (these numbers are after one flushed, HNSW-indexed segment per load).")
        switch = ("set `MILVUS_URI` to a Milvus server (standalone or cluster, see Docker Compose above): the "
                  "service code is the same.")
        if p_hi >= 50:
            out += ["", f"**Why Milvus Lite misses the {int(hi):,}-vector target, and the switch.** {why}"
                    + (f" Keep the embedded default up to about **{limit:,} images**; beyond that " if limit else
                       " For larger catalogs ") + switch]
        else:
            out += ["", f"**Milvus Lite meets the {int(hi):,}-vector target here, and where it stops.** {why}"
                    + (f" At that slope p50 reaches 50 ms at about **{limit:,} images** on this machine (sooner on "
                       f"a slower CPU); for larger catalogs " if limit else " For larger catalogs ") + switch]
    if hi in server.get("sizes", {}) and "strong_consistency" in server["sizes"][hi]:
        e, st = server["sizes"][hi], server["sizes"][hi]["strong_consistency"]
        out += ["", f"**Why reads use Session consistency.** With Strong consistency every search on the "
                f"{server.get('server_version', '')} server waits for the next time tick: p50 {fmt(st['p50_ms'])} ms "
                f"at {int(hi):,} vectors against {fmt(e['p50_ms'])} ms with Session consistency (the default), "
                "which still shows every search the service's own adds and deletes at once (tested in "
                "tests/test_store.py on Lite and on the server). Set `MILVUS_CONSISTENCY=strong` only when several "
                "imgsim instances write to one Milvus server and each must see the others' writes at once."]
    probe = lite.get("write_probe")
    if probe and all("never_flushed" in r and "flushed_by_store" in r for r in probe):
        rows = "; ".join(f"{r['rows_written']:,} rows: {fmt(r['never_flushed']['p50_ms'], 0)} ms unflushed, "
                         f"{fmt(r['flushed_by_store']['p50_ms'], 0)} ms flushed" for r in probe)
        out += ["", "**Rows the service writes are flushed in the background (Milvus Lite).** Lite keeps written "
                "rows in an unindexed in-memory table until 128 MB (~15,000 vectors) accumulate, and every search "
                "scans that table row by row in Python. The store now flushes shortly after writes pause (or every "
                f"256 rows). Search p50 after rows written through `put_many`: {rows}."]
    return out
