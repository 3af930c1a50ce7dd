"""/openapi.json, generated from the routes and their body models (service/api/openapi.py): a valid OpenAPI 3.0
document that describes every route exactly, checked against Flask's URL map, with one request content type
per operation and this server's limits; and a bounded schemathesis fuzz of the live service over HTTP (with
the token): no 500s, and every answer's status code, content type and body conform to the document."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conf.settings import Settings
from service.api.openapi import openapi_document
from service.api.probes import probes
from service.api.routes import api
from service.inputs import url as fetch
from tests import hostile_counts
from tests.conftest import ROOT, LiveService

TOKEN = "fuzz-token-0d4c"


def generated_document(settings: Settings | None = None) -> dict[str, Any]:
    """The document of the API's blueprints, as a service with `settings` (default: the defaults) serves it."""
    app = Flask(__name__)
    app.register_blueprint(api)
    app.register_blueprint(probes)
    return openapi_document(app, settings or Settings(_env_file=None))  # type: ignore[call-arg]


DOC = generated_document()
METHODS = {"get", "post", "put", "delete", "patch"}
POSITIVE_EXAMPLES = 30
NEGATIVE_EXAMPLES = 20  # invalid bodies: only for operations that take one
FUZZ_SECONDS = 150  # the whole fuzz stops generating after this; CI budget


@pytest.fixture(scope="session", autouse=True)
def _write_counts() -> Iterator[None]:
    yield
    hostile_counts.write()


def documented() -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in DOC["paths"].items() for method in item if method in METHODS}


# Blueprints outside the API (a web page, its files, the Prometheus scrape): the document names them in its
# description instead of describing them as operations.
NOT_API = {"console": "/console", "docs": "/docs", "metrics": "/metrics"}


def flask_routes(app: Flask) -> set[tuple[str, str]]:
    """Every (path, method) of the API, with <any(a, b):x> expanded into one path per choice and <x> as {x}."""
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.split(".")[0] in NOT_API:
            continue
        paths = [rule.rule]
        for match in re.finditer(r"<any\(([^)]*)\):\w+>", rule.rule):
            choices = [c.strip().strip("'\"") for c in match.group(1).split(",")]
            paths = [p.replace(match.group(0), c) for p in paths for c in choices]
        paths = [re.sub(r"<(\w+)>", r"{\1}", p) for p in paths]
        assert all("<" not in p for p in paths), f"undocumentable converter in {rule.rule}"
        out |= {(p, m) for p in paths for m in rule.methods - {"HEAD", "OPTIONS"}}
    return out


def test_the_document_is_valid_openapi_3_and_is_what_the_service_serves(lite_service: LiveService) -> None:
    validate(DOC)
    assert DOC["openapi"].startswith("3.0")
    assert DOC["info"]["license"] == {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"}
    served = lite_service.get("openapi.json")
    assert served.status_code == 200 and served.headers["Content-Type"].startswith("application/json")
    assert served.json() == DOC
    # Generated, never written by hand: no OpenAPI file is in the source tree.
    assert not [p for p in (ROOT / "service").rglob("*.json") if "openapi" in p.read_text("utf-8", "replace")]


def test_each_operation_documents_one_request_content_type() -> None:
    """Client generators need one body type per call: multipart for the `file` endpoints, JSON for the rest
    (the server also accepts forms everywhere, which the description says)."""
    assert "urlencoded or multipart form" in DOC["info"]["description"]
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            if "requestBody" not in op:
                continue
            content = op["requestBody"]["content"]
            expected = "multipart/form-data" if path.endswith("/file") else "application/json"
            assert list(content) == [expected], (method, path, list(content))


def test_the_limits_shown_are_the_servers_settings() -> None:
    doc = generated_document(
        Settings(
            _env_file=None,
            max_limit=7,
            max_key_length=9,
            max_batch_keys=11,  # type: ignore[call-arg]
            max_batch_items=13,
        )
    )
    validate(doc)
    schemas = doc["components"]["schemas"]
    assert schemas["SearchUrlBody"]["properties"]["limit"]["maximum"] == 7
    assert schemas["ListBody"]["properties"]["limit"]["maximum"] == 11
    assert schemas["KeysBody"]["properties"]["key"]["anyOf"][0]["maxItems"] == 11
    assert schemas["KeysBody"]["properties"]["key"]["anyOf"][0]["items"]["maxLength"] == 9
    assert schemas["AddBatchBody"]["properties"]["items"]["maxItems"] == 13
    assert "x-setting" not in json.dumps(doc)
    assert DOC["components"]["schemas"]["SearchUrlBody"]["properties"]["limit"]["maximum"] == 100  # the default


def test_every_route_is_documented_and_every_documented_path_exists(lite_service: LiveService) -> None:
    routes = flask_routes(lite_service.runtime.app)
    assert routes == documented(), {"undocumented": routes - documented(), "not routed": documented() - routes}
    for blueprint, path in NOT_API.items():  # left out, but said so
        assert f"`GET {path}`" in DOC["info"]["description"], blueprint
    # And the documented paths answer on the live service (not 404/405; a path with an id: not "no such endpoint").
    for path, method in sorted(documented()):
        resp = lite_service.http.request(method, lite_service.base_url + path.replace("{record_id}", "1"), timeout=60)
        assert resp.status_code != 405 and "no such endpoint" not in resp.text, (method, path, resp.text)


def test_security_and_responses_are_documented_per_operation() -> None:
    schemes = DOC["components"]["securitySchemes"]
    assert schemes["tokenHeader"] == {**schemes["tokenHeader"], "type": "apiKey", "in": "header", "name": "token"}
    assert schemes["bearer"]["type"] == "http" and schemes["bearer"]["scheme"] == "bearer"
    assert DOC["security"] == [{"tokenHeader": []}, {"bearer": []}]
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            open_probe = path in ("/health", "/ready")
            assert (op.get("security") == []) == open_probe, (path, method)
            codes = set(op["responses"])
            # 202: a job accepted and still to run (a duplicate scan); every other success is a 200.
            success = "202" if path == "/api/image/sim/duplicates/scan" and method == "post" else "200"
            assert success in codes and "500" in codes and codes.isdisjoint({"200", "202"} - {success}), (path, codes)
            assert ("401" in codes) != open_probe, (path, codes)
            if path.startswith("/api/image/sim/") and method == "post" and "requestBody" in op:
                assert {"400", "413"} <= codes, (path, codes)
            if path == "/api/image/sim/whoami":  # needs no right and reads no store: only 401 or the answer
                assert codes == {"200", "401", "500"}, (path, codes)
            elif path.startswith("/api/image/sim/"):
                # A token may lack the endpoint's right or name another namespace (403); a collection of an
                # earlier imgsim refuses namespaces, attrs and filters (409).
                assert {"403", "409", "503"} <= codes, (path, codes)
            if re.search(r"/(add|search)/(file|url|path|base64)$", path):
                assert "415" in codes, (path, codes)


@pytest.fixture
def no_internet(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The fuzzer invents URLs; the service's transport may only reach loopback during the fuzz."""
    refused: list[str] = []
    real_send = fetch.GuardedAdapter.send

    def send(self: fetch.GuardedAdapter, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:
        host = urlsplit(request.url).hostname or ""
        if host not in ("127.0.0.1", "localhost", "::1"):
            refused.append(host)
            raise requests.ConnectionError(f"test: no traffic to {host!r}")
        return real_send(self, request, **kwargs)

    monkeypatch.setattr(fetch.GuardedAdapter, "send", send)
    return refused


def test_schemathesis_fuzz_finds_no_500_and_only_documented_answers(
    start_service: Callable[..., LiveService], no_internet: list[str]
) -> None:
    svc = start_service(token=TOKEN, url_connect_timeout=1, url_read_timeout=1, url_total_timeout=2)
    served = svc.get("openapi.json", headers={"token": TOKEN}).json()
    assert served == DOC
    schema = schemathesis.openapi.from_dict(served)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    failures: list[str] = []
    calls = {"n": 0}
    deadline = time.monotonic() + FUZZ_SECONDS
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(documented())
    for operation in operations:
        modes = [(GenerationMode.POSITIVE, POSITIVE_EXAMPLES)]
        if operation.body:
            modes.append((GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES))
        for mode, examples in modes:
            if time.monotonic() > deadline:
                break

            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=False,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                if time.monotonic() > deadline:
                    return
                calls["n"] += 1
                case.call_and_validate(base_url=svc.base_url, headers={"token": TOKEN}, checks=checks, timeout=60)

            try:
                run()
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collect every finding, then fail once
                failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:3000]}")
    hostile_counts.tried("schemathesis_fuzz_requests", calls["n"])
    print(
        f"schemathesis sent {calls['n']} requests to {len(operations)} operations; refused outbound: "
        f"{sorted(set(no_internet))[:20]}"
    )
    assert not failures, "\n\n".join(failures)
    assert calls["n"] >= len(operations) * 10, calls  # the fuzz really ran
    assert svc.get("health").status_code == 200
