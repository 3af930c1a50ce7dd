"""Look records up: by key, and how many there are, within one namespace."""

from __future__ import annotations

from typing import Any

from service.usecases.deps import Deps


def get_by_keys(deps: Deps, namespace: str, keys: list[str]) -> list[dict[str, Any]]:
    """The records (id, key, filepath, md5, attrs) stored under these keys in the namespace."""
    return deps.store.get_keys(deps.store.scope(namespace), keys)


def count_records(deps: Deps, namespace: str) -> int:
    """How many records the namespace holds."""
    return deps.store.count(deps.store.scope(namespace))
