"""Shared fixtures: one real ResNet50 (random weights), real Milvus Lite, a real Milvus server, real HTTP.

Nothing here is mocked. The model uses MODEL_WEIGHTS=random because no model hub
is reachable from CI; everything else is the production code path.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import waitress
from PIL import Image

from conf.settings import Settings
from model.embedder import Embedder, load_embedder
from service.runtime import Runtime, build_runtime
from service.server import waitress_options
from tests.procs import MODEL_CACHE_ENV, ROOT, milvus_server_on_loopback, model_cache_dir
from tests.reliability import recorder  # noqa: F401 - a fixture: imported here, every test module has it

# One model cache for the whole session (this process and the services it starts): the default
# engine converts the test model once. Made at import so that make_settings can use it anywhere.
os.environ.setdefault(MODEL_CACHE_ENV, tempfile.mkdtemp(prefix="imgsim-model-cache-"))

__all__ = ["ROOT", "LiveService", "make_settings", "photo"]


def make_settings(tmp: Path, **overrides: Any) -> Settings:
    """Settings for a test: random weights, its own Milvus Lite file and image pool, no .env file."""
    pool = tmp / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {
        "model_weights": "random",
        "model_cache_dir": model_cache_dir(tmp / "keras"),
        "milvus_uri": str(tmp / "milvus.db"),
        "milvus_collection": f"t_{uuid.uuid4().hex[:12]}",
        "image_pool_path": pool,
        "thumb_dir": tmp / "thumbs",
        "source_dir": tmp / "sources",
        "token": None,
        "milvus_timeout": 10.0,
        "batch_window_ms": 2.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg] - _env_file: pydantic-settings' option


def create_collection_before_regions(uri: str, name: str, dim: int) -> Any:
    """A collection with imgsim's schema from before regions (namespace and attrs, no `region`), built field by
    field as that version did: today's code cannot make one (collection_schema always adds `region`). Returns the
    open MilvusClient; the caller closes it."""
    from pymilvus import DataType, MilvusClient  # noqa: PLC0415 - only the tests of old collections need it

    client = MilvusClient(uri=uri)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("namespace", DataType.VARCHAR, max_length=64)
    schema.add_field("key", DataType.VARCHAR, max_length=1024)
    schema.add_field("md5", DataType.VARCHAR, max_length=32)
    schema.add_field("filepath", DataType.VARCHAR, max_length=8192)
    schema.add_field("attrs", DataType.JSON)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    client.create_collection(name, schema=schema, consistency_level="Strong")
    return client


def photo(seed: int, size: tuple[int, int] = (320, 240), fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    """A synthetic but structured picture (smooth gradients and blocks, unlike noise) as encoded bytes."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.005, 0.05, 2).tolist() + [rng.uniform(0, 6.28)]
        channels.append(127 + 120 * np.sin(xx * fx + yy * fy + phase))
    arr = np.stack(channels, axis=-1)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        arr[y0 : y0 + int(rng.integers(10, h // 2)), x0 : x0 + int(rng.integers(10, w // 2))] = rng.integers(0, 255, 3)
    img = Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the session's model cache (only the one this session made)."""
    del session, exitstatus
    cache = os.environ.get(MODEL_CACHE_ENV, "")
    if Path(cache).name.startswith("imgsim-model-cache-"):
        shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="session")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    """One real ResNet50 (random weights) on the default engine (OpenVINO FP32) for the whole run."""
    return load_embedder(make_settings(tmp_path_factory.mktemp("embedder")))


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Milvus 2.3.5 standalone server (PyPI `milvus`) on loopback, started once per session."""
    with milvus_server_on_loopback(tmp_path_factory.mktemp("milvus-server")) as uri:
        yield uri


@dataclass
class LiveService:
    """A running imgsim: the runtime and a waitress server on a loopback port."""

    runtime: Runtime
    base_url: str
    token: str | None
    http: requests.Session

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        """POST to /api/image/sim/<path> with the token (if any)."""
        return self.http.post(f"{self.base_url}/api/image/sim/{path}", headers=self._headers(kwargs), **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        """GET a path relative to the server root."""
        return self.http.get(f"{self.base_url}/{path.lstrip('/')}", headers=self._headers(kwargs), **kwargs)

    def _headers(self, kwargs: dict[str, Any]) -> dict[str, str]:
        headers = kwargs.pop("headers", None)
        if headers is not None:
            return headers
        return {"token": self.token} if self.token else {}

    def count(self) -> int:
        """How many records the store holds, through the API."""
        return int(self.get("api/image/sim/count").json()["data"])


def _run_quietly(server: Any) -> None:
    with contextlib.suppress(OSError):  # close() from the test's thread pulls the socket out from under select()
        server.run()


@pytest.fixture
def start_service(embedder: Embedder, tmp_path: Path) -> Iterator[Callable[..., LiveService]]:
    """Start imgsim over real HTTP (waitress on 127.0.0.1); stopped after the test."""
    started: list[tuple[Any, LiveService]] = []

    def start(model: Embedder | None = None, **overrides: Any) -> LiveService:
        """Start a service with these settings; `model` replaces the session's ResNet50 (its settings must match)."""
        settings = make_settings(tmp_path, **overrides)
        runtime = build_runtime(settings, embedder=model or embedder)
        server = waitress.create_server(runtime.app, host="127.0.0.1", port=0, **waitress_options(settings))
        thread = threading.Thread(target=_run_quietly, args=(server,), daemon=True)
        thread.start()
        token = settings.token.get_secret_value() if settings.token else None
        live = LiveService(runtime, f"http://127.0.0.1:{server.effective_port}", token, requests.Session())
        started.append((server, live))
        return live

    yield start
    for server, live in started:
        server.close()  # waitress has no graceful stop; its daemon thread ends with the process
        try:
            live.runtime.store._call(lambda c: c.drop_collection(live.runtime.settings.milvus_collection))
        except Exception:  # noqa: BLE001 - the collection may be gone with its server already
            pass
        live.runtime.close()


@pytest.fixture(params=["lite", "server"])
def service(request: pytest.FixtureRequest, start_service: Callable[..., LiveService]) -> LiveService:
    """The service on embedded Milvus Lite and on the real Milvus server: the same tests run on both."""
    if request.param == "server":
        return start_service(milvus_uri=request.getfixturevalue("milvus_server"))
    return start_service()


@pytest.fixture
def lite_service(start_service: Callable[..., LiveService]) -> LiveService:
    """The service on embedded Milvus Lite only (for tests about HTTP, inputs and errors)."""
    return start_service()


@pytest.fixture
def image_host() -> Iterator[Callable[[bytes], str]]:
    """Stands in for a shop's image host (no internet here): `serve(data)` returns a loopback URL of `data`."""
    served: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = served.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def serve(data: bytes) -> str:
        served[f"/img/{len(served)}.jpg"] = data
        return f"http://127.0.0.1:{server.server_port}/img/{len(served) - 1}.jpg"

    yield serve
    server.shutdown()
