"""The vector-search part of the benchmarks page (from perf.json's `vector_search`), in every language."""

from __future__ import annotations

from typing import Any

from bench.docs import Labels, Row, Seq
from bench.report import fmt

L = Labels.load("report_vectors")


def data_text(data: str) -> Any:
    """perf.json's description of the vectors, in every language when it is bench/vectors.py's."""
    import re  # noqa: PLC0415

    m = re.fullmatch(
        r"synthetic clustered unit vectors \(([\d,]+) clusters, coordinate variance 1/j\); queries: "
        r"half perturbed stored vectors, half fresh draws",
        data,
    )
    return L("data_clustered", clusters=m.group(1)) if m else data


def vector_tables(vs: dict[str, Any]) -> list[Any]:
    """Vector search alone: per backend and size, the ef sweep, and what the numbers mean."""
    out: list[Any] = [
        "",
        L("intro", k=str(vs["k"]), queries=str(vs["queries"]), data=data_text(vs["data"])),
        "",
        L("head"),
        "|---|---|---:|---:|---:|---:|",
    ]
    for n in vs["sizes"]:
        e = vs["numpy_exact"][str(n)]
        out.append(Row([L("numpy"), "-", f"{n:,}", fmt(e["p50_ms"]), fmt(e["p95_ms"]), "1.000"]))
    for backend, b in vs["backends"].items():
        label: Any = L(backend) if backend in ("lite", "server") else backend
        if "error" in b:
            out.append(Row([label, L("failed", error=b["error"]), "", "", "", ""]))
            continue
        index = f"{b['index']} ef={b['hnsw_ef']}"
        for n, e in b["sizes"].items():
            out.append(
                Row(
                    [
                        L("versioned", label=label, version=b["server_version"]),
                        index,
                        f"{int(n):,}",
                        fmt(e["p50_ms"]),
                        fmt(e["p95_ms"]),
                        fmt(e["recall_at_10"], 3),
                    ]
                )
            )
            if e.get("strong_consistency"):
                st = e["strong_consistency"]
                out.append(
                    Row(
                        [
                            L("strong", label=label),
                            index,
                            f"{int(n):,}",
                            fmt(st["p50_ms"]),
                            fmt(st["p95_ms"]),
                            fmt(st["recall_at_10"], 3),
                        ]
                    )
                )
    sweeps = [(backend, b["ef_sweep"]) for backend, b in vs["backends"].items() if b.get("ef_sweep")]
    if sweeps:
        efs = list(sweeps[0][1]["by_ef"])
        out += [
            "",
            L("sweep_intro", vectors=f"{sweeps[0][1]['vectors']:,}", queries=str(sweeps[0][1]["queries"])),
            "",
            L("sweep_head", efs=Seq([f"ef={ef}" for ef in efs], "cells")),
            "|---|" + "---:|" * len(efs),
        ]
        for backend, sw in sweeps:
            out.append(
                Row(
                    [
                        L("sweep_backend", backend=backend, consistency=sw["consistency"]),
                        *(f"{fmt(v['p50_ms'])} / {fmt(v['recall_at_10'], 3)}" for v in sw["by_ef"].values()),
                    ]
                )
            )
    out += vector_findings(vs)
    return out


def vector_findings(vs: dict[str, Any]) -> list[Any]:
    """What the vector-search numbers mean, with the numbers in it (only the findings the data shows)."""
    from bench.docs import TO_DOCS, Per  # noqa: PLC0415

    out: list[Any] = []
    sizes = [str(n) for n in vs["sizes"]]
    lite = vs["backends"].get("lite", {})
    server = vs["backends"].get("server", {})
    lo, hi = sizes[0], sizes[-1]
    if lo != hi and hi in lite.get("sizes", {}) and lo in lite["sizes"]:
        p_lo, p_hi = lite["sizes"][lo]["p50_ms"], lite["sizes"][hi]["p50_ms"]
        sweep = lite.get("ef_sweep", {}).get("by_ef", {})
        flat = Seq([L("ef_ms", ef=str(ef), ms=fmt(v["p50_ms"], 0)) for ef, v in sweep.items()])
        slope = (p_hi - p_lo) / (int(hi) - int(lo))
        limit = int(int(lo) + (50 - p_lo) / slope) // 1000 * 1000 if slope > 0 else None
        why = L(
            "lite_why",
            version=lite.get("server_version", ""),
            p_lo=fmt(p_lo),
            lo=f"{int(lo):,}",
            p_hi=fmt(p_hi),
            hi=f"{int(hi):,}",
            slope=f"{slope * 1000:.2f}",
            flat=flat,
        )
        switch = L("switch", docs=Per(TO_DOCS))
        if p_hi >= 50:
            keep = L("keep_up_to", limit=f"{limit:,}") if limit else L("larger")
            out += ["", L("lite_misses", hi=f"{int(hi):,}", why=why, keep=keep, switch=switch)]
        else:
            keep = L("reaches_50", limit=f"{limit:,}") if limit else L("larger")
            out += ["", L("lite_meets", hi=f"{int(hi):,}", why=why, keep=keep, switch=switch)]
    if hi in server.get("sizes", {}) and "strong_consistency" in server["sizes"][hi]:
        e, st = server["sizes"][hi], server["sizes"][hi]["strong_consistency"]
        out += [
            "",
            L(
                "session",
                version=server.get("server_version", ""),
                strong=fmt(st["p50_ms"]),
                hi=f"{int(hi):,}",
                session=fmt(e["p50_ms"]),
            ),
        ]
    probe = lite.get("write_probe")
    if probe and all("never_flushed" in r and "flushed_by_store" in r for r in probe):
        rows = Seq(
            [
                L(
                    "probe_row",
                    rows=f"{r['rows_written']:,}",
                    unflushed=fmt(r["never_flushed"]["p50_ms"], 0),
                    flushed=fmt(r["flushed_by_store"]["p50_ms"], 0),
                )
                for r in probe
            ],
            "clauses",
        )
        out += ["", L("flush", rows=rows)]
    return out
