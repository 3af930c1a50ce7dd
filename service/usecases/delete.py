"""Delete records by id or by key, within one namespace; a thumbnail and a kept source go with the last record of
its image."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from service.usecases.deps import Deps


def delete_by_ids(deps: Deps, namespace: str, ids: list[int]) -> int:
    """Delete the namespace's records with these ids; returns how many were really deleted."""
    scope = deps.store.scope(namespace)
    return _delete(deps, deps.store.get_ids(scope, ids), lambda: deps.store.delete_ids(scope, ids))


def delete_by_keys(deps: Deps, namespace: str, keys: list[str]) -> int:
    """Delete every record of these keys in the namespace; returns how many were deleted."""
    scope = deps.store.scope(namespace)
    return _delete(deps, deps.store.get_keys(scope, keys), lambda: deps.store.delete_keys(scope, keys))


def _delete(deps: Deps, found: list[dict[str, Any]], delete: Callable[[], int]) -> int:
    """Run `delete`, then drop the files of the `found` records' images that no record has any more."""
    deleted = delete()
    forget_files(deps, {r["md5"] for r in found}, deleted)
    return deleted


def forget_files(deps: Deps, md5s: Iterable[str], deleted: int) -> None:
    """After `deleted` records went: drop the thumbnails and kept sources of these images that no record has any
    more."""
    # The files are shared by every record of the same image (any key, any namespace): a file goes only
    # when no record of its MD5 is left anywhere in the collection. Each folder asks the store under its own
    # lock, so an add of the same image racing this delete never loses its file.
    if deleted:
        going = set(md5s)
        deps.thumbs.forget(going, deps.store.md5s_in_use)
        deps.sources.forget(going, deps.store.md5s_in_use)
