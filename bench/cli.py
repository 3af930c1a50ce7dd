"""What every benchmark command shares: its arguments, its settings (read once), its logging, its output."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from conf.settings import Settings, load_settings

# What runs write (git-ignored); `make bench` / `make docs` copy it into docs/data/bench/ and render the pages.
RESULTS = Path(__file__).resolve().parent.parent / "results" / "bench"
# The bench's own data: corpus, downloads, and its models (git-ignored).
BENCH_CACHE = Path(__file__).resolve().parent / ".cache"


def bench_arguments(prog: str, doc: str | None, default_out: Path) -> argparse.ArgumentParser:
    """A parser with the options every benchmark takes: --out and --weights."""
    ap = argparse.ArgumentParser(prog=prog, description=(doc or "").splitlines()[0])
    ap.add_argument("--out", type=Path, default=default_out)
    ap.add_argument("--weights", default=None, help="MODEL_WEIGHTS for this run (default: the setting in force)")
    return ap


def parse_and_log(ap: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line and set up logging to stderr."""
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)  # Milvus Lite's unimplemented-RPC noise
    return args


def bench_settings(weights: str | None = None) -> Settings:
    """The settings in force (environment and .env, read once here), with MODEL_WEIGHTS replaced if given."""
    settings = load_settings()
    return settings if weights is None else settings.model_copy(update={"model_weights": weights})


def write_json(path: Path, result: dict[str, Any]) -> None:
    """Write a benchmark's results as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")


def model_settings(settings: Settings, folder: str = "models") -> Settings:
    """`settings` with MODEL_CACHE_DIR moved into the bench's cache (`folder` of it).

    The bench calibrates INT8 models on its own corpus; in the user's cache they
    would replace the model `main.py calibrate` made from the user's catalog.
    """
    return settings.model_copy(update={"model_cache_dir": BENCH_CACHE / folder})


def resnet50_imagenet_file(settings: Settings) -> Path | None:
    """The ResNet50 ImageNet weights file if it is on this machine (MODEL_WEIGHTS as a path, or the file a
    service start downloaded into MODEL_CACHE_DIR); the bench never downloads it."""
    from model.resnet50 import IMAGENET_FILE  # noqa: PLC0415 - bench.cli, which every bench imports, stays model-free

    if settings.model_weights not in ("imagenet", "random"):
        given = Path(settings.model_weights).expanduser()
        return given.resolve() if given.is_file() else None
    cached = Path(settings.model_cache_dir).expanduser() / "models" / IMAGENET_FILE
    return cached.resolve() if cached.is_file() else None


def pct(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation), or None for no values."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else None


def ms_stats(seconds: Sequence[float]) -> dict[str, Any]:
    """p50/p95/mean in milliseconds of a list of durations in seconds."""
    ms = [s * 1000.0 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": rnd(pct(ms, 50)),
        "p95_ms": rnd(pct(ms, 95)),
        "mean_ms": rnd(float(np.mean(ms)) if ms else None),
    }


def rnd(value: float | None, digits: int = 2) -> float | None:
    """`value` rounded for the results JSON (None stays None)."""
    return None if value is None else round(float(value), digits)
