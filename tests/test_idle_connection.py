"""A service left idle keeps its Milvus connection: no GOAWAY "too_many_pings", no reconnect, no retry.

pymilvus' default gRPC keepalive (a ping every 10 s, also without calls) is more
than Milvus Lite's in-process gRPC server allows; ~1-2 minutes after the last
request it closed the connection with GOAWAY ENHANCE_YOUR_CALM. The store now
sets the keepalive each server accepts (service/store/connection.py). Both targets
idle side by side for three minutes; the search after it must reuse the same
TCP connection and succeed on its first Milvus call.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.conftest import photo
from tests.procs import ServeProcess, connected_ports

IDLE_SECONDS = 180
LITE_PORT = re.compile(r"MilvusLite server started for .* on port (\d+)")


def _milvus_port(svc: ServeProcess, milvus_uri: str | None) -> int:
    if milvus_uri is not None:
        return int(milvus_uri.rsplit(":", 1)[1])
    found = LITE_PORT.search(svc.log_text())
    assert found, f"the service log does not say which port Milvus Lite serves on:\n{svc.log_tail()}"
    return int(found.group(1))


def _search_finds(svc: ServeProcess, image: bytes) -> None:
    resp = svc.post("search/file", files={"file": ("q.jpg", image)})
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"][0]["score"] > 0.999, resp.text


@pytest.mark.slow
def test_an_idle_service_keeps_its_milvus_connection(tmp_path: Path, milvus_server: str) -> None:
    targets = {"lite": None, "server": milvus_server}
    services = {
        name: ServeProcess(tmp_path / name, uri or str(tmp_path / name / "milvus.db"), name, MILVUS_COLLECTION="idle")
        for name, uri in targets.items()
    }
    image = photo(31)
    try:
        before = {}
        for name, svc in services.items():
            svc.wait_ready()
            assert svc.post("add/file", files={"file": ("a.jpg", image)}).status_code == 200
            _search_finds(svc, image)
            before[name] = connected_ports(svc.pid, _milvus_port(svc, targets[name]))
            assert before[name], f"{name}: no connection to Milvus found"
        time.sleep(IDLE_SECONDS)
        for name, svc in services.items():
            _search_finds(svc, image)
            log = svc.log_text()
            assert "GOAWAY" not in log and "too_many_pings" not in log, f"{name}:\n{svc.log_tail()}"
            assert "a Milvus call failed" not in log, f"{name}: a call was retried:\n{svc.log_tail()}"
            assert connected_ports(svc.pid, _milvus_port(svc, targets[name])) == before[name], (
                f"{name}: the service reconnected to Milvus while idle"
            )
    finally:
        for svc in services.values():
            svc.stop()
