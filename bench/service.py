"""The service over real HTTP for the benchmarks: `main.py serve` and `main.py import` in subprocesses.

`Service` is tests.procs' ServeProcess with the benchmark's settings, a token,
and a peak-RSS sampler; the functions here drive it: one client at a time
(interleaved with in-process model calls, so the two are compared minutes, not
hours, apart), N clients back to back, and the bulk import.
"""

from __future__ import annotations

import re
import secrets
import signal
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import requests

from bench.cli import ms_stats, rnd
from conf.settings import MODEL_BATCH, Settings
from tests.procs import ServeProcess, run_import


def child_env(settings: Settings) -> dict[str, str]:
    """What a `main.py` subprocess must run with, on top of tests.procs' loopback environment: the
    benchmark's settings (model, engine, precision, preprocessing, batching), as this process read them."""
    weights = settings.model_weights
    if weights not in ("imagenet", "random"):
        weights = str(Path(weights).expanduser().resolve())  # the child runs in another folder
    return {
        "MODEL_NAME": settings.model_name.value,
        "MODEL_ENGINE": settings.model_engine.value,
        "MODEL_PRECISION": settings.model_precision.value,
        "MODEL_WEIGHTS": weights,
        "MODEL_CACHE_DIR": str(settings.model_cache_dir.resolve()),
        "IMAGE_RESIZE": settings.image_resize.value,
        "MODEL_POOLING": settings.model_pooling.value,
        "IMAGE_TRIM": "on" if settings.image_trim else "off",
        "BATCH_MAX_SIZE": str(settings.batch_max_size),
        "BATCH_WINDOW_MS": str(settings.batch_window_ms),
        "TF_THREADS": str(settings.tf_threads),
        "API_THREADS": str(settings.api_threads),
        "MILVUS_HNSW_EF": str(settings.milvus_hnsw_ef),
        "MILVUS_COLLECTION": "bench",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }


_TOOK = re.compile(r"took: ([0-9.]+) s for (\d+) files.*; model busy ([0-9.]+) s")


def bulk_import(folder: Path, workdir: Path, settings: Settings) -> dict[str, Any]:
    """Run `python main.py import FOLDER` and time it: wall clock, and the import phase after the model loaded."""
    n_files = sum(1 for p in folder.rglob("*") if p.is_file())
    log_path = workdir / "import.log"
    t0 = time.perf_counter()
    proc = run_import(workdir, str(workdir / "milvus.db"), folder, log_path=log_path, **child_env(settings))
    returncode = proc.wait(timeout=3600)
    wall = time.perf_counter() - t0
    output = log_path.read_text(errors="replace")
    if returncode != 0:
        raise RuntimeError(f"main.py import failed ({returncode}):\n{output[-6000:]}")
    imported = int(m.group(1)) if (m := re.search(r"imported: (\d+)", output)) else None
    # The importer's own clock: decoding, embedding and storing, after the model loaded and the store connected.
    took = _TOOK.search(output)
    phase = float(took.group(1)) if took else None
    model = float(took.group(3)) if took else None
    return {
        "files": n_files,
        "imported": imported,
        "wall_s": rnd(wall),
        "wall_img_per_s": rnd(n_files / wall),
        "import_phase_s": phase,
        "import_phase_img_per_s": rnd(n_files / phase) if phase else None,
        "model_busy_s": model,
        "model_img_per_s_while_busy": rnd(n_files / model) if model else None,
        "note": "import phase = the time `main.py import` reports for itself: decoding, embedding in "
        f"batches of {MODEL_BATCH} and storing, after the model has loaded",
    }


class Service(ServeProcess):
    """`python main.py serve` (tests.procs) with the benchmark's settings, a token, and a peak-RSS sampler."""

    def __init__(self, workdir: Path, settings: Settings, name: str = "service") -> None:
        """Start `main.py serve` on the Milvus Lite file `workdir`/milvus.db (call `start` to wait for it)."""
        self._started = time.perf_counter()
        self.token = secrets.token_hex(16)
        super().__init__(workdir, str(workdir / "milvus.db"), name, TOKEN=self.token, **child_env(settings))
        self.seconds_to_ready: float | None = None
        self.rss_idle_mb: float | None = None
        self._peak_sampled = 0
        self._stop = threading.Event()

    def start(self, timeout: float = 900.0) -> None:
        """Wait until /ready answers 200, then note the idle memory and start sampling the peak."""
        self.wait_ready(timeout)
        self.seconds_to_ready = rnd(time.perf_counter() - self._started)
        time.sleep(1.0)
        self.rss_idle_mb = rnd(self._rss() / 2**20, 1)
        threading.Thread(target=self._sample, daemon=True, name="rss-sampler").start()

    def _rss(self) -> int:
        """Resident bytes of the service and its children (0 once it is gone)."""
        try:
            p = psutil.Process(self.pid)
            return p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
        except psutil.Error:
            return 0

    def _sample(self) -> None:
        """Keep the largest RSS seen, five times a second, until stopped."""
        while not self._stop.wait(0.2):
            self._peak_sampled = max(self._peak_sampled, self._rss())

    def peak_rss(self) -> dict[str, Any]:
        """Peak resident memory: the kernel's high-water mark (VmHWM) and the sampled peak (with children)."""
        hwm = None
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
        except OSError:
            pass
        children = [c.name() for c in psutil.Process(self.pid).children(recursive=True)]
        return {
            "idle_after_start_mb": self.rss_idle_mb,
            "peak_vmhwm_mb": rnd(hwm / 2**20, 1) if hwm else None,
            "peak_sampled_mb": rnd(self._peak_sampled / 2**20, 1),
            "child_processes": children,
        }

    def stop(self, sig: int = signal.SIGINT, grace: float = 60.0) -> None:
        """SIGINT (what Ctrl-C does: the service closes its store), then SIGKILL if it has not exited in time."""
        self._stop.set()
        super().stop(sig, grace)

    def tail(self, chars: int = 4000) -> str:
        """The end of the service log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # --- requests -----------------------------------------------------------------------------
    def session(self) -> requests.Session:
        """A keep-alive HTTP session carrying the token."""
        s = requests.Session()
        s.headers["token"] = self.token
        return s

    def search(self, http: requests.Session, data: bytes, limit: int = 10) -> requests.Response:
        """POST /api/image/sim/search/file."""
        return http.post(
            self.url("api/image/sim/search/file"),
            files={"file": ("q.jpg", data, "image/jpeg")},
            data={"limit": str(limit)},
            timeout=300,
        )

    def add(self, http: requests.Session, data: bytes, key: str) -> requests.Response:
        """POST /api/image/sim/add/file."""
        return http.post(
            self.url("api/image/sim/add/file"),
            files={"file": (f"{key}.jpg", data, "image/jpeg")},
            data={"key": key},
            timeout=300,
        )

    def cpu_seconds(self) -> float:
        """CPU time the service process (and any children) has used so far."""
        p = psutil.Process(self.pid)
        total = p.cpu_times()
        return (
            total.user
            + total.system
            + sum(c.cpu_times().user + c.cpu_times().system for c in p.children(recursive=True))
        )

    def ready(self) -> dict[str, Any]:
        """What /ready reports (model, engine, precision, batching counters...)."""
        return requests.get(self.url("ready"), timeout=60).json()["data"]

    def batching(self) -> dict[str, Any]:
        """The service's micro-batching counters (from /ready)."""
        return self.ready()["batching"]

    def count(self) -> int:
        """How many records the service holds."""
        with self.session() as http:
            return int(http.get(self.url("api/image/sim/count"), timeout=60).json()["data"])


def timed(fn: Callable[[], requests.Response]) -> float:
    """Seconds one request took; raises unless it answered 200."""
    t0 = time.perf_counter()
    resp = fn()
    elapsed = time.perf_counter() - t0
    if resp.status_code != 200:
        raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:500]}")
    return elapsed


def single_client(
    svc: Service, reference: Any, pool: np.ndarray, images: list[bytes], rounds: int, per_round: int
) -> dict[str, Any]:
    """Sequential search/file requests, alternating with batch-1 calls of a `reference` embedder in this
    process (TensorFlow FP32, the model of the service before OpenVINO), so the two are measured together."""
    model_b1: list[float] = []
    search: list[float] = []
    with svc.session() as http:
        for _ in range(3):
            timed(lambda: svc.search(http, images[0]))  # warm-up: connection, first Milvus search
        i = 0
        for _ in range(rounds):
            for _ in range(per_round):
                x = pool[i % len(pool)][None]
                t0 = time.perf_counter()
                reference.embed(x)
                model_b1.append(time.perf_counter() - t0)
                i += 1
            for _ in range(per_round):
                data = images[i % len(images)]
                search.append(timed(partial(svc.search, http, data)))
                i += 1
    return {"search_file": ms_stats(search), "reference_batch1_interleaved": ms_stats(model_b1)}


def single_adds(svc: Service, images: list[bytes], n: int) -> dict[str, Any]:
    """Sequential add/file requests of images the store does not hold yet (each runs the model)."""
    times = []
    with svc.session() as http:
        for i in range(n):
            data = images[i % len(images)]
            times.append(timed(partial(svc.add, http, data, f"bench-add-{i}")))
    return ms_stats(times)


def load_test(svc: Service, images: list[bytes], clients: int, seconds: float, warmup: float) -> dict[str, Any]:
    """`clients` threads each sending search/file back to back; counts what completes inside the window."""
    stop = threading.Event()
    lock = threading.Lock()
    done: list[tuple[float, float, bool]] = []

    def client(index: int) -> None:
        with svc.session() as http:
            j = index * 7919
            while not stop.is_set():
                data = images[j % len(images)]
                j += 1
                t0 = time.perf_counter()
                try:
                    ok = svc.search(http, data).status_code == 200
                except requests.RequestException:
                    ok = False
                t1 = time.perf_counter()
                with lock:
                    done.append((t0, t1, ok))

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    begin = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(warmup)
    before = svc.batching()
    cpu_before, own_before = svc.cpu_seconds(), time.process_time()
    time.sleep(seconds)
    cpu_after, own_after = svc.cpu_seconds(), time.process_time()
    after = svc.batching()
    stop.set()
    for t in threads:
        t.join(600)
    lo, hi = begin + warmup, begin + warmup + seconds
    window = [(t0, t1, ok) for t0, t1, ok in done if lo <= t1 <= hi]
    ok_lat = [t1 - t0 for t0, t1, ok in window if ok]
    model = {k: after["embed"][k] - before["embed"][k] for k in ("batches", "requests", "busy_seconds")}
    return {
        "clients": clients,
        "seconds": seconds,
        "completed": len(ok_lat),
        "errors": sum(1 for *_, ok in window if not ok),
        "throughput_rps": rnd(len(ok_lat) / seconds),
        **ms_stats(ok_lat),
        # What the model did in the window (the service's /ready counters): how full its batches
        # were, how busy it was, and how fast it ran while busy.
        "model_mean_batch": rnd(model["requests"] / model["batches"], 1) if model["batches"] else None,
        "model_busy": rnd(model["busy_seconds"] / seconds, 3),
        "model_img_per_s_while_busy": rnd(model["requests"] / model["busy_seconds"]) if model["busy_seconds"] else None,
        # Where the CPUs went: the service process, and this process (the HTTP clients).
        "service_cores": rnd((cpu_after - cpu_before) / seconds),
        "client_cores": rnd((own_after - own_before) / seconds),
    }
