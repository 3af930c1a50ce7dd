"""The composition root: Settings -> model, store, use-case dependencies and app; background jobs; `serve`.

The only module besides main.py that imports the HTTP layer.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from flask import Flask

from conf.errors import CollectionMoved, NotReady, StartupError
from conf.settings import Settings
from model.embedder import Embedder, load_embedder
from service.api.app import create_app
from service.metrics import Metrics
from service.server import create_http_server
from service.store.connection import CallObserver
from service.store.meta import SpaceTag
from service.store.records import VectorStore
from service.usecases.deps import Deps, build_deps
from service.usecases.importer import Importer, ImportHooks

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 5.0


@dataclass
class Runtime:
    """Everything a running service holds; `close()` releases it."""

    settings: Settings
    embedder: Embedder
    store: VectorStore
    deps: Deps
    app: Flask
    metrics: Metrics

    def close(self) -> None:
        """Stop the batchers and close the Milvus connection."""
        self.deps.close()
        self.store.close()


def build_runtime(settings: Settings, embedder: Embedder | None = None) -> Runtime:
    """Build the service. Milvus being down is not fatal (it is retried); an incompatible schema is."""
    embedder = embedder or load_embedder(settings)
    metrics = Metrics()
    # The store and the batchers know nothing of Prometheus: they call back, and metrics listens.
    store = open_store(settings, embedder, on_call=metrics.observe_milvus)
    metrics.track_records(lambda: _quick_count(store))
    try:
        store.connect()
    except CollectionMoved:  # logged by the store; an alias may come back to this space
        log.warning("the API starts anyway, answers 503 (collection_moved) until then, and keeps looking")
    except NotReady as exc:
        log.warning("%s; the API starts anyway, answers 503 until Milvus is reachable, and keeps retrying", exc.msg)
    deps = build_deps(settings, store, embedder, on_batch=metrics.observe_batch)
    return Runtime(settings, embedder, store, deps, create_app(settings, deps, metrics), metrics)


def _quick_count(store: VectorStore) -> int | None:
    """The record count for a metrics scrape: None (reported as NaN) rather than waiting on a Milvus that is away."""
    if not store.connected:
        return None
    return store.count_all(retry=False)


def import_hooks(metrics: Metrics) -> ImportHooks:
    """An import's hooks feeding `metrics`: imports in progress, and the model's batches labelled "import"."""
    return ImportHooks(
        started=metrics.import_started,
        finished=metrics.import_finished,
        batch=lambda size, seconds: metrics.observe_batch("import", size, seconds),
    )


def open_store(settings: Settings, embedder: Embedder, on_call: CallObserver | None = None) -> VectorStore:
    """The store for this embedder's vectors: its width, and its embedding space checked on the collection."""
    return VectorStore(
        settings, embedder.dim, SpaceTag(embedder.fingerprint.digest, embedder.fingerprint.summary), on_call
    )


def _keep_connecting(store: VectorStore, stop: threading.Event) -> None:
    while not stop.wait(RECONNECT_SECONDS):
        try:
            store.connect()
            return
        except NotReady:
            continue
        except StartupError as exc:
            log.critical("%s", exc)
            return


def _startup_import(runtime: Runtime, stop: threading.Event) -> None:
    settings = runtime.settings
    assert settings.image_inc_path is not None
    while not stop.is_set():
        try:
            runtime.store.connect()
            break
        except NotReady:
            stop.wait(RECONNECT_SECONDS)
    if stop.is_set():
        return
    # The importer drives the model directly in big batches; the batcher keeps serving requests meanwhile.
    importer = Importer(
        settings,
        runtime.embedder,
        runtime.store,
        hooks=import_hooks(runtime.metrics),
        thumbs=runtime.deps.thumbs,
        sources=runtime.deps.sources,
    )  # the service's own: one lock against its deletes
    summary = importer.run(settings.image_inc_path, key_mode="md5", move_to=settings.image_pool_path, progress=False)
    log.info("start-up import of %s: %s", settings.image_inc_path, "; ".join(summary.lines()))


def start_background(runtime: Runtime) -> threading.Event:
    """Start the reconnect loop and the start-up import (if IMAGE_INC_PATH is set); set the event to stop them."""
    stop = threading.Event()
    threading.Thread(target=_keep_connecting, args=(runtime.store, stop), daemon=True, name="milvus-connect").start()
    if runtime.settings.image_inc_path is not None:
        threading.Thread(target=_startup_import, args=(runtime, stop), daemon=True, name="startup-import").start()
    return stop


def serve(settings: Settings) -> None:
    """Run the API until interrupted."""
    if settings.tokens_file is not None:
        log.info("token check on: tokens, their namespaces and rights from TOKENS_FILE %s", settings.tokens_file)
    elif settings.token is None:
        log.warning(
            "neither TOKEN nor TOKENS_FILE is set: every endpoint and every namespace is open to anyone who "
            "can reach port %d",
            settings.api_port,
        )
    else:
        log.info(
            "token check on: every endpoint but /health, /ready, the console and docs pages%s needs the token "
            "(an admin token)",
            " and /metrics (METRICS_PUBLIC)" if settings.metrics_public else "",
        )
    log.info("path endpoints may read below: %s", ", ".join(str(r) for r in settings.allowed_roots))
    runtime = build_runtime(settings)
    stop = start_background(runtime)
    log.info(
        "imgsim listening on http://%s:%d (%d threads)", settings.api_host, settings.api_port, settings.api_threads
    )
    try:
        server = create_http_server(runtime.app, settings, settings.api_host, settings.api_port)
        server.print_listen("Serving on http://{}:{}")
        server.run()
    finally:
        stop.set()
        runtime.close()
