"""The thumbnail of a stored record, for the ops console."""

from __future__ import annotations

import logging

from conf.errors import ApiError, NotFound
from model.images import md5_hex
from service.inputs.path import read_allowed
from service.thumbs import encode
from service.usecases.deps import Deps
from service.usecases.prepare import thumbnail_input

log = logging.getLogger(__name__)


def thumbnail(deps: Deps, record_id: int, namespace: str = "") -> bytes:
    """The WEBP thumbnail of record `record_id`; NotFound when the record does not exist or has none.

    Records stored before thumbnails existed get theirs on first view, made from the record's filepath
    when that file is readable below PATH_ROOTS and still holds the very image stored (same MD5), so a
    thumbnail never shows another picture than the record's. `namespace` is the caller's: a record of
    another namespace is answered exactly like a missing one.
    """
    records = deps.store.get_ids(deps.store.scope(namespace), [record_id])
    if not records:
        raise NotFound(f"no record with id {record_id}")
    record = records[0]
    stored = deps.thumbs.read(record["md5"])
    if stored is not None:
        return stored
    made = _from_filepath(deps, record["filepath"], record["md5"])
    if made is None:
        raise NotFound(
            f"record {record_id} has no thumbnail, and its filepath is not a readable copy of its "
            "image below PATH_ROOTS to make one from"
        )
    return made


def _from_filepath(deps: Deps, filepath: str, md5: str) -> bytes | None:
    """A thumbnail made from the file at `filepath` (and kept), when it is readable and its MD5 is `md5`."""
    settings = deps.settings
    try:
        data, _real = read_allowed(filepath, settings.allowed_roots, settings.max_image_bytes)
        if md5_hex(data) != md5:
            return None  # the file changed since the record was stored: not this record's picture
        _md5, thumb = thumbnail_input(data, settings, deps.decode_budget)
    except ApiError:  # outside PATH_ROOTS, gone, unreadable, no longer an image: no thumbnail
        return None
    made = encode(thumb)
    try:
        deps.thumbs.store(md5, made)
    except OSError as exc:  # the thumbnail folder is not writable: serve this one, make it again next time
        log.warning("cannot keep the thumbnail of %s under %s: %s", md5, deps.thumbs.root, exc)
    return made
