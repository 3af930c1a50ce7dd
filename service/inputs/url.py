"""The `url` input kind: fetch an image over http(s) with time, size and redirect bounds, and an optional SSRF guard."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from conf.errors import BadInput, Forbidden, TooLarge
from conf.settings import Settings
from service.inputs import Source

CHUNK = 64 * 1024
USER_AGENT = "imgsim/1.0 (+image similarity service)"


@dataclass(frozen=True)
class Url:
    """An image to download; its recorded filepath defaults to the URL itself."""

    url: str

    def load(self, settings: Settings) -> Source:
        """Download the image (see `fetch_image_bytes`)."""
        return Source(fetch_image_bytes(self.url, settings), self.url)


def _check_target(url: str, deny_private: bool) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # "http://[::1/x", "http://h:99999/"
        raise BadInput(f"url {url[:200]!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise BadInput(
            f"field 'url' must be an http:// or https:// URL, not {parts.scheme or 'a relative'!r} ({url[:200]!r})"
        )
    if not parts.hostname:
        raise BadInput(f"field 'url' has no host name: {url[:200]!r}")
    if not deny_private:
        return
    try:
        infos = socket.getaddrinfo(
            parts.hostname, port or (443 if parts.scheme == "https" else 80), proto=socket.IPPROTO_TCP
        )
    except (socket.gaierror, UnicodeError) as exc:
        raise BadInput(f"url host {parts.hostname!r} cannot be resolved ({exc})") from None
    for info in infos:
        addr = ipaddress.ip_address(str(info[4][0]).split("%")[0])  # IPv6 may carry a "%scope"
        if not _is_public(addr):
            raise Forbidden(
                f"url host {parts.hostname!r} resolves to {addr}, a loopback, private or "
                "link-local address, and URL_DENY_PRIVATE is on"
            )


# NAT64 prefixes (RFC 6052, RFC 8215): a gateway turns 64:ff9b::a00:1 into 10.0.0.1.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _is_public(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(addr, ipaddress.IPv6Address):
        # IPv6 spellings of an IPv4 address (mapped, 6to4, NAT64) are as public as that address.
        embedded = addr.ipv4_mapped or addr.sixtofour
        if embedded is None and any(addr in net for net in _NAT64):
            embedded = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if embedded is not None and not _is_public(embedded):
            return False
    return addr.is_global and not addr.is_multicast


class _Fetch:
    """One download's guard: the sockets it opened (cut when URL_TOTAL_TIMEOUT passes) and the SSRF check
    of the address each socket really connected to (the name may resolve differently the second time)."""

    def __init__(self, deny_private: bool) -> None:
        self.deny_private = deny_private
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def opened(self, sock: socket.socket, host: str, via_proxy: bool) -> None:
        """Track a socket this download opened; refuse it when it reached a private address (SSRF guard)."""
        with self._lock:
            if self.expired:
                sock.close()
                raise OSError("URL_TOTAL_TIMEOUT passed")
            self._sockets.append(sock)
        if self.deny_private and not via_proxy:
            addr = ipaddress.ip_address(sock.getpeername()[0].split("%")[0])
            if not _is_public(addr):
                sock.close()
                raise Forbidden(
                    f"url host {host!r} connected to {addr}, a loopback, private or link-local "
                    "address, and URL_DENY_PRIVATE is on"
                )

    def expire(self) -> None:
        """URL_TOTAL_TIMEOUT passed: cut every socket of this download."""
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                with contextlib.suppress(OSError):  # a socket already closed needs no cut
                    sock.shutdown(socket.SHUT_RDWR)  # wakes a read blocked on a server that drips


_active = threading.local()  # the _Fetch of the download running in this thread


# The mixin below is only ever mixed into urllib3's HTTPConnection; telling mypy so types its `super()` and `host`.
if TYPE_CHECKING:
    _ConnectionBase: TypeAlias = HTTPConnection
else:
    _ConnectionBase = object


class _GuardedConnection(_ConnectionBase):
    """Mixin for urllib3 connections: report each new socket to the download running in this thread.

    It extends the public `connect()`, so the check runs once the connection is up (after the TLS handshake
    for https) and before any request is written: a private target sees a TCP connect and, for https, a TLS
    hello, never a request. Each attempt is still bounded by URL_CONNECT_TIMEOUT.
    """

    def connect(self) -> None:
        """Connect as urllib3 does, then hand the socket to the running download (SSRF guard, timeout)."""
        super().connect()
        fetch = getattr(_active, "fetch", None)
        if fetch is not None and self.sock is not None:
            fetch.opened(self.sock, self.host, via_proxy=bool(self.proxy))


class _GuardedHTTPConnection(_GuardedConnection, HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnection, HTTPSConnection):
    pass


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    """A requests transport whose connections report to the download running in this thread."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: object) -> object:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}
        return manager


def fetch_image_bytes(url: str, settings: Settings, session: requests.Session | None = None) -> bytes:
    """Download `url` and return its body.

    Follows at most URL_MAX_REDIRECTS redirects (each hop re-checked by the
    SSRF guard), gives up after URL_TOTAL_TIMEOUT even on a slow drip, and
    stops reading at MAX_IMAGE_BYTES. Failures are BadInput, TooLarge
    or Forbidden (a private target with URL_DENY_PRIVATE=1).
    """
    http = session
    if http is None:
        http = requests.Session()
        http.mount("http://", GuardedAdapter())
        http.mount("https://", GuardedAdapter())
    fetch = _Fetch(settings.url_deny_private)
    # A read timeout bounds each socket read, not the whole download: a server that drips its
    # headers or body a byte at a time would hold this thread for ever. The timer cuts the sockets.
    timer = threading.Timer(settings.url_total_timeout, fetch.expire)
    timer.daemon = True
    _active.fetch = fetch
    timer.start()
    try:
        return _fetch(url, settings, http, fetch, time.monotonic() + settings.url_total_timeout)
    finally:
        timer.cancel()
        _active.fetch = None
        if session is None:
            http.close()


def _fetch(url: str, settings: Settings, http: requests.Session, fetch: _Fetch, deadline: float) -> bytes:
    current = url
    for _hop in range(settings.url_max_redirects + 1):
        _check_target(current, settings.url_deny_private)
        try:
            resp = http.get(
                current,
                stream=True,
                allow_redirects=False,
                timeout=(settings.url_connect_timeout, settings.url_read_timeout),
                headers={"User-Agent": USER_AGENT, "Accept": "image/*"},
            )
        except requests.RequestException as exc:
            if fetch.expired:
                raise BadInput(
                    f"url {current[:200]!r} took longer than {settings.url_total_timeout}s to "
                    "answer (URL_TOTAL_TIMEOUT)"
                ) from None
            if isinstance(exc, requests.Timeout):
                raise BadInput(
                    f"url {current[:200]!r} timed out (connect {settings.url_connect_timeout}s, "
                    f"read {settings.url_read_timeout}s)"
                ) from None
            raise BadInput(f"url {current[:200]!r} could not be fetched ({type(exc).__name__})") from None
        with resp:
            if resp.is_redirect:
                location = resp.headers.get("Location", "")
                current = urljoin(current, location)
                continue
            if resp.status_code != 200:
                raise BadInput(f"url {current[:200]!r} answered HTTP {resp.status_code}, not 200 with an image")
            return _read_capped(resp, current, settings.max_image_bytes, deadline, settings.url_total_timeout, fetch)
    raise BadInput(f"url {url[:200]!r} redirected more than {settings.url_max_redirects} times (URL_MAX_REDIRECTS)")


def _read_capped(resp: requests.Response, url: str, cap: int, deadline: float, total: float, fetch: _Fetch) -> bytes:
    declared = resp.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise TooLarge(
            f"url {url[:200]!r} declares {declared} bytes; the limit is {cap} (MAX_IMAGE_BYTES)",
            reason="too_many_bytes",
        )
    body = bytearray()
    try:
        # read1 returns after a single socket read, so a server that drips a byte at a
        # time still hits the total deadline below (iter_content would wait for a full chunk).
        while chunk := resp.raw.read1(CHUNK, decode_content=True):
            body += chunk
            if len(body) > cap:
                raise TooLarge(
                    f"url {url[:200]!r} sent more than {cap} bytes (MAX_IMAGE_BYTES)", reason="too_many_bytes"
                )
            if time.monotonic() > deadline:
                raise BadInput(f"url {url[:200]!r} took longer than {total}s to download (URL_TOTAL_TIMEOUT)")
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        if fetch.expired:
            raise BadInput(f"url {url[:200]!r} took longer than {total}s to download (URL_TOTAL_TIMEOUT)") from None
        raise BadInput(f"url {url[:200]!r}: the download broke off ({type(exc).__name__})") from None
    if fetch.expired:  # the timer cut the socket: what arrived is not the whole image
        raise BadInput(f"url {url[:200]!r} took longer than {total}s to download (URL_TOTAL_TIMEOUT)")
    return bytes(body)
