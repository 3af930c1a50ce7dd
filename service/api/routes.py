"""HTTP routes of /api/image/sim: validate the fields, call one use case, wrap the answer in bogv's envelope."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from service.api.envelope import envelope
from service.api.fields import (id_list, image_input, key_list, limit_value, min_score_value, optional_key,
                                request_fields, text_field)
from service.usecases.add import add_image
from service.usecases.delete import delete_by_ids, delete_by_keys
from service.usecases.deps import Deps
from service.usecases.lookup import count_records, get_by_keys
from service.usecases.search import search_image

api = Blueprint("api", __name__, url_prefix="/api/image/sim")


def deps() -> Deps:
    """The use cases' dependencies, stored on the app by create_app."""
    return current_app.extensions["imgsim.deps"]


@api.post("/add/<any(file, url, path, base64):kind>")
def add(kind: str) -> tuple[Response, int]:
    """Embed an image and store it under `key` (default: the image MD5)."""
    body = request_fields()
    settings = deps().settings
    key = optional_key(body, settings.max_key_length)
    img_path = text_field(body, "imgPath", max_len=4096)
    add_image(deps(), image_input(kind, body), key, img_path)
    return envelope(True)


@api.post("/search/<any(file, url, path, base64):kind>")
def search(kind: str) -> tuple[Response, int]:
    """The most similar stored images, best first, each with its cosine `score` and `match` verdict."""
    body = request_fields()
    limit = limit_value(body, deps().settings.max_limit)
    min_score = min_score_value(body)
    found = search_image(deps(), image_input(kind, body), limit, min_score)
    return envelope([{"id": f.hit.id, "key": f.hit.key, "filepath": f.hit.filepath, "score": f.hit.score,
                      "match": f.match} for f in found])


@api.post("/del/id")
def delete_ids() -> tuple[Response, int]:
    """Delete records by id; data is how many were really deleted."""
    ids = id_list(request_fields(), deps().settings.max_batch_keys)
    return envelope(delete_by_ids(deps(), ids))


@api.post("/del/key")
def delete_keys() -> tuple[Response, int]:
    """Delete every record of the given keys; data is how many were deleted."""
    settings = deps().settings
    keys = key_list(request_fields(), settings.max_key_length, settings.max_batch_keys)
    return envelope(delete_by_keys(deps(), keys))


@api.post("/get/key")
def get_keys() -> tuple[Response, int]:
    """The records (id, key, filepath, md5) stored under the given keys."""
    settings = deps().settings
    keys = key_list(request_fields(), settings.max_key_length, settings.max_batch_keys)
    return envelope(get_by_keys(deps(), keys))


@api.route("/count", methods=["GET", "POST"])
def count() -> tuple[Response, int]:
    """How many records are stored."""
    return envelope(count_records(deps()))
