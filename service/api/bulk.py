"""HTTP routes that take many images at once: add/batch and set/key."""

from __future__ import annotations

from flask import Blueprint, Response

from service.api.auth import acting_namespace
from service.api.envelope import envelope
from service.api.fields import request_fields, required_key
from service.api.items import add_requests, items_value
from service.api.options import on_duplicate_value
from service.api.routes import deps
from service.api.tokens import WRITE
from service.api.views import outcome_view
from service.usecases.add import OnDuplicate
from service.usecases.batch import add_batch
from service.usecases.sync import set_key as sync_key

bulk = Blueprint("bulk", __name__, url_prefix="/api/image/sim")


@bulk.post("/add/batch")
def add_batch_route() -> tuple[Response, int]:
    """Add up to MAX_BATCH_ITEMS images; 200 with one result per item, in order, whatever each item's fate."""
    body = request_fields()
    namespace = acting_namespace(body, WRITE)
    settings = deps().settings
    policy = on_duplicate_value(body)
    items = add_requests(items_value(body, settings.max_batch_items), settings, policy)
    return envelope([outcome_view(o) for o in add_batch(deps(), namespace, items, policy)])


@bulk.post("/set/key")
def set_key() -> tuple[Response, int]:
    """Make a key hold exactly the listed images: added, kept and deleted counts, and each item's result."""
    body = request_fields()
    namespace = acting_namespace(body, WRITE)
    settings = deps().settings
    key = required_key(body, settings.max_key_length)
    items = add_requests(items_value(body, settings.max_batch_items), settings, OnDuplicate.ALLOW, key)
    synced = sync_key(deps(), namespace, key, items)
    return envelope({"added": synced.added, "kept": synced.kept, "deleted": synced.deleted,
                     "items": [outcome_view(o) for o in synced.outcomes]})
