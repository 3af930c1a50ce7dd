"""Probes and the API description: /health (liveness), /ready (readiness), /openapi.json."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app

from service.api.envelope import envelope
from service.api.routes import deps
from service.usecases.readiness import readiness

probes = Blueprint("probes", __name__)

OPENAPI_FILE = Path(__file__).with_name("openapi.json")


@probes.get("/health")
def health() -> tuple[Response, int]:
    """Liveness: the process answers HTTP."""
    return envelope({"status": "alive"}, msg="ok")


@probes.get("/ready")
def ready() -> tuple[Response, int]:
    """Readiness: the model is loaded and Milvus answers (503 otherwise)."""
    info = readiness(deps())
    msg = "ready"
    if info["model"].get("weights") == "random":
        msg = "ready, but MODEL_WEIGHTS=random: similarity results are meaningless (tests only)"
    return envelope(info, msg=msg)


@probes.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3 description of this API."""
    return current_app.response_class(OPENAPI_FILE.read_bytes(), mimetype="application/json")
