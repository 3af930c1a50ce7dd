"""Resource bounds of a real `python main.py serve`: memory under 200 concurrent maximum-size uploads, slow clients.

The service runs as a child process so that its own resident memory (VmHWM,
the kernel's peak-RSS mark) can be read from /proc.
"""

from __future__ import annotations

import base64
import io
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from PIL import Image

from tests.conftest import photo
from tests.procs import ServeProcess, reset_peak_rss, rss_bytes, wait_until
from tests.reliability import Recorder

pytestmark = pytest.mark.slow

MAX_IMAGE_BYTES = 2 * 1024 * 1024
MAX_IMAGE_PIXELS = 12_000_000
API_THREADS = 16
UPLOADS = 200
BURSTS = 2
MB = 1024 * 1024
_COUNT_LOCK = threading.Lock()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("resources")
    svc = ServeProcess(
        tmp,
        str(tmp / "milvus.db"),
        MAX_IMAGE_BYTES=str(MAX_IMAGE_BYTES),
        MAX_IMAGE_PIXELS=str(MAX_IMAGE_PIXELS),
        API_THREADS=str(API_THREADS),
        LOG_LEVEL="WARNING",
    )
    try:
        svc.wait_ready(timeout=240)
        yield svc
    finally:
        svc.stop()


def _pad_jpeg(jpeg: bytes, size: int) -> bytes:
    """`jpeg` grown to exactly `size` bytes with COM (comment) segments after SOI: still a valid JPEG."""
    missing = size - len(jpeg)
    assert missing >= 0
    segments = b""
    while missing > 0:
        body = min(missing - 4, 65533) if missing >= 4 + 1 else 0
        if body <= 0:  # fewer than 5 bytes left: a comment segment needs at least 4 + 1
            break
        segments += b"\xff\xfe" + (body + 2).to_bytes(2, "big") + b"\x00" * body
        missing -= body + 4
    out = jpeg[:2] + segments + jpeg[2:]
    return out + b"\x00" * (size - len(out))  # trailing bytes after EOI are ignored by decoders


def max_bytes_jpeg() -> bytes:
    """A noisy JPEG of exactly MAX_IMAGE_BYTES (noise compresses worst: the most pixels per byte is not the point)."""
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (1200, 1600, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=85)
    assert len(buf.getvalue()) < MAX_IMAGE_BYTES
    return _pad_jpeg(buf.getvalue(), MAX_IMAGE_BYTES)


def max_pixels_png() -> bytes:
    """A PNG of just under MAX_IMAGE_PIXELS that decodes to ~36 MB of RGB, though its file is small."""
    side = int(MAX_IMAGE_PIXELS**0.5) - 1
    img = Image.fromarray(np.asarray(Image.open(io.BytesIO(photo(3, size=(400, 400)))).resize((side, side))))
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=6)
    assert len(buf.getvalue()) <= MAX_IMAGE_BYTES, len(buf.getvalue())
    return buf.getvalue()


class PeakSampler:
    """Samples the child's RSS every 50 ms (VmHWM catches what falls between samples)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append(rss_bytes(self.pid)[0])


def _burst(svc: ServeProcess, payloads: list[tuple[str, dict]]) -> Counter:
    def send(item: tuple[str, dict]) -> int:
        path, kwargs = item
        try:
            return requests.post(svc.url(f"api/image/sim/{path}"), timeout=600, **kwargs).status_code
        except requests.RequestException:
            return 0

    with ThreadPoolExecutor(len(payloads)) as pool:
        return Counter(pool.map(send, payloads))


def test_200_concurrent_maximum_size_uploads_keep_memory_bounded(served: ServeProcess, recorder: Recorder) -> None:
    jpeg, png = max_bytes_jpeg(), max_pixels_png()
    b64 = base64.b64encode(jpeg).decode()
    payloads: list[tuple[str, dict]] = []
    for i in range(UPLOADS):
        kind = i % 4
        if kind == 0:
            payloads.append(("add/file", {"files": {"file": ("big.jpg", jpeg)}, "data": {"key": "big"}}))
        elif kind == 1:
            payloads.append(("search/file", {"files": {"file": ("big.jpg", jpeg)}}))
        elif kind == 2:
            payloads.append(("search/base64", {"json": {"base64": b64}}))
        else:
            payloads.append(("search/file", {"files": {"file": ("huge.png", png)}}))
    # Warm up every code path once, then measure from the settled resident size.
    assert _burst(served, payloads[:4]) == Counter({200: 4})
    time.sleep(1)
    base, _ = rss_bytes(served.pid)

    peaks, statuses = [], Counter()
    for _ in range(BURSTS):
        reset_peak_rss(served.pid)
        with PeakSampler(served.pid) as sampler:
            t0 = time.monotonic()
            statuses += _burst(served, payloads)
            burst_s = time.monotonic() - t0
        peaks.append(max(rss_bytes(served.pid)[1], *sampler.samples))
    after, _ = rss_bytes(served.pid)
    assert statuses == Counter({200: BURSTS * UPLOADS}), statuses
    assert served.get("api/image/sim/count").json()["data"] == 1  # the 100 identical adds stored one record

    growth = [p - base for p in peaks]
    # In flight at once: API_THREADS requests holding an upload each (16 x 2.7 MB), at most two
    # maximum-size images decoding (the catalog's pixel budget: 2 x 12 MP x ~7 bytes with conversion
    # copies), one model batch; bodies of waiting requests are spooled to disk by waitress: measured
    # 400-560 MB. Before the decode budget and the malloc arena cap it was 1.4-1.5 GB (16 full-size
    # decodes at once, scaling with MAX_IMAGE_PIXELS and API_THREADS).
    assert max(growth) < 1024 * MB, f"peak RSS grew by {max(growth) / MB:.0f} MB over {base / MB:.0f} MB"
    # The second burst needs about what the first did: the uploads do not accumulate (keeping them
    # would add ~460 MB a burst; allocator noise between bursts is up to ~150 MB here).
    assert peaks[-1] < peaks[0] + 256 * MB, [p / MB for p in peaks]
    recorder.record(
        "resources.max_size_uploads",
        operations_checked=BURSTS * UPLOADS,
        unexpected_5xx=0,
        concurrent_uploads=UPLOADS,
        max_image_bytes=MAX_IMAGE_BYTES,
        max_image_pixels=MAX_IMAGE_PIXELS,
        api_threads=API_THREADS,
        base_rss_mb=round(base / MB),
        peak_rss_mb=round(max(peaks) / MB),
        peak_growth_mb=[round(g / MB) for g in growth],
        rss_after_mb=round(after / MB),
        burst_seconds=round(burst_s, 1),
    )


def _slow_client(port: int, stop: threading.Event, body_bytes: int, sent: Counter) -> None:
    """Headers of an upload, then its body one byte every 0.2 s until told to stop."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /api/image/sim/add/file HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n" + f"Content-Length: {body_bytes}\r\n\r\n".encode()
        )
        while not stop.wait(0.2):
            try:
                sock.sendall(b"-")
            except OSError:
                with _COUNT_LOCK:
                    sent["dropped"] += 1
                return


def _slow_headers(port: int, stop: threading.Event, sent: Counter) -> None:
    """A request line and then header bytes trickled forever (slowloris)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        while not stop.wait(0.2):
            try:
                sock.sendall(b"X")
            except OSError:
                with _COUNT_LOCK:
                    sent["dropped"] += 1
                return


def test_slow_clients_do_not_block_others(served: ServeProcess, recorder: Recorder) -> None:
    small = photo(5, size=(160, 120))
    assert served.post("add/file", files={"file": ("s.jpg", small)}, data={"key": "small"}).status_code == 200

    def timed(call: Callable[[], requests.Response]) -> float:
        t0 = time.monotonic()
        resp = call()
        assert resp.status_code == 200, resp.text
        return time.monotonic() - t0

    def normal_requests() -> list[float]:
        return [
            timed(lambda: requests.get(served.url("health"), timeout=30)),
            timed(lambda: served.post("search/file", files={"file": ("q.jpg", small)}, timeout=30)),
            timed(lambda: served.post("get/key", json={"key": "small"}, timeout=30)),
        ]

    quiet = [t for _ in range(3) for t in normal_requests()]
    stop, sent = threading.Event(), Counter()
    slow_bodies, slow_heads = 3 * API_THREADS, API_THREADS  # more slow clients than worker threads
    threads = [
        threading.Thread(target=_slow_client, args=(served.port, stop, 500_000, sent), daemon=True)
        for _ in range(slow_bodies)
    ]
    threads += [
        threading.Thread(target=_slow_headers, args=(served.port, stop, sent), daemon=True) for _ in range(slow_heads)
    ]
    for th in threads:
        th.start()
    try:
        time.sleep(2)  # every slow client connected and trickling
        busy = [t for _ in range(5) for t in normal_requests()]
        assert sent["dropped"] == 0, sent  # the slow clients are still connected, not shed
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=30)
    assert max(busy) < 5.0, f"a normal request took {max(busy):.1f} s beside {len(threads)} slow clients"
    recorder.record(
        "resources.slow_clients",
        operations_checked=len(quiet) + len(busy),
        slow_clients=len(threads),
        normal_median_ms=round(1000 * statistics.median(quiet)),
        with_slow_clients_median_ms=round(1000 * statistics.median(busy)),
        with_slow_clients_max_ms=round(1000 * max(busy)),
    )


def test_more_trickling_clients_than_waitress_default_limit_do_not_shut_others_out(
    served: ServeProcess, recorder: Recorder
) -> None:
    """150 slow-header clients (waitress's default connection_limit is 100), then they are cut off."""
    stop, sent = threading.Event(), Counter()
    threads = [threading.Thread(target=_slow_headers, args=(served.port, stop, sent), daemon=True) for _ in range(150)]
    for th in threads:
        th.start()
    try:
        time.sleep(2)
        t0 = time.monotonic()
        assert requests.get(served.url("health"), timeout=30).status_code == 200
        prompt = time.monotonic() - t0
        # Trickling at 5 bytes a second, they are cut off once SLOW_REQUEST_SECONDS (30 s) have passed.
        wait_until(lambda: sent["dropped"] == len(threads), 75, 1.0, "the trickling connections to be closed")
        cut_after = time.monotonic() - t0
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=30)
    assert prompt < 5.0, f"/health took {prompt:.1f} s beside {len(threads)} trickling clients"
    assert "its request is still arriving after" in served.log_text()
    recorder.record(
        "resources.slowloris_beyond_connection_limit",
        operations_checked=1,
        slow_clients=len(threads),
        health_ms=round(1000 * prompt),
        trickling_cut_off_after_s=round(cut_after),
    )
