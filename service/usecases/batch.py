"""Add many images in one request: read with bounded concurrency, embedded in model batches, written together.

Each item gets the outcome a single add of it would have had (its record, or the error a single add
would have answered with), in the order sent; one item failing does not stop the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from conf.errors import ApiError, Conflict
from service.store.records import Scope
from service.usecases.add import (
    Added,
    AddRequest,
    Embedded,
    OnDuplicate,
    added_of,
    embed_unstored,
    keep_files,
    prepare,
    put_embedded,
    put_guarded,
    region_scope,
)
from service.usecases.deps import Deps
from service.usecases.prepare import PreparedImage

# Items read (downloaded, decoded) at once: enough to hide URL latency, few enough that one batch
# neither floods the image hosts nor holds many decoded images (decoding also waits for the pixel budget).
FETCH_WORKERS = 4

Outcome = Added | ApiError
Pair = tuple[str, str]


def add_batch(
    deps: Deps, namespace: str, items: Sequence[AddRequest | ApiError], on_duplicate: OnDuplicate = OnDuplicate.ALLOW
) -> list[Outcome]:
    """Add every valid item to the namespace; an item that is an ApiError (refused by the HTTP layer) stays one."""
    return add_in_scope(deps, batch_scope(deps, namespace, items), items, on_duplicate)


def batch_scope(deps: Deps, namespace: str, items: Sequence[AddRequest | ApiError]) -> Scope:
    """The namespace's scope for adding these items (refused now when the collection cannot hold their attrs)."""
    return deps.store.scope(namespace, attrs=any(isinstance(i, AddRequest) and bool(i.attrs) for i in items))


def add_in_scope(
    deps: Deps, scope: Scope, items: Sequence[AddRequest | ApiError], on_duplicate: OnDuplicate = OnDuplicate.ALLOW
) -> list[Outcome]:
    """add_batch within a scope the caller already holds."""
    prepared = _prepare_all(deps, items)
    if any(isinstance(p, PreparedImage) and p.region is not None for p in prepared):
        try:
            scope = region_scope(deps, scope, any(isinstance(p, PreparedImage) and bool(p.attrs) for p in prepared))
        except Conflict as exc:  # a collection older than regions: the items with one fail, the others go on
            prepared = [exc if isinstance(p, PreparedImage) and p.region is not None else p for p in prepared]
    good = [p for p in prepared if isinstance(p, PreparedImage)]
    embedded, held = embed_unstored(deps.store, scope, deps.embed_each, good, refresh_filepath=True)
    keep_files(deps.thumbs, deps.sources, [p for p in good if (p.key, p.md5) in held])
    written = _write(deps, scope, embedded, on_duplicate)
    return _outcomes(prepared, held, written)


def _prepare_all(deps: Deps, items: Sequence[AddRequest | ApiError]) -> list[PreparedImage | ApiError]:
    def one(item: AddRequest | ApiError) -> PreparedImage | ApiError:
        if isinstance(item, ApiError):
            return item
        try:
            return prepare(deps, item)
        except ApiError as exc:
            return exc

    with ThreadPoolExecutor(
        max_workers=max(1, min(FETCH_WORKERS, len(items))), thread_name_prefix="batch-read"
    ) as pool:
        return list(pool.map(one, items))


def _write(deps: Deps, scope: Scope, embedded: list[Embedded], policy: OnDuplicate) -> dict[Pair, Outcome]:
    """Store the embedded images: all in one write, or (skip/reject) one at a time, each checked for duplicates."""
    out: dict[Pair, Outcome] = {}
    if policy is OnDuplicate.ALLOW:
        results = put_embedded(deps.store, scope, deps.thumbs, deps.sources, embedded)
        for e, (rid, created) in zip(embedded, results, strict=True):
            out.setdefault((e.image.key, e.image.md5), added_of(e.image, rid, created))
        return out
    for e in embedded:
        pair = (e.image.key, e.image.md5)
        if pair not in out:
            try:
                out[pair] = put_guarded(deps, scope, e, policy)
            except Conflict as exc:
                out[pair] = exc
    return out


def _outcomes(
    prepared: list[PreparedImage | ApiError], held: dict[Pair, int], written: dict[Pair, Outcome]
) -> list[Outcome]:
    """Each item's outcome in order; an image listed twice is created once (the later one reports created false)."""
    outcomes: list[Outcome] = []
    seen: set[Pair] = set()
    for p in prepared:
        if isinstance(p, ApiError):
            outcomes.append(p)
            continue
        pair = (p.key, p.md5)
        outcome = added_of(p, held[pair], False) if pair in held else written[pair]
        if isinstance(outcome, Added) and outcome.created and pair in seen:
            outcome = replace(outcome, created=False)
        seen.add(pair)
        outcomes.append(outcome)
    return outcomes
