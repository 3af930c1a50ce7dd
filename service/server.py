"""Wiring: build the model, store, catalog and app from settings, and serve them with waitress."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import waitress
from flask import Flask

from conf.settings import Settings
from model.batcher import MicroBatcher
from model.embedder import DIM, Embedder
from service.app import create_app
from service.catalog import Catalog
from service.errors import NotReady, StartupError
from service.importer import Importer
from service.store import VectorStore

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 5.0
# Open connections waitress serves at once (its default is 100). A client that trickles its request
# holds one of them without using a worker thread; at the default, 100 such clients shut everyone
# else out. poll() instead of select() lifts select's 1024-descriptor ceiling.
CONNECTION_LIMIT = 1000
# A request (headers and body) still arriving after SLOW_REQUEST_SECONDS at under SLOW_REQUEST_MIN_RATE
# bytes a second on average is cut off, so trickling clients cannot hold connections for ever.
SLOW_REQUEST_SECONDS = 30.0
SLOW_REQUEST_MIN_RATE = 1024
SWEEP_SECONDS = 5


@dataclass
class Runtime:
    """Everything a running service holds; `close()` releases it."""

    settings: Settings
    embedder: Embedder
    batcher: MicroBatcher
    store: VectorStore
    catalog: Catalog
    app: Flask

    def close(self) -> None:
        """Stop the batchers and close the Milvus connection."""
        self.catalog.close()
        self.batcher.close()
        self.store.close()


def load_embedder(settings: Settings) -> Embedder:
    """The ResNet50 embedder as configured (raises StartupError with advice when weights are missing)."""
    return Embedder(settings.model_weights, settings.model_cache_dir, settings.model_pooling, settings.tf_threads)


def model_info(settings: Settings) -> dict[str, Any]:
    """What /ready reports about the model."""
    return {"name": "ResNet50", "weights": settings.model_weights if settings.model_weights in
            ("imagenet", "random") else "local file", "dim": DIM, "resize": settings.image_resize.value,
            "pooling": settings.model_pooling.value}


def build_runtime(settings: Settings, embedder: Embedder | None = None) -> Runtime:
    """Build the service. Milvus being down is not fatal (it is retried); an incompatible schema is."""
    embedder = embedder or load_embedder(settings)
    batcher = MicroBatcher(embedder, settings.batch_max_size, settings.batch_window_ms)
    store = VectorStore(settings, DIM)
    try:
        store.connect()
    except NotReady as exc:
        log.warning("%s; the API starts anyway, answers 503 until Milvus is reachable, and keeps retrying", exc.msg)
    catalog = Catalog(settings, store, batcher, model_info(settings))
    return Runtime(settings, embedder, batcher, store, catalog, create_app(settings, catalog))


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
    summary = Importer(settings, runtime.embedder, runtime.store).run(
        settings.image_inc_path, key_mode="md5", move_to=settings.image_pool_path, progress=False)
    log.info("start-up import of %s: %s", settings.image_inc_path, "; ".join(summary.lines()))


def start_background(runtime: Runtime) -> threading.Event:
    """Start the reconnect loop and the start-up import (if IMAGE_INC_PATH is set); set the event to stop them."""
    stop = threading.Event()
    threading.Thread(target=_keep_connecting, args=(runtime.store, stop), daemon=True, name="milvus-connect").start()
    if runtime.settings.image_inc_path is not None:
        threading.Thread(target=_startup_import, args=(runtime, stop), daemon=True, name="startup-import").start()
    return stop


def waitress_options(settings: Settings) -> dict[str, Any]:
    """waitress settings shared by `serve` and the tests' live server."""
    # waitress answers an over-limit body itself, in plain text; keep its hard cap well above
    # Flask's MAX_CONTENT_LENGTH so ordinary oversize uploads get the JSON envelope's 413,
    # while a client declaring gigabytes is still cut off before it is buffered.
    return {"threads": settings.api_threads, "max_request_body_size": settings.max_body_bytes * 4,
            "ident": "imgsim", "clear_untrusted_proxy_headers": True, "connection_limit": CONNECTION_LIMIT,
            "asyncore_use_poll": True, "cleanup_interval": SWEEP_SECONDS}


def create_http_server(app: Flask, settings: Settings, host: str, port: int) -> Any:
    """The waitress server for `app`, with slow-request cut-off; call `.run()` on it."""
    server = waitress.create_server(app, host=host, port=port, **waitress_options(settings))
    if not hasattr(server, "active_channels"):  # several listen sockets: waitress's own sweep only
        return server
    idle_sweep = server.maintenance  # waitress calls this every cleanup_interval from its main loop

    def maintenance(now: float) -> None:
        idle_sweep(now)
        for channel in list(server.active_channels.values()):
            request = channel.request  # the request still being received on this connection, if any
            if request is None or channel.requests or channel.will_close:
                continue
            started = getattr(request, "imgsim_first_seen", None)
            if started is None:
                request.imgsim_first_seen = now
                continue
            elapsed = now - started
            received = request.header_bytes_received + (len(request.body_rcv) if request.body_rcv else 0)
            if elapsed > SLOW_REQUEST_SECONDS and received < SLOW_REQUEST_MIN_RATE * elapsed:
                log.warning("closing a connection from %s: its request is still arriving after %.0f s (%d bytes)",
                            channel.addr[0] if channel.addr else "?", elapsed, received)
                channel.will_close = True

    server.maintenance = maintenance
    return server


def serve(settings: Settings) -> None:
    """Run the API until interrupted."""
    if settings.token is None:
        log.warning("TOKEN is not set: every endpoint is open to anyone who can reach port %d", settings.api_port)
    else:
        log.info("token check on: every endpoint but /health and /ready needs the token")
    log.info("path endpoints may read below: %s", ", ".join(str(r) for r in settings.allowed_roots))
    runtime = build_runtime(settings)
    stop = start_background(runtime)
    log.info("imgsim listening on http://%s:%d (%d threads)", settings.api_host, settings.api_port,
             settings.api_threads)
    try:
        server = create_http_server(runtime.app, settings, settings.api_host, settings.api_port)
        server.print_listen("Serving on http://{}:{}")
        server.run()
    finally:
        stop.set()
        runtime.close()
