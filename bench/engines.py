"""Raw model speed of every engine and precision side by side: `python -m bench.engines`.

Rounds interleave the engines (engine A at batch 1/8/32, engine B, ..., then again)
so that load from other processes on a shared machine hits all of them alike;
the figure per engine and batch size is the median over rounds. Calibration and
agreement use real photos (scikit-image's bundled samples and crops of them).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.engines import Engine, TensorFlowEngine
from model.openvino_engine import OpenVinoEngine, calibrate_int8

SIZE = 224
_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina", "hubble_deep_field",
           "coins", "camera", "moon", "brick", "grass", "gravel")


def sample_photos(crops_per_photo: int = 4, seed: int = 0) -> np.ndarray:
    """Preprocessed real photos: each scikit-image sample squashed whole plus random 50-90% crops of it."""
    import skimage.data  # noqa: PLC0415
    from keras.applications.resnet50 import preprocess_input  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    out = []
    for name in _PHOTOS:
        photo = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        out.append(photo.resize((SIZE, SIZE), Image.Resampling.BILINEAR))
        for _ in range(crops_per_photo):
            w, h = (int(side * rng.uniform(0.5, 0.9)) for side in photo.size)
            x, y = int(rng.integers(0, photo.width - w + 1)), int(rng.integers(0, photo.height - h + 1))
            out.append(photo.crop((x, y, x + w, y + h)).resize((SIZE, SIZE), Image.Resampling.BILINEAR))
    return preprocess_input(np.stack([np.asarray(p, dtype=np.float32) for p in out]))


def images_per_second(engine: Engine, pool: np.ndarray, batch: int, seconds: float) -> float:
    """Images/s of `engine.predict` at one batch size, over about `seconds` (at least 2 calls)."""
    x = np.concatenate([pool] * -(-batch // len(pool)))[:batch]
    engine.predict(x)  # warm-up: first call at a new shape allocates
    calls, started = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - started < seconds:
        engine.predict(x)
        calls += 1
    return batch * calls / (time.perf_counter() - started)


def speeds(engines: Mapping[str, Engine], pool: np.ndarray, batches: Sequence[int] = (1, 8, 32),
           rounds: int = 5, seconds: float = 2.0) -> dict[str, dict[str, Any]]:
    """Median images/s per engine and batch size over interleaved rounds, with each round's figures."""
    samples: dict[str, dict[int, list[float]]] = {name: {b: [] for b in batches} for name in engines}
    for _ in range(rounds):
        for name, engine in engines.items():
            for batch in batches:
                samples[name][batch].append(images_per_second(engine, pool, batch, seconds))
    return {name: {"precision": engines[name].precision, "threads": engines[name].threads,
                   "img_per_s": {b: round(float(np.median(v)), 1) for b, v in per.items()},
                   # The best round is the least disturbed by other processes: the closest to an idle machine.
                   "best_img_per_s": {b: round(max(v), 1) for b, v in per.items()},
                   "rounds": {b: [round(x, 1) for x in v] for b, v in per.items()}}
            for name, per in samples.items()}


def agreement(reference: Engine, engine: Engine, images: np.ndarray) -> dict[str, float]:
    """Cosine between `engine`'s and `reference`'s features of the same images: min, 1st percentile, median."""
    a, b = reference.predict(images), engine.predict(images)
    cos = (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return {"min": float(cos.min()), "p1": float(np.percentile(cos, 1)), "median": float(np.median(cos))}


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def build_engines(factory: Callable[[], Any], cache_dir: Path, key: Mapping[str, Any], threads: int,
                  calibration: np.ndarray) -> tuple[dict[str, Engine], dict[str, Any]]:
    """TF FP32, OpenVINO f32 / bf16 / INT8 (calibrated here on `calibration`), and their build times."""
    times: dict[str, Any] = {}
    started = time.perf_counter()
    engines: dict[str, Engine] = {"tf_fp32": TensorFlowEngine(factory(), SIZE, threads)}
    times["tf_build_s"] = round(time.perf_counter() - started, 2)
    for precision in ("fp32", "bf16"):
        engine = OpenVinoEngine(factory, cache_dir=cache_dir, cache_key=key, threads=threads, precision=precision)
        engines[f"ov_{precision}"] = engine
        times[f"ov_{precision}"] = {"converted": engine.converted, "prepare_s": round(engine.prepare_seconds, 2),
                                    "compile_s": round(engine.compile_seconds, 2)}
    report = calibrate_int8(factory, calibration, cache_dir=cache_dir, cache_key=key, threads=threads)
    times["int8_calibration"] = report.as_dict()
    engines["ov_int8"] = OpenVinoEngine(None, cache_dir=cache_dir, cache_key=key, threads=threads, precision="int8")
    times["ov_int8"] = {"prepare_s": round(engines["ov_int8"].prepare_seconds, 2),  # type: ignore[attr-defined]
                        "compile_s": round(engines["ov_int8"].compile_seconds, 2)}  # type: ignore[attr-defined]
    return engines, times


def main(argv: Sequence[str] | None = None) -> int:
    """Build a seeded random-weights ResNet50, every engine, and print speeds and agreement as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--out", type=Path, help="also write the JSON here (NNCF's progress bar shares stdout)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import keras  # noqa: PLC0415

    def factory() -> Any:
        """The seeded random-weights ResNet50 the tests use (same weights at every call)."""
        keras.utils.set_random_seed(1234)
        return keras.applications.ResNet50(include_top=False, weights=None, pooling="avg", input_shape=(SIZE, SIZE, 3))

    photos = sample_photos()
    calibration, held_out = photos[0::2], photos[1::2]  # calibrate on half, judge on the other half too
    key = {"model": "resnet50", "weights": "random-seed-1234", "resize": "squash", "pooling": "avg"}
    with tempfile.TemporaryDirectory() as cache:
        engines, times = build_engines(factory, Path(cache), key, args.threads, calibration)
        result = {"cpu": cpu_model(), "threads": args.threads, "build": times,
                  "speed": speeds(engines, photos, rounds=args.rounds, seconds=args.seconds),
                  "cosine_to_tf_fp32": {name: agreement(engines["tf_fp32"], e, held_out)
                                        for name, e in engines.items() if name != "tf_fp32"},
                  "int8_vs_ov_fp32_held_out": agreement(engines["ov_fp32"], engines["ov_int8"], held_out)}
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
