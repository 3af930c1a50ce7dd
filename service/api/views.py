"""How results appear in answers. bogv's fields come first and unchanged; `attrs` is added only where a record has
attributes, so a client that never sends any gets exactly bogv's shapes.

The pydantic models below describe those shapes for the OpenAPI document (service/api/openapi.py); the
schemathesis fuzz (tests/test_openapi.py) checks every answer against them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from conf.errors import ApiError
from service.api.contract import Attrs, Id
from service.api.errors import status_of
from service.usecases.add import Added
from service.usecases.duplicates import GROUP_CAP, ScanJob
from service.usecases.search import Found

MD5 = Annotated[str, Field(pattern="^[0-9a-f]{32}$", description="MD5 of the image bytes")]
Count = Annotated[int, Field(ge=0)]


class Shape(BaseModel):
    """An answer's shape: exactly these fields."""

    model_config = ConfigDict(extra="forbid")


class Box(Shape):
    """A box in whole pixels of the image as decoded, after its EXIF orientation: left x, top y, width w, height h."""

    x: int = Field(ge=0)
    y: int = Field(ge=0)
    w: int = Field(ge=1)
    h: int = Field(ge=1)


REGION_OF_RECORD = "the part of the image the record's vector describes; null: the whole image"


class Hit(Shape):
    """A search hit."""

    id: Id
    key: str
    filepath: str
    score: float = Field(
        description="cosine similarity of the two embeddings, -1..1 (1.0: the same picture), 6 decimals"
    )
    match: Literal["exact", "duplicate", "similar"] = Field(
        description=(
            "the verdict on this hit: `exact` = the same image bytes as the query (same MD5); `duplicate` = score at "
            "or above the duplicate threshold in force (DUPLICATE_SCORE, else the one `python main.py calibrate DIR` "
            "stored with the collection, else the model's default; /ready shows it); `similar` = anything else"
        )
    )
    attrs: Attrs | None = Field(None, description="present when the record has attributes")


class Record(Shape):
    """A stored record, as get/key shows it."""

    id: Id
    key: str
    filepath: str
    md5: MD5
    attrs: Attrs | None = Field(None, description="present when the record has attributes")
    region: Box | None = Field(description=REGION_OF_RECORD)


class ListedRecord(Shape):
    """A stored record, as list, duplicates and conflicts show it."""

    id: Id
    key: str
    filepath: str
    md5: MD5
    attrs: Attrs = Field(description="{} when the record has none")
    region: Box | None = Field(description=REGION_OF_RECORD)


class Page(Shape):
    """A page of records in id order."""

    records: list[ListedRecord]
    next_after_id: Id | None = Field(description="send as after_id for the next page; null on the last page")


class ExportedRow(ListedRecord):
    """A stored row as export answers it: every field a reindex copies, its namespace too."""

    namespace: str = Field(description='the record\'s namespace ("" the default one)')


class ExportedCollection(Shape):
    """The collection the service reads and writes."""

    name: str = Field(description="the collection itself (not the alias MILVUS_COLLECTION may name)")
    alias: str | None = Field(description="MILVUS_COLLECTION when it names an alias of the collection, else null")
    space: str | None = Field(description="the fingerprint of the embedding space its vectors are in")
    space_summary: str = Field(description="that space, readable (model, weights, preprocessing, precision)")
    tenancy: bool = Field(description="whether it has namespaces and attrs (false: made by an earlier imgsim)")
    regions: bool = Field(description="whether it stores regions (false: made by an earlier imgsim)")


class Export(Shape):
    """A window of the rows of every namespace."""

    collection: ExportedCollection
    total: Count = Field(description="rows in the collection, in every namespace")
    rows: list[ExportedRow] = Field(description="the window's rows (at most `limit`), in id order")


class ItemResult(Shape):
    """One item's fate in add/batch or set/key."""

    code: int = Field(
        description="the status a single add of this item would have answered (200, 400, 403, 409, 413, 415)"
    )
    msg: str = Field(min_length=1, description="the msg that single add would have answered")
    id: Id | None = Field(
        description="the record's id (for a duplicate: the record it duplicates); null when the item failed"
    )
    created: bool = Field(description="true when this item stored a new record")
    region: Box | None = Field(
        description="the box of the image the record's vector describes (the whole image when the item named no "
        "region); null when the item failed"
    )


class ScanError(Shape):
    """Why a scan failed."""

    reason: str = Field(description="machine-readable, as the `reason` of an error answer (not_ready...)")
    msg: str = Field(min_length=1)


class RunningScan(Shape):
    """The scan a 409 scan_running refers to: the namespace's queued or running job, to follow instead."""

    job: Annotated[str, Field(pattern="^[0-9a-f]{16}$", description="the job id")]
    state: Literal["queued", "running"]


class Scan(Shape):
    """A duplicate scan job and where it is."""

    job: Annotated[str, Field(pattern="^[0-9a-f]{16}$", description="the job id")]
    state: Literal["queued", "running", "done", "failed"] = Field(
        description="queued (another namespace's scan runs first), running, done or failed"
    )
    namespace: str
    min_score: float = Field(description="the score at or above which two records are duplicates in this scan")
    filter: dict[str, Any] | None = Field(description="the attribute filter the scan was limited to")
    records_done: Count = Field(description="records compared with every other so far (reading comes first)")
    records_total: Count = Field(description="records the scan compares (0 until they are counted)")
    groups: Count | None = Field(description="how many groups it found; null until done")
    grouped_records: Count | None = Field(description="how many records are in some group; null until done")
    started: str | None = Field(description="when it started running (ISO 8601, UTC); null while queued")
    finished: str | None = Field(description="when it finished or failed (ISO 8601, UTC)")
    seconds: float | None = Field(description="how long it ran; null until done")
    error: ScanError | None = Field(description="why it failed; null unless failed")


class GroupRecord(ListedRecord):
    """A record of a duplicate group."""

    score: float = Field(description="its best score to another member of the group (1.0: the same image bytes)")


class Group(Shape):
    """Records linked by duplicate pairs, best score first."""

    size: Annotated[int, Field(ge=2)] = Field(description="how many records the group holds")
    capped: bool = Field(description=f"true when the group holds more records than it lists ({GROUP_CAP} at most)")
    records: list[GroupRecord] = Field(min_length=2, max_length=GROUP_CAP)


class GroupsPage(Shape):
    """A page of duplicate groups, largest first."""

    groups: list[Group]
    next: str | None = Field(description="send as `cursor` for the next page; null on the last page")
    scan: Scan = Field(description="the scan the groups come from")


class SetKeyResult(Shape):
    """What set/key did."""

    added: Count
    kept: Count
    deleted: Count = Field(description="0 whenever an item failed: then nothing of the key is deleted")
    items: list[ItemResult]


class Alive(Shape):
    """The process answers."""

    status: Literal["alive"]


class Whoami(Shape):
    """What the calling token may do."""

    namespace: str | None = Field(
        description="the namespace the token is bound to; null: any (an admin token names "
        "it per request with `namespace`)"
    )
    rights: list[Literal["read", "write", "admin"]] = Field(
        description='weakest first: ["read"], ["read", "write"] or ["read", "write", "admin"]'
    )


class ModelInfo(BaseModel):
    """The model in force."""

    name: Literal["resnet50", "efficientnet-lite0"]
    weights: Literal["imagenet", "random", "local file"]
    dim: int
    resize: Literal["squash", "center-crop", "pad"]
    pooling: Literal["avg", "gem"]
    trim: Literal["on", "off"] = Field(description="IMAGE_TRIM: flat margins cropped before resizing")
    engine: Literal["openvino", "tensorflow"]
    precision: str = Field(
        description="the arithmetic really in force: fp32, bf16, int8 (OpenVINO runs bf16 as fp32 on CPUs without bf16)"
    )
    threads: int = Field(description="threads one model batch runs on")
    fingerprint: str = Field(
        pattern="^[0-9a-f]{16}$",
        description=(
            "the embedding space: vectors are comparable only within one fingerprint; it is recorded on the collection"
        ),
    )
    space: str = Field(
        description="the fingerprint's parts, readable: model, weights, input, resize, pooling, trim, numeric space"
    )


class MilvusInfo(BaseModel):
    """The Milvus in use."""

    target: str
    collection: str  # the collection read: MILVUS_COLLECTION, or the one its alias points at
    alias: str | None  # MILVUS_COLLECTION when it names an alias
    server_version: str
    vector_index: str
    key_index: str


class BatchStats(BaseModel):
    """One stage's micro-batching since start."""

    batches: Count
    requests: Count
    busy_seconds: float = Field(ge=0)


class Batching(BaseModel):
    """Micro-batching since start, per stage (embed: the model; search: Milvus): batches run, requests in them,
    and seconds the stage's worker was busy. requests/batches is the mean batch size; busy_seconds over uptime
    is how busy the model is."""

    embed: BatchStats
    search: BatchStats


class DuplicateInfo(Shape):
    """The duplicate threshold in force."""

    score: float = Field(description="hits scoring at least this are `duplicate`")
    source: str = Field(description="DUPLICATE_SCORE, `calibrated on N images at TIME (...)`, or the model's default")


class Readiness(BaseModel):
    """What /ready reports."""

    model: ModelInfo
    milvus: MilvusInfo
    batching: Batching
    duplicate: DuplicateInfo


def found_view(found: Found) -> dict[str, Any]:
    """A search hit: id, key, filepath, score, match (and attrs when the record has some)."""
    hit = found.hit
    view: dict[str, Any] = {
        "id": hit.id,
        "key": hit.key,
        "filepath": hit.filepath,
        "score": hit.score,
        "match": found.match,
    }
    if hit.attrs:
        view["attrs"] = hit.attrs
    return view


def record_view(record: dict[str, Any]) -> dict[str, Any]:
    """A stored record as get/key shows it: id, key, filepath, md5 (and attrs when it has some), region."""
    view = {"id": record["id"], "key": record["key"], "filepath": record["filepath"], "md5": record["md5"]}
    if record.get("attrs"):
        view["attrs"] = record["attrs"]
    view["region"] = record.get("region")
    return view


def outcome_view(outcome: Added | ApiError) -> dict[str, Any]:
    """One item of a batch or sync: the code and msg a single add would have answered, its id, created, and the box
    its vector describes."""
    if isinstance(outcome, ApiError):
        data = outcome.data if isinstance(outcome.data, dict) else {}
        return {"code": status_of(outcome), "msg": outcome.msg, "id": data.get("id"), "created": False, "region": None}
    msg = "success" if outcome.duplicate_of is None else duplicate_message(outcome.duplicate_of)
    return {"code": 200, "msg": msg, "id": outcome.id, "created": outcome.created, "region": outcome.region}


def scan_view(job: ScanJob) -> dict[str, Any]:
    """A scan job as answers show it (Scan)."""
    return {
        "job": job.job,
        "state": job.state.value,
        "namespace": job.namespace,
        "min_score": job.min_score,
        "filter": job.filter,
        "records_done": job.records_done,
        "records_total": job.records_total,
        "groups": job.group_count,
        "grouped_records": job.grouped_records,
        "started": job.started,
        "finished": job.finished,
        "seconds": None if job.seconds is None else round(job.seconds, 3),
        "error": job.error,
    }


def duplicate_message(other: dict[str, Any]) -> str:
    """The msg of an add skipped as a duplicate (on_duplicate=skip)."""
    return (
        f"skipped: this image is already stored under key {other['key']!r} (id {other['id']}); nothing was "
        "stored (on_duplicate=skip)"
    )
