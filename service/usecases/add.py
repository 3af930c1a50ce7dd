"""Add one image; and the embed-and-store steps every way of adding shares (add, batch, sync and the import).

Storing an image also keeps its thumbnail and its kept source (service/thumbs.py), written right after the
record, so the console can show every stored image and a reindex can re-embed it without the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from conf.errors import Conflict
from conf.settings import SearchRegion
from service.inputs import ImageInput
from service.store.records import Record, Scope, VectorStore
from service.thumbs import Sources, Thumbnails
from service.usecases.deps import Deps
from service.usecases.prepare import PreparedImage, Region, checked_filepath, decoded_use, framed

log = logging.getLogger(__name__)

EmbedMany = Callable[[Sequence[np.ndarray]], Sequence[np.ndarray]]


class OnDuplicate(StrEnum):
    """What an add does when the namespace holds the same picture under another key."""

    ALLOW = "allow"  # store it anyway (bogv's behaviour)
    SKIP = "skip"  # store nothing, answer with the record already there
    REJECT = "reject"  # store nothing, answer 409 with the record already there


@dataclass(frozen=True)
class AddRequest:
    """One image to add and how: key (default: its MD5), recorded filepath, attributes, duplicate policy, and the
    part of the image the stored vector is to describe (default: the whole image, whatever SEARCH_REGION says)."""

    image: ImageInput
    key: str | None = None
    img_path: str | None = None
    attrs: dict[str, Any] | None = None
    on_duplicate: OnDuplicate = OnDuplicate.ALLOW
    region: Region = SearchRegion.WHOLE


@dataclass(frozen=True)
class Added:
    """What an add did: the record's id, whether it is new, the other record it duplicates (if skipped), and the box
    the image's vector describes (pixels of the EXIF-oriented image; the whole image when no region was asked)."""

    id: int
    created: bool
    md5: str = ""
    duplicate_of: dict[str, Any] | None = None
    region: dict[str, int] | None = None


@dataclass(frozen=True)
class Embedded:
    """A prepared image and its vector, ready to store."""

    image: PreparedImage
    vector: np.ndarray


def _held(row: dict[str, Any] | None, im: PreparedImage, refresh: bool) -> bool:
    """Whether a stored row already says all `im` would write (so the image need not be embedded again)."""
    if row is None:
        return False
    if not refresh:
        return True
    return (
        row["filepath"] == im.filepath
        and (im.attrs is None or (row.get("attrs") or {}) == im.attrs)
        and (row.get("region") or None) == im.region
    )


def embed_unstored(
    store: VectorStore, scope: Scope, embed_many: EmbedMany, images: Sequence[PreparedImage], *, refresh_filepath: bool
) -> tuple[list[Embedded], dict[tuple[str, str], int]]:
    """Embed, in one model call, the images the namespace does not hold; returns them and the ids of the others.

    An image is held when its (key, MD5) is stored, and with `refresh_filepath`
    only when it is stored with the same filepath and attributes (so that storing
    it again updates them; and with the same region, whose vector it is). Held images skip the model.
    """
    stored = store.stored(scope, [(im.key, im.md5) for im in images])
    fresh: list[PreparedImage] = []
    held: dict[tuple[str, str], int] = {}
    for im in images:
        row = stored.get((im.key, im.md5))
        if row is not None and _held(row, im, refresh_filepath):
            held[(im.key, im.md5)] = int(row["id"])
        else:
            fresh.append(im)
    vectors = embed_many([im.array for im in fresh]) if fresh else []
    return [Embedded(im, vec) for im, vec in zip(fresh, vectors, strict=True)], held


def record_of(embedded: Embedded) -> Record:
    """The store record for an embedded image."""
    im = embedded.image
    return Record(im.key, im.md5, im.filepath, embedded.vector, im.attrs, region=im.region)


def put_embedded(
    store: VectorStore, scope: Scope, thumbs: Thumbnails, sources: Sources, embedded: Sequence[Embedded]
) -> list[tuple[int, bool]]:
    """Store embedded images in one write, then their missing thumbnails and sources; (id, created) for each."""
    results = store.put_many(scope, [record_of(e) for e in embedded])
    # After the write: a file exists only for an image that has a record (a failed write leaves none).
    keep_files(thumbs, sources, [e.image for e in embedded])
    return results


def keep_files(thumbs: Thumbnails, sources: Sources, images: Sequence[PreparedImage]) -> None:
    """Write the thumbnails and kept sources these stored images do not have yet (also those of records stored
    before thumbnails or sources existed). Failures are logged: they never fail the add."""
    thumbs.write_many((im.md5, im.thumb) for im in images)
    sources.write_many((im.md5, im.source) for im in images)


def put_guarded(deps: Deps, scope: Scope, embedded: Embedded, policy: OnDuplicate) -> Added:
    """Store one embedded image under the duplicate policy (skip or reject); a rejected one raises Conflict."""
    rid, created, other = deps.store.put_unless_duplicate(scope, record_of(embedded), deps.duplicate_score)
    if other is None:
        keep_files(deps.thumbs, deps.sources, [embedded.image])
        return added_of(embedded.image, rid, created)
    if policy is OnDuplicate.REJECT:
        raise Conflict(
            f"this image is already stored under key {other['key']!r} (id {other['id']}); nothing was "
            "stored (on_duplicate=reject). data holds that record.",
            reason="duplicate",
            data=other,
        )
    return Added(rid, False, embedded.image.md5, duplicate_of=other, region=_box_of(embedded.image))


def _box_of(im: PreparedImage) -> dict[str, int] | None:
    return None if im.box is None else im.box.as_dict()


def added_of(im: PreparedImage, rid: int, created: bool) -> Added:
    """What adding the prepared image did: stored (or found stored) as record `rid`."""
    return Added(rid, created, im.md5, region=_box_of(im))


def prepare(deps: Deps, request: AddRequest) -> PreparedImage:
    """Read and decode the request's image into the model input of its region and the record it is to become.

    A box wholly outside the image is refused (BadInput) here, before anything is stored.
    """
    source = request.image.load(deps.settings)
    md5, frame, thumb, kept = decoded_use(
        source.data,
        deps.settings,
        lambda decoded: framed(decoded, request.region, deps.framing),
        deps.decode_budget,
        thumbnail=True,
        source=True,
    )
    filepath = checked_filepath(request.img_path if request.img_path is not None else source.default_filepath)
    return PreparedImage(
        request.key or md5, md5, filepath, frame.array, thumb, kept, request.attrs, frame.box, frame.region
    )


def region_scope(deps: Deps, scope: Scope, attrs: bool) -> Scope:
    """The scope for writing records with a region: Conflict when the collection predates regions."""
    return deps.store.scope(scope.namespace, attrs=attrs, regions=True)


def add_image(deps: Deps, namespace: str, request: AddRequest) -> Added:
    """Store an image of `namespace` under its key (default: its MD5).

    Re-adding the same bytes under the same key creates nothing; with another
    imgPath or attrs it updates them. With on_duplicate skip or reject, the same
    picture under another key of the namespace stops the add (see OnDuplicate).
    """
    scope = deps.store.scope(namespace, attrs=bool(request.attrs))
    prepared = prepare(deps, request)
    if prepared.region is not None:
        scope = region_scope(deps, scope, bool(request.attrs))
    embedded, held = embed_unstored(deps.store, scope, deps.embed_each, [prepared], refresh_filepath=True)
    if not embedded:
        keep_files(deps.thumbs, deps.sources, [prepared])
        return added_of(prepared, held[(prepared.key, prepared.md5)], False)  # already there: the model did not run
    if request.on_duplicate is OnDuplicate.ALLOW:
        [(rid, created)] = put_embedded(deps.store, scope, deps.thumbs, deps.sources, embedded)
        added = added_of(prepared, rid, created)
    else:
        added = put_guarded(deps, scope, embedded[0], request.on_duplicate)
    log.info(
        "add key=%r namespace=%r md5=%s id=%d %s",
        prepared.key[:80],
        namespace,
        prepared.md5,
        added.id,
        "stored" if added.created else "exists" if added.duplicate_of is None else "duplicate",
    )
    return added
