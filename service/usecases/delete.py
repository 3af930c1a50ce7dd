"""Delete records by id or by key."""

from __future__ import annotations

from service.usecases.deps import Deps


def delete_by_ids(deps: Deps, ids: list[int]) -> int:
    """Delete records by id; returns how many were really deleted."""
    return deps.store.delete_ids(ids)


def delete_by_keys(deps: Deps, keys: list[str]) -> int:
    """Delete every record of these keys; returns how many were deleted."""
    return deps.store.delete_keys(keys)
