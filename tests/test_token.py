"""The token: missing, wrong or right, in the `token` header or `Authorization: Bearer`; /health and
/ready stay open; the comparison is hmac.compare_digest; the token never reaches the logs."""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import inspect
import logging
import textwrap
from collections.abc import Callable, Iterator

import pytest
import requests

from service.api import app as app_module
from service.api import tokens
from tests import hostile_counts
from tests.conftest import LiveService, photo
from tests.test_hostile_input import expect, ok

TOKEN = "s3cret-Tok3n_with.symbols~42"

# Every route, with a body that passes the token check and then fails (or succeeds) on its own merits.
GUARDED = [
    ("POST", "api/image/sim/add/file", {"files": {"file": ("a.jpg", photo(1, size=(64, 48)))}}),
    ("POST", "api/image/sim/add/url", {"json": {}}),
    ("POST", "api/image/sim/add/path", {"json": {}}),
    ("POST", "api/image/sim/add/base64", {"json": {}}),
    ("POST", "api/image/sim/search/file", {"files": {"file": ("a.jpg", photo(1, size=(64, 48)))}}),
    ("POST", "api/image/sim/search/url", {"json": {}}),
    ("POST", "api/image/sim/search/path", {"json": {}}),
    ("POST", "api/image/sim/search/base64", {"json": {}}),
    ("POST", "api/image/sim/del/id", {"json": {"id": [1]}}),
    ("POST", "api/image/sim/del/key", {"json": {"key": "a"}}),
    ("POST", "api/image/sim/get/key", {"json": {"key": "a"}}),
    ("POST", "api/image/sim/count", {}),
    ("GET", "api/image/sim/count", {}),
    ("GET", "openapi.json", {}),
    ("GET", "api/image/sim/no-such-endpoint", {}),
    ("GET", "api/image/sim/add/file", {}),
]
WRONG = [
    "wrong",
    "",
    " ",
    TOKEN[:-1],
    TOKEN + "x",
    TOKEN.upper(),
    "x" + TOKEN[1:],
    f"Bearer {TOKEN}",
    "x" * 8000,
    TOKEN + TOKEN,
    "s\u00e9cret",
]


@pytest.fixture(scope="session", autouse=True)
def _write_counts() -> Iterator[None]:
    yield
    hostile_counts.write()


def call(svc: LiveService, method: str, path: str, headers: dict[str, str], kwargs: dict) -> requests.Response:
    return svc.http.request(method, f"{svc.base_url}/{path}", headers=headers, timeout=60, **kwargs)


def test_missing_wrong_and_right_token_on_every_route(start_service: Callable[..., LiveService]) -> None:
    svc = start_service(token=TOKEN)
    for method, path, kwargs in GUARDED:
        for headers in (
            {},
            {"token": ""},
            {"Authorization": ""},
            {"Authorization": "Bearer"},
            {"Authorization": "Bearer   "},
            {"Authorization": "Basic " + base64.b64encode(f"user:{TOKEN}".encode()).decode()},
            {"Authorization": TOKEN},
            {"Authorization": f"Token {TOKEN}"},
            {"Token-": TOKEN},
            {"X-Token": TOKEN},
        ):
            resp = call(svc, method, path, headers, kwargs)
            expect(resp, 401, "missing token", "'token' header", "Bearer")
            hostile_counts.tried("token")
        for wrong in WRONG:
            for headers in ({"token": wrong}, {"Authorization": f"Bearer {wrong}"}):
                if not wrong.strip():
                    continue  # an empty value is the "missing" case above
                resp = call(svc, method, path, headers, kwargs)
                expect(resp, 401, "invalid token")
                assert TOKEN not in resp.text and wrong not in resp.text
                hostile_counts.tried("token")
        for headers in (
            {"token": TOKEN},
            {"Authorization": f"Bearer {TOKEN}"},
            {"authorization": f"bearer {TOKEN}"},
            {"TOKEN": f"{TOKEN}  "},
            {"Authorization": f"Bearer  {TOKEN} "},
            {"token": "", "Authorization": f"Bearer {TOKEN}"},
        ):
            resp = call(svc, method, path, headers, kwargs)
            assert resp.status_code != 401, (path, headers, resp.text)
            assert resp.headers["Content-Type"].startswith("application/json")
            hostile_counts.tried("token")
    # When both headers are sent, the `token` header is the one checked.
    expect(
        call(svc, "GET", "api/image/sim/count", {"token": "wrong", "Authorization": f"Bearer {TOKEN}"}, {}),
        401,
        "invalid token",
    )
    assert ok(call(svc, "GET", "api/image/sim/count", {"token": TOKEN}, {}))["data"] == 1  # the add/file above
    assert call(svc, "GET", "openapi.json", {"token": TOKEN}, {}).json()["openapi"].startswith("3.0")


def test_health_and_ready_are_open(start_service: Callable[..., LiveService]) -> None:
    svc = start_service(token=TOKEN)
    for headers in ({}, {"token": "wrong"}, {"Authorization": "Bearer wrong"}, {"token": TOKEN}):
        assert call(svc, "GET", "health", headers, {}).json()["data"] == {"status": "alive"}
        assert call(svc, "GET", "ready", headers, {}).json()["code"] == 200
        hostile_counts.tried("token", 2)


def test_the_token_never_reaches_the_logs(
    start_service: Callable[..., LiveService], caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level, every thread
    svc = start_service(token=TOKEN)
    near_miss = TOKEN[:-1] + "!"
    for headers in (
        {"token": near_miss},
        {"Authorization": f"Bearer {near_miss}"},
        {"token": TOKEN},
        {"Authorization": f"Bearer {TOKEN}"},
    ):
        call(
            svc,
            "POST",
            "api/image/sim/add/file",
            headers,
            {"files": {"file": ("a.jpg", photo(2, size=(64, 48)))}, "data": {"key": "logged"}},
        )
        call(svc, "POST", "api/image/sim/add/file", headers, {"files": {"file": ("a.jpg", b"not an image")}})
        call(svc, "POST", "api/image/sim/search/url", headers, {"json": {"url": "http://127.0.0.1:1/x.jpg"}})
        call(svc, "POST", "api/image/sim/get/key", headers, {"data": b"{broken"})
        call(svc, "GET", "nope", headers, {})
        hostile_counts.tried("token", 5)
    assert any("add key='logged'" in r.getMessage() for r in caplog.records), "the service did log during the test"
    for record in caplog.records:
        text = record.getMessage() + str(record.args) + (record.exc_text or "")
        assert TOKEN not in text and near_miss not in text, record
    out, err = capfd.readouterr()
    assert TOKEN not in out + err and near_miss not in out + err


def test_the_comparison_is_hmac_compare_digest(
    start_service: Callable[..., LiveService], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The single TOKEN is one admin entry of the token table: presented tokens are hashed and every
    # entry's SHA-256 is compared with hmac.compare_digest (service.api.tokens.TokenTable.lookup).
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    svc = start_service(token=TOKEN)
    expect(call(svc, "GET", "api/image/sim/count", {"token": "guess"}, {}), 401)
    assert ok(call(svc, "GET", "api/image/sim/count", {"Authorization": f"Bearer {TOKEN}"}, {}))["data"] == 0
    digest = hashlib.sha256(TOKEN.encode()).digest()
    assert calls == [(digest, hashlib.sha256(b"guess").digest()), (digest, digest)]
    hostile_counts.tried("token", 2)

    # And nothing else decides: lookup has no ==, !=, in or startswith on the token or its digest, and the
    # app admits every guarded request through the table.
    tree = ast.parse(textwrap.dedent(inspect.getsource(tokens.TokenTable.lookup)))
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            assert not names & {"presented", "digest"} or all(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops), (
                ast.unparse(node)
            )
        if isinstance(node, ast.Attribute) and node.attr in {"startswith", "endswith", "find", "index"}:
            raise AssertionError(f"lookup uses {node.attr}")
    assert "hmac.compare_digest" in ast.unparse(tree)
    assert "admit(request, table)" in inspect.getsource(app_module.create_app)
