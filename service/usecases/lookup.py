"""Look records up: by key, and how many there are."""

from __future__ import annotations

from typing import Any

from service.usecases.deps import Deps


def get_by_keys(deps: Deps, keys: list[str]) -> list[dict[str, Any]]:
    """The records (id, key, filepath, md5) stored under these keys."""
    return deps.store.get_keys(keys)


def count_records(deps: Deps) -> int:
    """How many records are stored."""
    return deps.store.count()
