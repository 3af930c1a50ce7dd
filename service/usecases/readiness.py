"""Readiness: whether the service can answer requests now, and what it runs on."""

from __future__ import annotations

from typing import Any

from service.usecases.deps import Deps


def readiness(deps: Deps) -> dict[str, Any]:
    """What /ready reports; raises NotReady when Milvus does not serve the collection now."""
    store = deps.store
    store.ping()
    return {
        "model": deps.model_info,
        "duplicate": {"score": deps.duplicate_score, "source": deps.duplicate_source},
        "milvus": {
            "target": store.target,
            "collection": store.collection,
            "alias": store.alias,
            "server_version": store.server_version,
            "vector_index": store.vector_index,
            "key_index": store.key_index,
        },
        "batching": {"embed": deps.embeds.stats(), "search": deps.searches.stats()},
    }
