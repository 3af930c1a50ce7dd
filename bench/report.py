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

L = Labels.load("report")


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


def bench_lines(
    quality: dict[str, Any] | None,
    perf: dict[str, Any] | None,
    meta: dict[str, Any],
    regions: dict[str, Any] | None = None,
    duplicates: dict[str, Any] | None = None,
    reembed: dict[str, Any] | None = None,
) -> list[Any]:
    """Everything between the bench markers, once, for every language (only from the results JSON)."""
    from bench.report_duplicates import duplicates_section  # noqa: PLC0415 - it imports this module's helpers
    from bench.report_quality import quality_section  # noqa: PLC0415 - it imports this module's helpers
    from bench.report_reembed import reembed_section  # noqa: PLC0415 - it imports this module's helpers
    from bench.report_regions import regions_section  # noqa: PLC0415

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
    out += targets_table(all_targets(perf, quality, regions, duplicates))
    if perf and perf.get("engines"):
        out += perf_section(perf)
    if quality:
        out += quality_section(quality)
    if regions:
        out += regions_section(regions)
    if duplicates:
        out += duplicates_section(duplicates)
    if reembed:
        out += reembed_section(reembed)
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
