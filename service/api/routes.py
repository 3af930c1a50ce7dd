"""HTTP routes of /api/image/sim: each declared once with @endpoint (its right, body model and answers), taking
the validated body and the namespace it acts in, calling one use case and wrapping the answer in bogv's envelope.

Every route acts in one namespace (service.api.endpoint.acting_namespace): its token's, or for an admin
token (and an open service) the request's `namespace` field, default "".
"""

from __future__ import annotations

from functools import partial
from typing import Literal

from flask import Blueprint, Response, g

from service.api.contract import (
    ADD_BODIES,
    SEARCH_BODIES,
    AddBatchBody,
    AddFields,
    CountBody,
    DuplicatesBody,
    ExportBody,
    Id,
    IdsBody,
    JobId,
    KeysBody,
    ListBody,
    NamespaceQuery,
    ScanBody,
    SearchByIdBody,
    SearchImageFields,
    SetKeyBody,
    id_value,
)
from service.api.endpoint import Ok, deps, endpoint
from service.api.envelope import envelope
from service.api.tokens import ADMIN, READ, WRITE, Grant
from service.api.views import (
    Box,
    Count,
    Export,
    GroupsPage,
    Hit,
    ItemResult,
    ListedRecord,
    Page,
    Record,
    Scan,
    SetKeyResult,
    Whoami,
    duplicate_message,
    found_view,
    outcome_view,
    record_view,
    scan_view,
)
from service.logs import note_request
from service.usecases.add import add_image
from service.usecases.batch import add_batch as add_many
from service.usecases.delete import delete_by_ids, delete_by_keys
from service.usecases.duplicates import groups_page, scan_job, start_scan
from service.usecases.listing import export_rows
from service.usecases.listing import list_records as list_page
from service.usecases.lookup import count_records, get_by_keys
from service.usecases.search import search_by_id, search_image
from service.usecases.sync import set_key as sync_key
from service.usecases.thumbnail import thumbnail

api = Blueprint("api", __name__, url_prefix="/api/image/sim")

KINDS = "<any(file, url, path, base64):kind>"
# The error statuses of the API's routes: a token may lack the right or name another namespace (403); a
# collection of an earlier imgsim refuses namespaces, attrs and filters (409); Milvus may be away (503).
ALWAYS = (401, 403, 409, 500, 503)
WITH_BODY = (400, 413, *ALWAYS)
WITH_IMAGE = (415, *WITH_BODY)
# The answers of more than one route, or too long to read inside a decorator.
SEARCH_OK = Ok(list[Hit], "The most similar stored images, best first.")
SEARCHED_BOX = (
    "the box of the image whose vector was searched (pixels after EXIF orientation; the whole image when none)"
)
SEARCH_IMAGE_OK = Ok(list[Hit], "The most similar stored images, best first.", beside={"region": (Box, SEARCHED_BOX)})
COUNT_OK = Ok(Count, "A number of records.")
PAGE_OK = Ok(Page, "A page of the namespace's records, in id order.")
ITEMS_OK = Ok(
    list[ItemResult], "One result per item, in the order sent (200 whenever the request itself is well formed)."
)
KEY_SET_OK = Ok(SetKeyResult, "The key now holds the listed images (unless an item failed).")
# What the routes on records and the writing routes without an image share.
reads = partial(endpoint, api, right=READ, tag="records", errors=WITH_BODY)
deletes = partial(endpoint, api, right=WRITE, tag="records", errors=WITH_BODY)
writes = partial(endpoint, api, right=WRITE, tag="add", errors=WITH_BODY)


@endpoint(
    api,
    f"/add/{KINDS}",
    right=WRITE,
    body=ADD_BODIES,
    tag="add",
    errors=WITH_IMAGE,
    ok=Ok(
        Literal[True] | ListedRecord,
        "Stored (or already stored: adding is idempotent), or skipped as a "
        "duplicate (on_duplicate=skip): then data is the record already stored.",
        msg={"type": "string", "minLength": 1},
        beside={"region": (Box, "the box of the image the stored vector describes (the whole image when none)")},
    ),
)
def add(body: AddFields, namespace: str) -> tuple[Response, int]:
    """Embed the image and store it under `key` (default: the image MD5). Re-adding the same image under the same
    key stores nothing new (idempotent); the same key may hold many images. With `attrs` the record carries
    attributes to filter on; `on_duplicate` decides what happens to a picture the namespace already holds under
    another key."""
    added = add_image(deps(), namespace, body.add_request())
    if added.duplicate_of is not None:
        return envelope(added.duplicate_of, msg=duplicate_message(added.duplicate_of), region=added.region)
    return envelope(True, region=added.region)


@endpoint(api, f"/search/{KINDS}", right=READ, body=SEARCH_BODIES, tag="search", errors=WITH_IMAGE, ok=SEARCH_IMAGE_OK)
def search(body: SearchImageFields, namespace: str) -> tuple[Response, int]:
    """The stored images most similar to this one, best first, each with its cosine `score` and a `match` verdict
    (exact, duplicate, similar). `filter` keeps hits whose attributes meet it; `group_by_key` returns one hit per
    key. `region` searches with part of the image: a box, or "auto" (the main object); the answer's `region`
    beside `data` is the box searched."""
    searched = search_image(deps(), namespace, body.image(), body.options(), body.region)
    return envelope([found_view(f) for f in searched.found], region=searched.region.as_dict())


@endpoint(
    api,
    "/search/id",
    right=READ,
    body=SearchByIdBody,
    tag="search",
    errors=(404, *WITH_BODY),
    ok=SEARCH_OK,
    summary="Search with a stored record",
)
def search_id(body: SearchByIdBody, namespace: str) -> tuple[Response, int]:
    """The namespace's images most similar to one of its stored records, without sending the image again; the
    record itself is left out unless `include_self`. 404 when the namespace holds no such id."""
    found = search_by_id(deps(), namespace, body.id, body.options(), body.include_self)
    return envelope([found_view(f) for f in found])


@deletes(
    "/del/id", body=IdsBody, ok=Ok(Count, "How many records existed and were deleted."), summary="Delete records by id"
)
def delete_ids(body: IdsBody, namespace: str) -> tuple[Response, int]:
    """Delete the records with these ids; `data` is how many existed and were deleted (0 when none matched,
    still 200)."""
    return envelope(delete_by_ids(deps(), namespace, body.id))


@deletes("/del/key", body=KeysBody, ok=Ok(Count, "How many records were deleted."), summary="Delete records by key")
def delete_keys(body: KeysBody, namespace: str) -> tuple[Response, int]:
    """Delete every record of these keys; `data` is how many were deleted."""
    note_request(key_count=len(body.key))
    return envelope(delete_by_keys(deps(), namespace, body.key))


@reads("/get/key", body=KeysBody, ok=Ok(list[Record], "The records of the keys."), summary="Look up records by key")
def get_keys(body: KeysBody, namespace: str) -> tuple[Response, int]:
    """The records stored under these keys, ordered by key then id."""
    note_request(key_count=len(body.key))
    return envelope([record_view(r) for r in get_by_keys(deps(), namespace, body.key)])


@reads("/count", methods=("GET", "POST"), body=CountBody, ok=COUNT_OK, summary="Count the namespace's records")
def count(_body: CountBody, namespace: str) -> tuple[Response, int]:
    """How many records the namespace holds (an admin token names the namespace in the body)."""
    return envelope(count_records(deps(), namespace))


@reads("/list", body=ListBody, ok=PAGE_OK, summary="List the namespace's records page by page")
def list_records(body: ListBody, namespace: str) -> tuple[Response, int]:
    """Records (id, key, filepath, md5, attrs) in id order, `limit` per page: send the answer's `next_after_id` as
    `after_id` for the next page, until it is null. For reconciling a catalog with imgsim."""
    page = list_page(deps(), namespace, body.after_id, body.limit)
    return envelope({"records": page.rows, "next_after_id": page.next_after_id})


@endpoint(
    api,
    "/export",
    right=ADMIN,
    body=ExportBody,
    tag="records",
    errors=WITH_BODY,
    ok=Ok(Export, "The window's rows of every namespace, and what the collection is."),
    summary="Read the rows of every namespace (admin)",
)
def export(body: ExportBody, _namespace: str) -> tuple[Response, int]:
    """The rows of EVERY namespace with `after` < id <= `upto`, at most `limit`, in id order (without vectors),
    the collection's name and embedding space, and its total row count: what `python main.py reindex --service URL`
    reads to copy the catalog of a running service into a new embedding space. Admin tokens only (403 for any
    other), since it answers every tenant's records. A window holding more than `limit` rows answers `limit` of
    them, not necessarily the smallest ids: read a narrower window then."""
    exported = export_rows(deps(), body.after, body.upto, body.limit)
    return envelope({"collection": exported.collection, "total": exported.total, "rows": exported.rows})


@writes("/add/batch", body=AddBatchBody, ok=ITEMS_OK, summary="Add many images in one request")
def add_batch(body: AddBatchBody, namespace: str) -> tuple[Response, int]:
    """Items are read with bounded concurrency, embedded in model batches and written together. The answer lists
    one result per item, in order, with the code and msg a single add of it would have given; the call answers
    200 whenever the request itself is well formed, even if items failed. `on_duplicate` applies to every item
    (with skip or reject, items are written one at a time, each checked against those before it)."""
    return envelope([outcome_view(o) for o in add_many(deps(), namespace, body.items, body.on_duplicate)])


@writes("/set/key", body=SetKeyBody, ok=KEY_SET_OK, summary="Make a key hold exactly these images")
def set_key(body: SetKeyBody, namespace: str) -> tuple[Response, int]:
    """Images not yet stored under the key are added, stored ones that are listed are kept (untouched), and the
    key's other images are deleted. If any item fails, nothing of the key is deleted. Answers the counts and each
    item's result."""
    synced = sync_key(deps(), namespace, body.key, body.items)
    return envelope(
        {
            "added": synced.added,
            "kept": synced.kept,
            "deleted": synced.deleted,
            "items": [outcome_view(o) for o in synced.outcomes],
        }
    )


@endpoint(
    api,
    "/duplicates/scan",
    right=WRITE,
    body=ScanBody,
    tag="duplicates",
    errors=WITH_BODY,
    ok=Ok(Scan, "The scan is queued: follow it with GET /duplicates/scan/{job}.", status=202),
    summary="Start a scan for the namespace's duplicate groups",
)
def duplicates_scan(body: ScanBody, namespace: str) -> tuple[Response, int]:
    """Queue a scan of the namespace (the records meeting `filter`, when given) for duplicate groups: records whose
    images have the same MD5 or score at least `min_score`, linked into groups. Answers 202 at once with the job;
    the scan runs in the background, one at a time, and its groups replace the namespace's previous ones when it is
    done. 409 `scan_running` while a scan of the namespace is queued or running. Results live in memory until the
    service restarts."""
    return envelope(scan_view(start_scan(deps(), namespace, body.min_score, body.filter)), code=202)


@endpoint(
    api,
    "/duplicates/scan/<job>",
    methods=("GET",),
    right=READ,
    body=NamespaceQuery,
    query=True,
    tag="duplicates",
    errors=(400, 404, *ALWAYS),
    ok=Ok(Scan, "The scan's state and progress."),
    summary="Follow a duplicate scan",
    path_params={"job": (JobId, "the job id POST /duplicates/scan answered")},
)
def duplicates_scan_state(_query: NamespaceQuery, namespace: str, job: str) -> tuple[Response, int]:
    """The scan's state (queued, running, done, failed), `records_done` of `records_total`, and when done the
    number of groups; when failed, `error`. 404 `scan_not_found` for a job of another namespace or one forgotten
    since a restart. An admin token names the namespace in the query string (`?namespace=shop-1`)."""
    return envelope(scan_view(scan_job(deps(), namespace, job)))


@reads(
    "/duplicates",
    body=DuplicatesBody,
    tag="duplicates",
    errors=(404, *WITH_BODY),
    ok=Ok(GroupsPage, "A page of the latest finished scan's groups, largest first."),
    summary="Page through the duplicate groups",
)
def duplicates(body: DuplicatesBody, namespace: str) -> tuple[Response, int]:
    """The groups of the namespace's latest finished scan, largest first, `limit` per page: send the answer's
    `next` as `cursor` for the next page, until it is null. Each record carries its best score to another member;
    records deleted since the scan are left out. 404 `no_scan` before any scan is done; 409 `scan_replaced` when
    a newer scan replaced the one the cursor belongs to (start again from the first page)."""
    page = groups_page(deps(), namespace, body.cursor, body.limit)
    return envelope({"groups": page.groups, "next": page.next, "scan": scan_view(page.scan)})


@endpoint(
    api,
    "/thumb/<record_id>",
    methods=("GET",),
    right=READ,
    body=NamespaceQuery,
    query=True,
    tag="records",
    errors=(400, 404, *ALWAYS),
    ok=Ok(bytes, "The thumbnail.", media_type="image/webp"),
    summary="The thumbnail of a stored record (for the ops console)",
    path_params={"record_id": (Id, "the record's id")},
)
def thumb(_query: NamespaceQuery, namespace: str, record_id: str) -> Response:
    """A WEBP picture at most 256 px a side of the record's image. Thumbnails are written when an image is stored
    and removed with the last record of that image; a record stored before thumbnails existed gets one on first
    view when its filepath is a readable copy of its image below PATH_ROOTS. Otherwise 404 (show a placeholder).
    An admin token names the namespace in the query string (`?namespace=shop-1`); a record of another namespace
    answers 404 like a missing one."""
    data = thumbnail(deps(), id_value(record_id), namespace)
    response = Response(data, mimetype="image/webp")
    # An id always names the same image (ids derive from namespace, key and MD5), so the browser may keep it a
    # while; `private`: it was fetched with the token, no shared cache may keep it.
    response.headers["Cache-Control"] = "private, max-age=86400"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@endpoint(
    api,
    "/whoami",
    methods=("GET",),
    right=None,
    body=None,
    tag="records",
    errors=(401, 500),
    ok=Ok(Whoami, "The calling token's namespace and rights."),
    summary="What this token may do",
)
def whoami() -> tuple[Response, int]:
    """The calling token's namespace (null: any, chosen per request with `namespace`) and its rights, weakest
    first. The console disables, saying why, the controls the token may not use. An open service (no token
    configured) admits everyone as an admin. It tells a token's holder nothing they could not learn by trying,
    and nothing about other tokens."""
    grant: Grant = g.grant  # set by the app's token check before every guarded endpoint
    return envelope({"namespace": grant.namespace, "rights": [r for r in (READ, WRITE, ADMIN) if grant.allows(r)]})
