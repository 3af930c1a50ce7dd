"""Render the test run's reliability figures into docs/reliability.md and docs/zh-CN/reliability.md.

    python -m tests.report            # take results/tests/*.json into docs/data/, rewrite both pages from there
    python -m tests.report --check    # exit 1 if a page differs from what docs/data/ gives (changes nothing)

The tests write their figures to results/tests/ (git-ignored; see tests/reliability.py and
tests/hostile_counts.py), so `make test` leaves the checkout clean. Only this command, run by `make docs`, copies
them into docs/data/reliability.json and docs/data/hostile_counts.json (committed) and renders the pages from
those files alone: every number is formatted once and written in English and Chinese from the label table below.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.docs import DATA, LANGS, RESULTS, Labels, Msg, Row, Seq, page, render_lines, replace_between, take_results
from bench.docs import write_pages as _write_pages

KIND = "reliability"
TEST_RESULTS = RESULTS / "tests"  # what the tests write (git-ignored)
FILES = ("reliability.json", "hostile_counts.json")

L = Labels.load("reliability")


def _load(folder: Path, name: str) -> dict[str, Any] | None:
    try:
        return json.loads((folder / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _named(key: str, fallback: str) -> Msg | str:
    """The label `key` when the table has it, else `fallback` (a test or category added since)."""
    return L(key) if key in L.table else fallback


def _notes(name: str, t: dict[str, Any]) -> Msg | str:
    if name == "faults.milvus_stopped_under_traffic":
        return L("n_milvus_stopped", answered_503=str(t["answered_503"]), ready=str(t["ready_after_restart_s"]))
    if name == "faults.api_started_before_milvus":
        return L("n_api_before_milvus", healthy=str(t["api_healthy_s"]), ready=str(t["ready_after_milvus_up_s"]))
    if name == "crash.import_kill9":
        return L("n_import_kill9", moved=Seq([str(n) for n in t["moved_when_killed"]], "names"))
    if name == "crash.serve_kill9":
        return L(
            "n_serve_kill9",
            adds=str(t["acknowledged_adds"]),
            deletes=str(t["acknowledged_deletes"]),
            cut=str(t["in_flight_at_kill"]),
        )
    if name.startswith("concurrency."):
        ops = ", ".join(f"{k} {v}" for k, v in t["ops"].items())  # operation names, the same in every language
        return L("n_concurrency", clients=str(t["clients"]), seconds=str(t["seconds"]), ops=ops)
    if name == "resources.max_size_uploads":
        return L(
            "n_uploads",
            mb=str(t["max_image_bytes"] // (1024 * 1024)),
            mp=str(t["max_image_pixels"] // 1_000_000),
            peak=str(t["peak_rss_mb"]),
            idle=str(t["base_rss_mb"]),
            growth=str(max(t["peak_growth_mb"])),
        )
    if name == "resources.slow_clients":
        return L(
            "n_slow_clients",
            slow=str(t["slow_clients"]),
            median=str(t["with_slow_clients_median_ms"]),
            max=str(t["with_slow_clients_max_ms"]),
            alone=str(t["normal_median_ms"]),
        )
    if name == "resources.slowloris_beyond_connection_limit":
        return L("n_slowloris", health=str(t["health_ms"]), cut=str(t["trickling_cut_off_after_s"]))
    return ""


def reliability_lines(rel: dict[str, Any] | None, hostile: dict[str, Any] | None) -> list[Any]:
    """Everything between the reliability markers, once, for every language."""
    if rel is None and hostile is None:
        return [L("no_results")]
    out: list[Any] = [L("figures_head"), "|---|---|"]
    if hostile:
        cats = hostile.get("categories", {})
        out.append(Row([L("hostile"), L("hostile_value", total=str(hostile["total"]), categories=str(len(cats)))]))
    if rel:
        tot = rel["totals"]
        out += [
            Row([L("faults"), str(tot["faults_injected"])]),
            Row([L("operations"), str(tot["operations_checked"])]),
            Row([L("records"), str(tot["records_checked"])]),
            Row([L("lost"), f"**{tot['records_lost']}**"]),
            Row([L("duplicated"), str(tot["records_duplicated"])]),
            Row([L("unexpected_5xx"), str(tot["unexpected_5xx"])]),
        ]
        up = rel["tests"].get("resources.max_size_uploads")
        if up:
            out.append(
                Row(
                    [
                        L("peak_rss"),
                        L(
                            "peak_rss_value",
                            peak=str(up["peak_rss_mb"]),
                            idle=str(up["base_rss_mb"]),
                            growth=str(max(up["peak_growth_mb"])),
                        ),
                    ]
                )
            )
    out.append("")
    if rel:
        out += [L("tests_head"), "|---|---|---|---|---|---|"]
        out += [
            Row(
                [
                    _named(name, name),
                    str(t.get("faults_injected", 0)),
                    str(t.get("operations_checked", 0)),
                    str(t.get("records_checked", 0)),
                    str(t.get("records_lost", 0)),
                    _notes(name, t),
                ]
            )
            for name, t in rel["tests"].items()
        ]
        out += [
            "",
            L(
                "dates",
                reliability=rel["updated"],
                hostile=L("hostile_date", date=hostile["updated"]) if hostile else "",
            ),
        ]
    if hostile:
        cats = Seq(
            [
                L("category", name=_named(f"c_{k}", k.replace("_", " ")), n=str(v))
                for k, v in hostile.get("categories", {}).items()
            ]
        )
        out += ["", L("by_category", categories=cats)]
    return out


def render_from(data: Path = DATA) -> list[Any]:
    """The generated part from the committed figures in `data`."""
    return reliability_lines(_load(data, "reliability.json"), _load(data, "hostile_counts.json"))


def write_pages(results: Path = TEST_RESULTS, data: Path = DATA) -> list[Path]:
    """Take the tests' latest figures from `results` into `data`, then rewrite both pages from `data`."""
    take_results(results, data, FILES)
    return _write_pages(KIND, render_from(data))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.report", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the pages match docs/data/")
    args = parser.parse_args(argv)
    if args.check:
        lines = render_from()
        stale = []
        for lang in LANGS:
            text = page(KIND, lang).read_text(encoding="utf-8")
            if replace_between(text, KIND, render_lines(lines, lang)) != text:
                stale.append(page(KIND, lang))
        for path in stale:
            print(f"{path} is out of date: run `make docs`", file=sys.stderr)
        return 1 if stale else 0
    for path in write_pages():
        print(f"rewrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
