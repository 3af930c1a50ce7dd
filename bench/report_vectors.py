"""The vector-search part of the benchmarks page (from perf.json's `vector_search`), in every language."""

from __future__ import annotations

from typing import Any

from bench.docs import Labels, Row, Seq
from bench.report import fmt

L = Labels(
    {
        "intro": {
            "en": "Vector search alone (the service's `VectorStore.search`, top {k}, {queries} queries; {data}; "
            "recall@10 against exact search):",
            "zh": "单独的向量搜索（服务的 `VectorStore.search`，top {k}，{queries} 次查询；{data}；recall@10 以精确搜"
            "索"
            "为基准）：",
        },
        # perf.json's description of the vectors (bench/vectors.py); another description shows as measured.
        "data_clustered": {
            "en": "synthetic clustered unit vectors ({clusters} clusters, coordinate variance 1/j); queries: half "
            "perturbed stored vectors, half fresh draws",
            "zh": "合成的聚类单位向量（{clusters} 个簇，坐标方差 1/j）；查询一半是加了扰动的已存向量，一半是新抽取的向量",
        },
        "head": {
            "en": "| backend | index | vectors | p50 (ms) | p95 (ms) | recall@10 |",
            "zh": "| 后端 | 索引 | 向量数 | p50 (ms) | p95 (ms) | recall@10 |",
        },
        "numpy": {"en": "numpy brute force (exact floor)", "zh": "numpy 暴力搜索（精确搜索的下限）"},
        "lite": {"en": "Milvus Lite (embedded default)", "zh": "Milvus Lite（内嵌默认）"},
        "server": {"en": "Milvus standalone server", "zh": "Milvus standalone 服务"},
        "failed": {"en": "failed: {error}", "zh": "失败：{error}"},
        "versioned": {"en": "{label} {version}", "zh": "{label} {version}"},
        "strong": {"en": "{label}, `MILVUS_CONSISTENCY=strong`", "zh": "{label}，`MILVUS_CONSISTENCY=strong`"},
        "sweep_intro": {
            "en": "HNSW `ef` (MILVUS_HNSW_EF) at {vectors} vectors, {queries} queries: p50 ms / recall@10",
            "zh": "{vectors} 条向量、{queries} 次查询下不同 HNSW `ef`（MILVUS_HNSW_EF）的 p50 ms / recall@10：",
        },
        "sweep_head": {"en": "| backend | {efs} |", "zh": "| 后端 | {efs} |"},
        "sweep_backend": {"en": "{backend} ({consistency} consistency)", "zh": "{backend}（{consistency} 一致性）"},
        "ef_ms": {"en": "ef={ef}: {ms} ms", "zh": "ef={ef}：{ms} ms"},
        "lite_why": {
            "en": "Milvus Lite {version} is a pure-Python engine that runs inside the service process. Its HNSW lookup is "
            "a few milliseconds, but every search also builds a per-row visibility mask in Python (upsert "
            "de-duplication and the delete bitmap, `milvus_lite/search/executor_indexed.py`), so its latency grows "
            "linearly with the rows stored: p50 {p_lo} ms at {lo} vectors, {p_hi} ms at {hi} ({slope} ms per 1,000 "
            "vectors). The index type and `ef` do not change that ({flat}); sealing and loading do not either "
            "(these numbers are after one flushed, HNSW-indexed segment per load).",
            "zh": "Milvus Lite {version} 是运行在服务进程内的纯 Python 引擎。它的 HNSW 查找只需几毫秒，但每次搜索还要用 Pyt"
            "hon "
            "构建一个逐行的可见性掩码（upsert 去重和删除位图，`milvus_lite/search/executor_indexed.py`），所以延迟随"
            "存储"
            "的行数线性增长：{lo} 条向量时 p50 为 {p_lo} ms，{hi} 条时为 {p_hi} ms（每 1,000 条向量 {slope} ms）。索"
            "引"
            "类型和 `ef` 都改变不了这一点（{flat}）；seal 和 load 也不行（这些数字是在每次 load 一个已 flush、已建 HN"
            "SW "
            "索引的 segment 之后测得的）。",
        },
        "switch": {
            "en": "set `MILVUS_URI` to a Milvus server (standalone or cluster, see [deployment]({docs}deployment.md)"
            "): "
            "the service code is the same.",
            "zh": "请把 `MILVUS_URI` 设为 Milvus 服务（standalone 或集群，见[部署]({docs}deployment.md)）：服务代码"
            "完全"
            "一样。",
        },
        "lite_misses": {
            "en": "**Why Milvus Lite misses the {hi}-vector target, and the switch.** {why}{keep}{switch}",
            "zh": "**为什么 Milvus Lite 达不到 {hi} 条向量的目标，以及切换方案。** {why}{keep}{switch}",
        },
        "keep_up_to": {
            "en": " Keep the embedded default up to about **{limit} images**; beyond that ",
            "zh": "内嵌默认最多用到约 **{limit} 张图片**；超过这个规模，",
        },
        "larger": {"en": " For larger catalogs ", "zh": "更大的图库请"},
        "lite_meets": {
            "en": "**Milvus Lite meets the {hi}-vector target here, and where it stops.** {why}{keep}{switch}",
            "zh": "**Milvus Lite 在这里达到了 {hi} 条向量的目标，以及它的上限在哪里。** {why}{keep}{switch}",
        },
        "reaches_50": {
            "en": " At that slope p50 reaches 50 ms at about **{limit} images** on this machine (sooner on a "
            "slower CPU); for larger catalogs ",
            "zh": "按这个斜率，在本机上约 **{limit} 张图片** 时 p50 达到 50 ms（CPU 更慢时会更早）；更大的图库请",
        },
        "session": {
            "en": "**Why reads use Session consistency.** With Strong consistency every search on the {version} server "
            "waits for the next time tick: p50 {strong} ms at {hi} vectors against {session} ms with Session "
            "consistency (the default), which still shows every search the service's own adds and deletes at once "
            "(tested in tests/test_store.py on Lite and on the server). Set `MILVUS_CONSISTENCY=strong` only when "
            "several imgsim instances write to one Milvus server and each must see the others' writes at once.",
            "zh": "**为什么读取使用 Session 一致性。** 使用 Strong 一致性时，{version} 服务上的每次搜索都要等待下一个 time "
            "tick：{hi} 条向量时 p50 为 {strong} ms，而 Session 一致性（默认）下只有 {session} ms；Session 一致性下每"
            "次"
            "搜索仍能立即看到本服务自己的添加和删除（tests/test_store.py 在 Lite 和服务端上都对此做了测试）。只有当多"
            "个 "
            "imgsim 实例写入同一个 Milvus 服务、且每个实例都必须立即看到其他实例的写入时，才需要设置 "
            "`MILVUS_CONSISTENCY=strong`。",
        },
        "probe_row": {
            "en": "{rows} rows: {unflushed} ms unflushed, {flushed} ms flushed",
            "zh": "{rows} 行时，未 flush {unflushed} ms，flush 后 {flushed} ms",
        },
        "flush": {
            "en": "**Rows the service writes are flushed in the background (Milvus Lite).** Lite keeps written rows in an "
            "unindexed in-memory table until 128 MB (~15,000 vectors) accumulate, and every search scans that "
            "table row by row in Python. The store now flushes shortly after writes pause (or every 256 rows). "
            "Search p50 after rows written through `put_many`: {rows}.",
            "zh": "**服务写入的行会在后台 flush（Milvus Lite）。** Lite 会把写入的行放在一张没有索引的内存表里，直到累积满 "
            "128 MB（约 15,000 条向量），而每次搜索都要用 Python 逐行扫描这张表。现在存储层会在写入停顿后不久（或每 2"
            "56 "
            "行）执行 flush。通过 `put_many` 写入之后的搜索 p50：{rows}。",
        },
    }
)


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
