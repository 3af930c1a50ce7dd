"""The README's Benchmarks section and the chart, written only from the results JSON (bench/results/).

`python -m bench.run --report-only` regenerates both without measuring anything.
Every figure is explained as a ratio of numbers measured in the same run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.engines import TF_FP32, best_batched
from bench.targets import int8_method

README = Path(__file__).resolve().parent.parent / "README.md"
CHART = "latency_vs_concurrency.png"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


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


# --------------------------------------------------------------------------------------------
# Chart
# --------------------------------------------------------------------------------------------

def chart(perf: dict[str, Any], path: Path) -> None:
    """Latency (p50) and throughput against concurrent clients, one line per engine, raw batched as dashes."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    speed = perf["raw"][perf["model"]]["speed"]
    for n, (key, entry) in enumerate(perf["engines"].items()):
        colour = f"C{n}"
        clients = [lv["clients"] for lv in entry["levels"]]
        ax1.plot(clients, [lv["p50_ms"] for lv in entry["levels"]], "o-", color=colour, label=f"{key} p50")
        ax2.plot(clients, [lv["throughput_rps"] for lv in entry["levels"]], "o-", color=colour, label=f"{key} service")
        raw = speed[key].get("raw_batched_ref") or best_batched(speed[key])
        ax2.axhline(raw, color=colour, ls="--", lw=0.8, label=f"{key} raw batched ({raw:.0f} img/s)")
    for ax, ylabel, title in ((ax1, "latency p50 (ms)", "Latency vs concurrency"),
                              (ax2, "requests/s (images/s for raw)", "Throughput vs concurrency")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(clients, [str(c) for c in clients])
        ax.set_xlabel("concurrent clients (search/file)")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    m = perf["machine"]
    fig.suptitle(f"imgsim on {m['cpu_model']} ({m['cpu_budget']} CPUs), {perf['model']} ({perf['weights']} weights)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Targets and performance tables
# --------------------------------------------------------------------------------------------

def targets_table(rows: list[dict[str, Any]]) -> list[str]:
    """The targets, met or not, then why each missed one was missed."""
    out = ["", "### Targets", "", "| issue | target | measured | met |", "|---|---|---|---|"]
    for t in rows:
        out.append(f"| {t['issue']} | {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |")
    missed = [t for t in rows if not t["met"] and t.get("why")]
    if missed:
        out += ["", "Why the missed ones were missed (from the same run's numbers):", ""]
        out += [f"- *{t['target']}*: {t['why']}." for t in missed]
    return out


def raw_table(perf: dict[str, Any]) -> list[str]:
    """Raw model speed per model, engine and batch size, with the precision in force and the cosine to TF."""
    batches = [r["batch"] for r in next(iter(perf["raw"].values()))["speed"][TF_FP32.key]["by_batch"]]
    out = ["", "Raw model (the service's `Embedder.embed` in one process, images/s, median of interleaved rounds):",
           "", "| model | engine | precision in force | " + " | ".join(f"batch {b}" for b in batches)
           + " | batched vs tf-fp32 | cosine to tf-fp32 (min) |", "|---|---|---|" + "---:|" * (len(batches) + 2)]
    for model, m in perf["raw"].items():
        tf = best_batched(m["speed"][TF_FP32.key])
        for key, e in m["speed"].items():
            cos = m.get(f"cosine_to_{TF_FP32.key}", {}).get(key, {}).get("min")
            out.append(f"| {model} | {key} | {e['precision']} | "
                       + " | ".join(fmt(r["img_per_s"]) for r in e["by_batch"])
                       + f" | {best_batched(e) / tf:.2f}x | {fmt(cos, 4) if cos is not None else '1 (itself)'} |")
    cal = [calibration_text(model, m["int8_calibration"]) for model, m in perf["raw"].items()
           if "int8_calibration" in m]
    if cal:
        out += ["", "INT8 calibration (NNCF, on gallery photos and tiles of the quality benchmark's tune split): "
                + "; ".join(cal) + "."]
    return out


def calibration_text(model: str, cal: dict[str, Any]) -> str:
    """One model's INT8 calibration: images, cosine to FP32 on the held-out ones, layers kept in FP32, time."""
    where = f"on the {cal['held_out']} of them held out from calibration" if "held_out" in cal else "on them"
    return (f"{model}: {cal['images']} images, {int8_method(cal)}, cosine to FP32 {where} median "
            f"{cal['cosine_median']:.4f}, 1st percentile {cal['cosine_p1']:.4f}, min {cal['cosine_min']:.4f}, "
            f"{cal['wall_seconds']:.0f} s")


def service_table(perf: dict[str, Any]) -> list[str]:
    """Every engine's service at each concurrency level, against TensorFlow's and against its own raw model."""
    engines = perf["engines"]
    tf = {lv["clients"]: lv for lv in engines[TF_FP32.key]["levels"]} if TF_FP32.key in engines else {}
    qi = perf.get("query_images", {})
    rounds = perf["plan"].get("load_rounds", 1)
    windows = (f"in {rounds} windows of {fmt(perf['plan']['load_seconds'], 0)} s per engine and level, the engines in "
               "turns, a different one first each round (the window with the median rate is shown, with the errors "
               "of all windows)" if rounds > 1 else
               f"for {fmt(perf['plan']['load_seconds'], 0)} s per engine and level, the engines in turns at each level")
    out = ["", f"The service (`main.py serve`, one per engine, {perf['model']}), N clients sending search/file back to "
           f"back over loopback HTTP {windows} (queries: the corpus' {qi.get('count', '?')} query JPEGs, median "
           f"{fmt(qi.get('median_kb'), 0)} KB):", "",
           "| engine | clients | req/s | each window | vs tf-fp32 | vs own raw batched | p50 (ms) | p95 (ms) | errors | "
           "mean batch | model busy |", "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key, e in engines.items():
        for lv in e["levels"]:
            ref = tf.get(lv["clients"])
            vs = f"{lv['throughput_rps'] / ref['throughput_rps']:.2f}x" if ref and ref["throughput_rps"] else "n/a"
            each = " / ".join(fmt(r) for r in lv.get("rounds_rps", [lv["throughput_rps"]]))
            out.append(f"| {key} | {lv['clients']} | {fmt(lv['throughput_rps'])} | {each} | {vs} | "
                       f"{pct(lv.get('ratio_to_raw_batched'))} | {fmt(lv['p50_ms'], 0)} | {fmt(lv['p95_ms'], 0)} | "
                       f"{lv['errors']} | {fmt(lv.get('model_mean_batch'))} | {busy(lv.get('model_busy'))} |")
    return out + ["", f"![latency and throughput vs concurrency, per engine](bench/results/{CHART})"]


def single_table(perf: dict[str, Any]) -> list[str]:
    """One client, the bulk import and memory, per engine."""
    out = ["", "One client at a time (search/file alternating with TensorFlow batch-1 model calls in the benchmark "
           "process), the bulk import (`main.py import` of the gallery into an empty store) and the service's "
           "memory, per engine:", "",
           "| engine | search p50 / p95 (ms) | tf-fp32 batch-1 model p50 (ms) | add p50 (ms) | import (img/s) | "
           "import vs tf-fp32 | start-up to /ready (s) | RSS idle / peak (MB) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    engines = perf["engines"]
    tf_imp = engines.get(TF_FP32.key, {}).get("bulk_import", {})
    for key, e in engines.items():
        sc, imp, rss = e["single_client"], e["bulk_import"], e["rss"]
        rate = imp["import_phase_img_per_s"] or imp["wall_img_per_s"]
        base = tf_imp.get("import_phase_img_per_s") or tf_imp.get("wall_img_per_s")
        out.append(f"| {key} | {fmt(sc['search_file']['p50_ms'], 0)} / {fmt(sc['search_file']['p95_ms'], 0)} | "
                   f"{fmt(sc['reference_batch1_interleaved']['p50_ms'], 0)} | {fmt(sc['add_file']['p50_ms'], 0)} | "
                   f"{fmt(rate)} | {f'{rate / base:.2f}x' if base else 'n/a'} | "
                   f"{fmt(e['service_start']['seconds_to_ready'])} | {fmt(rss['idle_after_start_mb'], 0)} / "
                   f"{fmt(rss['peak_vmhwm_mb'] or rss['peak_sampled_mb'], 0)} |")
    return out


def batching_table(perf: dict[str, Any]) -> list[str]:
    """The micro-batcher sweep (bench/batching.py): one row per engine, (window, max size) and client count."""
    result = perf.get("batching") or {}
    if not result.get("engines"):
        return []
    defaults = (perf["settings"]["batch_window_ms"], perf["settings"]["batch_max_size"])
    plan = result["plan"]
    out = ["", f"The micro-batcher's settings (BATCH_WINDOW_MS, BATCH_MAX_SIZE): one service per pair, all running, "
           f"loaded in turns for {fmt(plan['seconds'], 0)} s per level, median of {plan.get('rounds', 1)} rounds. CPU "
           f"ms / request is the service's CPU time over the requests it answered; the defaults "
           f"({defaults[0]:g} ms, {defaults[1]:g}) are marked *:", "",
           "| engine | window (ms) | max size | clients | req/s | p50 (ms) | CPU ms / request | mean batch | errors |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, rows in result["engines"].items():
        for r in rows:
            mark = "*" if (r["window_ms"], r["max_size"]) == tuple(defaults) else ""
            out.append(f"| {key} | {r['window_ms']:g}{mark} | {r['max_size']}{mark} | {r['clients']} | "
                       f"{fmt(r['throughput_rps'])} | {fmt(r['p50_ms'], 0)} | {fmt(r['cpu_ms_per_request'])} | "
                       f"{fmt(r['mean_batch'])} | {r['errors']} |")
    return out


def perf_section(perf: dict[str, Any]) -> list[str]:
    """The performance part of the README section."""
    from bench.report_vectors import vector_tables  # noqa: PLC0415

    out = ["", "### Speed: every engine side by side", "",
           "TensorFlow FP32 is the service as it was before OpenVINO (\"today's service\" in issue 10); OpenVINO "
           "FP32 is the default; INT8 needs `python main.py calibrate DIR --int8` first. All engines run the same "
           f"{perf['model']} ({perf['weights']} weights: speed does not depend on the weights' values)."]
    out += raw_table(perf) + service_table(perf) + single_table(perf) + batching_table(perf)
    return out + vector_tables(perf["vector_search"])
