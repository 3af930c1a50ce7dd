"""HTTP routes: parse the request, call the catalog once, wrap the answer in bogv's envelope."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from service.catalog import Catalog, Source
from service.errors import BadInput
from service.params import (base64_image, id_list, key_list, limit_value, min_score_value, optional_key,
                            text_field)

api = Blueprint("api", __name__, url_prefix="/api/image/sim")
probes = Blueprint("probes", __name__)

INPUT_KINDS = ("file", "url", "path", "base64")
OPENAPI_FILE = Path(__file__).with_name("openapi.json")


def envelope(data: Any, msg: str = "success", code: int = 200) -> tuple[Response, int]:
    """The `{code, msg, data}` body every endpoint answers with; `code` equals the HTTP status."""
    return jsonify({"code": code, "msg": msg, "data": data}), code


def _catalog() -> Catalog:
    return current_app.extensions["imgsim.catalog"]


def _fields() -> dict[str, Any]:
    """The request's fields, from JSON, a urlencoded form or a multipart form."""
    if request.mimetype == "multipart/form-data":
        return request.form.to_dict()
    raw = request.get_data(cache=True)
    if not raw:
        return {}
    try:
        body = request.get_json(force=True, silent=True)
    except RecursionError:  # the json module recurses once per nesting level; silent=True does not cover this
        raise BadInput("the request body is JSON nested too deeply; send a flat JSON object") from None
    if body is None and request.mimetype == "application/x-www-form-urlencoded":
        # `curl -d '{...}'` sends JSON labelled as a form: accept both real forms and that.
        return request.form.to_dict()  # Werkzeug re-reads the cached body for this
    if body is None:
        raise BadInput("the request body is not valid JSON; send a JSON object with Content-Type: "
                       "application/json (or multipart/form-data for file uploads)")
    if not isinstance(body, dict):
        raise BadInput("the request body must be a JSON object like {\"url\": \"...\"}")
    return body


def _source(kind: str, body: dict[str, Any]) -> Source:
    catalog = _catalog()
    settings = catalog.settings
    if kind == "file":
        upload = request.files.get("file")
        if upload is None and request.mimetype == "multipart/form-data" and request.content_length \
                and not request.form and not request.files:
            # Werkzeug drops a multipart body it cannot parse without a word; say so rather than "missing".
            raise BadInput("the multipart/form-data body could not be parsed (no or wrong boundary, or part "
                           "headers that are not UTF-8, such as a Latin-1 file name); send the image as the "
                           "field 'file' (curl -F file=@photo.jpg)")
        if upload is None:
            raise BadInput("multipart field 'file' is required: send the image as multipart/form-data "
                           "with the field name 'file' (curl -F file=@photo.jpg)")
        return Source(upload.read(settings.max_image_bytes + 1), upload.filename or "")
    if kind == "url":
        return catalog.from_url(text_field(body, "url", required=True, max_len=8192) or "")
    if kind == "path":
        return catalog.from_path(text_field(body, "path", required=True, max_len=4096) or "")
    return Source(base64_image(body.get("base64"), settings.max_image_bytes), "")


@api.post("/add/<any(file, url, path, base64):kind>")
def add(kind: str) -> tuple[Response, int]:
    """Embed an image and store it under `key` (default: the image MD5)."""
    body = _fields()
    settings = _catalog().settings
    key = optional_key(body, settings.max_key_length)
    img_path = text_field(body, "imgPath", max_len=4096)
    _catalog().add(_source(kind, body), key, img_path)
    return envelope(True)


@api.post("/search/<any(file, url, path, base64):kind>")
def search(kind: str) -> tuple[Response, int]:
    """The most similar stored images, best first, each with its cosine `score`."""
    body = _fields()
    settings = _catalog().settings
    limit = limit_value(body, settings.max_limit)
    min_score = min_score_value(body)
    hits = _catalog().search(_source(kind, body), limit, min_score)
    return envelope([{"id": h.id, "key": h.key, "filepath": h.filepath, "score": h.score} for h in hits])


@api.post("/del/id")
def delete_ids() -> tuple[Response, int]:
    """Delete records by id; data is how many were really deleted."""
    ids = id_list(_fields(), _catalog().settings.max_batch_keys)
    return envelope(_catalog().delete_ids(ids))


@api.post("/del/key")
def delete_keys() -> tuple[Response, int]:
    """Delete every record of the given keys; data is how many were deleted."""
    settings = _catalog().settings
    keys = key_list(_fields(), settings.max_key_length, settings.max_batch_keys)
    return envelope(_catalog().delete_keys(keys))


@api.post("/get/key")
def get_keys() -> tuple[Response, int]:
    """The records (id, key, filepath, md5) stored under the given keys."""
    settings = _catalog().settings
    keys = key_list(_fields(), settings.max_key_length, settings.max_batch_keys)
    return envelope(_catalog().get_keys(keys))


@api.route("/count", methods=["GET", "POST"])
def count() -> tuple[Response, int]:
    """How many records are stored."""
    return envelope(_catalog().count())


@probes.get("/health")
def health() -> tuple[Response, int]:
    """Liveness: the process answers HTTP."""
    return envelope({"status": "alive"}, msg="ok")


@probes.get("/ready")
def ready() -> tuple[Response, int]:
    """Readiness: the model is loaded and Milvus answers (503 otherwise)."""
    info = _catalog().readiness()
    msg = "ready"
    if info["model"].get("weights") == "random":
        msg = "ready, but MODEL_WEIGHTS=random: similarity results are meaningless (tests only)"
    return envelope(info, msg=msg)


@probes.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3 description of this API."""
    return current_app.response_class(OPENAPI_FILE.read_bytes(), mimetype="application/json")
