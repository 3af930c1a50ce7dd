"""Micro-batching: coalesce concurrent embedding requests into one model call.

ResNet50 on a CPU does roughly twice as many images per second in a batch of 16
as one at a time, so under concurrent load the service queues requests and a
single worker thread runs them through the model together. While requests
overlap, a batch waits at most BATCH_WINDOW_MS for company; a lone client's
request (nothing queued while the previous batch ran) starts at once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future

import numpy as np

from model.embedder import Embedder
from service.errors import NotReady

log = logging.getLogger(__name__)


class MicroBatcher:
    """A queue in front of an Embedder, drained by one worker thread in batches."""

    def __init__(self, embedder: Embedder, max_batch: int, window_ms: float) -> None:
        self._embedder = embedder
        self._max_batch = max_batch
        self._window = window_ms / 1000.0
        self._queue: queue.Queue[tuple[np.ndarray, Future[np.ndarray]] | None] = queue.Queue()
        self._stopped = threading.Event()
        # True while clients overlap (requests queued up during the last model call); only
        # then is waiting for company worth it: a lone client would pay the window every time.
        self._overlapping = False
        self._worker = threading.Thread(target=self._run, name="embed-batcher", daemon=True)
        self._worker.start()

    def embed_one(self, arr: np.ndarray, timeout: float | None = 300.0) -> np.ndarray:
        """Embed one preprocessed (224, 224, 3) array; blocks until its batch has run."""
        if self._stopped.is_set():
            raise NotReady("the model is shutting down; retry shortly")
        future: Future[np.ndarray] = Future()
        self._queue.put((arr, future))
        return future.result(timeout=timeout)

    def close(self) -> None:
        """Stop the worker after the requests already queued are served."""
        self._stopped.set()
        self._queue.put(None)
        self._worker.join(timeout=30)

    def _collect(self, first: tuple[np.ndarray, Future[np.ndarray]]) -> tuple[list, bool]:
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

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch, stop = self._collect(first)
            live = [(arr, fut) for arr, fut in batch if fut.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                vectors = self._embedder.embed(np.stack([arr for arr, _ in live]))
            except Exception as exc:  # noqa: BLE001 - hand the failure to every waiting request
                log.exception("embedding a batch of %d failed", len(live))
                for _, fut in live:
                    fut.set_exception(exc)
                continue
            finally:
                self._overlapping = len(live) > 1 or not self._queue.empty()
            for (_, fut), vec in zip(live, vectors, strict=True):
                fut.set_result(vec)
