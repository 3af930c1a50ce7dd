"""Every engine and precision of one backbone, side by side in one process: `python -m bench.engines`.

The engines are the service's own (`model.embedder.load_embedder` with
MODEL_ENGINE / MODEL_PRECISION set): TensorFlow FP32 (the service before
OpenVINO), OpenVINO FP32, OpenVINO bf16 where the CPU has bf16 instructions,
and OpenVINO INT8 calibrated here on real photos of the benchmark corpus (the
tune split), never on noise. Each reports the precision really in force.

Raw speed rounds interleave the engines (engine A at batch 1/8/32, engine B,
..., then again) so that load from other processes on a shared machine hits all
of them alike; the figure per engine and batch size is the median over rounds.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.cli import bench_arguments, bench_settings, model_settings, parse_and_log
from bench.corpus import build_corpus
from bench.features import decoded
from conf.settings import ModelEngine, Precision, Settings
from model.embedder import load_embedder, model_spec, quantize_int8
from model.transforms import fit_square, trim_border

log = logging.getLogger("bench.engines")


@dataclass(frozen=True)
class EngineSpec:
    """One engine/precision of the service: its label and the settings that select it."""

    key: str
    engine: str  # MODEL_ENGINE
    precision: str  # MODEL_PRECISION (requested; the embedder reports what is in force)

    def settings(self, settings: Settings) -> Settings:
        """`settings` with this engine and precision selected."""
        return settings.model_copy(
            update={"model_engine": ModelEngine(self.engine), "model_precision": Precision(self.precision)}
        )

    def env(self) -> dict[str, str]:
        """The same selection for a `main.py` subprocess."""
        return {"MODEL_ENGINE": self.engine, "MODEL_PRECISION": self.precision}


TF_FP32 = EngineSpec("tf-fp32", "tensorflow", "fp32")
OV_FP32 = EngineSpec("ov-fp32", "openvino", "fp32")
OV_BF16 = EngineSpec("ov-bf16", "openvino", "bf16")
OV_INT8 = EngineSpec("ov-int8", "openvino", "int8")
ENGINES = {s.key: s for s in (TF_FP32, OV_FP32, OV_BF16, OV_INT8)}


def bf16_supported() -> bool:
    """Whether OpenVINO's CPU plugin can run bf16 here (AVX512_BF16 or AMX); elsewhere it would run f32."""
    import openvino as ov  # noqa: PLC0415 - OpenVINO only when a bf16 row is considered

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def engine_keys(wanted: Sequence[str]) -> list[str]:
    """`wanted` without bf16 when this CPU cannot run it (a bf16 row would only repeat FP32)."""
    return [k for k in wanted if k != OV_BF16.key or bf16_supported()]


def calibrate(settings: Settings, images: Sequence[Path], match_fp32: bool = False) -> dict[str, Any]:
    """Calibrate the service's INT8 model of `settings` (in its MODEL_CACHE_DIR) on real photos, preprocessed
    as the service preprocesses them: what `main.py calibrate DIR [--match-fp32]` does, in process. Returns
    the calibration report; "saved" is False when a `match_fp32` model missed the gate (nothing was cached)."""
    from model.openvino_engine import GateMissed  # noqa: PLC0415 - OpenVINO only when INT8 is calibrated

    spec = model_spec(settings)

    def prepare(path: Path) -> np.ndarray:
        img = decoded(path)
        return spec.backbone.normalise(np.asarray(fit_square(trim_border(img) if spec.trim else img, spec.resize)))

    started = time.perf_counter()
    try:
        report = {
            **quantize_int8(settings, np.stack([prepare(p) for p in images]), match_fp32).as_dict(),
            "saved": True,
        }
    except GateMissed as missed:
        report = {**missed.report.as_dict(), "saved": False}
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in report.items() if k != "cache_path"}


def load_engines(settings: Settings, keys: Sequence[str]) -> dict[str, Any]:
    """The service's Embedder for each engine key (INT8 must have been calibrated in MODEL_CACHE_DIR)."""
    return {key: load_embedder(ENGINES[key].settings(settings)) for key in keys}


# --------------------------------------------------------------------------------------------
# Raw speed
# --------------------------------------------------------------------------------------------


def timed_calls(embed: Callable[[np.ndarray], Any], x: np.ndarray, seconds: float) -> tuple[list[float], float]:
    """Wall seconds of each call of `embed(x)` over about `seconds` (at least 2 calls), and the CPU seconds
    this process used meanwhile (nothing else runs in it: that is the model's CPU)."""
    embed(x)  # warm-up: the first call at a new shape allocates
    times: list[float] = []
    cpu0, start = time.process_time(), time.perf_counter()
    while len(times) < 2 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        embed(x)
        times.append(time.perf_counter() - t0)
    return times, time.process_time() - cpu0


def speeds(
    embedders: Mapping[str, Any], pool: np.ndarray, batches: Sequence[int], rounds: int, seconds: float
) -> dict[str, dict[str, Any]]:
    """Images/s per engine and batch size (median over interleaved rounds), with CPU ms per image."""
    samples: dict[str, dict[int, list[tuple[float, float]]]] = {k: {b: [] for b in batches} for k in embedders}
    for _ in range(rounds):
        for key, embedder in embedders.items():
            for batch in batches:
                # Each engine's own input kind (uint8 pixels or normalised floats), converted ahead of the clock.
                x = embedder.engine_input(np.concatenate([pool] * -(-batch // len(pool)))[:batch])
                times, cpu = timed_calls(embedder.embed, x, seconds)
                samples[key][batch].append((batch * len(times) / sum(times), cpu / (batch * len(times)) * 1000))
    return {
        key: {
            "precision": embedders[key].info["precision"],
            "threads": embedders[key].info["threads"],
            "by_batch": [
                {
                    "batch": b,
                    "img_per_s": round(float(np.median([s[0] for s in v])), 2),
                    "cpu_ms_per_image": round(float(np.median([s[1] for s in v])), 2),
                    "rounds": [round(s[0], 1) for s in v],
                }
                for b, v in per.items()
            ],
        }
        for key, per in samples.items()
    }


def agreement(embedders: Mapping[str, Any], reference: str, pool: np.ndarray) -> dict[str, dict[str, float]]:
    """Cosine between each engine's vectors and the reference engine's, on the same inputs."""
    ref = embedders[reference].embed(pool)
    out = {}
    for key, embedder in embedders.items():
        if key != reference:
            cos = (embedder.embed(pool) * ref).sum(axis=1)
            out[key] = {
                "min": round(float(cos.min()), 6),
                "p1": round(float(np.percentile(cos, 1)), 6),
                "median": round(float(np.median(cos)), 6),
            }
    return out


def best_batched(entry: dict[str, Any]) -> float:
    """An engine's best images/s at batch sizes above 1 ("batched")."""
    return max((r["img_per_s"] for r in entry["by_batch"] if r["batch"] > 1), default=entry["by_batch"][0]["img_per_s"])


def matrix(
    settings: Settings,
    keys: Sequence[str],
    calibration: Sequence[Path],
    probe: Sequence[Path],
    batches: Sequence[int],
    rounds: int,
    seconds: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Calibrate INT8, load every engine, measure speed and agreement: (results, embedders)."""
    out: dict[str, Any] = {"model": settings.model_name.value, "weights": settings.model_weights}
    if OV_INT8.key in keys:
        out["int8_calibration"] = calibrate(settings, calibration)
    embedders = load_engines(settings, keys)
    pool = np.stack([embedders[keys[0]].preprocess(decoded(p)) for p in probe])
    out["speed"] = speeds(embedders, pool, batches, rounds, seconds)
    out["cosine_to_" + keys[0]] = agreement(embedders, keys[0], pool)
    return out, embedders


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.engines`: the raw matrix of one backbone on the corpus' photos, printed as JSON."""
    ap = bench_arguments("python -m bench.engines", __doc__, Path("/dev/stdout"))
    ap.add_argument("--small", action="store_true", help="the scikit-image corpus, short rounds")
    args = parse_and_log(ap, argv)
    from bench.quality import split_of  # noqa: PLC0415 - bench.quality imports this module

    settings = model_settings(bench_settings(args.weights))
    corpus = build_corpus(small=args.small)
    tune = [g.file for g in corpus.gallery if split_of(g.source) == "tune"][:200]
    probe = [q.file for q in corpus.queries if split_of(q.source) == "eval"][:32]
    result, _ = matrix(
        settings,
        engine_keys(list(ENGINES)),
        tune,
        probe,
        (1, 8, 32),
        1 if args.small else 3,
        0.5 if args.small else 3.0,
    )
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
