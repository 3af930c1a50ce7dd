"""The reliability figures (faults injected, operations checked, records lost, peak RSS) of a test run.

The fault, crash, concurrency and resource tests report what they did through
the `recorder` fixture; each call merges the figures into
results/tests/reliability.json at once (a test's entry replaces the same test's
entry of an earlier run, so running one module keeps the others' figures; with no
file there yet, the earlier run is the committed docs/data/reliability.json).
The results folder is git-ignored, so `make test` changes no tracked file; `make docs`
(`python -m tests.report`) takes the file into docs/data/ and renders docs/reliability.md
and its Chinese twin.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from bench.docs import DATA
from bench.docs import RESULTS as RUN_RESULTS

RESULTS = RUN_RESULTS / "tests" / "reliability.json"
COMMITTED = DATA / RESULTS.name

# Figures summed over every test entry for the reliability page's totals.
SUMMED = (
    "faults_injected",
    "operations_checked",
    "records_checked",
    "records_lost",
    "records_duplicated",
    "unexpected_5xx",
)


class Recorder:
    """Collects one entry of figures per test; `write()` merges them into RESULTS."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def record(self, test: str, **figures: Any) -> None:
        """Set figures for `test` (later calls for the same test add to or replace its figures)."""
        with self._lock:
            entry = self._entries.setdefault(test, {})
            entry.update(figures)
        self.write()

    def write(self) -> None:
        with self._lock:
            if not self._entries:
                return
            try:
                doc = json.loads((RESULTS if RESULTS.exists() else COMMITTED).read_text(encoding="utf-8"))
                tests = dict(doc.get("tests", {}))
            except (OSError, ValueError):
                tests = {}
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            for name, figures in self._entries.items():
                tests[name] = {**figures, "run_at": stamp}
            totals = {key: sum(int(t.get(key, 0)) for t in tests.values()) for key in SUMMED}
            peaks = [t["peak_rss_mb"] for t in tests.values() if "peak_rss_mb" in t]
            if peaks:
                totals["peak_rss_mb"] = max(peaks)
            doc = {
                "about": "figures of tests/test_faults.py, test_crash_safety.py, test_concurrency.py and "
                "test_resources.py, written by the test run; render with `make docs`",
                "updated": stamp,
                "totals": totals,
                "tests": dict(sorted(tests.items())),
            }
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            tmp = RESULTS.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
            tmp.replace(RESULTS)


_RECORDER = Recorder()


@pytest.fixture(scope="session")
def recorder() -> Recorder:
    """The run's recorder (one per process; every `record` call is written through)."""
    return _RECORDER
