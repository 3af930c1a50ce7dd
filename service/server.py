"""The HTTP server: waitress tuned for this service, with a sweep that cuts off requests still trickling in."""

from __future__ import annotations

import logging
from typing import Any

import waitress
from flask import Flask

from conf.settings import Settings

log = logging.getLogger(__name__)

# Open connections waitress serves at once (its default is 100). A client that trickles its request
# holds one of them without using a worker thread; at the default, 100 such clients shut everyone
# else out. poll() instead of select() lifts select's 1024-descriptor ceiling.
CONNECTION_LIMIT = 1000
# A request (headers and body) still arriving after SLOW_REQUEST_SECONDS at under SLOW_REQUEST_MIN_RATE
# bytes a second on average is cut off, so trickling clients cannot hold connections for ever.
SLOW_REQUEST_SECONDS = 30.0
SLOW_REQUEST_MIN_RATE = 1024
SWEEP_SECONDS = 5


def waitress_options(settings: Settings) -> dict[str, Any]:
    """waitress settings shared by `serve` and the tests' live server."""
    # waitress answers an over-limit body itself, in plain text; keep its hard cap well above
    # Flask's MAX_CONTENT_LENGTH so ordinary oversize uploads get the JSON envelope's 413,
    # while a client declaring gigabytes is still cut off before it is buffered.
    return {
        "threads": settings.api_threads,
        "max_request_body_size": settings.max_body_bytes * 4,
        "ident": "imgsim",
        "clear_untrusted_proxy_headers": True,
        "connection_limit": CONNECTION_LIMIT,
        "asyncore_use_poll": True,
        "cleanup_interval": SWEEP_SECONDS,
        "recv_bytes": 65536,
    }


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
                log.warning(
                    "closing a connection from %s: its request is still arriving after %.0f s (%d bytes)",
                    channel.addr[0] if channel.addr else "?",
                    elapsed,
                    received,
                )
                channel.will_close = True

    server.maintenance = maintenance
    return server
