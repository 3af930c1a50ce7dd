"""docs/benchmarks.md (and its Chinese twin): the generated part and the chart, written only from the results JSON.

`python -m bench.run --report-only` (or `make docs`) regenerates both languages without measuring anything.
Every figure is explained as a ratio of numbers measured in the same run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.docs import IMG, LANGS, TO_DOCS, Labels, Lang, Per, Row, Seq, cjk_font, render
from bench.engines import TF_FP32, best_batched
from bench.targets import all_targets, int8_method

KIND = "bench"
CHART = "latency_vs_concurrency"

L = Labels(
    {
        "intro": {
            "en": "Regenerate everything below with `make bench` ({minutes} minutes on this machine; it renders this page "
            "from the results it copies into [docs/data/bench/]({docs}data/bench/), and `make docs` renders it "
            "again from there). Measured {date} on **{cpu}, {cpus} CPUs**, {ram} GB RAM, Python {python}, code at "
            "commit {commit}. Load average {load0} at the start, {load1} at the end (the benchmark itself keeps "
            "both cores busy). Absolute numbers drift between runs and machines; every comparison below is a ratio "
            "of numbers measured minutes apart in this one run, and every target is judged on such ratios.",
            "zh": "以下全部内容都可以用 `make bench` 重新生成（在本机上耗时 {minutes} 分钟；它把结果复制到 "
            "[docs/data/bench/]({docs}data/bench/) 并据此渲染本页，`make docs` 也从那里重新渲染）。测量时间 {date}，"
            "机器为 **{cpu}, {cpus} CPUs**，{ram} GB 内存，Python {python}，代码版本为 commit {commit}。开始时负载均"
            "值 "
            "{load0}，结束时 {load1}（基准测试本身就让两个核一直满载）。绝对数值在不同运行、不同机器之间会有漂移；"
            "下面的每项比较都是本次运行中相隔几分钟测得的数值之比，每个目标也都以这样的比值来判定。",
        },
        "targets": {"en": "## Targets", "zh": "## 目标"},
        "targets_head": {"en": "| issue | target | measured | met |", "zh": "| issue | 目标 | 实测 | 是否达标 |"},
        "yes": {"en": "yes", "zh": "是"},
        "no": {"en": "**no**", "zh": "**否**"},
        "issue_earlier": {"en": "earlier", "zh": "早先"},
        "missed_intro": {
            "en": "Why the missed ones were missed (from the same run's numbers):",
            "zh": "未达标项的原因（依据同一次运行的数据）：",
        },
        "missed": {"en": "- *{target}*: {why}.", "zh": "- *{target}*：{why}。"},
        "speed": {"en": "## Speed: every engine side by side", "zh": "## 速度：各引擎并排对比"},
        "speed_intro": {
            "en": 'TensorFlow FP32 is the service as it was before OpenVINO ("today\'s service" in issue 10); OpenVINO '
            "FP32 is the default; INT8 needs `python main.py calibrate DIR --int8` first. All engines run the same "
            "{model} ({weights} weights: speed does not depend on the weights' values).",
            "zh": "TensorFlow FP32 就是引入 OpenVINO 之前的服务（即 issue 10 中所说的“现在的服务”）；OpenVINO FP32 是默认配"
            "置；"
            "INT8 需要先运行 `python main.py calibrate DIR --int8`。所有引擎运行的是同一个 {model}（{weights} 权重："
            "速度与"
            "权重的具体数值无关）。",
        },
        "raw_intro": {
            "en": "Raw model (the service's `Embedder.embed` in one process, images/s, median of interleaved rounds):",
            "zh": "原始模型（在单个进程中调用服务的 `Embedder.embed`，单位 images/s，交替多轮测量的中位数）：",
        },
        "raw_head": {
            "en": "| model | engine | precision in force | {batches} | batched vs tf-fp32 | cosine to tf-fp32 (min) |",
            "zh": "| 模型 | 引擎 | 实际生效精度 | {batches} | 批处理相对 tf-fp32 | 与 tf-fp32 的余弦（最小值） |",
        },
        "batch_n": {"en": "batch {n}", "zh": "batch {n}"},
        "itself": {"en": "1 (itself)", "zh": "1（自身）"},
        "calibration": {
            "en": "INT8 calibration (NNCF, on gallery photos and tiles of the quality benchmark's tune split): "
            "{models}.",
            "zh": "INT8 校准（NNCF，使用质量基准测试 tune 集中的图库照片和图块）：{models}。",
        },
        "calibration_model": {
            "en": "{model}: {images} images, {method}, cosine to FP32 {where} median {median}, 1st percentile {p1}, "
            "min {min}, {seconds} s",
            "zh": "{model}：{images} 张图片，{method}，{where}与 FP32 的余弦中位数 {median}，第 1 百分位 {p1}，最小值 {min}"
            "，"
            "耗时 {seconds} s",
        },
        "held_out": {"en": "on the {n} of them held out from calibration", "zh": "在其中留出、未参与校准的 {n} 张上"},
        "on_them": {"en": "on them", "zh": "在这些图片上"},
        "windows_rounds": {
            "en": "in {rounds} windows of {seconds} s per engine and level, the engines in turns, a different one first "
            "each round (the window with the median rate is shown, with the errors of all windows)",
            "zh": "每个引擎在每个并发级别上分 {rounds} 个 {seconds} s 的窗口测量，各引擎轮流进行，每一轮先测的引擎都不同"
            "（表中给出速率为中位数的那个窗口，错误数则包括所有窗口）",
        },
        "windows_one": {
            "en": "for {seconds} s per engine and level, the engines in turns at each level",
            "zh": "每个引擎在每个并发级别上测量 {seconds} s，各引擎在每个级别上轮流进行",
        },
        "service_intro": {
            "en": "The service (`main.py serve`, one per engine, {model}), N clients sending search/file back to back "
            "over loopback HTTP {windows} (queries: the corpus' {count} query JPEGs, median {kb} KB):",
            "zh": "服务（`main.py serve`，每个引擎一个进程，{model}）：N 个客户端通过回环 HTTP 一个接一个不停地发送 "
            "search/file，{windows}（查询图片：语料中的 {count} 张查询 JPEG，中位数 {kb} KB）：",
        },
        "service_head": {
            "en": "| engine | clients | req/s | each window | vs tf-fp32 | vs own raw batched | p50 (ms) | p95 (ms) | error"
            "s "
            "| mean batch | model busy |",
            "zh": "| 引擎 | 客户端数 | req/s | 每个窗口 | 相对 tf-fp32 | 相对自身原始批处理 | p50 (ms) | p95 (ms) | 错误数 "
            "| "
            "平均批大小 | 模型繁忙度 |",
        },
        "chart": {
            "en": "![latency and throughput vs concurrency, per engine]({docs}img/{file})",
            "zh": "![各引擎的延迟和吞吐量随并发数的变化]({docs}img/{file})",
        },
        "single_intro": {
            "en": "One client at a time (search/file alternating with TensorFlow batch-1 model calls in the benchmark "
            "process), the bulk import (`main.py import` of the gallery into an empty store) and the service's "
            "memory, per engine:",
            "zh": "各引擎的单客户端性能（search/file 与基准测试进程中的 TensorFlow batch-1 模型调用交替进行）、批量导入（用"
            " "
            "`main.py import` 把图库导入空的存储）以及服务内存：",
        },
        "single_head": {
            "en": "| engine | search p50 / p95 (ms) | tf-fp32 batch-1 model p50 (ms) | add p50 (ms) | import (img/s) | "
            "import vs tf-fp32 | start-up to /ready (s) | RSS idle / peak (MB) |",
            "zh": "| 引擎 | 搜索 p50 / p95 (ms) | tf-fp32 batch-1 模型 p50 (ms) | 添加 p50 (ms) | 导入 (img/s) | "
            "导入相对 tf-fp32 | 启动到 /ready (s) | RSS 空闲 / 峰值 (MB) |",
        },
        "batching_intro": {
            "en": "The micro-batcher's settings (BATCH_WINDOW_MS, BATCH_MAX_SIZE): one service per pair, all running, "
            "loaded in turns for {seconds} s per level, median of {rounds} rounds. CPU ms / request is the "
            "service's CPU time over the requests it answered; the defaults ({window} ms, {size}) are marked *:",
            "zh": "微批处理器的设置（BATCH_WINDOW_MS、BATCH_MAX_SIZE）：每组设置一个服务，全部同时运行，每个并发级别轮流施"
            "加"
            "负载 {seconds} s，取 {rounds} 轮的中位数。每请求 CPU ms 是服务进程的 CPU 时间除以它应答的请求数；默认值"
            "（{window} ms，{size}）以 * 标出：",
        },
        "batching_head": {
            "en": "| engine | window (ms) | max size | clients | req/s | p50 (ms) | CPU ms / request | mean batch | errors "
            "|",
            "zh": "| 引擎 | 窗口 (ms) | 最大批大小 | 客户端数 | req/s | p50 (ms) | 每请求 CPU ms | 平均批大小 | 错误数 |",
        },
        # The chart's words.
        "c_p50": {"en": "{key} p50", "zh": "{key} p50"},
        "c_service": {"en": "{key} service", "zh": "{key} 服务"},
        "c_raw": {"en": "{key} raw batched ({rate} img/s)", "zh": "{key} 原始批处理（{rate} img/s）"},
        "c_latency": {"en": "latency p50 (ms)", "zh": "延迟 p50 (ms)"},
        "c_rate": {"en": "requests/s (images/s for raw)", "zh": "请求/s（原始模型为图片/s）"},
        "c_latency_title": {"en": "Latency vs concurrency", "zh": "延迟随并发数的变化"},
        "c_rate_title": {"en": "Throughput vs concurrency", "zh": "吞吐量随并发数的变化"},
        "c_clients": {"en": "concurrent clients (search/file)", "zh": "并发客户端数（search/file）"},
        "c_title": {
            "en": "imgsim on {cpu} ({cpus} CPUs), {model} ({weights} weights)",
            "zh": "imgsim，{cpu}（{cpus} CPUs），{model}（{weights} 权重）",
        },
    }
)


def fmt(value: Any, digits: int = 1, suffix: str = "") -> str:
    """A number for a table cell ("n/a" for None)."""
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}{suffix}" if isinstance(value, (int, float)) else str(value)


def pct(value: float | None) -> str:
    """A share as a whole percentage ("n/a" for None)."""
    return "n/a" if value is None else f"{value * 100:.0f}%"


def busy(value: float | None) -> str:
    """The model's busy share; a batch straddling the window's edge counts whole, so it can exceed 1 slightly."""
    return pct(None if value is None else min(value, 1.0))


def chart_file(lang: Lang) -> str:
    """The chart's file name under docs/img/ for one language."""
    return f"{CHART}.{lang}.png"


# --------------------------------------------------------------------------------------------
# Chart
# --------------------------------------------------------------------------------------------


def chart(perf: dict[str, Any], path: Path, lang: Lang) -> None:
    """Latency (p50) and throughput against concurrent clients, one line per engine, raw batched as dashes."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    def say(label: str, **args: str) -> str:
        return render(L(label, **args), lang)

    font = {"family": cjk_font()} if lang == "zh" else {}
    with plt.rc_context({"font.family": font["family"]} if font else {}):
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        speed = perf["raw"][perf["model"]]["speed"]
        clients: list[int] = []
        for n, (key, entry) in enumerate(perf["engines"].items()):
            colour = f"C{n}"
            clients = [lv["clients"] for lv in entry["levels"]]
            ax1.plot(clients, [lv["p50_ms"] for lv in entry["levels"]], "o-", color=colour, label=say("c_p50", key=key))
            ax2.plot(
                clients,
                [lv["throughput_rps"] for lv in entry["levels"]],
                "o-",
                color=colour,
                label=say("c_service", key=key),
            )
            raw = speed[key].get("raw_batched_ref") or best_batched(speed[key])
            ax2.axhline(raw, color=colour, ls="--", lw=0.8, label=say("c_raw", key=key, rate=f"{raw:.0f}"))
        for ax, ylabel, title in ((ax1, "c_latency", "c_latency_title"), (ax2, "c_rate", "c_rate_title")):
            ax.set_xscale("log", base=2)
            ax.set_xticks(clients, [str(c) for c in clients])
            ax.set_xlabel(say("c_clients"))
            ax.set_ylabel(say(ylabel))
            ax.set_ylim(bottom=0)
            ax.set_title(say(title))
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        m = perf["machine"]
        fig.suptitle(
            say("c_title", cpu=m["cpu_model"], cpus=str(m["cpu_budget"]), model=perf["model"], weights=perf["weights"]),
            fontsize=10,
        )
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, metadata={"Software": None})
        plt.close(fig)


def charts(perf: dict[str, Any], folder: Path = IMG) -> list[Path]:
    """The chart in every language."""
    paths = []
    for lang in LANGS:
        path = folder / chart_file(lang)
        chart(perf, path, lang)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------
# The page's generated part
# --------------------------------------------------------------------------------------------


def bench_lines(quality: dict[str, Any] | None, perf: dict[str, Any] | None, meta: dict[str, Any]) -> list[Any]:
    """Everything between the bench markers, once, for every language (only from the results JSON)."""
    from bench.report_quality import quality_section  # noqa: PLC0415 - it imports this module's helpers

    m = (perf or {}).get("machine", meta.get("machine", {}))
    out: list[Any] = [
        L(
            "intro",
            minutes=fmt(meta.get("elapsed_min"), 0),
            docs=Per(TO_DOCS),
            date=meta.get("date", "?"),
            cpu=str(m.get("cpu_model", "?")),
            cpus=str(m.get("cpu_budget", "?")),
            ram=str(m.get("ram_gb", "?")),
            python=str(m.get("python", "?")),
            commit=meta.get("commit") or "?",
            load0=str(m.get("loadavg_at_start", ["?"])[0]),
            load1=str((m.get("loadavg_at_end") or ["?"])[0]),
        )
    ]
    out += targets_table(all_targets(perf, quality))
    if perf and perf.get("engines"):
        out += perf_section(perf)
    if quality:
        out += quality_section(quality)
    return out


def targets_table(rows: list[dict[str, Any]]) -> list[Any]:
    """The targets, met or not, then why each missed one was missed."""
    out: list[Any] = ["", L("targets"), "", L("targets_head"), "|---|---|---|---|"]
    for t in rows:
        issue = L("issue_earlier") if t["issue"] == "earlier" else t["issue"]
        out.append(Row([issue, t["target"], t["measured"], L("yes") if t["met"] else L("no")]))
    missed = [t for t in rows if not t["met"] and t.get("why")]
    if missed:
        out += ["", L("missed_intro"), ""]
        out += [L("missed", target=t["target"], why=t["why"]) for t in missed]
    return out


def raw_table(perf: dict[str, Any]) -> list[Any]:
    """Raw model speed per model, engine and batch size, with the precision in force and the cosine to TF."""
    batches = [r["batch"] for r in next(iter(perf["raw"].values()))["speed"][TF_FP32.key]["by_batch"]]
    out: list[Any] = [
        "",
        L("raw_intro"),
        "",
        L("raw_head", batches=Seq([L("batch_n", n=str(b)) for b in batches], "cells")),
        "|---|---|---|" + "---:|" * (len(batches) + 2),
    ]
    for model, m in perf["raw"].items():
        tf = best_batched(m["speed"][TF_FP32.key])
        for key, e in m["speed"].items():
            cos = m.get(f"cosine_to_{TF_FP32.key}", {}).get(key, {}).get("min")
            out.append(
                Row(
                    [
                        model,
                        key,
                        e["precision"],
                        *(fmt(r["img_per_s"]) for r in e["by_batch"]),
                        f"{best_batched(e) / tf:.2f}x",
                        fmt(cos, 4) if cos is not None else L("itself"),
                    ]
                )
            )
    cal = [
        calibration_text(model, m["int8_calibration"]) for model, m in perf["raw"].items() if "int8_calibration" in m
    ]
    if cal:
        out += ["", L("calibration", models=Seq(cal, "clauses"))]
    return out


def calibration_text(model: str, cal: dict[str, Any]) -> Any:
    """One model's INT8 calibration: images, cosine to FP32 on the held-out ones, layers kept in FP32, time."""
    where = L("held_out", n=str(cal["held_out"])) if "held_out" in cal else L("on_them")
    return L(
        "calibration_model",
        model=model,
        images=str(cal["images"]),
        method=int8_method(cal),
        where=where,
        median=f"{cal['cosine_median']:.4f}",
        p1=f"{cal['cosine_p1']:.4f}",
        min=f"{cal['cosine_min']:.4f}",
        seconds=f"{cal['wall_seconds']:.0f}",
    )


def service_table(perf: dict[str, Any]) -> list[Any]:
    """Every engine's service at each concurrency level, against TensorFlow's and against its own raw model."""
    engines = perf["engines"]
    tf = {lv["clients"]: lv for lv in engines[TF_FP32.key]["levels"]} if TF_FP32.key in engines else {}
    qi = perf.get("query_images", {})
    rounds = perf["plan"].get("load_rounds", 1)
    seconds = fmt(perf["plan"]["load_seconds"], 0)
    windows = (
        L("windows_rounds", rounds=str(rounds), seconds=seconds) if rounds > 1 else L("windows_one", seconds=seconds)
    )
    out: list[Any] = [
        "",
        L(
            "service_intro",
            model=perf["model"],
            windows=windows,
            count=str(qi.get("count", "?")),
            kb=fmt(qi.get("median_kb"), 0),
        ),
        "",
        L("service_head"),
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, e in engines.items():
        for lv in e["levels"]:
            ref = tf.get(lv["clients"])
            vs = f"{lv['throughput_rps'] / ref['throughput_rps']:.2f}x" if ref and ref["throughput_rps"] else "n/a"
            each = " / ".join(fmt(r) for r in lv.get("rounds_rps", [lv["throughput_rps"]]))
            out.append(
                Row(
                    [
                        key,
                        str(lv["clients"]),
                        fmt(lv["throughput_rps"]),
                        each,
                        vs,
                        pct(lv.get("ratio_to_raw_batched")),
                        fmt(lv["p50_ms"], 0),
                        fmt(lv["p95_ms"], 0),
                        str(lv["errors"]),
                        fmt(lv.get("model_mean_batch")),
                        busy(lv.get("model_busy")),
                    ]
                )
            )
    return out + ["", L("chart", docs=Per(TO_DOCS), file=Per({lang: chart_file(lang) for lang in LANGS}))]


def single_table(perf: dict[str, Any]) -> list[Any]:
    """One client, the bulk import and memory, per engine."""
    out: list[Any] = ["", L("single_intro"), "", L("single_head"), "|---|---:|---:|---:|---:|---:|---:|---:|"]
    engines = perf["engines"]
    tf_imp = engines.get(TF_FP32.key, {}).get("bulk_import", {})
    for key, e in engines.items():
        sc, imp, rss = e["single_client"], e["bulk_import"], e["rss"]
        rate = imp["import_phase_img_per_s"] or imp["wall_img_per_s"]
        base = tf_imp.get("import_phase_img_per_s") or tf_imp.get("wall_img_per_s")
        out.append(
            Row(
                [
                    key,
                    f"{fmt(sc['search_file']['p50_ms'], 0)} / {fmt(sc['search_file']['p95_ms'], 0)}",
                    fmt(sc["reference_batch1_interleaved"]["p50_ms"], 0),
                    fmt(sc["add_file"]["p50_ms"], 0),
                    fmt(rate),
                    f"{rate / base:.2f}x" if base else "n/a",
                    fmt(e["service_start"]["seconds_to_ready"]),
                    f"{fmt(rss['idle_after_start_mb'], 0)} / {fmt(rss['peak_vmhwm_mb'] or rss['peak_sampled_mb'], 0)}",
                ]
            )
        )
    return out


def batching_table(perf: dict[str, Any]) -> list[Any]:
    """The micro-batcher sweep (bench/batching.py): one row per engine, (window, max size) and client count."""
    result = perf.get("batching") or {}
    if not result.get("engines"):
        return []
    defaults = (perf["settings"]["batch_window_ms"], perf["settings"]["batch_max_size"])
    plan = result["plan"]
    out: list[Any] = [
        "",
        L(
            "batching_intro",
            seconds=fmt(plan["seconds"], 0),
            rounds=str(plan.get("rounds", 1)),
            window=f"{defaults[0]:g}",
            size=f"{defaults[1]:g}",
        ),
        "",
        L("batching_head"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, rows in result["engines"].items():
        for r in rows:
            mark = "*" if (r["window_ms"], r["max_size"]) == tuple(defaults) else ""
            out.append(
                Row(
                    [
                        key,
                        f"{r['window_ms']:g}{mark}",
                        f"{r['max_size']}{mark}",
                        str(r["clients"]),
                        fmt(r["throughput_rps"]),
                        fmt(r["p50_ms"], 0),
                        fmt(r["cpu_ms_per_request"]),
                        fmt(r["mean_batch"]),
                        str(r["errors"]),
                    ]
                )
            )
    return out


def perf_section(perf: dict[str, Any]) -> list[Any]:
    """The performance part of the page."""
    from bench.report_vectors import vector_tables  # noqa: PLC0415

    out: list[Any] = ["", L("speed"), "", L("speed_intro", model=perf["model"], weights=perf["weights"])]
    out += raw_table(perf) + service_table(perf) + single_table(perf) + batching_table(perf)
    return out + vector_tables(perf["vector_search"])
