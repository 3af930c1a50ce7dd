"""Counts of the hostile inputs the security tests send, written to results/tests/hostile_counts.json.

Each security test module calls `tried(category, n)` for every input it sends and
checks, and writes the file at the end of the session (`write()`), so the reliability
figures (docs/reliability.md) come from a real run. Categories of a run replace the same
categories in the file; categories the run did not reach are kept as they were (from the
committed docs/data/hostile_counts.json when the results folder has no file yet).
The results folder is git-ignored: `make test` changes no tracked file; `make docs` takes
the file into docs/data/ and renders the pages.
"""

from __future__ import annotations

import json
import threading
import time

from bench.docs import DATA
from bench.docs import RESULTS as RUN_RESULTS

RESULTS = RUN_RESULTS / "tests" / "hostile_counts.json"
COMMITTED = DATA / RESULTS.name

_counts: dict[str, int] = {}
_lock = threading.Lock()


def tried(category: str, n: int = 1) -> None:
    """Record that `n` inputs of `category` were sent and their answers checked."""
    with _lock:
        _counts[category] = _counts.get(category, 0) + n


def write() -> None:
    """Merge this session's counts into the results file (no-op when nothing was counted)."""
    with _lock:
        if not _counts:
            return
        try:
            old = json.loads((RESULTS if RESULTS.exists() else COMMITTED).read_text(encoding="utf-8"))
            categories = dict(old.get("categories", {}))
        except (OSError, ValueError):
            categories = {}
        categories.update(_counts)
        doc = {
            "about": "hostile inputs tried by tests/test_hostile_input.py, test_paths.py, test_urls.py, test_token.py "
            "and test_openapi.py over HTTP (each answer checked: status code, envelope code, message, server "
            "still serving), plus property_examples: hypothesis examples run against the parsing, id, quoting "
            "and image-decoding functions (test_properties.py). Written by the test run.",
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "total": sum(categories.values()),
            "categories": dict(sorted(categories.items())),
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
