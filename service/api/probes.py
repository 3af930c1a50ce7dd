"""Probes and the API description: /health (liveness), /ready (readiness), /openapi.json."""

from __future__ import annotations

from functools import partial
from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from service.api.endpoint import Ok, deps, endpoint
from service.api.envelope import envelope
from service.api.openapi import openapi_document
from service.api.views import Alive, Readiness
from service.usecases.readiness import readiness

probes = Blueprint("probes", __name__)
# Every probe is a GET without fields or a right; /health and /ready are open, even when tokens are set.
probe = partial(endpoint, probes, methods=("GET",), right=None, body=None, tag="probes")
ALIVE_OK = Ok(Alive, "Alive.", msg={"type": "string", "enum": ["ok"]})
READY_OK = Ok(Readiness, "Ready: the model is loaded and Milvus answers.", msg={"type": "string", "pattern": "^ready"})


@probe("/health", open_=True, errors=(500,), ok=ALIVE_OK, summary="Liveness")
def health() -> tuple[Response, int]:
    """The process answers HTTP. Never needs the token."""
    return envelope({"status": "alive"}, msg="ok")


@probe("/ready", open_=True, errors=(500, 503), ok=READY_OK, summary="Readiness")
def ready() -> tuple[Response, int]:
    """200 when the model is loaded and Milvus answers, 503 otherwise. Never needs the token."""
    info = readiness(deps())
    msg = "ready"
    if info["model"].get("weights") == "random":
        msg = "ready, but MODEL_WEIGHTS=random: similarity results are meaningless (tests only)"
    return envelope(info, msg=msg)


@probe(
    "/openapi.json", errors=(401, 500), ok=Ok(dict[str, Any], "This document.", msg={}), summary="This OpenAPI document"
)
def openapi() -> Response:
    """The OpenAPI 3 description of this API, generated from the routes and their body models."""
    document = current_app.extensions.get("imgsim.openapi")
    if document is None:  # built on first use and kept: the routes and settings do not change while serving
        document = current_app.extensions["imgsim.openapi"] = openapi_document(current_app, deps().settings)
    return jsonify(document)
