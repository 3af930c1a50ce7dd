"""The collection's schema and indexes: created when missing, checked when present, index types negotiated.

Milvus Lite, a Milvus 2.3 server and 2.5+ servers accept different index types,
so each index is created with the best type the server accepts (trying the best
first), not by assuming.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from conf.errors import StartupError
from conf.settings import Settings
from service.store.client import DataType, MilvusClient, MilvusException, describe_target, short
from service.store.meta import SpaceTag, check_space, new_collection_description

log = logging.getLogger(__name__)

MD5_LEN = 32
FILEPATH_MAX_CHARS = 2048
# Milvus counts VARCHAR length in bytes; a character is at most 4 bytes in UTF-8.
_UTF8_MAX = 4
FIELD_TYPES = {"id": DataType.INT64, "key": DataType.VARCHAR, "md5": DataType.VARCHAR,
               "filepath": DataType.VARCHAR, "vector": DataType.FLOAT_VECTOR}
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


def prepare_collection(client: MilvusClient, settings: Settings, dim: int, space: SpaceTag | None = None) -> Indexes:
    """Create the collection and its indexes if missing (or check an existing one), then load it.

    With `space`, a new collection records it and an existing one must carry it
    (service.store.meta). Raises StartupError when an existing collection has an
    incompatible schema, vector metric or embedding space, or when the server
    accepts none of the vector index types.
    """
    name, t = settings.milvus_collection, settings.milvus_timeout
    created = not client.has_collection(name, timeout=t)
    if created:
        # Strong consistency: a search right after an add or delete sees it (read-after-write).
        client.create_collection(name, schema=collection_schema(settings, dim, new_collection_description(space)),
                                 consistency_level="Strong", timeout=t)
        log.info("created collection %r in %s", name, describe_target(settings))
    else:
        _check_schema(client.describe_collection(name, timeout=t), settings, dim)
    if space is not None:
        check_space(client, settings, space, created)
    existing = set(client.list_indexes(name, timeout=t))
    if "vector" not in existing:
        _create_first_accepted(client, settings, "vector", [(n, p, "IP") for n, p in VECTOR_INDEXES], required=True)
    if "key" not in existing:
        _create_first_accepted(client, settings, "key", [(n, {}, None) for n in KEY_INDEXES], required=False)
    vec = client.describe_index(name, "vector", timeout=t) or {}
    if str(vec.get("metric_type", "IP")).upper() != "IP":
        raise StartupError(_incompatible(settings, f"its vector index uses metric {vec.get('metric_type')}, "
                                                   "but imgsim needs IP (cosine on unit vectors)"))
    key = client.describe_index(name, "key", timeout=t) or {}
    client.load_collection(name, timeout=max(t, 60))
    return Indexes(vector=str(vec.get("index_type", "?")), key=str(key.get("index_type", "")))


def collection_schema(settings: Settings, dim: int, description: str) -> Any:
    """The fields imgsim writes, with `description` on the collection."""
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=description)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("key", DataType.VARCHAR, max_length=settings.max_key_length * _UTF8_MAX)
    schema.add_field("md5", DataType.VARCHAR, max_length=MD5_LEN)
    schema.add_field("filepath", DataType.VARCHAR, max_length=FILEPATH_MAX_CHARS * _UTF8_MAX)
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
    log.warning("no scalar index on 'key' (%s); deletes and lookups by key will scan", "; ".join(errors))


def _check_schema(desc: dict[str, Any], settings: Settings, dim: int) -> None:
    fields = {f["name"]: f for f in desc.get("fields", [])}
    for name, dtype in FIELD_TYPES.items():
        if name not in fields:
            raise StartupError(_incompatible(settings, f"it has no field {name!r} (fields: {sorted(fields)})"))
        if fields[name]["type"] != dtype:
            raise StartupError(_incompatible(settings, f"field {name!r} is {fields[name]['type']!r}, not {dtype!r}"))
    if not fields["id"].get("is_primary") or fields["id"].get("auto_id"):
        raise StartupError(_incompatible(settings, "'id' must be the primary key with auto_id off"))
    found = int(fields["vector"].get("params", {}).get("dim", 0))
    if found != dim:
        raise StartupError(_incompatible(settings, f"its vectors have dimension {found}, not {dim}"))
    extra = sorted(set(fields) - set(FIELD_TYPES))
    if extra:
        raise StartupError(_incompatible(settings, f"it has fields imgsim does not write: {extra}"))


def _incompatible(settings: Settings, why: str) -> str:
    return (f"collection {settings.milvus_collection!r} in {describe_target(settings)} has an incompatible "
            f"schema: {why}. imgsim will not write into it. Set MILVUS_COLLECTION to a new name, or drop that "
            "collection if it is safe to lose.")
