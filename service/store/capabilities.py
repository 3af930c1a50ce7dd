"""What the Milvus in use can do, found out by asking it rather than by trusting its documentation.

Two features matter for namespaces and one-hit-per-key searches, and the engines imgsim runs on
differ in both:

* A partition key on `namespace` (a search then scans one tenant's partitions). Milvus Lite and
  2.3+ servers accept the schema, but a 2.3.5 server misroutes rows written by *upsert* into a
  partition-key collection: a filter on the namespace then finds almost none of them. imgsim
  writes with upsert, so the only trustworthy test is to do exactly that in a scratch collection.
* Grouping search (`group_by_field`). Milvus Lite and 2.4+ servers group; a 2.3 server accepts the
  parameter and silently ignores it, so the version decides (and the search still checks each
  answer: see service.store.grouping).
"""

from __future__ import annotations

import logging
import re
import threading
import uuid

from conf.settings import Settings
from service.store.client import DataType, MilvusClient, short
from service.store.filters import namespace_expr

log = logging.getLogger(__name__)

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
        client.upsert(name, [{"id": i + 1, "namespace": ns, "vector": [1.0, 0.0]}
                             for i, ns in enumerate(PROBE_NAMESPACES)], timeout=t)
        found = [len(client.query(name, filter=namespace_expr(ns), output_fields=["id"], limit=10,
                                  consistency_level="Strong", timeout=t)) for ns in PROBE_NAMESPACES]
        works = found == [1] * len(PROBE_NAMESPACES)
        if not works:
            log.warning("this Milvus loses track of rows upserted into a collection partitioned by namespace "
                        "(found %s of one row per namespace); namespaces use a filter instead", found)
        return works
    except Exception as exc:  # noqa: BLE001 - any refusal means "no partition key here"
        log.info("no partition key on namespace (%s); namespaces use a filter", short(exc))
        return None
    finally:
        try:
            client.drop_collection(name, timeout=t)
        except Exception:  # noqa: BLE001 - a leftover probe collection is harmless
            pass
