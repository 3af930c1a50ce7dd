"""How results appear in answers. bogv's fields come first and unchanged; `attrs` is added only where a record has
attributes, so a client that never sends any gets exactly bogv's shapes."""

from __future__ import annotations

from typing import Any

from conf.errors import ApiError
from service.api.errors import status_of
from service.usecases.add import Added
from service.usecases.search import Found


def found_view(found: Found) -> dict[str, Any]:
    """A search hit: id, key, filepath, score, match (and attrs when the record has some)."""
    hit = found.hit
    view: dict[str, Any] = {"id": hit.id, "key": hit.key, "filepath": hit.filepath, "score": hit.score,
                            "match": found.match}
    if hit.attrs:
        view["attrs"] = hit.attrs
    return view


def record_view(record: dict[str, Any]) -> dict[str, Any]:
    """A stored record as get/key shows it: id, key, filepath, md5 (and attrs when it has some)."""
    view = {"id": record["id"], "key": record["key"], "filepath": record["filepath"], "md5": record["md5"]}
    if record.get("attrs"):
        view["attrs"] = record["attrs"]
    return view


def outcome_view(outcome: Added | ApiError) -> dict[str, Any]:
    """One item of a batch or sync: the code and msg a single add would have answered, its id, and created."""
    if isinstance(outcome, ApiError):
        data = outcome.data if isinstance(outcome.data, dict) else {}
        return {"code": status_of(outcome), "msg": outcome.msg, "id": data.get("id"), "created": False}
    msg = "success" if outcome.duplicate_of is None else duplicate_message(outcome.duplicate_of)
    return {"code": 200, "msg": msg, "id": outcome.id, "created": outcome.created}


def duplicate_message(other: dict[str, Any]) -> str:
    """The msg of an add skipped as a duplicate (on_duplicate=skip)."""
    return (f"skipped: this image is already stored under key {other['key']!r} (id {other['id']}); nothing was "
            "stored (on_duplicate=skip)")
