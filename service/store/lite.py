"""Milvus Lite specifics: the gate that keeps its reads off its writes and flushes, and its background flusher.

Milvus Lite (3.2) flushes by first swapping its in-memory table for an empty one and only
then writing the old one out as a segment. A query or search that runs in between reads
neither: rows written just before are missing from its answer, and rows deleted just before
come back (a CI run of tests/test_concurrency.py saw both). A Lite flush runs on our
flusher's call and inside any write that fills the in-memory table, so on Lite every write
and flush holds the gate exclusively and every read holds it shared. Milvus servers keep
consistent snapshots themselves and get no gate.

Milvus Lite keeps written rows in an unindexed in-memory table until 128 MB (~15,000
vectors) pile up, and every search scans that table row by row in Python: ~160 ms per
1,000 unflushed rows (the write probe of bench/perf.py). A flush once writes pause, or
every LITE_FLUSH_ROWS rows, moves them into an indexed segment (~20 ms for a few rows).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from service.store.connection import short

log = logging.getLogger(__name__)

LITE_FLUSH_QUIET_S = 0.5
LITE_FLUSH_ROWS = 256


class SharedExclusiveLock:
    """Many holders in shared mode at once, or one in exclusive mode.

    A waiting exclusive holder keeps new shared holders out, so a stream of reads cannot
    starve a write. Not reentrant: a holder must not take the lock again.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0  # threads waiting for exclusive mode

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Hold the lock along with other shared holders."""
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive and not self._waiting)
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                if not self._shared:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lock alone."""
        with self._cond:
            self._waiting += 1
            try:
                self._cond.wait_for(lambda: not self._exclusive and not self._shared)
            finally:
                self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class LiteFlusher:
    """Flushes a Milvus Lite collection in the background shortly after writes, so searches stay fast."""

    def __init__(
        self, flush: Callable[[], None], quiet_s: float = LITE_FLUSH_QUIET_S, max_rows: int = LITE_FLUSH_ROWS
    ) -> None:
        self._flush = flush
        self._quiet_s = quiet_s
        self._max_rows = max_rows
        self._cond = threading.Condition()
        self._pending = 0
        self._last_write = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="milvus-lite-flusher", daemon=True)
        self._thread.start()

    def wrote(self, rows: int) -> None:
        """Note that `rows` rows were written or deleted."""
        with self._cond:
            self._pending += max(rows, 1)
            self._last_write = time.monotonic()
            self._cond.notify()

    def close(self) -> None:
        """Stop the thread after a last flush of whatever is pending."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=60)

    def _due_in(self) -> float | None:
        """Seconds until the next flush is due (0.0: now); None when nothing is pending."""
        if self._pending == 0:
            return None
        if self._closed or self._pending >= self._max_rows:
            return 0.0
        return max(0.0, self._last_write + self._quiet_s - time.monotonic())

    def _run(self) -> None:
        while True:
            with self._cond:
                while (due := self._due_in()) != 0.0:
                    if due is None and self._closed:
                        return
                    self._cond.wait(due)
                self._pending = 0
            try:
                self._flush()
            except Exception as exc:  # noqa: BLE001 - a failed flush only costs speed
                # Not retried in a loop: the next write schedules another flush, and Lite flushes on
                # its own at 128 MB and on close.
                log.warning("flushing Milvus Lite failed (%s); searches stay slower until the next flush", short(exc))
