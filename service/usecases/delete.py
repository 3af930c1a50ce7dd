"""Delete records by id or by key; a thumbnail goes with the last record of its image."""

from __future__ import annotations

from service.usecases.deps import Deps


def delete_by_ids(deps: Deps, ids: list[int]) -> int:
    """Delete records by id; returns how many were really deleted."""
    md5s = {r["md5"] for r in deps.store.get_ids(ids)}
    deleted = deps.store.delete_ids(ids)
    _forget_thumbnails(deps, md5s, deleted)
    return deleted


def delete_by_keys(deps: Deps, keys: list[str]) -> int:
    """Delete every record of these keys; returns how many were deleted."""
    md5s = {r["md5"] for r in deps.store.get_keys(keys)}
    deleted = deps.store.delete_keys(keys)
    _forget_thumbnails(deps, md5s, deleted)
    return deleted


def _forget_thumbnails(deps: Deps, md5s: set[str], deleted: int) -> None:
    # Thumbnails are shared by every record of the same image (any key, any namespace): a file goes only
    # when no record of its MD5 is left anywhere in the collection.
    if deleted:
        deps.thumbs.forget(md5s, deps.store.md5s_in_use)
