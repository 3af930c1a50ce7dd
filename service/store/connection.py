"""One collection on one Milvus: the client, the schema, and the one way to call it.

* The pymilvus client, imported without its environment side effect, opened with keepalive the server accepts.
* Capabilities, found out by asking Milvus rather than trusting its documentation (a partition key that
  works with upsert, grouping search).
* The collection's schema and indexes: created when missing, checked when present, index types negotiated;
  the embedding space it holds and the calibrated duplicate threshold (service.store.meta), read and written.
* Connection: connected on first use, loaded when released, calls retried while Milvus is away.
* Aliases: MILVUS_COLLECTION may name an alias. The connection resolves it and calls the collection behind
  it by its own name, so a moved alias never sends a query to a collection nobody checked; it looks again
  where the alias points (before a write, after a failed call, else every ALIAS_CHECK seconds at most) and
  follows a move to a collection of its embedding space, or answers CollectionMoved while it points at
  another space.
  point_alias moves an alias (the blue/green handover after a reindex).

Every module of this package takes pymilvus' names from here, so the import-time workaround below runs
before pymilvus is first imported. Collection-level operations (an alias to switch, a collection to build
beside the live one) belong here too.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from conf.errors import CollectionMoved, NotReady, StartupError
from conf.settings import Consistency, Settings
from service.store.filters import REGION_FIELD, Layout, namespace_expr
from service.store.meta import (
    DUPLICATE_PROPERTY,
    DuplicateThreshold,
    SpaceTag,
    new_collection_description,
    pick_threshold,
    read_sidecar,
    space_mismatch,
    stored_space,
    write_sidecar,
)

# pymilvus parses MILVUS_URI from the environment (and from .env) when it is imported, and
# rejects a Milvus Lite file path there. imgsim passes the URI explicitly, so hide the
# variable from pymilvus during its import and put it back afterwards.
_saved_uri = os.environ.get("MILVUS_URI")
os.environ["MILVUS_URI"] = ""  # empty (not absent) so pymilvus' load_dotenv cannot fill it from .env
from pymilvus import DataType, MilvusException  # noqa: E402 - must follow the line above

# Re-exported: the store's other modules take MilvusClient from here, after the import workaround above.
from pymilvus import MilvusClient as MilvusClient  # noqa: E402 - must follow the workaround too

if _saved_uri is None:
    del os.environ["MILVUS_URI"]
else:
    os.environ["MILVUS_URI"] = _saved_uri


log = logging.getLogger(__name__)

T = TypeVar("T")
# Told of every Milvus call: (operation, seconds including retries, failed). Metrics are fed through it.
CallObserver = Callable[[str, float, bool], None]

QUERY_PAGE = 16384  # the largest `limit` a Milvus query accepts
MILVUS_LEVELS = {Consistency.SESSION: "Session", Consistency.STRONG: "Strong"}


# --- the client ---------------------------------------------------------------------------
# gRPC keepalive for Milvus Lite. pymilvus pings every 10 s, also while no call is running
# (keepalive_time_ms 10000, keepalive_permit_without_calls). A Milvus server allows that (its
# enforcement policy: pings at least 5 s apart, with or without calls). Milvus Lite's in-process
# gRPC server keeps gRPC's own policy: no pings while no call is running, and during a call at
# most one per 5 minutes (grpc.http2.min_recv_ping_interval_without_data_ms); after two pings too
# many it closes the connection with GOAWAY ENHANCE_YOUR_CALM "too_many_pings" (~1-2 minutes after
# the last request), and the next call pays for a reconnect. So: ping only during calls, every 5 min.
LITE_KEEPALIVE: dict[str, Any] = {"grpc.keepalive_time_ms": 300_000, "grpc.keepalive_permit_without_calls": False}


def open_client(settings: Settings) -> MilvusClient:
    """A MilvusClient for MILVUS_URI with the configured credentials, database and timeout."""
    s = settings
    extra = {"grpc_options": LITE_KEEPALIVE} if s.milvus_is_lite else {}
    return MilvusClient(
        uri=s.milvus_uri,
        token=s.milvus_token.get_secret_value() if s.milvus_token else "",
        user=s.milvus_user or "",
        password=s.milvus_password.get_secret_value() if s.milvus_password else "",
        db_name=s.milvus_db or "",
        timeout=s.milvus_timeout,
        **extra,
    )


def describe_target(settings: Settings) -> str:
    """Where the vectors live, for logs and messages (never includes credentials)."""
    uri = settings.milvus_uri
    return f"Milvus Lite file {uri}" if settings.milvus_is_lite else f"Milvus at {uri.split('@')[-1]}"


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying: Milvus unreachable, slow or restarting."""
    if isinstance(exc, grpc.RpcError):
        return True
    if isinstance(exc, MilvusException):
        text = str(exc).lower()
        return any(
            word in text
            for word in (
                "connect",
                "unavailable",
                "deadline",
                "timeout",
                "not ready",
                "closed channel",
                "server is not",
                "node not found",
                "context done",
            )
        )
    return isinstance(exc, (ConnectionError, TimeoutError))


def not_loaded(exc: BaseException) -> bool:
    """True when a call failed because the collection is not loaded."""
    # A restarted Milvus server can come back with the collection released: every search and
    # query then fails with "collection not loaded" (code 101) until someone loads it again.
    return isinstance(exc, MilvusException) and "not loaded" in str(exc).lower()


def short(exc: BaseException) -> str:
    """An exception as one line of at most ~300 characters, for logs and messages."""
    text = " ".join(str(exc).split())
    return (text[:300] + "...") if len(text) > 300 else text or type(exc).__name__


# --- capabilities -----------------------------------------------------------------------
# Two features matter for namespaces and one-hit-per-key searches, and the engines imgsim runs on
# differ in both:
# * A partition key on `namespace` (a search then scans one tenant's partitions). Milvus Lite and
#   2.3+ servers accept the schema, but a 2.3.5 server misroutes rows written by *upsert* into a
#   partition-key collection: a filter on the namespace then finds almost none of them. imgsim
#   writes with upsert, so the only trustworthy test is to do exactly that in a scratch collection.
# * Grouping search (`group_by_field`). Milvus Lite and 2.4+ servers group; a 2.3 server accepts the
#   parameter and silently ignores it, so the version decides (and the search still checks each
#   answer: see service.store.search).
PROBE_NAMESPACES = tuple(f"probe-{i}" for i in range(8)) + ("",)
# One probe per Milvus (URI and server version) per process: it costs a server ~6 s.
_probed: dict[tuple[str, str], bool] = {}
_probe_lock = threading.Lock()


def grouping_supported(server_version: str) -> bool:
    """Whether a search with group_by_field really groups on this Milvus (Lite, or a 2.4+ server)."""
    if server_version.startswith("milvus_lite"):
        return True
    match = re.search(r"(\d+)\.(\d+)", server_version)
    return match is not None and (int(match.group(1)), int(match.group(2))) >= (2, 4)


def partition_key_works(client: MilvusClient, settings: Settings, server_version: str) -> bool:
    """Whether rows upserted into a collection partitioned by `namespace` are found by a namespace filter."""
    cache_key = (settings.milvus_uri, server_version)
    with _probe_lock:
        if cache_key not in _probed:
            works = _probe(client, settings)
            if works is None:
                return False  # the probe itself failed: no verdict to remember
            _probed[cache_key] = works
        return _probed[cache_key]


def _probe(client: MilvusClient, settings: Settings) -> bool | None:
    name, t = f"imgsim_probe_{uuid.uuid4().hex[:12]}", settings.milvus_timeout
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("namespace", DataType.VARCHAR, max_length=64, is_partition_key=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
    try:
        client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong", timeout=t)
        client.upsert(
            name,
            [{"id": i + 1, "namespace": ns, "vector": [1.0, 0.0]} for i, ns in enumerate(PROBE_NAMESPACES)],
            timeout=t,
        )
        found = [
            len(
                client.query(
                    name,
                    filter=namespace_expr(ns),
                    output_fields=["id"],
                    limit=10,
                    consistency_level="Strong",
                    timeout=t,
                )
            )
            for ns in PROBE_NAMESPACES
        ]
        works = found == [1] * len(PROBE_NAMESPACES)
        if not works:
            log.warning(
                "this Milvus loses track of rows upserted into a collection partitioned by namespace "
                "(found %s of one row per namespace); namespaces use a filter instead",
                found,
            )
        return works
    except Exception as exc:  # noqa: BLE001 - any refusal means "no partition key here"
        log.info("no partition key on namespace (%s); namespaces use a filter", short(exc))
        return None
    finally:
        with suppress(Exception):  # a leftover probe collection is harmless
            client.drop_collection(name, timeout=t)


# --- schema ---------------------------------------------------------------------------
# New collections have the tenancy fields `namespace` (a partition key where the server handles one
# correctly, see the capabilities above) and `attrs` (JSON). A collection created by an earlier imgsim
# has neither: it keeps working as the default namespace without attributes (Layout.tenancy is False,
# see service.store.filters.Scope). New collections also have `region` (JSON: the box of the photo the
# record's vector describes, {} for the whole image); one created before regions lacks it and keeps
# working with whole-image records (Layout.regions is False).
MD5_LEN = 32
FILEPATH_MAX_CHARS = 2048
# Milvus counts VARCHAR length in bytes; a character is at most 4 bytes in UTF-8.
_UTF8_MAX = 4
NAMESPACE_MAX_CHARS = 64  # ASCII only (NAMESPACE_RE), so characters are bytes
FIELD_TYPES = {
    "id": DataType.INT64,
    "key": DataType.VARCHAR,
    "md5": DataType.VARCHAR,
    "filepath": DataType.VARCHAR,
    "vector": DataType.FLOAT_VECTOR,
}
# Fields of collections created since namespaces exist; a collection has both or neither.
TENANCY_FIELDS = {"namespace": DataType.VARCHAR, "attrs": DataType.JSON}
# The field of collections created since regions exist; its absence is no error either.
REGION_FIELDS = {REGION_FIELD: DataType.JSON}
# (index type, build params), best first; the first one the server accepts is used.
VECTOR_INDEXES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("HNSW", {"M": 16, "efConstruction": 200}),
    ("AUTOINDEX", {}),
    ("FLAT", {}),
)
# INVERTED is the 2.4+ scalar index; 2.3 servers only know Trie for VARCHAR.
KEY_INDEXES = ("INVERTED", "Trie")


@dataclass(frozen=True)
class Indexes:
    """The index types in use on the collection ('' for none)."""

    vector: str
    key: str


@dataclass(frozen=True)
class Prepared:
    """The collection a connection calls, and what it offers."""

    collection: str  # the collection's own name (behind the alias, when MILVUS_COLLECTION names one)
    alias: str | None  # MILVUS_COLLECTION when it names an alias, else None
    indexes: Indexes
    layout: Layout


def resolve_name(client: MilvusClient, name: str, timeout: float) -> tuple[str, dict[str, Any] | None]:
    """(the collection `name` is, or the alias `name` points at; its description), or (name, None) when
    neither exists.

    A Milvus 2.3 server and Milvus Lite both say has_collection True for an alias and describe the collection
    behind it under that collection's own name: the name in the description tells an alias apart.
    """
    if not client.has_collection(name, timeout=timeout):
        return name, None
    desc = client.describe_collection(name, timeout=timeout)
    return str(desc.get("collection_name") or name), desc


def prepare_collection(
    client: MilvusClient, settings: Settings, dim: int, space: SpaceTag | None = None, server_version: str = ""
) -> Prepared:
    """Create MILVUS_COLLECTION and its indexes if missing (or check an existing one), then load it.

    With `space`, a new collection records it and an existing one must carry it
    (check_space); `server_version` keys the partition-key probe. When MILVUS_COLLECTION
    names an alias, the collection it points at is prepared (never one created under the
    alias's name). Raises StartupError when an existing collection has an incompatible
    schema, vector metric or embedding space, or when the server accepts none of the vector
    index types; CollectionMoved (service waits) when an alias points at such a collection.
    """
    name = settings.milvus_collection
    collection, desc = resolve_name(client, name, settings.milvus_timeout)
    alias = name if collection != name else None
    indexes, layout = prepare_target(client, settings, dim, space, server_version, collection, alias, desc)
    return Prepared(collection, alias, indexes, layout)


def prepare_target(
    client: MilvusClient,
    settings: Settings,
    dim: int,
    space: SpaceTag | None,
    server_version: str,
    name: str,
    alias: str | None,
    desc: dict[str, Any] | None,
) -> tuple[Indexes, Layout]:
    """prepare_collection for collection `name` (reached through `alias`, described as `desc`; None: create it)."""
    t = settings.milvus_timeout
    created = desc is None
    if desc is None:
        layout = Layout(tenancy=True, partition_key=partition_key_works(client, settings, server_version), regions=True)
        # Strong consistency: a search right after an add or delete sees it (read-after-write).
        client.create_collection(
            name,
            schema=collection_schema(settings, dim, new_collection_description(space), layout.partition_key),
            consistency_level="Strong",
            timeout=t,
        )
        log.info(
            "created collection %r in %s (namespace %s)",
            name,
            describe_target(settings),
            "partition key" if layout.partition_key else "filtered",
        )
    elif alias is not None:
        # An alias is expected to move: whatever its collection is unfit for, the service waits for it to come back.
        stored, _ = stored_space(desc)
        if space is not None and stored is not None and stored != space.digest:
            raise alias_moved(settings, alias, name, desc, f"this service embeds into {space.digest} ({space.summary})")
        try:
            if space is not None:
                check_space(client, settings, space, desc, name)  # adopts a collection without a recorded space
            layout = _check_schema(desc, settings, dim, name)
        except StartupError as exc:
            raise alias_moved(settings, alias, name, desc, str(exc)) from None
    else:
        layout = _check_schema(desc, settings, dim, name)
    if space is not None and alias is None:
        check_space(client, settings, space, None if created else desc, name)
    existing = set(client.list_indexes(name, timeout=t))
    if "vector" not in existing:
        _create_first_accepted(client, settings, name, "vector", [(n, p, "IP") for n, p in VECTOR_INDEXES], True)
    if "key" not in existing:
        _create_first_accepted(client, settings, name, "key", [(n, {}, None) for n in KEY_INDEXES], False)
    if layout.tenancy and not layout.partition_key and "namespace" not in existing:
        # Without partitions every namespace filter would scan the collection; a scalar index narrows it.
        _create_first_accepted(client, settings, name, "namespace", [(n, {}, None) for n in KEY_INDEXES], False)
    vec = client.describe_index(name, "vector", timeout=t) or {}
    if str(vec.get("metric_type", "IP")).upper() != "IP":
        raise StartupError(
            _incompatible(
                settings,
                f"its vector index uses metric {vec.get('metric_type')}, but imgsim needs IP (cosine on unit vectors)",
                name,
            )
        )
    key = client.describe_index(name, "key", timeout=t) or {}
    client.load_collection(name, timeout=max(t, 60))
    return Indexes(vector=str(vec.get("index_type", "?")), key=str(key.get("index_type", ""))), layout


def collection_schema(settings: Settings, dim: int, description: str, partition_key: bool = False) -> Any:
    """The fields imgsim writes, with `description` on the collection (and `namespace` as its partition key)."""
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=description)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("namespace", DataType.VARCHAR, max_length=NAMESPACE_MAX_CHARS, is_partition_key=partition_key)
    schema.add_field("key", DataType.VARCHAR, max_length=settings.max_key_length * _UTF8_MAX)
    schema.add_field("md5", DataType.VARCHAR, max_length=MD5_LEN)
    schema.add_field("filepath", DataType.VARCHAR, max_length=FILEPATH_MAX_CHARS * _UTF8_MAX)
    schema.add_field("attrs", DataType.JSON)
    # JSON rather than four ints: one field, {} for the whole image (Milvus 2.3 has no nullable fields).
    schema.add_field(REGION_FIELD, DataType.JSON)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    return schema


def _create_first_accepted(
    client: MilvusClient,
    settings: Settings,
    name: str,
    field: str,
    candidates: Sequence[tuple[str, dict[str, Any], str | None]],
    required: bool,
) -> None:
    target = describe_target(settings)
    errors = []
    for index_type, params, metric in candidates:
        index = client.prepare_index_params()
        extra = {"metric_type": metric} if metric else {}
        index.add_index(field_name=field, index_name=field, index_type=index_type, params=params, **extra)
        try:
            client.create_index(name, index, timeout=settings.milvus_timeout)
            return
        except MilvusException as exc:
            errors.append(f"{index_type}: {short(exc)}")
            log.info("%s does not accept a %s index on %r; trying the next kind", target, index_type, field)
    if required:
        raise StartupError(
            f"{target} accepted none of the vector index types {[c[0] for c in candidates]}: {'; '.join(errors)}"
        )
    log.warning("no scalar index on %r (%s); filters on it will scan", field, "; ".join(errors))


def _check_schema(desc: dict[str, Any], settings: Settings, dim: int, collection: str | None = None) -> Layout:
    """The layout of a described collection (`collection`, default MILVUS_COLLECTION); StartupError when unfit."""
    collection = collection or settings.milvus_collection
    fields = {f["name"]: f for f in desc.get("fields", [])}
    tenancy = any(name in fields for name in TENANCY_FIELDS)
    regions = REGION_FIELD in fields
    wanted = {**FIELD_TYPES, **(TENANCY_FIELDS if tenancy else {}), **(REGION_FIELDS if regions else {})}
    for name, dtype in wanted.items():
        if name not in fields:
            why = f"it has no field {name!r} (fields: {sorted(fields)})"
            raise StartupError(_incompatible(settings, why, collection))
        if fields[name]["type"] != dtype:
            why = f"field {name!r} is {fields[name]['type']!r}, not {dtype!r}"
            raise StartupError(_incompatible(settings, why, collection))
    if not fields["id"].get("is_primary") or fields["id"].get("auto_id"):
        raise StartupError(_incompatible(settings, "'id' must be the primary key with auto_id off", collection))
    found = int(fields["vector"].get("params", {}).get("dim", 0))
    if found != dim:
        raise StartupError(_incompatible(settings, f"its vectors have dimension {found}, not {dim}", collection))
    extra = sorted(set(fields) - set(wanted))
    if extra:
        raise StartupError(_incompatible(settings, f"it has fields imgsim does not write: {extra}", collection))
    if not tenancy:
        log.warning(
            "collection %r was created by an earlier imgsim without namespaces and attributes: it serves the "
            "default namespace only (see the README, 'Namespaces')",
            collection,
        )
    if not regions:
        log.warning(
            "collection %r was created by an earlier imgsim without regions: its records describe whole "
            "images, and an add with a region is refused (searching with a region works)",
            collection,
        )
    return Layout(
        tenancy=tenancy, partition_key=bool(fields.get("namespace", {}).get("is_partition_key")), regions=regions
    )


def _incompatible(settings: Settings, why: str, name: str | None = None) -> str:
    return (
        f"collection {name or settings.milvus_collection!r} in {describe_target(settings)} has an incompatible "
        f"schema: {why}. imgsim will not write into it. Set MILVUS_COLLECTION to a new name, or drop that "
        "collection if it is safe to lose."
    )


# --- what imgsim records on the collection (service.store.meta) ------------------------
def check_space(
    client: MilvusClient,
    settings: Settings,
    space: SpaceTag,
    existing: dict[str, Any] | None,
    collection: str | None = None,
) -> None:
    """Record the space on a new collection (`existing` None); on an existing one, given its description
    (describe_collection), refuse another space and adopt a pre-fingerprint one.

    `collection`: the collection's own name (default MILVUS_COLLECTION). Raises StartupError naming both
    spaces and the ways out on a mismatch.
    """
    name = collection or settings.milvus_collection
    if existing is None:
        if not _set_properties(client, settings, space.properties(), name):
            log.warning(
                "%s does not accept collection properties; the embedding space of %r is recorded in its "
                "description only",
                describe_target(settings),
                name,
            )
        return
    stored, summary = stored_space(existing)
    if stored is None:
        log.warning(
            "collection %r in %s has no embedding-space fingerprint (created before imgsim recorded one): "
            "adopting it as %s. If its vectors came from another model, weights or preprocessing, "
            "searches will be wrong: re-import into a new MILVUS_COLLECTION.",
            name,
            describe_target(settings),
            space,
        )
        _set_properties(client, settings, space.properties(), name)
        return
    if stored != space.digest:
        raise StartupError(
            space_mismatch(f"collection {name!r} in {describe_target(settings)}", space, stored, summary)
        )


def read_threshold(
    client: MilvusClient, settings: Settings, space: SpaceTag, collection: str | None = None
) -> DuplicateThreshold | None:
    """The threshold calibrated for this collection (default MILVUS_COLLECTION) in this space: from its
    properties, else the sidecar file."""
    name = collection or settings.milvus_collection
    props = client.describe_collection(name, timeout=settings.milvus_timeout).get("properties") or {}
    return pick_threshold([props.get(DUPLICATE_PROPERTY), read_sidecar(settings, space)], space)


def write_threshold(
    client: MilvusClient, settings: Settings, threshold: DuplicateThreshold, collection: str | None = None
) -> str:
    """Store a calibrated threshold with the collection (default MILVUS_COLLECTION), or in the sidecar file;
    returns where it went."""
    name = collection or settings.milvus_collection
    if _set_properties(client, settings, {DUPLICATE_PROPERTY: threshold.as_json()}, name):
        return f"property {DUPLICATE_PROPERTY} of collection {name!r}"
    return write_sidecar(settings, threshold)


def _set_properties(client: MilvusClient, settings: Settings, properties: dict[str, str], collection: str) -> bool:
    """Set collection properties; False (logged) when the server refuses."""
    try:
        client.alter_collection_properties(collection, properties=properties, timeout=settings.milvus_timeout)
        return True
    except MilvusException as exc:
        log.info("%s refused collection properties %s (%s)", describe_target(settings), sorted(properties), short(exc))
        return False


# --- aliases ----------------------------------------------------------------------------
# Where MILVUS_COLLECTION's alias points is looked up again at most this often (seconds) while the service
# serves, and after a failed call: a describe per request would double a search's Milvus round trips, and a
# switch of the alias is rare.
ALIAS_CHECK = 2.0
# ...and this often while it waits for the alias to come to its space (it answers nothing then, so a look
# costs no answer time): in a blue/green handover the waiting service takes over a fraction of a second
# after the switch, and a client that tries the other service on a 503 finds one that answers.
ALIAS_WAIT_CHECK = 0.25


def alias_moved(settings: Settings, alias: str, collection: str, desc: dict[str, Any], why: str) -> CollectionMoved:
    """The refusal while `alias` points at `collection` (described as `desc`), unfit for this service for `why`."""
    stored, summary = stored_space(desc)
    space = f"embedding space {stored} ({summary or 'no summary recorded'})" if stored else "no recorded space"
    return CollectionMoved(
        f"MILVUS_COLLECTION {alias!r} is an alias that now points at collection {collection!r} in "
        f"{describe_target(settings)}, of {space}; {why}, so it will not answer from it. Restart the service "
        "with the model settings of that space (MODEL_NAME, MODEL_WEIGHTS, MODEL_PRECISION, IMAGE_RESIZE, "
        "IMAGE_TRIM, MODEL_POOLING), or point the alias back at a collection of this service's space: it "
        "serves again at once."
    )


def point_alias(client: MilvusClient, settings: Settings, alias: str, collection: str) -> str:
    """Point `alias` at `collection` in one step (create_alias when new, alter_alias when it exists); returns
    what was done. Raises StartupError when `alias` names a collection, or when the Milvus refuses aliases."""
    t, target = settings.milvus_timeout, describe_target(settings)
    if alias == collection:
        raise StartupError(f"{alias!r} is the collection itself; an alias needs a name of its own")
    now_at, desc = resolve_name(client, alias, t)
    if now_at == alias and desc is not None:
        raise StartupError(
            f"{alias!r} is a collection in {target}, not an alias: a name is either one. Choose another alias "
            f"name, or (once nothing reads it) drop collection {alias!r} and run this again."
        )
    if now_at == collection:
        return f"alias {alias}: already points at {collection}"
    try:
        if desc is None:  # no such alias yet
            client.create_alias(collection, alias, timeout=t)
            return f"alias {alias}: created, -> {collection}"
        client.alter_alias(collection, alias, timeout=t)  # one step on the server: no moment without the alias
        return f"alias {alias}: {now_at} -> {collection}"
    except MilvusException as exc:
        if is_transient(exc):
            raise
        raise StartupError(
            f"{target} refused to point alias {alias!r} at collection {collection!r} ({short(exc)}). Milvus 2.x "
            "servers and Milvus Lite (milvus-lite 3) have aliases; without them, switch by restarting the service "
            f"with MILVUS_COLLECTION={collection}."
        ) from exc


# --- the connection ---------------------------------------------------------------------
class Gate(Protocol):
    """Shared and exclusive holds around Milvus calls (service.store.lite.SharedExclusiveLock)."""

    def shared(self) -> AbstractContextManager[None]:
        """Held by a read."""
        ...

    def exclusive(self) -> AbstractContextManager[None]:
        """Held by a write or flush."""
        ...


class Connection:
    """The Milvus client of one collection, and the one way to call it (`call`)."""

    def __init__(
        self,
        settings: Settings,
        dim: int,
        space: SpaceTag | None = None,
        on_call: CallObserver | None = None,
        gate: Gate | None = None,
    ) -> None:
        """`gate`: held by every call, shared by reads and exclusively by writes and flushes (Milvus Lite)."""
        self.settings = settings
        self._on_call = on_call
        # The collection every call names: MILVUS_COLLECTION, or the collection behind it when it is an alias.
        self.collection = settings.milvus_collection
        self.alias: str | None = None  # MILVUS_COLLECTION, once it turned out to be an alias
        self.target = describe_target(settings)
        self.read_level = MILVUS_LEVELS[settings.milvus_consistency]
        self.client: MilvusClient | None = None
        self.server_version = ""
        self.indexes = Indexes("", "")
        self.layout = Layout(tenancy=False, partition_key=False, regions=False)
        self.native_grouping = False
        self._dim = dim
        self.space = space
        # The duplicate score calibrated for this collection and space, read at connection.
        self.threshold: DuplicateThreshold | None = None
        self._connect_lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._gate = gate
        # While the alias points at a collection this service must not answer from: the answer to every call.
        self._moved: CollectionMoved | None = None
        self._checked = 0.0  # time.monotonic() of the last look at where the alias points
        self._alias_lock = threading.Lock()

    def connect(self) -> MilvusClient:
        """Connect, create or verify the collection, and load it; returns the client. Idempotent.

        Raises NotReady when Milvus cannot be reached and StartupError when the
        collection exists with an incompatible schema. An attempt to connect is
        reported to `on_call` as operation "connect".
        """
        return self._connect(observed=True)

    def _connect(self, observed: bool) -> MilvusClient:
        """connect(); `observed` False inside a call, which reports the failure under its own operation."""
        client = self.client
        if client is not None:
            return client
        with self._connect_lock:
            if self.client is not None:  # another thread connected meanwhile
                return self.client
            moved = self._moved
            if moved is not None and time.monotonic() - self._checked < ALIAS_WAIT_CHECK:
                raise moved  # looked a moment ago: the alias has not come back yet
            with self._observed("connect") if observed else nullcontext():
                self.client = self._open()
            log.info(
                "connected to %s (server %s), collection %r%s, vector index %s, key index %s, namespaces %s, "
                "regions %s",
                self.target,
                self.server_version,
                self.collection,
                f" (through alias {self.alias!r})" if self.alias else "",
                self.indexes.vector,
                self.indexes.key or "none",
                _namespaces(self.layout),
                _regions(self.layout),
            )
            return self.client

    def _open(self) -> MilvusClient:
        """A new client with the collection prepared; what the server offers is noted on the way."""
        client: MilvusClient | None = None
        try:
            client = open_client(self.settings)
            self.server_version = str(client.get_server_version(timeout=self.settings.milvus_timeout))
            try:
                prepared = prepare_collection(client, self.settings, self._dim, self.space, self.server_version)
            except CollectionMoved as exc:
                if self._moved is None:
                    log.warning("%s; waiting for it", exc.msg)
                self._moved, self._checked = exc, time.monotonic()
                raise
            self.collection, self.alias = prepared.collection, prepared.alias
            self.indexes, self.layout = prepared.indexes, prepared.layout
            self._moved, self._checked = None, time.monotonic()
            self.native_grouping = grouping_supported(self.server_version)
            if self.space is not None:
                self.threshold = read_threshold(client, self.settings, self.space, self.collection)
            return client
        except Exception as exc:
            if client is not None:  # opened, then failed: the next try opens a new one, so drop this one
                _close_quietly(client)
            if isinstance(exc, (StartupError, NotReady)):
                raise
            # Any other connection failure means "not ready yet".
            raise NotReady(f"{self.target} is unreachable ({short(exc)}); retry later") from exc

    def save_threshold(self, threshold: DuplicateThreshold) -> str:
        """Store a calibrated duplicate threshold with the collection; returns where it went."""
        where = self.call(
            lambda client: write_threshold(client, self.settings, threshold, self.collection), writes=True
        )
        self.threshold = threshold
        return where

    def point_alias(self, alias: str) -> str:
        """Point `alias` at this connection's collection in one step; returns what was done (see point_alias)."""
        return self.call(lambda client: point_alias(client, self.settings, alias, self.collection), operation="alias")

    def follow_alias(self, client: MilvusClient, force: bool = False) -> bool:
        """Look where MILVUS_COLLECTION's alias points (unless `force`, at most every ALIAS_CHECK seconds while
        serving, ALIAS_WAIT_CHECK while waiting for it to come back).

        A move to a collection of this service's space is followed (True: calls now go there); while it
        points at another space, raises CollectionMoved. Nothing to do when MILVUS_COLLECTION is a collection.
        """
        if self.alias is None:
            return False
        if not force and not self._look_due():
            if self._moved is not None:
                raise self._moved
            return False
        with self._alias_lock:
            if not force and not self._look_due():  # another request just looked
                if self._moved is not None:
                    raise self._moved
                return False
            return self._look(client, self.alias)

    def _look_due(self) -> bool:
        interval = ALIAS_CHECK if self._moved is None else ALIAS_WAIT_CHECK
        return time.monotonic() - self._checked >= interval

    def _look(self, client: MilvusClient, alias: str) -> bool:
        t = self.settings.milvus_timeout
        self._checked = time.monotonic()
        now_at, desc = resolve_name(client, alias, t)
        if now_at == self.collection:
            if self._moved is not None:
                log.warning("alias %r points at collection %r again: serving", alias, now_at)
                self._moved = None
            return False
        if desc is None or now_at == alias:  # the alias is gone (or a collection took its name)
            exc = CollectionMoved(
                f"MILVUS_COLLECTION {alias!r} no longer names an alias of collection {self.collection!r} in "
                f"{self.target}. Point the alias at a collection of this service's embedding space (it serves "
                "again at once), or restart with MILVUS_COLLECTION naming one."
            )
        else:
            try:
                indexes, layout = prepare_target(
                    client, self.settings, self._dim, self.space, self.server_version, now_at, alias, desc
                )
            except CollectionMoved as moved:
                exc = moved
            else:
                log.warning(
                    "alias %r moved from collection %r to %r, of this service's embedding space: following it",
                    alias,
                    self.collection,
                    now_at,
                )
                self.collection, self.indexes, self.layout, self._moved = now_at, indexes, layout, None
                if self.space is not None:
                    self.threshold = read_threshold(client, self.settings, self.space, now_at)
                return True
        if self._moved is None or self._moved.msg != exc.msg:
            log.warning("%s", exc.msg)
        self._moved = exc
        raise exc

    def ping(self) -> None:
        """Raise NotReady unless Milvus serves the collection now: loaded, and a read answers in time."""
        self.call(self._probe, retry=False, operation="ping")

    def _probe(self, client: MilvusClient) -> None:
        self.ensure_loaded(client)
        # A restarted server reports the collection loaded some seconds before reads stop timing out;
        # only a real (strongly consistent) read tells that requests will work.
        self.query(client, "id in [0]", ("id",), limit=1)

    def ensure_loaded(self, client: MilvusClient) -> None:
        """Load the collection if the server released it; NotReady while it is loading or gone."""
        t = self.settings.milvus_timeout
        with self._load_lock:  # one check (and load) at a time, however many requests noticed
            state = client.get_load_state(self.collection, timeout=t)
            name = str(getattr(state.get("state"), "name", state.get("state"))).lower()
            if name == "notexist":
                # Milvus came back without its data: the next call reconnects and creates the collection again.
                with self._connect_lock:
                    if self.client is client:
                        self.client = None
                raise NotReady(
                    f"collection {self.collection!r} no longer exists in {self.target} (was its data "
                    "reset?); it is created again on the next request. Retry when /ready answers 200."
                )
            if name == "loading":
                raise NotReady(
                    f"{self.target} is loading collection {self.collection!r} (progress "
                    f"{state.get('progress', '?')}%; it was restarted?). Retry when /ready answers 200."
                )
            if name != "loaded":
                log.warning("collection %r in %s is not loaded (%s); loading it", self.collection, self.target, name)
                client.load_collection(self.collection, timeout=max(t, 60))

    def call(
        self, fn: Callable[[MilvusClient], T], retry: bool = True, operation: str = "other", writes: bool = False
    ) -> T:
        """Run one Milvus call, retrying transient failures with backoff; NotReady if Milvus stays away.

        `writes`: `fn` writes or deletes (on Milvus Lite it then runs alone). The call's time
        (retries included) and outcome are reported to `on_call` under `operation`.
        """
        with self._observed(operation):
            return self._call(fn, retry, writes)

    def _gated(self, writes: bool) -> AbstractContextManager[None]:
        """On Milvus Lite, the gate in the mode this call needs; elsewhere nothing."""
        if self._gate is None:
            return nullcontext()
        return self._gate.exclusive() if writes else self._gate.shared()

    @contextmanager
    def _observed(self, operation: str) -> Iterator[None]:
        """Report the block to `on_call` as one Milvus call: its duration, and whether it raised."""
        started = time.perf_counter()
        failed = True
        try:
            yield
            failed = False
        finally:
            if self._on_call is not None:
                self._on_call(operation, time.perf_counter() - started, failed)

    def _call(self, fn: Callable[[MilvusClient], T], retry: bool, writes: bool) -> T:
        client = self.client or self._connect(observed=False)
        attempts = self.settings.milvus_retries if retry else 1
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(attempts),
                wait=wait_exponential(0.2, max=2.0),
                retry=retry_if_exception(is_transient),
                reraise=True,
                before_sleep=_log_retry,
            ):
                with attempt, self._gated(writes):
                    # A write looks every time: one written into the old collection after a switch would be lost.
                    self.follow_alias(client, force=writes)
                    try:
                        return fn(client)
                    except MilvusException as exc:
                        if not not_loaded(exc):
                            raise
                        self.ensure_loaded(client)
                        return fn(client)
        except CollectionMoved:
            raise
        except Exception as exc:
            if self.alias is not None and not is_transient(exc) and self._moved_meanwhile(client, exc):
                with self._gated(writes):  # followed to a collection of this space: once more, there
                    return fn(client)
            if is_transient(exc) or not_loaded(exc):
                raise NotReady(
                    f"{self.target} is not answering ({short(exc)}); nothing was changed. "
                    "Retry when /ready answers 200."
                ) from exc
            raise
        raise AssertionError("unreachable")  # pragma: no cover - Retrying either returns or raises

    def _moved_meanwhile(self, client: MilvusClient, failure: BaseException) -> bool:
        """After a failed call through an alias: True when the alias moved to a collection of this space (now
        followed); CollectionMoved when it points at another space; False when it has not moved."""
        log.info(
            "a call on collection %r failed (%s); looking where alias %r points",
            self.collection,
            short(failure),
            self.alias,
        )
        try:
            return self.follow_alias(client, force=True)
        except CollectionMoved:
            raise
        except Exception as exc:  # noqa: BLE001 - the failure of the call itself is the one to report
            log.debug("looking up alias %r after a failed call failed too: %s", self.alias, short(exc))
            return False

    def query(
        self, client: MilvusClient, expr: str, fields: Sequence[str], limit: int = QUERY_PAGE, level: str | None = None
    ) -> list[dict[str, Any]]:
        """The rows matching `expr` (at most `limit`), read at the store's consistency level unless told."""
        return list(
            client.query(
                self.collection,
                filter=expr,
                output_fields=list(fields),
                limit=limit,
                consistency_level=level or self.read_level,
                timeout=self.settings.milvus_timeout,
            )
        )

    def flush(self) -> None:
        """Seal what was written (Milvus Lite: move it out of the in-memory table); nothing before connecting."""
        client = self.client
        if client is not None:
            with self._observed("flush"), self._gated(writes=True):
                client.flush(self.collection, timeout=max(self.settings.milvus_timeout, 60))

    def close(self) -> None:
        """Drop the connection (Milvus Lite flushes its file)."""
        with self._connect_lock:
            if self.client is not None:
                self.client.close()
                self.client = None


def _close_quietly(client: MilvusClient) -> None:
    try:
        client.close()
    except Exception as exc:  # noqa: BLE001 - the failure being reported matters more than this one
        log.debug("closing a half-opened Milvus client failed: %s", short(exc))


def _namespaces(layout: Layout) -> str:
    if not layout.tenancy:
        return "unavailable (a collection of an earlier imgsim: default namespace only)"
    return "by partition key" if layout.partition_key else "by filter"


def _regions(layout: Layout) -> str:
    return "stored" if layout.regions else "unavailable (a collection of an earlier imgsim: whole images only)"


def _log_retry(state: Any) -> None:
    # A retried call costs the request its backoff: an operator should see that it happens.
    exc = state.outcome.exception() if state.outcome is not None else None
    log.warning("a Milvus call failed (%s); retry %d", short(exc) if exc else "?", state.attempt_number)
