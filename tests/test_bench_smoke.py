"""Smoke test of the benchmarks (bench/): every part runs for real on a tiny corpus, and the report renders.

`make bench` takes ~30 minutes; this runs the same code paths in about a minute:
the quality ranking with pHash, the raw model, `main.py import`, `main.py serve`
under 1 and 2 clients over HTTP, vector search on Milvus Lite against numpy,
then the chart and the README section from the results.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import perf, quality
from bench import run as bench_run
from bench.corpus import Corpus, build_corpus
from conf.settings import Settings
from model.embedder import Embedder
from tests.conftest import ROOT, make_settings

TRANSFORMS = ("scale_0.25", "center_crop_50", "pad_white_canvas")


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    """The scikit-image corpus (no network; cached under bench/.cache/ after the first build)."""
    return build_corpus(small=True)


@pytest.fixture(scope="module")
def results(corpus: Corpus, embedder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both benchmarks, smoke-sized, on the session's model (random weights)."""
    settings = make_settings(tmp_path_factory.mktemp("quality"))
    q = quality.run(corpus, embedder, settings, modes=[settings.image_resize], transforms=TRANSFORMS)
    p = perf.run(corpus, settings, perf.PerfPlan.smoke(), embedder=embedder,
                 workdir=tmp_path_factory.mktemp("perf"))
    return {"quality": q, "perf": p}


def test_quality_ranks_every_query_with_each_variant_and_phash(results: dict[str, Any], corpus: Corpus) -> None:
    q = results["quality"]
    assert q["random_weights"] and q["pooling_check_max_abs_diff"] < 1e-4
    mode = Settings.model_fields["image_resize"].default.value
    assert set(q["variants"]) == {f"{mode}+avg", f"{mode}+gem"}
    assert q["corpus"]["queries"] == sum(1 for x in corpus.queries if x.transform in TRANSFORMS)
    for table in [*q["variants"].values(), q["phash"]]:
        assert set(table["per_transform"]) == set(TRANSFORMS)
        for row in table["per_transform"].values():
            assert 0 <= row["recall_at_1"] <= row["recall_at_10"] <= 1 and 0 < row["map"] <= 1
    assert q["pick"]["current_default"] == f"{mode}+avg" and q["pick"]["best_by_map"] in q["variants"]


def test_perf_measures_every_item_over_real_http(results: dict[str, Any]) -> None:
    p = results["perf"]
    assert [r["batch"] for r in p["raw_model"]["by_batch"]] == [1, 4]
    assert all(r["img_per_s"] > 0 and 0 < r["cores"] <= p["machine"]["logical_cpus"] + 0.5
               for r in p["raw_model"]["by_batch"])
    assert p["bulk_import"]["imported"] == 6 and p["service_start"]["records"] == 6
    # The importer's own clock, not the wall time with model loading.
    assert 0 < p["bulk_import"]["model_busy_s"] < p["bulk_import"]["import_phase_s"] < p["bulk_import"]["wall_s"]
    assert p["single_client"]["search_file"]["n"] == 3 and p["single_client"]["add_file"]["n"] == 3
    levels = p["concurrency"]["levels"]
    assert [lv["clients"] for lv in levels] == [1, 2]
    assert all(lv["completed"] > 0 and lv["errors"] == 0 for lv in levels)
    assert all(lv["model_mean_batch"] >= 1 and 0 < lv["model_busy"] <= 1.05 for lv in levels)
    assert all(0 < lv["service_cores"] <= p["machine"]["logical_cpus"] + 0.5 for lv in levels)
    assert p["rss"]["peak_sampled_mb"] > 300  # TensorFlow and ResNet50 are in there
    lite = p["vector_search"]["backends"]["lite"]
    assert lite["index"] and lite["sizes"]["2000"]["recall_at_10"] >= 0.9
    probe = lite["write_probe"]
    assert [r["rows_written"] for r in probe] == [100, 300]
    assert all(r["flushed_by_store"]["n"] == r["never_flushed"]["n"] == 10 for r in probe)
    assert {t["target"].split()[0] for t in p["targets"]} >= {"2", "single", "bulk", "vector"}


def test_report_writes_chart_and_only_the_bench_section_of_the_readme(results: dict[str, Any],
                                                                      tmp_path: Path) -> None:
    (tmp_path / "quality.json").write_text(json.dumps(results["quality"]))
    (tmp_path / "perf.json").write_text(json.dumps(results["perf"]))
    readme = tmp_path / "README.md"
    original = (ROOT / "README.md").read_text()
    readme.write_text(original)
    bench_run.report(tmp_path, readme)
    assert (tmp_path / bench_run.CHART).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = readme.read_text()
    head, rest = original.split(bench_run.START, 1)
    tail = rest.split(bench_run.END, 1)[1]
    assert text.startswith(head + bench_run.START) and text.endswith(bench_run.END + tail)
    section = text.split(bench_run.START, 1)[1].split(bench_run.END, 1)[0]
    assert f"| **{results['quality']['pick']['current_default']}** (default) |" in section
    assert "random weights" in section and "### Targets" in section
    for lv in results["perf"]["concurrency"]["levels"]:
        assert f"| {lv['clients']} | {lv['throughput_rps']:.1f} |" in section
    bench_run.report(tmp_path, readme)
    assert readme.read_text() == text  # regenerating is idempotent
