"""Sync one key: afterwards it holds exactly the listed images (new ones added, unlisted ones deleted)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from conf.errors import ApiError
from service.usecases.add import Added, AddRequest
from service.usecases.batch import Outcome, add_in_scope, batch_scope
from service.usecases.delete import forget_files
from service.usecases.deps import Deps


@dataclass(frozen=True)
class Synced:
    """What a sync did: images added, already there (kept), deleted, and each item's outcome in order."""

    added: int
    kept: int
    deleted: int
    outcomes: list[Outcome]


def set_key(deps: Deps, namespace: str, key: str, items: Sequence[AddRequest | ApiError]) -> Synced:
    """Make `key` hold exactly the items' images; if any item fails, nothing of the key is deleted.

    The items are added like a batch (their `key` is this key). Only when every
    item succeeded are the key's other images deleted: a failed download must not
    read as "this photo was removed from the product".
    """
    scope = batch_scope(deps, namespace, items)
    outcomes = add_in_scope(deps, scope, items)
    done = [o for o in outcomes if isinstance(o, Added)]
    created = {o.md5 for o in done if o.created}
    kept = {o.md5 for o in done} - created
    deleted = 0
    if len(done) == len(outcomes):
        keep = {o.md5 for o in done}
        going = {r["md5"] for r in deps.store.get_keys(scope, [key])} - keep
        deleted = deps.store.delete_key_except(scope, key, keep)
        forget_files(deps, going, deleted)
    return Synced(len(created), len(kept), deleted, outcomes)
