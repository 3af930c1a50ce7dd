"""Delete records by id or by key, within one namespace; a thumbnail goes with the last record of its image."""

from __future__ import annotations

from collections.abc import Iterable

from service.usecases.deps import Deps


def delete_by_ids(deps: Deps, namespace: str, ids: list[int]) -> int:
    """Delete the namespace's records with these ids; returns how many were really deleted."""
    md5s = {r["md5"] for r in deps.store.get_ids(ids, namespace)}
    deleted = deps.store.delete_ids(ids, namespace)
    forget_thumbnails(deps, md5s, deleted)
    return deleted


def delete_by_keys(deps: Deps, namespace: str, keys: list[str]) -> int:
    """Delete every record of these keys in the namespace; returns how many were deleted."""
    md5s = {r["md5"] for r in deps.store.get_keys(keys, namespace)}
    deleted = deps.store.delete_keys(keys, namespace)
    forget_thumbnails(deps, md5s, deleted)
    return deleted


def forget_thumbnails(deps: Deps, md5s: Iterable[str], deleted: int) -> None:
    """After `deleted` records went: drop the thumbnails of these images that no record has any more."""
    # Thumbnails are shared by every record of the same image (any key, any namespace): a file goes only
    # when no record of its MD5 is left anywhere in the collection.
    if deleted:
        deps.thumbs.forget(set(md5s), deps.store.md5s_in_use)
