"""Fetch an image over http(s) with time, size and redirect bounds, and an optional SSRF guard."""

from __future__ import annotations

import ipaddress
import socket
import time
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from conf.settings import Settings
from service.errors import BadInput, PathForbidden, TooLarge

CHUNK = 64 * 1024
USER_AGENT = "imgsim/1.0 (+image similarity service)"


def _check_target(url: str, deny_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BadInput(f"field 'url' must be an http:// or https:// URL, not {parts.scheme or 'a relative'!r} "
                       f"({url[:200]!r})")
    if not parts.hostname:
        raise BadInput(f"field 'url' has no host name: {url[:200]!r}")
    if not deny_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                                   proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise BadInput(f"url host {parts.hostname!r} cannot be resolved ({exc})") from None
    for info in infos:
        addr = ipaddress.ip_address(info[4][0].split("%")[0])
        if not addr.is_global or addr.is_multicast:
            raise PathForbidden(f"url host {parts.hostname!r} resolves to {addr}, a loopback, private or "
                                "link-local address, and URL_DENY_PRIVATE is on")


def fetch_image_bytes(url: str, settings: Settings, session: requests.Session | None = None) -> bytes:
    """Download `url` and return its body.

    Follows at most URL_MAX_REDIRECTS redirects (each hop re-checked by the
    SSRF guard), gives up after URL_TOTAL_TIMEOUT even on a slow drip, and
    stops reading at MAX_IMAGE_BYTES. Failures are BadInput (400), TooLarge
    (413) or PathForbidden (403, private target with URL_DENY_PRIVATE=1).
    """
    http = session or requests.Session()
    deadline = time.monotonic() + settings.url_total_timeout
    current = url
    for _hop in range(settings.url_max_redirects + 1):
        _check_target(current, settings.url_deny_private)
        try:
            resp = http.get(current, stream=True, allow_redirects=False,
                            timeout=(settings.url_connect_timeout, settings.url_read_timeout),
                            headers={"User-Agent": USER_AGENT, "Accept": "image/*"})
        except requests.Timeout:
            raise BadInput(f"url {current[:200]!r} timed out (connect {settings.url_connect_timeout}s, "
                           f"read {settings.url_read_timeout}s)") from None
        except requests.RequestException as exc:
            raise BadInput(f"url {current[:200]!r} could not be fetched ({type(exc).__name__})") from None
        with resp:
            if resp.is_redirect:
                location = resp.headers.get("Location", "")
                current = urljoin(current, location)
                continue
            if resp.status_code != 200:
                raise BadInput(f"url {current[:200]!r} answered HTTP {resp.status_code}, not 200 with an image")
            return _read_capped(resp, current, settings.max_image_bytes, deadline, settings.url_total_timeout)
    raise BadInput(f"url {url[:200]!r} redirected more than {settings.url_max_redirects} times "
                   "(URL_MAX_REDIRECTS)")


def _read_capped(resp: requests.Response, url: str, cap: int, deadline: float, total: float) -> bytes:
    declared = resp.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise TooLarge(f"url {url[:200]!r} declares {declared} bytes; the limit is {cap} (MAX_IMAGE_BYTES)")
    body = bytearray()
    try:
        # read1 returns after a single socket read, so a server that drips a byte at a
        # time still hits the total deadline below (iter_content would wait for a full chunk).
        while chunk := resp.raw.read1(CHUNK, decode_content=True):
            body += chunk
            if len(body) > cap:
                raise TooLarge(f"url {url[:200]!r} sent more than {cap} bytes (MAX_IMAGE_BYTES)")
            if time.monotonic() > deadline:
                raise BadInput(f"url {url[:200]!r} took longer than {total}s to download (URL_TOTAL_TIMEOUT)")
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise BadInput(f"url {url[:200]!r}: the download broke off ({type(exc).__name__})") from None
    return bytes(body)
