"""Performance benchmark: every engine and precision side by side, in one run, on the same machine.

Everything is real: the raw model is the service's own Embedder in this process;
the service is `python main.py serve` in a subprocess on a loopback port (one per
engine, all running, measured in turns); the bulk import is `python main.py
import`; vector search runs against Milvus Lite and a Milvus standalone server.

Engines: TensorFlow FP32 (the service before OpenVINO: "today's service"),
OpenVINO FP32, OpenVINO bf16 (raw model only, where the CPU has bf16), and
OpenVINO INT8 calibrated on real photos of the corpus (the tune split of the
quality benchmark, never noise). On a shared, noisy machine absolute numbers
drift, so every target is a ratio of numbers measured minutes apart: the raw
engines in interleaved rounds, the services level by level in turns, single
requests alternating with TensorFlow batch-1 model calls.

    python -m bench.perf                # full run, writes results/bench/perf.json
    python -m bench.perf --smoke        # seconds-long run of every part (tests use it)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.batching import SweepPlan, sweep
from bench.cli import RESULTS, bench_arguments, bench_settings, model_settings, parse_and_log, rnd, write_json
from bench.corpus import build_corpus
from bench.engines import ENGINES, TF_FP32, best_batched, engine_keys, matrix, timed_calls
from bench.features import decoded
from bench.quality import calibration_images, layout
from bench.service import Service, bulk_import, load_test, single_adds, single_client
from bench.vectors import VectorPlan, vector_search
from conf.settings import MODEL_BATCH, ModelName, Settings
from model.cpu import cpu_budget

log = logging.getLogger("bench.perf")


@dataclass
class PerfPlan:
    """What each part measures and for how long; `smoke()` is the seconds-long variant."""

    engines: tuple[str, ...] = ("tf-fp32", "ov-fp32", "ov-bf16", "ov-int8")  # raw model (bf16 only where supported)
    service_engines: tuple[str, ...] = ("tf-fp32", "ov-fp32", "ov-int8")  # import and service
    other_models: tuple[str, ...] = ("efficientnet-lite0",)  # raw speed only, next to the service's model
    raw_batches: tuple[int, ...] = (1, 8, 32)
    raw_rounds: int = 3  # interleaved rounds; the median counts
    raw_seconds: float = 2.5  # per engine, batch size and round
    recheck_seconds: float = 4.0  # each engine's best batch size again, after the load tests
    calibration_images: int = 200  # INT8: tune-split gallery photos and tiles
    import_files: int | None = None  # gallery images for `main.py import` (None: all)
    single_rounds: int = 8  # rounds of (TF batch-1 model calls, search requests)
    single_per_round: int = 10
    add_requests: int = 30
    concurrency: tuple[int, ...] = (1, 4, 16)
    load_rounds: int = 3  # interleaved windows per engine and concurrency level; the median counts
    load_seconds: float = 10.0  # each measured window
    load_warmup: float = 3.0  # requests in this lead-in are not counted
    vectors: VectorPlan = field(default_factory=VectorPlan)
    batching: SweepPlan = field(default_factory=SweepPlan)  # BATCH_WINDOW_MS x BATCH_MAX_SIZE, OpenVINO engines

    @classmethod
    def smoke(cls) -> PerfPlan:
        """Every code path, a few seconds each: for the test suite."""
        return cls(
            engines=("tf-fp32", "ov-fp32", "ov-int8"),
            service_engines=("tf-fp32", "ov-int8"),
            other_models=(),
            raw_batches=(1, 4),
            raw_rounds=1,
            raw_seconds=0.3,
            recheck_seconds=0.3,
            calibration_images=16,
            import_files=6,
            single_rounds=1,
            single_per_round=3,
            add_requests=3,
            concurrency=(1, 2),
            load_rounds=2,
            load_seconds=2.0,
            load_warmup=0.5,
            vectors=VectorPlan.smoke(),
            batching=SweepPlan.smoke(),
        )


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "cpu_budget": cpu_budget(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# --------------------------------------------------------------------------------------------
# 1. Raw model, every engine
# --------------------------------------------------------------------------------------------


def raw_phase(
    settings: Settings,
    plan: PerfPlan,
    calibration: list[Path],
    probe: list[Path],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The engine matrix of the service's model (embedders kept) and of the other models: (results, embedders)."""
    keys = engine_keys(plan.engines)
    out: dict[str, Any] = {}
    log.info("raw model: %s, engines %s", settings.model_name.value, keys)
    out[settings.model_name.value], embedders = matrix(
        settings, keys, calibration, probe, plan.raw_batches, plan.raw_rounds, plan.raw_seconds
    )
    for name in plan.other_models:
        if name == settings.model_name.value:
            continue
        log.info("raw model: %s", name)
        other = settings.for_model(ModelName(name), "imagenet")
        out[name], _ = matrix(other, keys, calibration, probe, plan.raw_batches, plan.raw_rounds, plan.raw_seconds)
    return out, embedders


# --------------------------------------------------------------------------------------------
# 2. Bulk import, every engine
# --------------------------------------------------------------------------------------------


def import_phase(
    gallery: list[Path], settings: Settings, plan: PerfPlan, workdir: Path, raw: dict[str, Any]
) -> dict[str, Any]:
    """`main.py import` of the gallery once per engine, each into its own Milvus Lite file (the service of
    that engine then serves it: every engine's vectors are a space of their own)."""
    folder = workdir / "import"
    folder.mkdir(exist_ok=True)
    for p in gallery[: plan.import_files] if plan.import_files else gallery:
        target = folder / p.name
        if not target.exists():
            try:
                os.link(p, target)
            except OSError:  # another file system
                shutil.copy2(p, target)
    out = {}
    for key in plan.service_engines:
        log.info("bulk import: %s", key)
        (workdir / key).mkdir(exist_ok=True)
        imp = bulk_import(folder, workdir / key, ENGINES[key].settings(settings))
        rate = imp["import_phase_img_per_s"] or imp["wall_img_per_s"]
        imp["ratio_to_raw_batched"] = rnd(rate / best_batched(raw[key]), 3)
        out[key] = imp
    return out


# --------------------------------------------------------------------------------------------
# 3. The service, every engine
# --------------------------------------------------------------------------------------------


def start_services(settings: Settings, keys: Sequence[str], workdir: Path) -> dict[str, Service]:
    """One `main.py serve` per engine on that engine's imported store, started one after the other."""
    services: dict[str, Service] = {}
    try:
        for key in keys:
            log.info("service: starting %s", key)
            services[key] = Service(workdir / key, ENGINES[key].settings(settings), f"serve-{key}")
            services[key].start()
    except BaseException:
        stop_services(services)
        raise
    return services


def stop_services(services: dict[str, Service]) -> None:
    """Stop every service (SIGINT, then SIGKILL after the grace period)."""
    for svc in services.values():
        svc.stop()


def service_phase(
    services: dict[str, Service], plan: PerfPlan, reference: Any, pool: np.ndarray, queries: list[bytes]
) -> dict[str, Any]:
    """One client, then each concurrency level in turns across the engines, then adds and memory."""
    out: dict[str, Any] = {}
    for key, svc in services.items():
        out[key] = {
            "service_start": {"seconds_to_ready": svc.seconds_to_ready, "records": svc.count()},
            "ready": svc.ready().get("model", {}),
            "single_client": single_client(svc, reference, pool, queries, plan.single_rounds, plan.single_per_round),
            "levels": [],
        }
    keys = list(services)
    for clients in plan.concurrency:
        windows: dict[str, list[dict[str, Any]]] = {key: [] for key in keys}
        for r in range(plan.load_rounds):
            # In turns, starting with a different engine each round: every engine meets the same machine load.
            for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                level = load_test(services[key], queries, clients, plan.load_seconds, plan.load_warmup)
                windows[key].append(level)
                log.info(
                    "  %s, %d clients, round %d: %s req/s, p50 %s ms, %d errors",
                    key,
                    clients,
                    r + 1,
                    level["throughput_rps"],
                    level["p50_ms"],
                    level["errors"],
                )
        for key in keys:
            out[key]["levels"].append(median_window(windows[key]))
    for key, svc in services.items():
        out[key]["single_client"]["add_file"] = single_adds(svc, queries[::-1], plan.add_requests)
        out[key]["rss"] = svc.peak_rss()
    return out


def median_window(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """The window with the median throughput (the lower middle one of an even count), with its latencies and
    counters, plus every window's rate and all windows' errors: one slow or fast window does not decide a level."""
    ranked = sorted(windows, key=lambda w: w["throughput_rps"])
    return {
        **ranked[(len(ranked) - 1) // 2],
        "rounds_rps": [w["throughput_rps"] for w in windows],
        "errors": sum(w["errors"] for w in windows),
    }


def recheck(embedders: dict[str, Any], raw: dict[str, Any], pool: np.ndarray, seconds: float) -> None:
    """Each engine's best batched rate again after the load tests; `raw_batched_ref` = mean of both."""
    for key, entry in raw.items():
        if key not in embedders:
            continue
        best = max(
            (r for r in entry["by_batch"] if r["batch"] > 1), key=lambda r: r["img_per_s"], default=entry["by_batch"][0]
        )
        x = embedders[key].engine_input(np.concatenate([pool] * -(-best["batch"] // len(pool)))[: best["batch"]])
        times, _ = timed_calls(embedders[key].embed, x, seconds)
        after = best["batch"] * len(times) / sum(times)
        entry["recheck"] = {"batch": best["batch"], "img_per_s": rnd(after)}
        entry["raw_batched_ref"] = rnd((best["img_per_s"] + after) / 2)


# --------------------------------------------------------------------------------------------
# The whole run
# --------------------------------------------------------------------------------------------


def run(corpus: Any, settings: Settings, plan: PerfPlan | None = None, workdir: Path | None = None) -> dict[str, Any]:
    """Every performance measurement; returns the results dict (see docs/data/bench/perf.json)."""
    plan = plan or PerfPlan()
    own_tmp = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="imgsim-perf-")) if workdir is None else workdir
    workdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {
        "plan": asdict(plan),
        "machine": machine(),
        "model": settings.model_name.value,
        "weights": settings.model_weights if settings.model_weights in ("imagenet", "random") else "local file",
        "settings": _settings_summary(settings),
    }
    t_start = time.perf_counter()
    try:
        out.update(_measure(corpus, settings, plan, workdir))
        out["vector_search"] = vector_search(plan.vectors, workdir, settings)
    finally:
        out["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        out["elapsed_s"] = rnd(time.perf_counter() - t_start, 1)
        if own_tmp:
            shutil.rmtree(workdir, ignore_errors=True)
    return out


def _measure(corpus: Any, settings: Settings, plan: PerfPlan, workdir: Path) -> dict[str, Any]:
    """Raw engines, imports and services of the service's model."""
    lay = layout(corpus, None)
    calibration = calibration_images(lay, plan.calibration_images)
    eval_queries = [q for q, s in zip(lay.queries, lay.split, strict=True) if s == "eval"]
    raw, embedders = raw_phase(settings, plan, calibration, eval_queries[:MODEL_BATCH])
    service_raw = raw[settings.model_name.value]["speed"]
    reference = embedders[TF_FP32.key]
    pool = np.stack([reference.preprocess(decoded(p)) for p in eval_queries[:MODEL_BATCH]])
    queries = [p.read_bytes() for p in lay.queries]
    imports = import_phase(lay.gallery, settings, plan, workdir, service_raw)
    services = start_services(settings, plan.service_engines, workdir)
    try:
        served = service_phase(services, plan, reference, pool, queries)
    finally:
        stop_services(services)
    recheck(embedders, service_raw, pool, plan.recheck_seconds)
    batching = sweep(
        {key: workdir / key / "milvus.db" for key in plan.service_engines}, settings, queries, workdir, plan.batching
    )
    for key, entry in served.items():
        entry["bulk_import"] = imports[key]
        ref = service_raw[key].get("raw_batched_ref") or best_batched(service_raw[key])
        for level in entry["levels"]:
            level["ratio_to_raw_batched"] = rnd(level["throughput_rps"] / ref, 3)
        clean_exit = services[key].proc.returncode in (0, -2, 130)  # exited, or stopped by our SIGINT
        entry["service_log_tail"] = "" if clean_exit else services[key].tail(1500)
    median_kb = float(np.median([len(b) for b in queries])) / 1024
    return {
        "raw": raw,
        "engines": served,
        "batching": batching,
        "query_images": {"count": len(queries), "median_kb": rnd(median_kb, 1)},
    }


def _settings_summary(settings: Settings) -> dict[str, Any]:
    """The settings the numbers depend on."""
    keep = {
        "image_resize",
        "model_pooling",
        "image_trim",
        "batch_max_size",
        "batch_window_ms",
        "tf_threads",
        "api_threads",
        "milvus_hnsw_ef",
    }
    return {k: (v.value if hasattr(v, "value") else v) for k, v in settings.model_dump(include=keep).items()}


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.perf`: run and write the JSON."""
    ap = bench_arguments("python -m bench.perf", __doc__, RESULTS / "perf.json")
    ap.add_argument("--smoke", action="store_true", help="a seconds-long run of every part")
    args = parse_and_log(ap, argv)
    corpus = build_corpus(small=args.smoke)
    weights = args.weights or "random"
    result = run(corpus, model_settings(bench_settings(weights)), PerfPlan.smoke() if args.smoke else PerfPlan())
    write_json(args.out, result)
    print(json.dumps({k: v["levels"][-1]["throughput_rps"] for k, v in result["engines"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
