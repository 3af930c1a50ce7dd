"""The figures pages (docs/benchmarks.md, docs/reliability.md and their Chinese twins) are what their renderers
make of the committed data in docs/data/, in both languages, with the same numbers in both.

A hand edit of a generated part, a page left stale after new data was committed, or a label whose translation
drops or adds a figure fails here; nothing needs re-translating by hand after `make bench` or `make test`
(`make docs` renders both languages). Test and bench runs write to results/ only, which git ignores.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from bench import run as bench_run
from bench.cli import RESULTS as BENCH_RESULTS
from bench.docs import DATA, LANGS, Lang, between, markers, page, render_lines, replace_between
from bench.report import bench_lines
from tests import hostile_counts, reliability
from tests import report as reliability_report
from tests.conftest import ROOT

NUMBER = re.compile(r"\d+(?:\.\d+)?")
KINDS = ("bench", "reliability")


def generated(kind: str) -> list[object]:
    """The generated part of `kind`, rendered from docs/data/ as committed."""
    if kind == "bench":
        return bench_lines(*bench_run.load_data())
    return reliability_report.render_from(DATA)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lang", LANGS)
def test_the_committed_page_is_what_the_renderer_makes_of_docs_data(kind: str, lang: Lang) -> None:
    path = page(kind, lang)
    text = path.read_text(encoding="utf-8")
    start, end = markers(kind)
    assert text.count(start) == 1 and text.count(end) == 1, f"{path} lost its markers"
    fresh = replace_between(text, kind, render_lines(generated(kind), lang))
    assert text == fresh, f"{path} differs from the rendering of docs/data/: run `make docs` (do not edit by hand)"


@pytest.mark.parametrize("kind", KINDS)
def test_english_and_chinese_carry_the_same_numbers(kind: str) -> None:
    en, zh = (Counter(NUMBER.findall(between(page(kind, lang).read_text(encoding="utf-8"), kind))) for lang in LANGS)
    assert sum(en.values()) > (500 if kind == "bench" else 50), "the generated part was not found or lost its tables"
    assert en == zh, f"only in English: {en - zh}; only in Chinese: {zh - en}"
    han = len(re.findall(r"[\u4e00-\u9fff]", between(page(kind, "zh").read_text(encoding="utf-8"), kind)))
    assert han > 300, f"the Chinese {kind} figures have only {han} Chinese characters"


@pytest.mark.parametrize("kind", KINDS)
def test_the_hand_written_parts_carry_the_same_numbers_in_both_languages(kind: str) -> None:
    # The prose around the generated part is translated by hand once; a figure changed in one language only fails.
    start, end = markers(kind)

    def hand(lang: Lang) -> Counter[str]:
        head, rest = page(kind, lang).read_text(encoding="utf-8").split(start, 1)
        return Counter(NUMBER.findall(head + rest.split(end, 1)[1]))

    en, zh = hand("en"), hand("zh")
    assert sum(en.values()) > 20, "the hand-written part was not found"
    assert en == zh, f"only in English: {en - zh}; only in Chinese: {zh - en}"


def test_a_changed_figure_reaches_both_languages() -> None:
    # A new run's numbers flow into both languages from the same formatted value, with no translation step.
    quality, perf, meta, regions, duplicates, reembed = bench_run.load_data()
    assert quality is not None and perf is not None
    quality, perf = copy.deepcopy(quality), copy.deepcopy(perf)
    quality["rows"][quality["main_row"]]["variants"]["squash+avg"]["tune_map"] = 0.4321
    perf["engines"]["ov-int8"]["levels"][-1]["throughput_rps"] = 987.65
    lines = bench_lines(quality, perf, meta, regions, duplicates, reembed)
    for lang in LANGS:
        text = render_lines(lines, lang)
        assert "| 0.432 |" in text and "| ov-int8 | 16 | 987.6 |" in text, lang


def test_the_bench_data_derived_from_the_results_is_current() -> None:
    quality, perf, _meta, regions, duplicates, _reembed = bench_run.load_data()
    targets = json.loads((DATA / "bench" / "targets.json").read_text(encoding="utf-8"))
    rows = bench_run.all_targets(perf, quality, regions, duplicates)
    assert targets == {"targets": [bench_run.targets_entry(t) for t in rows]}
    assert quality is not None
    thresholds = json.loads((DATA / "bench" / "thresholds.json").read_text(encoding="utf-8"))
    assert thresholds == bench_run.duplicate_defaults(quality)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lang", LANGS)
def test_the_pages_images_and_data_links_resolve(kind: str, lang: Lang) -> None:
    path = page(kind, lang)
    links = re.findall(r"\]\(([^)#]+)\)", path.read_text(encoding="utf-8"))
    local = [link for link in links if "://" not in link and not link.endswith(".md")]  # other pages: docs/ helper
    assert local, "no local links found: the check would pass vacuously"
    missing = [link for link in local if not (path.parent / link).exists()]
    assert not missing, f"{path} links to what does not exist: {missing}"
    if kind == "bench":
        assert f"latency_vs_concurrency.{lang}.png" in " ".join(links)


def test_test_and_bench_runs_write_only_to_ignored_files() -> None:
    # `make test` must leave `git status` clean: every results file a run writes is git-ignored.
    if subprocess.run(["git", "rev-parse"], cwd=ROOT, capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    writers = [
        reliability.RESULTS,
        hostile_counts.RESULTS,
        BENCH_RESULTS / "perf.json",
        BENCH_RESULTS / "regions.json",
        BENCH_RESULTS / "duplicates.json",
        BENCH_RESULTS / "reembed.json",
        BENCH_RESULTS / "run.json",
    ]
    for path in writers:
        relative = Path(path).relative_to(ROOT)
        ignored = subprocess.run(["git", "check-ignore", "-q", str(relative)], cwd=ROOT).returncode == 0
        assert ignored, f"{relative} is written by test or bench runs but not git-ignored"
    assert not str(reliability.RESULTS).startswith(str(DATA)) and not str(hostile_counts.RESULTS).startswith(str(DATA))
