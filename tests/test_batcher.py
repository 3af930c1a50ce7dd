"""The micro-batching queue in front of the model and of Milvus searches (service/batcher.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from conf.errors import NotReady
from service.batcher import Batcher


class SlowSquare:
    """A batch function that takes a while per call, like a model forward pass, and records its batches."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds
        self.batches: list[list[int]] = []
        self.threads: list[str] = []  # the thread each batch ran in
        self.lock = threading.Lock()

    def __call__(self, items: Sequence[int]) -> list[int]:
        with self.lock:
            self.batches.append(list(items))
            self.threads.append(threading.current_thread().name)
        time.sleep(self.seconds)
        if any(i < 0 for i in items):
            raise ValueError("negative input")
        return [i * i for i in items]


def test_concurrent_calls_share_batches_and_each_gets_its_own_result() -> None:
    work = SlowSquare()
    batcher = Batcher(work, max_batch=8, window_ms=5, name="test")
    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(batcher.submit, range(24)))
    batcher.close()
    assert results == [i * i for i in range(24)]
    assert sorted(i for b in work.batches for i in b) == list(range(24))  # each item ran exactly once
    assert len(work.batches) < 12 and max(len(b) for b in work.batches) > 1
    assert max(len(b) for b in work.batches) <= 8


def test_a_lone_call_is_not_held_back_by_the_window() -> None:
    work = SlowSquare(seconds=0.0)
    batcher = Batcher(work, max_batch=8, window_ms=1000, name="test")
    started = time.monotonic()
    assert [batcher.submit(i) for i in range(3)] == [0, 1, 4]
    assert time.monotonic() - started < 1.0  # a one-second window, never waited for
    batcher.close()


def test_a_lone_call_runs_in_the_callers_thread_and_overlapping_calls_in_the_worker() -> None:
    # A lone request skips the handoff to the worker and back (two thread wake-ups per stage); requests
    # that overlap still queue for the worker, which batches them.
    work = SlowSquare(seconds=0.05)
    batcher = Batcher(work, max_batch=8, window_ms=5, name="test-worker")
    assert batcher.submit(3) == 9
    assert work.threads == [threading.current_thread().name]
    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(batcher.submit, range(16))) == [i * i for i in range(16)]
    assert "test-worker" in work.threads[1:] and max(len(b) for b in work.batches) > 1
    assert batcher.stats()["requests"] == 17  # every item counted once, whichever thread ran it
    batcher.close()


def test_more_items_than_a_batch_holds_are_split_into_batches() -> None:
    work = SlowSquare(seconds=0.0)
    batcher = Batcher(work, max_batch=4, window_ms=0, name="test")
    assert batcher.submit_many(list(range(10))) == [i * i for i in range(10)]
    assert max(len(b) for b in work.batches) <= 4 and sorted(i for b in work.batches for i in b) == list(range(10))
    batcher.close()


def test_a_failing_batch_fails_its_callers_and_the_batcher_keeps_serving() -> None:
    work = SlowSquare()
    batcher = Batcher(work, max_batch=8, window_ms=5, name="test")
    with pytest.raises(ValueError, match="negative"):
        batcher.submit(-1)
    assert batcher.submit(3) == 9
    batcher.close()
    with pytest.raises(NotReady):
        batcher.submit(2)
