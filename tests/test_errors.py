"""Each error code of the contract, its envelope and message, and that the server keeps serving."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from conf.settings import Settings
from tests.conftest import LiveService, photo


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def expect(resp, code: int, *words: str) -> None:
    body = resp.json()
    assert resp.status_code == code and body["code"] == code and body["data"] is None, body
    for word in words:
        assert word in body["msg"], body["msg"]
    assert "Traceback" not in body["msg"]


def test_each_error_code_has_its_message(start_service: Callable[..., LiveService]) -> None:
    svc = start_service(max_image_bytes=50_000)
    expect(svc.post("add/url", json={}), 400, "'url'", "required")
    expect(svc.post("search/base64", json={"base64": "aGk=", "limit": 0}), 400, "'limit'", "from 1 to 100")
    expect(svc.post("add/path", json={"path": "/etc/hostname"}), 403, "outside", "PATH_ROOTS")
    expect(svc.post("nope"), 404, "no such endpoint")
    expect(svc.get("api/image/sim/add/file"), 405, "GET is not allowed")
    expect(
        svc.post("add/file", files={"file": ("big.bmp", photo(1, size=(400, 400), fmt="BMP"))}), 413, "MAX_IMAGE_BYTES"
    )
    expect(svc.post("add/file", files={"file": ("x.jpg", b"GIF89a but not really")}), 415, "not a decodable image")
    assert svc.post("add/file", files={"file": ("ok.jpg", photo(2))}).status_code == 200  # still serving


def test_token_guards_everything_but_the_probes(start_service: Callable[..., LiveService]) -> None:
    svc = start_service(token="s3cret")
    expect(svc.post("add/file", headers={}, files={"file": ("a.jpg", photo(1))}), 401, "missing token")
    expect(svc.post("count", headers={"token": "wrong"}), 401, "invalid token")
    assert svc.post("count", headers={"Authorization": "Bearer s3cret"}).json()["data"] == 0
    assert svc.get("health", headers={}).status_code == 200
    assert svc.get("ready", headers={}).status_code == 200


def test_milvus_unreachable_is_503_and_the_api_still_answers(start_service: Callable[..., LiveService]) -> None:
    svc = start_service(milvus_uri=f"http://127.0.0.1:{closed_port()}", milvus_timeout=1.0, milvus_retries=1)
    assert svc.get("health").status_code == 200
    expect(svc.get("ready"), 503, "unreachable")
    expect(svc.post("add/file", files={"file": ("a.jpg", photo(1))}), 503, "unreachable")
    expect(svc.post("search/file", files={"file": ("a.jpg", photo(1))}), 503, "unreachable")
    expect(svc.post("del/key", json={"key": "a"}), 503)


def test_bad_settings_name_the_variable() -> None:
    with pytest.raises(ValidationError, match="api_port"):
        Settings(_env_file=None, api_port=0)  # type: ignore[call-arg] - _env_file: pydantic-settings' option
    with pytest.raises(ValidationError, match="image_resize"):
        Settings(_env_file=None, image_resize="stretch")  # type: ignore[call-arg] - _env_file: pydantic-settings' option
    with pytest.raises(ValidationError, match="TOKEN must be printable ASCII"):
        Settings(_env_file=None, token="pässwort")  # type: ignore[call-arg] - _env_file: pydantic-settings' option
    empty = Settings(_env_file=None, token="", image_inc_path="")  # type: ignore[call-arg] - _env_file: pydantic-settings' option
    assert empty.token is None and empty.image_inc_path is None  # docker-compose's `TOKEN=${TOKEN:-}`
