"""URL endpoints against a misbehaving HTTP server on 127.0.0.1 (never any other address): redirect
loops, slow drips, endless bodies, lies about the length, errors and HTML; and with
URL_DENY_PRIVATE=1, loopback, private and link-local targets refused, directly, through a redirect
from a public-looking URL, and through a name that resolves to loopback (including DNS rebinding).
"""

from __future__ import annotations

import concurrent.futures
import gzip
import io
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import pytest
import requests

from conf.errors import Forbidden
from service.inputs import url as fetch
from tests import hostile_counts
from tests.conftest import LiveService, photo
from tests.test_hostile_input import expect, ok, still_serving

IMAGE = photo(30, size=(64, 48))
HTML = b"<!doctype html><html><head><title>Not found</title></head><body>Sorry</body></html>"
GZIP_BOMB = gzip.compress(bytes(50_000_000), compresslevel=9)  # 50 MB of zeros in ~50 KB
# A global address the tests never connect to: requests for it are answered in-process (see below).
PUBLIC_IP = "93.184.215.14"
FAST = {"url_total_timeout": 3, "url_read_timeout": 2, "url_connect_timeout": 2, "max_image_bytes": 200_000}


@pytest.fixture(scope="session", autouse=True)
def _write_counts() -> Iterator[None]:
    yield
    hostile_counts.write()


class Handler(BaseHTTPRequestHandler):
    """Every way a server can misbehave, one path each."""

    server: MisbehavingServer

    def log_message(self, *_args: object) -> None:
        pass

    def _send(self, code: int, body: bytes, ctype: str = "image/jpeg", **headers: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        if "Content_Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str, code: int = 302) -> None:
        self.send_response(code)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _drip(self, data: bytes, every: float) -> None:
        stop = time.monotonic() + 30
        try:
            for byte in data:
                if time.monotonic() > stop or self.server.stopping.is_set():
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(every)
        except OSError:
            return  # the client hung up: what we want

    def do_GET(self) -> None:  # noqa: C901 - a table of behaviours
        self.server.hits.append(self.path)
        path = self.path.split("?")[0]
        base = f"http://127.0.0.1:{self.server.server_address[1]}"
        if path == "/image.jpg":
            self._send(200, IMAGE)
        elif path == "/no-length.jpg":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(IMAGE)  # HTTP/1.0: the body ends when the connection closes
        elif path.startswith("/chain/"):
            left = int(path.rsplit("/", 1)[1])
            self._redirect(f"/chain/{left - 1}" if left > 0 else "/image.jpg", code=(301, 302, 303, 307, 308)[left % 5])
        elif path == "/to-localhost":
            self._redirect(f"http://localhost:{self.server.server_address[1]}/image.jpg")
        elif path == "/loop":
            self._redirect("/loop")
        elif path == "/loop-a":
            self._redirect(f"{base}/loop-b")
        elif path == "/loop-b":
            self._redirect("/loop-a")
        elif path == "/no-location":
            self._redirect("")
        elif path == "/to-file":
            self._redirect("file:///etc/passwd")
        elif path == "/to-ftp":
            self._redirect("ftp://127.0.0.1/image.jpg")
        elif path == "/missing":
            self._send(404, HTML, "text/html")
        elif path == "/broken":
            self._send(500, b"oops", "text/plain")
        elif path == "/html":
            self._send(200, HTML, "text/html")
        elif path == "/image-labelled-html":
            self._send(200, IMAGE, "text/html")  # the label does not matter, the bytes do
        elif path == "/claims-a-terabyte":
            self._send(200, IMAGE, Content_Length=str(10**12))
        elif path == "/claims-less":
            self._send(200, IMAGE, Content_Length="100")  # the client reads 100 bytes: a truncated image
        elif path == "/claims-more":
            self._send(200, IMAGE, Content_Length=str(len(IMAGE) + 5000))  # then hangs up early
        elif path == "/gzip-bomb":
            self._send(200, GZIP_BOMB, Content_Encoding="gzip")
        elif path == "/endless":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            chunk = IMAGE[:2] + bytes(65534)
            stop = time.monotonic() + 30
            try:
                while time.monotonic() < stop and not self.server.stopping.is_set():
                    self.wfile.write(chunk)
            except OSError:
                return
        elif path == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", str(len(IMAGE)))
            self.end_headers()
            self.wfile.flush()
            self._drip(IMAGE, 1.0)  # a byte a second: each read is fast enough, the whole never ends
        elif path == "/drip-headers":
            self.wfile.write(b"HTTP/1.0 200 OK\r\n")
            self._drip(b"X-Slow: " + b"z" * 1000 + b"\r\n\r\n", 0.5)
        elif path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", str(len(IMAGE)))
            self.end_headers()
            self.wfile.flush()
            self.server.stopping.wait(20)
        else:
            self._send(404, b"no such test path", "text/plain")


class MisbehavingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits: list[str] = []
        self.stopping = threading.Event()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
def web() -> Iterator[MisbehavingServer]:
    server = MisbehavingServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stopping.set()
    server.shutdown()
    server.server_close()


def timed(svc: LiveService, endpoint: str, url: str, code: int, *words: str, within: float = 10.0) -> float:
    started = time.monotonic()
    resp = svc.post(endpoint, json={"url": url}, timeout=60)
    elapsed = time.monotonic() - started
    if code == 200:
        ok(resp)
    else:
        expect(resp, code, *words)
    assert elapsed < within, f"{url}: {elapsed:.1f}s"
    hostile_counts.tried("url_endpoints")
    return elapsed


def test_images_served_properly_and_redirects_followed(
    start_service: Callable[..., LiveService], web: MisbehavingServer
) -> None:
    svc = start_service(**FAST)
    for path in ("/image.jpg", "/no-length.jpg", "/chain/2", "/image-labelled-html", "/image.jpg?x=1#frag"):
        timed(svc, "add/url", web.url(path), 200)
    ok(svc.post("add/url", json={"url": web.url("/chain/1"), "key": "via-redirects"}))
    [record] = ok(svc.post("get/key", json={"key": "via-redirects"}))["data"]
    assert record["filepath"] == web.url("/chain/1")  # the URL the caller gave
    hits = ok(svc.post("search/url", json={"url": web.url("/chain/2"), "min_score": 0.9999}))["data"]
    assert "via-redirects" in [h["key"] for h in hits]
    hostile_counts.tried("url_endpoints", 2)


def test_misbehaving_servers(start_service: Callable[..., LiveService], web: MisbehavingServer) -> None:
    svc = start_service(**FAST)
    cases = [
        ("/loop", 400, ("redirected more than 3 times",), 10),
        ("/loop-a", 400, ("URL_MAX_REDIRECTS",), 10),
        ("/chain/3", 400, ("redirected more than 3 times",), 10),
        ("/no-location", 400, ("HTTP 302",), 10),
        ("/to-file", 400, ("http:// or https://", "'file'"), 10),
        ("/to-ftp", 400, ("'ftp'",), 10),
        ("/missing", 400, ("HTTP 404",), 10),
        ("/broken", 400, ("HTTP 500",), 10),
        ("/html", 415, ("not a decodable image",), 10),
        ("/claims-a-terabyte", 413, ("declares", "MAX_IMAGE_BYTES"), 10),
        ("/claims-less", 415, ("truncated or corrupt",), 10),
        ("/claims-more", 400, ("broke off",), 10),
        ("/gzip-bomb", 413, ("more than 200000 bytes",), 10),
        ("/endless", 413, ("more than 200000 bytes",), 10),
        ("/stall", 400, ("broke off", "ReadTimeout"), 8),
        ("/drip", 400, ("longer than 3", "URL_TOTAL_TIMEOUT"), 8),
        ("/drip-headers", 400, ("longer than 3", "URL_TOTAL_TIMEOUT"), 8),
    ]
    for path, code, words, within in cases:
        timed(svc, "add/url", web.url(path), code, *words, within=within)
    for path in ("/drip", "/drip-headers", "/endless"):  # search takes the same road
        timed(svc, "search/url", web.url(path), 400 if "drip" in path else 413, within=8)
    # Two slow drips at once do not add up: each request has its own deadline.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        drips = [
            pool.submit(timed, svc, "add/url", web.url(path), 400, "URL_TOTAL_TIMEOUT", within=8)
            for path in ("/drip", "/drip-headers")
        ]
        still_serving(svc, 300)  # while both drips are running
        assert all(d.result(timeout=30) < 8 for d in drips)
    assert svc.count() == 1


BAD_URLS = [
    ("file:///etc/passwd", "'file'"),
    ("ftp://127.0.0.1/x.jpg", "'ftp'"),
    ("gopher://127.0.0.1:70/_x", "'gopher'"),
    ("javascript:alert(1)", "'javascript'"),
    ("data:image/png;base64,iVBORw0KGgo=", "'data'"),
    ("//127.0.0.1/x.jpg", "relative"),
    ("/etc/passwd", "relative"),
    ("127.0.0.1/x.jpg", "relative"),
    ("http://", "no host"),
    ("http:///x.jpg", "no host"),
    ("http://[::1/x", "url"),
    ("http://a b/x", "url"),
    ("http://127.0.0.1:99999/x", "url"),
    ("http://127.0.0.1:0/x", "url"),
    ("http://user@/x", "url"),
    ("dict://127.0.0.1:11211/stat", "'dict'"),
    ("http://\u2028/", "url"),
    ("https://127.0.0.1:1/x.jpg", "url"),
]


@pytest.mark.parametrize("deny_private", [False, True])
def test_malformed_and_non_http_urls_are_400(
    start_service: Callable[..., LiveService], web: MisbehavingServer, deny_private: bool
) -> None:
    svc = start_service(url_deny_private=deny_private, **FAST)
    for url, word in BAD_URLS:
        resp = svc.post("add/url", json={"url": url}, timeout=30)
        if deny_private and resp.status_code == 403:
            expect(resp, 403, "URL_DENY_PRIVATE")  # a malformed loopback URL may be refused as loopback first
        else:
            expect(resp, 400, word)
        hostile_counts.tried("url_endpoints")
    assert web.hits == []  # none of them reached a server
    still_serving(svc, 301)


LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "localhost",
    "[::1]",
    "127.1",
    "127.0.1",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "0.0.0.0",
    "0",
    "[::ffff:127.0.0.1]",
    "127.255.255.254",
    "LOCALHOST",
    "[0:0:0:0:0:0:0:1]",
]
# Never contacted: each is first checked to be refused by the guard itself, in-process.
PRIVATE_TARGETS = [
    "10.0.0.1",
    "10.255.255.255",
    "172.16.5.4",
    "172.31.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "169.254.0.1",
    "100.64.0.1",
    "198.18.0.1",
    "224.0.0.1",
    "255.255.255.255",
    "0.1.2.3",
    "[fe80::1]",
    "[fc00::1]",
    "[fd12:3456::1]",
    "[ff02::1]",
    "[::]",
    "[::ffff:10.0.0.1]",
    "[::ffff:169.254.169.254]",
    # IPv6 spellings of private IPv4 that a NAT64 or 6to4 gateway would translate back:
    "[64:ff9b::a00:1]",
    "[64:ff9b::7f00:1]",
    "[64:ff9b:1::a9fe:a9fe]",
    "[2002:a00:1::1]",
    "[2002:7f00:1::]",
]


def test_deny_private_refuses_loopback_private_and_link_local(
    start_service: Callable[..., LiveService], web: MisbehavingServer
) -> None:
    svc = start_service(url_deny_private=True, **FAST)
    for host in LOOPBACK_SPELLINGS:
        timed(svc, "add/url", web.url("/image.jpg", host), 403, "URL_DENY_PRIVATE")
    timed(svc, "search/url", web.url("/image.jpg", "localhost"), 403, "resolves to 127.0.0.1")
    for host in PRIVATE_TARGETS:
        url = f"http://{host}/latest/meta-data/"
        with pytest.raises(Forbidden):
            fetch._check_target(url, True)  # noqa: SLF001 - the guard alone: refused before any socket is opened
        timed(svc, "add/url", url, 403, "URL_DENY_PRIVATE")
    assert web.hits == []
    assert svc.count() == 0
    still_serving(svc, 302)


@pytest.fixture
def public_hop(monkeypatch: pytest.MonkeyPatch, web: MisbehavingServer) -> list[str]:
    """Make http://PUBLIC_IP/... answer from inside the process (a redirect to the loopback test server)
    instead of the internet: the service's own transport is wrapped, so every request the service makes
    goes through here, and nothing but 127.0.0.1 / localhost is ever contacted."""
    seen: list[str] = []
    real_send = fetch.GuardedAdapter.send

    def send(self: fetch.GuardedAdapter, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:
        host = urlsplit(request.url).hostname
        if host == PUBLIC_IP:
            seen.append(unquote(request.url or ""))
            resp = requests.Response()
            resp.status_code = 302
            target = unquote(urlsplit(request.url).path).removeprefix("/to")
            resp.headers["Location"] = target if target.startswith("http") else web.url("/image.jpg")
            resp.url = request.url or ""
            resp.request = request
            resp.raw = io.BytesIO(b"")
            resp._content = b""  # noqa: SLF001 - requests has no public way to build a finished Response
            resp._content_consumed = True  # noqa: SLF001 - as above
            return resp
        if host not in ("127.0.0.1", "localhost"):
            raise AssertionError(f"the test would have contacted {host}")
        return real_send(self, request, **kwargs)

    monkeypatch.setattr(fetch.GuardedAdapter, "send", send)
    return seen


def test_redirect_from_a_public_url_to_loopback_is_refused(
    start_service: Callable[..., LiveService], web: MisbehavingServer, public_hop: list[str]
) -> None:
    allowing = start_service(**FAST)
    # Without the guard the public hop's redirect leads to the image: the chain itself works...
    timed(allowing, "add/url", f"http://{PUBLIC_IP}/product.jpg", 200)
    assert public_hop == [f"http://{PUBLIC_IP}/product.jpg"] and web.hits == ["/image.jpg"]
    # ... and with URL_DENY_PRIVATE=1 the first hop passes the guard but the redirect to loopback does not.
    denying = start_service(url_deny_private=True, **FAST)
    for target in (
        web.url("/image.jpg"),
        web.url("/image.jpg", "localhost"),
        web.url("/image.jpg", "[::1]"),
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
    ):
        public_hop.clear()
        web.hits.clear()
        timed(denying, "add/url", f"http://{PUBLIC_IP}/to{target}", 403, "URL_DENY_PRIVATE")
        assert public_hop == [f"http://{PUBLIC_IP}/to{target}"]  # the first hop was fetched
        assert web.hits == []  # the loopback server never saw the second
    assert denying.count() == 0
    still_serving(denying, 303)


def test_dns_rebinding_to_loopback_is_refused(
    start_service: Callable[..., LiveService], web: MisbehavingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rebind.test` answers a public address to the guard's lookup and 127.0.0.1 to the connection's:
    the guard must check the address the socket really connected to."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def getaddrinfo(host: object, port: object, *args: object, **kwargs: object) -> list:
        if host == "rebind.test":
            # Only the guard's own lookup gets the public answer, so no socket can ever go there.
            by_guard = sys._getframe(1).f_code is fetch._check_target.__code__  # noqa: SLF001 - who asks
            lookups.append("guard" if by_guard else "connect")
            address = PUBLIC_IP if by_guard else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port)))]
        return real(host, port, *args, **kwargs)  # type: ignore[arg-type] - passes on what getaddrinfo was given

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    svc = start_service(url_deny_private=True, **FAST)
    timed(svc, "add/url", web.url("/image.jpg", "rebind.test"), 403, "connected to 127.0.0.1", "URL_DENY_PRIVATE")
    assert lookups[:2] == ["guard", "connect"] and web.hits == []  # a TCP handshake, not one byte of HTTP
    allowing = start_service(**FAST)
    timed(allowing, "add/url", web.url("/image.jpg", "rebind.test"), 200)  # the same name works without the guard
    still_serving(svc, 304)
