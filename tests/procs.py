"""Real processes on loopback, and waiting for them: `python main.py serve|import` and Milvus servers.

The one place that starts them, for the tests and for the benchmarks (bench/
imports this module). The fault and crash tests need things the in-process
`start_service` fixture cannot give: a service process that can be SIGKILLed
and restarted on the same data, its own resident memory to measure, and a
Milvus server of its own that can be stopped and started again without
disturbing the session's shared one.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
# Debian's chromium, driven by Playwright in the console's browser test and the README screenshot (never a
# downloaded browser build); headless, and quiet: no network of its own.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
API = "api/image/sim"


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.2, what: str = "condition") -> float:
    """Poll `check` until it is true; returns the seconds waited, fails the test after `timeout`."""
    start = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - start
        except requests.RequestException:
            pass
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# The model cache every test process shares (set once per pytest session by tests/conftest.py), so the
# OpenVINO conversion of the test model happens once per session, not once per started service.
MODEL_CACHE_ENV = "IMGSIM_TEST_MODEL_CACHE"


def model_cache_dir(fallback: Path) -> Path:
    """The session's shared model cache, or `fallback` outside a test session (the benchmarks)."""
    shared = os.environ.get(MODEL_CACHE_ENV)
    return Path(shared) if shared else fallback


def service_env(tmp: Path, milvus_uri: str, port: int, **extra: str) -> dict[str, str]:
    """Environment for a `main.py` subprocess: random weights, its own data, loopback, no token."""
    env = {k: v for k, v in os.environ.items() if k not in ("TOKEN", "PATH_ROOTS", "IMAGE_INC_PATH")}
    env.update(
        {
            "MODEL_WEIGHTS": "random",
            "MILVUS_URI": milvus_uri,
            "MILVUS_COLLECTION": "reliability",
            "API_HOST": "127.0.0.1",
            "API_PORT": str(port),
            "IMAGE_POOL_PATH": str(tmp / "pool"),
            "MODEL_CACHE_DIR": str(model_cache_dir(tmp / "keras")),
            "LOG_LEVEL": "INFO",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
    )
    env.update(extra)
    return env


class ServeProcess:
    """`python main.py serve` as a child process on a loopback port; its log goes to a file."""

    def __init__(self, tmp: Path, milvus_uri: str, name: str = "serve", **extra_env: str) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"{name}-{self.port}.log"
        (tmp / "pool").mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        # cwd=tmp: no stray .env file of the developer's checkout is read.
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), "serve"],
            cwd=tmp,
            env=service_env(tmp, milvus_uri, self.port, **extra_env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.http = requests.Session()

    @property
    def pid(self) -> int:
        """The process id of `main.py serve`."""
        return self.proc.pid

    def url(self, path: str) -> str:
        """The full URL of a path on this service."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def post(self, path: str, timeout: float = 120, **kwargs: Any) -> requests.Response:
        """POST to /api/image/sim/<path>."""
        return self.http.post(self.url(f"{API}/{path}"), timeout=timeout, **kwargs)

    def get(self, path: str, timeout: float = 30, **kwargs: Any) -> requests.Response:
        """GET a path relative to the server root."""
        return self.http.get(self.url(path), timeout=timeout, **kwargs)

    def status(self, path: str) -> int:
        """The status of GET path, or 0 when nothing answers."""
        try:
            return requests.get(self.url(path), timeout=15).status_code
        except requests.RequestException:
            return 0

    def wait_healthy(self, timeout: float = 180) -> float:
        """Wait until /health answers 200 (the model is built and waitress listens)."""
        return self._wait_for("health", timeout, interval=0.3)

    def wait_ready(self, timeout: float = 180) -> float:
        """Wait until /ready answers 200."""
        return self._wait_for("ready", timeout, interval=0.5)

    def _wait_for(self, probe: str, timeout: float, interval: float) -> float:
        def answers() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"main.py serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            return self.status(probe) == 200

        return wait_until(answers, timeout, interval=interval, what=f"/{probe} of main.py serve on port {self.port}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` and reap the process."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=60)

    def stop(self, sig: int = signal.SIGTERM, grace: float = 20.0) -> None:
        """`sig` (SIGTERM; SIGINT is what Ctrl-C sends), then SIGKILL if it lingers past `grace`; close the log."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        self.http.close()
        if not self._log.closed:
            self._log.close()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the service's log."""
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_text(self) -> str:
        """The service's whole log so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")


def run_import(
    tmp: Path, milvus_uri: str, folder: Path, *args: str, log_path: Path | None = None, **extra_env: str
) -> subprocess.Popen[bytes]:
    """Start `python main.py import folder args...` (no progress bar); the caller waits or kills it.

    Its output goes to `log_path` (default: a new file in `tmp`).
    """
    log = open(log_path or tmp / f"import-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115 - the child holds it
    return subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "import", str(folder), *args, "--no-progress"],
        cwd=tmp,
        env=service_env(tmp, milvus_uri, free_port(), **extra_env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def run_reindex(
    tmp: Path, milvus_uri: str, new: str, old: str, *args: str, log_path: Path | None = None, **extra_env: str
) -> subprocess.Popen[bytes]:
    """Start `python main.py reindex --from old args...` into collection `new` (no progress bar) from `tmp`, with the
    settings of service_env (ResNet50, random weights) unless `extra_env` says otherwise; the caller waits or kills.

    Its output goes to `log_path` (default: a new file in `tmp`).
    """
    log = open(log_path or tmp / f"reindex-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115 - the child holds it
    return subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "reindex", "--from", old, *args, "--no-progress"],
        cwd=tmp,
        env=service_env(tmp, milvus_uri, free_port(), MILVUS_COLLECTION=new, **extra_env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def milvus_server_config() -> Any:
    """A MilvusServerConfig whose embedded etcd listens on ports of its own.

    The `milvus` package leaves the embedded etcd's peer port at etcd's default
    2380, so a second server on the same host (the session's shared one, or a
    benchmark's) dies at start-up with "bind: address already in use" and the
    library waits its full three minutes for it. Here every port, the etcd ones
    included, is probed from 40000 up, and the port probe sets SO_REUSEADDR so
    that a restart on the same ports is not refused over sockets in TIME_WAIT.
    """
    from milvus import MilvusServerConfig  # noqa: PLC0415 - only the tests that need a server pay for it

    class Config(MilvusServerConfig):  # type: ignore[misc] - milvus has no type hints: its classes are Any
        def parse_template(self) -> None:
            self.template_text = self.template_text.replace(
                "  use:\n    embed: true", "  config:\n    path: {{ etcd_config_path }}\n  use:\n    embed: true"
            )
            self.template_text += "\n# embedded etcd peer port: {{ etcd_peer_port(int): 0 }}\n"
            super().parse_template()
            self.configurable_items["etcd_port"][1] = 0  # probe from 40000, never etcd's 2379

        def try_bind_port(self, port: int) -> socket.socket | None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
                sock.listen()
            except OSError:
                sock.close()
                return None
            return sock

        def resolve_storage(self) -> None:
            super().resolve_storage()
            self.set("etcd_config_path", os.path.join(self.base_data_dir, "configs", "embed-etcd.yaml"))

        def write_config(self) -> None:
            super().write_config()
            client, peer = self.get("etcd_port"), self.get("etcd_peer_port")
            Path(self.get("etcd_config_path")).write_text(
                f"name: default\nlisten-client-urls: http://127.0.0.1:{client}\n"
                f"advertise-client-urls: http://127.0.0.1:{client}\nlisten-peer-urls: http://127.0.0.1:{peer}\n"
                f"initial-advertise-peer-urls: http://127.0.0.1:{peer}\n"
                f"initial-cluster: default=http://127.0.0.1:{peer}\n",
                encoding="utf-8",
            )

    return Config()


class StoppableMilvus:
    """A Milvus 2.3 standalone server (PyPI `milvus`) of one test module, on its own ports and data folder.

    `stop()` ends the server process (SIGTERM, SIGKILL after a second: what the
    library does), `start()` brings it back on the same ports and data.
    """

    def __init__(self, base_dir: Path) -> None:
        from milvus import MilvusServer  # noqa: PLC0415 - as in milvus_server_config: only server tests pay for it

        self.server = MilvusServer(milvus_server_config())
        self.server.set_base_dir(str(base_dir))
        self.port = free_port()
        self.server.listen_port = self.port
        self.uri = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()

    def start(self, timeout: float = 180) -> float:
        """Start the server and wait for its health check; returns the seconds it took."""
        with self._lock:
            t0 = time.monotonic()
            self.server.wait_for_started = False
            self.server.start()
            health = f"http://127.0.0.1:{self.server.webservice_port}/healthz"

            def healthy() -> bool:
                proc = self.server.server_proc
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"Milvus exited with {proc.returncode} at start-up; see {self.server.config.base_data_dir}/logs"
                    )
                return "OK" in requests.get(health, timeout=5).text

            try:
                wait_until(healthy, timeout, what="the Milvus health check")
            except BaseException:
                self.server.stop()
                raise
            return time.monotonic() - t0

    def stop(self) -> None:
        """Stop the server process (its data stays)."""
        with self._lock:
            self.server.stop()

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self.server.server_proc is not None and self.server.server_proc.poll() is None


@contextmanager
def milvus_server_on_loopback(base_dir: Path) -> Iterator[str]:
    """A Milvus standalone server on loopback ports of its own for the `with` block; yields its URI."""
    server = StoppableMilvus(base_dir)
    server.start()
    try:
        yield server.uri
    finally:
        server.stop()


def rss_bytes(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS = VmHWM) of a process, from /proc."""
    cur = peak = 0
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return cur, peak


def reset_peak_rss(pid: int) -> None:
    """Reset VmHWM to the current RSS (Linux 4.0+: write 5 to /proc/PID/clear_refs)."""
    with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as f:
        f.write("5")


def kill_group_safe(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a child we started and reap it (no-op when it has exited)."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def connected_ports(pid: int, remote_port: int) -> set[int]:
    """Local ports of the process's established TCP connections to `remote_port` (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if state == "01" and inode in inodes and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports
