"""What every benchmark command shares: its arguments, its settings (read once), its logging, its output."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conf.settings import Settings, load_settings

RESULTS = Path(__file__).resolve().parent / "results"


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
