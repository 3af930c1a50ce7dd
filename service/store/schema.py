"""The collection's schema and indexes: created when missing, checked when present, index types negotiated.

Milvus Lite, a Milvus 2.3 server and 2.5+ servers accept different index types,
so each index is created with the best type the server accepts (trying the best
first), not by assuming.

New collections have the tenancy fields `namespace` (a partition key where the
server handles one correctly, see service.store.capabilities) and `attrs` (JSON).
A collection created by an earlier imgsim has neither: it keeps working as the
default namespace without attributes (Layout.tenancy is False), see service.store.scope.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from conf.errors import StartupError
from conf.settings import Settings
from service.store.capabilities import partition_key_works
from service.store.client import DataType, MilvusClient, MilvusException, describe_target, short
from service.store.meta import SpaceTag, check_space, new_collection_description

log = logging.getLogger(__name__)

MD5_LEN = 32
FILEPATH_MAX_CHARS = 2048
# Milvus counts VARCHAR length in bytes; a character is at most 4 bytes in UTF-8.
_UTF8_MAX = 4
NAMESPACE_MAX_CHARS = 64  # ASCII only (NAMESPACE_RE), so characters are bytes
FIELD_TYPES = {"id": DataType.INT64, "key": DataType.VARCHAR, "md5": DataType.VARCHAR,
               "filepath": DataType.VARCHAR, "vector": DataType.FLOAT_VECTOR}
# Fields of collections created since namespaces exist; a collection has both or neither.
TENANCY_FIELDS = {"namespace": DataType.VARCHAR, "attrs": DataType.JSON}
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
class Layout:
    """How the collection tells namespaces apart: tenancy fields at all, and a partition key on `namespace`."""

    tenancy: bool
    partition_key: bool


def prepare_collection(client: MilvusClient, settings: Settings, dim: int, space: SpaceTag | None = None,
                       server_version: str = "") -> tuple[Indexes, Layout]:
    """Create the collection and its indexes if missing (or check an existing one), then load it.

    With `space`, a new collection records it and an existing one must carry it
    (service.store.meta); `server_version` keys the partition-key probe
    (service.store.capabilities). Raises StartupError when an existing collection has an
    incompatible schema, vector metric or embedding space, or when the server
    accepts none of the vector index types.
    """
    name, t = settings.milvus_collection, settings.milvus_timeout
    created = not client.has_collection(name, timeout=t)
    desc: dict[str, Any] = {}
    if created:
        layout = Layout(tenancy=True, partition_key=partition_key_works(client, settings, server_version))
        # Strong consistency: a search right after an add or delete sees it (read-after-write).
        client.create_collection(name, schema=collection_schema(settings, dim, new_collection_description(space),
                                                                layout.partition_key),
                                 consistency_level="Strong", timeout=t)
        log.info("created collection %r in %s (namespace %s)", name, describe_target(settings),
                 "partition key" if layout.partition_key else "filtered")
    else:
        desc = client.describe_collection(name, timeout=t)
        layout = _check_schema(desc, settings, dim)
    if space is not None:
        check_space(client, settings, space, None if created else desc)
    existing = set(client.list_indexes(name, timeout=t))
    if "vector" not in existing:
        _create_first_accepted(client, settings, "vector", [(n, p, "IP") for n, p in VECTOR_INDEXES], required=True)
    if "key" not in existing:
        _create_first_accepted(client, settings, "key", [(n, {}, None) for n in KEY_INDEXES], required=False)
    if layout.tenancy and not layout.partition_key and "namespace" not in existing:
        # Without partitions every namespace filter would scan the collection; a scalar index narrows it.
        _create_first_accepted(client, settings, "namespace", [(n, {}, None) for n in KEY_INDEXES], required=False)
    vec = client.describe_index(name, "vector", timeout=t) or {}
    if str(vec.get("metric_type", "IP")).upper() != "IP":
        raise StartupError(_incompatible(settings, f"its vector index uses metric {vec.get('metric_type')}, "
                                                   "but imgsim needs IP (cosine on unit vectors)"))
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
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    return schema


def _create_first_accepted(client: MilvusClient, settings: Settings, field: str,
                           candidates: Sequence[tuple[str, dict[str, Any], str | None]], required: bool) -> None:
    target = describe_target(settings)
    errors = []
    for index_type, params, metric in candidates:
        index = client.prepare_index_params()
        extra = {"metric_type": metric} if metric else {}
        index.add_index(field_name=field, index_name=field, index_type=index_type, params=params, **extra)
        try:
            client.create_index(settings.milvus_collection, index, timeout=settings.milvus_timeout)
            return
        except MilvusException as exc:
            errors.append(f"{index_type}: {short(exc)}")
            log.info("%s does not accept a %s index on %r; trying the next kind", target, index_type, field)
    if required:
        raise StartupError(f"{target} accepted none of the vector index types "
                           f"{[c[0] for c in candidates]}: {'; '.join(errors)}")
    log.warning("no scalar index on %r (%s); filters on it will scan", field, "; ".join(errors))


def _check_schema(desc: dict[str, Any], settings: Settings, dim: int) -> Layout:
    fields = {f["name"]: f for f in desc.get("fields", [])}
    tenancy = any(name in fields for name in TENANCY_FIELDS)
    wanted = {**FIELD_TYPES, **TENANCY_FIELDS} if tenancy else FIELD_TYPES
    for name, dtype in wanted.items():
        if name not in fields:
            raise StartupError(_incompatible(settings, f"it has no field {name!r} (fields: {sorted(fields)})"))
        if fields[name]["type"] != dtype:
            raise StartupError(_incompatible(settings, f"field {name!r} is {fields[name]['type']!r}, not {dtype!r}"))
    if not fields["id"].get("is_primary") or fields["id"].get("auto_id"):
        raise StartupError(_incompatible(settings, "'id' must be the primary key with auto_id off"))
    found = int(fields["vector"].get("params", {}).get("dim", 0))
    if found != dim:
        raise StartupError(_incompatible(settings, f"its vectors have dimension {found}, not {dim}"))
    extra = sorted(set(fields) - set(wanted))
    if extra:
        raise StartupError(_incompatible(settings, f"it has fields imgsim does not write: {extra}"))
    if not tenancy:
        log.warning("collection %r was created by an earlier imgsim without namespaces and attributes: it serves the "
                    "default namespace only (see the README, 'Namespaces')", settings.milvus_collection)
    return Layout(tenancy=tenancy, partition_key=bool(fields.get("namespace", {}).get("is_partition_key")))


def _incompatible(settings: Settings, why: str) -> str:
    return (f"collection {settings.milvus_collection!r} in {describe_target(settings)} has an incompatible "
            f"schema: {why}. imgsim will not write into it. Set MILVUS_COLLECTION to a new name, or drop that "
            "collection if it is safe to lose.")
