"""Delete records by id or by key, within one namespace."""

from __future__ import annotations

from service.usecases.deps import Deps


def delete_by_ids(deps: Deps, namespace: str, ids: list[int]) -> int:
    """Delete the namespace's records with these ids; returns how many were really deleted."""
    return deps.store.delete_ids(ids, namespace)


def delete_by_keys(deps: Deps, namespace: str, keys: list[str]) -> int:
    """Delete every record of these keys in the namespace; returns how many were deleted."""
    return deps.store.delete_keys(keys, namespace)
