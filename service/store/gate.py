"""Reads at once, writes alone: the gate that keeps Milvus Lite's reads from seeing a flush half done.

Milvus Lite (3.2) flushes by first swapping its in-memory table for an empty one and only
then writing the old one out as a segment. A query or search that runs in between reads
neither: rows written just before are missing from its answer, and rows deleted just before
come back (a CI run of tests/test_concurrency.py saw both). A Lite flush runs on our
flusher's call and inside any write that fills the in-memory table, so on Lite every write
and flush holds the gate exclusively and every read holds it shared. Milvus servers keep
consistent snapshots themselves and get no gate.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


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
