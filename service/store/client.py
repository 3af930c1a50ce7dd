"""The pymilvus client: imported without its environment side effect, opened with keepalive the server accepts.

Every module of this package takes pymilvus' names from here, so the import-time
workaround below runs before pymilvus is first imported.
"""

from __future__ import annotations

import os
from typing import Any

import grpc

# pymilvus parses MILVUS_URI from the environment (and from .env) when it is imported, and
# rejects a Milvus Lite file path there. imgsim passes the URI explicitly, so hide the
# variable from pymilvus during its import and put it back afterwards.
_saved_uri = os.environ.get("MILVUS_URI")
os.environ["MILVUS_URI"] = ""  # empty (not absent) so pymilvus' load_dotenv cannot fill it from .env
from pymilvus import DataType, MilvusClient, MilvusException  # noqa: E402

if _saved_uri is None:
    del os.environ["MILVUS_URI"]
else:
    os.environ["MILVUS_URI"] = _saved_uri

from conf.settings import Settings  # noqa: E402

__all__ = ["DataType", "MilvusClient", "MilvusException", "describe_target", "is_transient", "not_loaded",
           "open_client", "short"]

# gRPC keepalive for Milvus Lite. pymilvus pings every 10 s, also while no call is running
# (keepalive_time_ms 10000, keepalive_permit_without_calls). A Milvus server allows that (its
# enforcement policy: pings at least 5 s apart, with or without calls). Milvus Lite's in-process
# gRPC server keeps gRPC's own policy: no pings while no call is running, and during a call at
# most one per 5 minutes (grpc.http2.min_recv_ping_interval_without_data_ms); after two pings too
# many it closes the connection with GOAWAY ENHANCE_YOUR_CALM "too_many_pings" (~1-2 minutes after
# the last request), and the next call pays for a reconnect. So: ping only during calls, every 5 min.
LITE_KEEPALIVE: dict[str, Any] = {"grpc.keepalive_time_ms": 300_000, "grpc.keepalive_permit_without_calls": False}


def open_client(settings: Settings) -> MilvusClient:
    """A MilvusClient for MILVUS_URI with the configured credentials, database and timeout."""
    s = settings
    extra = {"grpc_options": LITE_KEEPALIVE} if s.milvus_is_lite else {}
    return MilvusClient(
        uri=s.milvus_uri,
        token=s.milvus_token.get_secret_value() if s.milvus_token else "",
        user=s.milvus_user or "",
        password=s.milvus_password.get_secret_value() if s.milvus_password else "",
        db_name=s.milvus_db or "",
        timeout=s.milvus_timeout,
        **extra,
    )


def describe_target(settings: Settings) -> str:
    """Where the vectors live, for logs and messages (never includes credentials)."""
    uri = settings.milvus_uri
    return f"Milvus Lite file {uri}" if settings.milvus_is_lite else f"Milvus at {uri.split('@')[-1]}"


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying: Milvus unreachable, slow or restarting."""
    if isinstance(exc, grpc.RpcError):
        return True
    if isinstance(exc, MilvusException):
        text = str(exc).lower()
        return any(word in text for word in ("connect", "unavailable", "deadline", "timeout", "not ready",
                                             "closed channel", "server is not", "node not found", "context done"))
    return isinstance(exc, (ConnectionError, TimeoutError))


def not_loaded(exc: BaseException) -> bool:
    """True when a call failed because the collection is not loaded."""
    # A restarted Milvus server can come back with the collection released: every search and
    # query then fails with "collection not loaded" (code 101) until someone loads it again.
    return isinstance(exc, MilvusException) and "not loaded" in str(exc).lower()


def short(exc: BaseException) -> str:
    """An exception as one line of at most ~300 characters, for logs and messages."""
    text = " ".join(str(exc).split())
    return (text[:300] + "...") if len(text) > 300 else text or type(exc).__name__
