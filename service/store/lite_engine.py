"""Plain vector searches on Milvus Lite, run in its engine inside this process rather than through its gRPC server.

Milvus Lite 3 is a Python engine that runs in the process that opens the .db file;
pymilvus reaches it through a gRPC server milvus_lite starts on 127.0.0.1 for that
file. A search that way is serialised twice and wakes three threads: measured about
1 ms of the ~2 ms a search of 1,000 rows takes back to back, and more right after
the model has had both cores. The engine object behind that server answers the same
search in-process (README, "Where a lone search's time goes").

Only plain searches take this path; writes, queries and grouped searches stay on
pymilvus. milvus_lite publishes the engine class but not its table of open files,
so the engine is looked up defensively: when it is not found (another milvus_lite,
the file not opened yet) searches go through pymilvus as before. A search the engine
refuses is not answered here either: the caller repeats it through pymilvus, which
reports the failure in the usual way.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "default"  # milvus_lite's name for the database pymilvus uses when none is given


class LiteEngine:
    """The in-process search of one Milvus Lite collection; `search` returns None whenever pymilvus must answer."""

    def __init__(self, path: str, collection: str, database: str = "") -> None:
        self._path = path
        self._collection = collection
        self._database = database
        self._direct: bool | None = None  # whether the last lookup found the engine (logged when it changes)

    def search(self, vectors: Sequence[np.ndarray], top_k: int, expr: str, output_fields: Sequence[str],
               search_params: dict[str, Any] | None) -> list[list[dict[str, Any]]] | None:
        """Hits per vector by inner product, shaped as pymilvus returns them; None if the engine cannot answer.

        A hit is {"id", "distance", "entity"} with JSON fields parsed, as in pymilvus.
        """
        collection = self._open_collection()
        if collection is None:
            return None
        try:
            results = collection.search([np.asarray(v, dtype=np.float32) for v in vectors], top_k=top_k,
                                        metric_type="IP", expr=expr or None, output_fields=list(output_fields),
                                        anns_field="vector", search_params=search_params)
        except Exception as exc:  # noqa: BLE001 - pymilvus repeats the search and reports any failure itself
            self._note(False, f"through pymilvus: its engine refused a search ({exc})")
            return None
        self._note(True, f"in its engine directly ({self._path})")
        return [[_as_pymilvus(hit) for hit in hits] for hits in results]

    def _open_collection(self) -> Any:
        """The engine's collection object, or None when milvus_lite has no engine open for this file."""
        try:
            return engine_collection(self._path, self._collection, self._database)
        except Exception as exc:  # noqa: BLE001 - any surprise means: search through pymilvus
            self._note(False, f"through pymilvus: its engine for {self._path} is not reachable ({exc})")
            return None

    def _note(self, direct: bool, how: str) -> None:
        """Log which way searches go when it changes (the first search, a refusal, the engine back)."""
        if direct != self._direct:
            self._direct = direct
            log.info("Milvus Lite searches run %s", how)


def engine_collection(path: str, collection: str, database: str = "") -> Any:
    """The engine object of a Milvus Lite collection whose file this process has open; raises if there is none."""
    from milvus_lite import server_manager_instance  # noqa: PLC0415 - only Milvus Lite installs have it

    # (server, engine, port) per file, under the absolute path pymilvus opened it by. Not a published
    # attribute: callers treat every failure as "no engine here".
    _server, engine, _port = server_manager_instance._servers[os.path.abspath(path)]  # noqa: SLF001
    if engine.closed:
        raise LookupError("its engine is closed")
    return engine.get_collection(collection, database_name=database or DEFAULT_DATABASE)


def _as_pymilvus(hit: dict[str, Any]) -> dict[str, Any]:
    """An engine hit with its JSON fields parsed, as pymilvus hands them out."""
    entity = hit["entity"]
    attrs = entity.get("attrs")
    if isinstance(attrs, (str, bytes)):
        # The engine keeps JSON fields as their text; its gRPC server sends that text and pymilvus parses it.
        entity = {**entity, "attrs": json.loads(attrs)}
    return {"id": hit["id"], "distance": hit["distance"], "entity": entity}
