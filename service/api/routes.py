"""HTTP routes of /api/image/sim: validate the fields, call one use case, wrap the answer in bogv's envelope.

Every route acts in one namespace (service.api.auth.acting_namespace): its token's, or for an admin
token (and an open service) the request's `namespace` field, default "".
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, request

from service.api.auth import acting_namespace
from service.api.envelope import envelope
from service.api.fields import (id_list, id_value, image_input, key_list, limit_value, min_score_value,
                                optional_key, request_fields, text_field)
from service.api.options import after_id_value, attrs_value, bool_value, filter_value, on_duplicate_value, record_id
from service.api.tokens import READ, WRITE
from service.api.views import duplicate_message, found_view, record_view
from service.logs import note_request
from service.usecases.add import AddRequest, add_image
from service.usecases.delete import delete_by_ids, delete_by_keys
from service.usecases.deps import Deps
from service.usecases.listing import list_records as list_page
from service.usecases.lookup import count_records, get_by_keys
from service.usecases.search import SearchOptions, search_by_id, search_image
from service.usecases.thumbnail import thumbnail

api = Blueprint("api", __name__, url_prefix="/api/image/sim")


def deps() -> Deps:
    """The use cases' dependencies, stored on the app by create_app."""
    return current_app.extensions["imgsim.deps"]


def _search_options(body: dict[str, Any]) -> SearchOptions:
    return SearchOptions(limit_value(body, deps().settings.max_limit), min_score_value(body), filter_value(body),
                         bool_value(body, "group_by_key"))


def _requested_keys(body: dict[str, Any]) -> list[str]:
    """The request's `key` list, validated; how many it names goes on the access log line."""
    settings = deps().settings
    keys = key_list(body, settings.max_key_length, settings.max_batch_keys)
    note_request(key_count=len(keys))
    return keys


@api.post("/add/<any(file, url, path, base64):kind>")
def add(kind: str) -> tuple[Response, int]:
    """Embed an image and store it under `key` (default: the image MD5), with optional attrs."""
    body = request_fields()
    namespace = acting_namespace(body, WRITE)
    add_request = AddRequest(image_input(kind, body), optional_key(body, deps().settings.max_key_length),
                             text_field(body, "imgPath", max_len=4096), attrs_value(body), on_duplicate_value(body))
    added = add_image(deps(), namespace, add_request)
    if added.duplicate_of is not None:
        return envelope(added.duplicate_of, msg=duplicate_message(added.duplicate_of))
    return envelope(True)


@api.post("/search/<any(file, url, path, base64):kind>")
def search(kind: str) -> tuple[Response, int]:
    """The most similar stored images, best first, each with its cosine `score` and `match` verdict."""
    body = request_fields()
    namespace = acting_namespace(body, READ)
    found = search_image(deps(), namespace, image_input(kind, body), _search_options(body))
    return envelope([found_view(f) for f in found])


@api.post("/search/id")
def search_id() -> tuple[Response, int]:
    """The stored images most similar to a stored record, without sending the image again."""
    body = request_fields()
    namespace = acting_namespace(body, READ)
    found = search_by_id(deps(), namespace, record_id(body), _search_options(body), bool_value(body, "include_self"))
    return envelope([found_view(f) for f in found])


@api.post("/del/id")
def delete_ids() -> tuple[Response, int]:
    """Delete records by id; data is how many were really deleted."""
    body = request_fields()
    namespace = acting_namespace(body, WRITE)
    return envelope(delete_by_ids(deps(), namespace, id_list(body, deps().settings.max_batch_keys)))


@api.post("/del/key")
def delete_keys() -> tuple[Response, int]:
    """Delete every record of the given keys; data is how many were deleted."""
    body = request_fields()
    namespace = acting_namespace(body, WRITE)
    return envelope(delete_by_keys(deps(), namespace, _requested_keys(body)))


@api.post("/get/key")
def get_keys() -> tuple[Response, int]:
    """The records (id, key, filepath, md5, attrs) stored under the given keys."""
    body = request_fields()
    namespace = acting_namespace(body, READ)
    return envelope([record_view(r) for r in get_by_keys(deps(), namespace, _requested_keys(body))])


@api.route("/count", methods=["GET", "POST"])
def count() -> tuple[Response, int]:
    """How many records the namespace holds."""
    return envelope(count_records(deps(), acting_namespace(request_fields(), READ)))


@api.post("/list")
def list_records() -> tuple[Response, int]:
    """A page of the namespace's records in id order, and the `after_id` of the next page."""
    body = request_fields()
    namespace = acting_namespace(body, READ)
    page = list_page(deps(), namespace, after_id_value(body), limit_value(body, deps().settings.max_batch_keys,
                                                                          default=100))
    return envelope({"records": page.rows, "next_after_id": page.next_after_id})


@api.get("/thumb/<record_id>")
def thumb(record_id: str) -> Response:
    """A stored record's thumbnail: WEBP, at most 256 px a side (404 when it has none: show a placeholder).

    An admin token names the namespace in the query string (`?namespace=shop-1`); a record of another
    namespace answers 404 like a missing one.
    """
    namespace = acting_namespace(request.args.to_dict(), READ)
    data = thumbnail(deps(), id_value(record_id), namespace)
    response = current_app.response_class(data, mimetype="image/webp")
    # An id always names the same image (ids derive from namespace, key and MD5), so the browser may keep it a
    # while; `private`: it was fetched with the token, no shared cache may keep it.
    response.headers["Cache-Control"] = "private, max-age=86400"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
