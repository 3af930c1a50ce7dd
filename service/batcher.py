"""Micro-batching: coalesce concurrent calls into one call over a batch.

ResNet50 on a CPU does more images per second in a batch of 16 than one at a
time, and a vector search for 16 queries costs Milvus (Lite above all) a
fraction of 16 single searches. So under concurrent load the service queues
requests and one worker thread per stage runs them together. While requests
overlap, a batch waits at most BATCH_WINDOW_MS for company. A lone client's
request (the stage idle, nothing queued) runs at once in the client's own
thread, without the two thread wake-ups of a handoff to the worker and back.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from conf.errors import NotReady

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """A queue in front of `run_batch` (items -> one result per item), drained by one worker thread."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[T]], Sequence[R]],
        max_batch: int,
        window_ms: float,
        name: str,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        """`on_batch(size, busy_seconds)` is told of every batch run (the composition root feeds metrics with it)."""
        self._run_batch = run_batch
        self._on_batch = on_batch
        self._max_batch = max_batch
        self._window = window_ms / 1000.0
        self._name = name
        self._queue: queue.Queue[tuple[T, Future[R]] | None] = queue.Queue()
        self._stopped = threading.Event()
        # Held while a batch runs, by the worker or by a lone caller running its own items: one batch at a time.
        self._running = threading.Lock()
        # True while the worker holds a queued item and waits for _running: lone callers then queue behind
        # it instead of taking the lock first (which could leave that item waiting batch after batch).
        self._worker_waiting = False
        # True while clients overlap (requests queued up during the last batch); only then is
        # waiting for company worth it: a lone client would pay the window every time.
        self._overlapping = False
        # Cumulative counters for /ready (written under _running): how full batches run and how
        # busy the worker is tell an operator whether the model, or something in front of it, limits.
        self._batches = 0
        self._items = 0
        self._busy_seconds = 0.0
        self._worker = threading.Thread(target=self._run, name=name, daemon=True)
        self._worker.start()

    def submit(self, item: T, timeout: float | None = 300.0) -> R:
        """Run `item` in the next batch; blocks until that batch has run and returns the item's result."""
        return self.submit_many([item], timeout)[0]

    def submit_many(self, items: Sequence[T], timeout: float | None = 300.0) -> list[R]:
        """Queue every item at once (so they can share batches) and wait for all; results in order."""
        if self._stopped.is_set():
            raise NotReady("the service is shutting down; retry shortly")
        if (
            len(items) <= self._max_batch
            and not self._overlapping
            and not self._worker_waiting
            and self._queue.empty()
            and self._running.acquire(blocking=False)
        ):
            try:
                return list(self._execute(list(items)))
            finally:
                self._running.release()
        futures: list[Future[R]] = []
        for item in items:
            future: Future[R] = Future()
            self._queue.put((item, future))
            futures.append(future)
        return [f.result(timeout=timeout) for f in futures]

    def stats(self) -> dict[str, float]:
        """Since start: batches run, requests in them, and seconds the worker spent running them."""
        return {"batches": self._batches, "requests": self._items, "busy_seconds": round(self._busy_seconds, 3)}

    def close(self) -> None:
        """Stop the worker after the requests already queued are served."""
        self._stopped.set()
        self._queue.put(None)
        self._worker.join(timeout=30)

    def _report(self, size: int, busy: float) -> None:
        if self._on_batch is None:
            return
        try:
            self._on_batch(size, busy)
        except Exception:  # a broken observer must never stop the queue every request waits on
            log.exception("%s: the batch observer failed", self._name)

    def _collect(self, first: tuple[T, Future[R]]) -> tuple[list[tuple[T, Future[R]]], bool]:
        batch = [first]
        deadline = time.monotonic() + (self._window if self._overlapping else 0.0)
        while len(batch) < self._max_batch:
            remaining = deadline - time.monotonic()
            try:
                # Under load the queue already holds the next requests: take them without waiting.
                item = self._queue.get_nowait() if remaining <= 0 else self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _execute(self, items: list[T]) -> Sequence[R]:
        """Run one batch (the caller holds _running) and count it; raises what run_batch raised."""
        log.debug("%s: batch of %d", self._name, len(items))
        started = time.perf_counter()
        try:
            return self._run_batch(items)
        except Exception as exc:
            if not isinstance(exc, NotReady):
                log.exception("%s: a batch of %d failed", self._name, len(items))
            raise
        finally:
            self._overlapping = len(items) > 1 or not self._queue.empty()
            busy = time.perf_counter() - started
            self._batches += 1
            self._items += len(items)
            self._busy_seconds += busy
            self._report(len(items), busy)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            self._worker_waiting = True
            with self._running:
                self._worker_waiting = False
                batch, stop = self._collect(first)
                live = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]
                if not live:
                    continue
                try:
                    results = self._execute([item for item, _ in live])
                except Exception as exc:  # noqa: BLE001 - hand the failure to every waiting request
                    for _, fut in live:
                        fut.set_exception(exc)
                    continue
            for (_, fut), result in zip(live, results, strict=True):
                fut.set_result(result)
