"""Reindex: copy every record of an old collection into a new one, re-embedded in the running model's space.

Used by `python main.py reindex --from OLD`, run with the new service's settings (MILVUS_COLLECTION names the new
collection, created if missing). The old collection is only read: directly (service.store.records.OldCollection),
or with `--service URL` through the running old service's export endpoint (service.store.remote.RemoteCollection),
since Milvus Lite opens its file in one process at a time; both are an OldCatalog.

One pass walks both collections in the same id windows and compares them: a record missing in the new
collection, or differing there in namespace, key, MD5 or region, is re-embedded and written under its own id; one
differing only in filepath or attrs gets the old scalars with the vector it has; one the old collection no longer
holds is deleted. The first pass is the bulk, and catch-up passes repeat while a pass changed something (at most
MAX_CATCH_UP): what the old service added or deleted meanwhile comes over. Ids are copied as they are and written
with upsert, so a run stopped at any point just runs again: what was copied compares equal and is skipped.

Each record is re-embedded from the best source of its image (see Finder): the kept source, the record's file
below PATH_ROOTS if it still has the record's MD5, else the thumbnail. A record without one is not copied (its old
vector is of another space) and is listed in the missing CSV.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from conf.errors import ApiError, StartupError
from conf.settings import CALIBRATION_IMAGES, SearchRegion, Settings
from model.images import DecodedImage, decode_image, md5_hex
from service.inputs.path import read_allowed
from service.store.meta import SpaceTag
from service.store.records import CollectionInfo, OldCollection, VectorStore, id_windows, open_reader
from service.store.remote import RemoteCollection
from service.thumbs import Sources, Thumbnails, make_thumbnail
from service.usecases import calibrate
from service.usecases.deps import Model
from service.usecases.prepare import Framing, RegionBox, framed

log = logging.getLogger(__name__)

MAX_CATCH_UP = 3  # catch-up passes after the bulk one, while a pass still changes something
KINDS = ("kept", "filepath", "thumbnail")  # the sources, best first
MISSING_CSV = "reindex-missing.csv"
CALIBRATION_SIDE = 512  # calibration images are scaled to this (what a kept source holds), to bound memory
# Fields whose change means another vector (re-embed), and fields copied onto the vector the new record has.
EMBEDDED_FIELDS = ("namespace", "key", "md5", "region")
SCALAR_FIELDS = ("filepath", "attrs")

# (pass number, rows of the old collection walked so far in this pass, rows it holds)
Progress = Callable[[int, int, int], None]


class OldCatalog(Protocol):
    """What a reindex reads the old collection through (OldCollection, RemoteCollection): never a writer."""

    name: str
    target: str

    def count(self) -> int:
        """Rows in all namespaces."""
        ...

    def rows_window(self, low: int, high: int, cap: int) -> list[dict[str, Any]]:
        """The rows with low < id <= high (at most `cap`), normalised (service.store.records.normalised)."""
        ...

    def close(self) -> None:
        """Let go of the connection."""
        ...


@dataclass
class ReindexSummary:
    """What a reindex did (printed by `main.py reindex`)."""

    old: str
    new: str
    records_old: int = 0
    records_new: int = 0
    copied: Counter[str] = field(default_factory=Counter)  # source kind -> records re-embedded from it
    unchanged: int = 0  # records the first pass found copied already (a rerun)
    updated: int = 0  # records whose filepath or attrs were brought over (their vector kept)
    deleted: int = 0  # records of the new collection the old one no longer holds
    missing: list[dict[str, Any]] = field(default_factory=list)  # records without source (last pass)
    missing_csv: Path | None = None
    passes: int = 0
    seconds: float = 0.0
    threshold: str = ""
    switch: list[str] = field(default_factory=list)
    alias_refused: str = ""  # why --switch-alias was refused (the records are copied all the same)

    @property
    def copied_total(self) -> int:
        """Records re-embedded and written in this run."""
        return sum(self.copied.values())

    def lines(self) -> list[str]:
        """The summary, for a person."""
        kinds = ", ".join(f"{self.copied[k]} from {k}" for k in KINDS)
        lines = [
            f"reindex {self.old!r} -> {self.new!r}: {self.records_old} records in the old collection, "
            f"{self.records_new} in the new one",
            f"copied {self.copied_total} ({kinds}); {self.unchanged} unchanged, {self.updated} updated "
            f"(filepath or attrs), {self.deleted} deleted in catch-up; {self.passes} passes in {self.seconds:.1f} s",
        ]
        if self.missing:
            lines.append(
                f"{len(self.missing)} records without source were NOT copied (no kept source, no readable file with "
                f"their MD5 below PATH_ROOTS, no thumbnail): listed in {self.missing_csv}; add their images again "
                "(to the new collection) or delete them"
            )
        else:
            lines.append("0 records without source")
        lines.append(f"duplicate threshold: {self.threshold}")
        lines += self.switch
        return lines


@dataclass
class _Pass:
    """What one pass did (`missing`: id -> the record without source, with why)."""

    copied: Counter[str] = field(default_factory=Counter)
    unchanged: int = 0
    updated: int = 0
    deleted: int = 0
    missing: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        """Records written or deleted: a pass that changed nothing ends the catch-up."""
        return sum(self.copied.values()) + self.updated + self.deleted


class Finder:
    """The source each image is re-embedded from: kept source, then the record's file, then the thumbnail."""

    def __init__(self, settings: Settings, sources: Sources | None, thumbs: Thumbnails) -> None:
        """`sources` None: no kept sources (KEEP_SOURCES=false and none kept before)."""
        self._settings = settings
        self._sources = sources
        self._thumbs = thumbs
        self._last: tuple[str, str, DecodedImage | None, str] | None = None  # md5, kind, image, why

    def find(self, md5: str, filepath: str) -> tuple[str, DecodedImage | None, str]:
        """(kind, image, why not) for an image and one of its records' filepath; kind "" when there is none.

        The last answer is remembered: callers ask for the rows of one MD5 one after another.
        """
        last = self._last
        if last is not None and last[0] == md5 and last[1] in ("kept", "filepath"):
            return last[1], last[2], last[3]
        kind, image, why = self._look(md5, filepath)
        self._last = (md5, kind, image, why)
        return kind, image, why

    def _look(self, md5: str, filepath: str) -> tuple[str, DecodedImage | None, str]:
        s = self._settings
        kept = self._sources.read(md5) if self._sources is not None else None
        if kept is not None:
            return "kept", DecodedImage(kept.image, md5, kept.full_size), ""
        why = "no kept source"
        if filepath:
            try:
                data, _real = read_allowed(filepath, s.allowed_roots, s.max_image_bytes)
                if md5_hex(data) == md5:
                    limits = {"max_bytes": s.max_image_bytes, "max_pixels": s.max_image_pixels}
                    return "filepath", decode_image(data, **limits), ""
                why += f"; {filepath!r} now holds another image"
            except (ApiError, OSError) as exc:
                why += f"; {getattr(exc, 'msg', exc)}"
        else:
            why += "; no filepath"
        thumb = self._thumbs.read(md5)
        if thumb is not None:
            try:
                decoded = decode_image(thumb, max_bytes=s.max_image_bytes, max_pixels=s.max_image_pixels)
                return "thumbnail", DecodedImage(decoded.image, md5, decoded.image.size), why
            except ApiError as exc:
                why += f"; thumbnail unreadable ({exc.msg})"
        else:
            why += "; no thumbnail"
        return "", None, why


@dataclass
class Reindex:
    """One reindex run: the old collection (read only), the new store, the model of the new space."""

    settings: Settings
    model: Model
    space: SpaceTag
    old: OldCatalog
    store: VectorStore
    finder: Finder
    batch_size: int = 32
    progress: Progress | None = None
    pace: Callable[[], None] | None = None  # called after each written batch (tests slow a run down with it)
    _seen_md5s: dict[str, str] = field(default_factory=dict)  # md5 -> a filepath, for a derived threshold

    @property
    def framing(self) -> Framing:
        """The model's ways of turning a decoded image into inputs."""
        return Framing(self.model.preprocess, self.model.preprocess_box, self.model.propose)

    def run(self) -> ReindexSummary:
        """Bulk pass, catch-up passes, and the summary (without threshold and switch-over: see `reindex`)."""
        started = time.monotonic()
        summary = ReindexSummary(self.old.name, self.settings.milvus_collection)
        last = self._pass(1)
        summary.unchanged = last.unchanged
        passes = [last]
        while last.changed and len(passes) <= MAX_CATCH_UP:
            last = self._pass(len(passes) + 1)
            passes.append(last)
        for p in passes:
            summary.copied.update(p.copied)
            summary.updated += p.updated
            summary.deleted += p.deleted
        summary.missing = sorted(last.missing.values(), key=lambda r: r["id"])
        summary.passes = len(passes)
        summary.records_old = self.old.count()
        summary.records_new = self.store.count_all()
        summary.seconds = time.monotonic() - started
        return summary

    def _pass(self, number: int) -> _Pass:
        result = _Pass()
        total = self.old.count()
        done = 0
        if self.progress is not None:
            self.progress(number, 0, total)
        for _high, (old_rows, new_rows) in id_windows(
            [self.old.rows_window, self.store.rows_window], max(total, self.store.count_all())
        ):
            self._window(old_rows, new_rows, result, first=number == 1)
            done += len(old_rows)
            if self.progress is not None:
                self.progress(number, done, total)
        log.info(
            "reindex pass %d: %d copied, %d updated, %d deleted, %d without source",
            number,
            sum(result.copied.values()),
            result.updated,
            result.deleted,
            len(result.missing),
        )
        return result

    def _window(
        self, old_rows: list[dict[str, Any]], new_rows: list[dict[str, Any]], result: _Pass, first: bool
    ) -> None:
        new_by_id = {r["id"]: r for r in new_rows}
        to_embed, to_update = [], []
        for row in old_rows:
            if first and len(self._seen_md5s) < 4 * CALIBRATION_IMAGES:
                self._seen_md5s.setdefault(row["md5"], row["filepath"])
            new = new_by_id.pop(row["id"], None)
            if new is None or any(row[f] != new[f] for f in EMBEDDED_FIELDS):
                to_embed.append(row)
            elif any(row[f] != new[f] for f in SCALAR_FIELDS):
                to_update.append(row)
            else:
                result.unchanged += 1
        if new_by_id:  # left over: records the old collection no longer holds
            result.deleted += self.store.delete_any(new_by_id)
        if to_update:
            vectors = {r["id"]: r["vector"] for r in self.store.rows_of(r["id"] for r in to_update)}
            rows = [{**r, "vector": vectors[r["id"]]} for r in to_update if r["id"] in vectors]
            self.store.write_rows(rows)
            result.updated += len(rows)
        self._embed(sorted(to_embed, key=lambda r: (r["md5"], r["id"])), result)

    def _embed(self, rows: list[dict[str, Any]], result: _Pass) -> None:
        """Re-embed rows (sorted by MD5: each image is read once) and write them, `batch_size` at a time."""
        batch: list[tuple[dict[str, Any], np.ndarray, str]] = []
        for row in rows:
            kind, decoded, why = self.finder.find(row["md5"], row["filepath"])
            if decoded is not None and kind == "thumbnail" and row["region"]:
                decoded = None
                why += "; only the thumbnail is left, which lacks the original size its region refers to"
            if decoded is None:
                result.missing[row["id"]] = {**row, "why": why.lstrip("; ")}
                continue
            box = row["region"]
            region = RegionBox(box["x"], box["y"], box["w"], box["h"]) if box else SearchRegion.WHOLE
            try:
                array = framed(decoded, region, self.framing).array
            except ApiError as exc:  # a region outside the image: the source is not the record's picture
                result.missing[row["id"]] = {**row, "why": exc.msg}
                continue
            batch.append((row, array, kind))
            if len(batch) >= self.batch_size:
                self._write(batch, result)
                batch = []
        if batch:
            self._write(batch, result)

    def _write(self, batch: list[tuple[dict[str, Any], np.ndarray, str]], result: _Pass) -> None:
        vectors = self.model.embed(np.stack([array for _row, array, _kind in batch]))
        rows = [{**row, "vector": vec} for (row, _array, _kind), vec in zip(batch, vectors, strict=True)]
        self.store.write_rows(rows)
        result.copied.update(kind for _row, _array, kind in batch)
        if self.pace is not None:
            self.pace()

    def calibration_images(self, limit: int = CALIBRATION_IMAGES) -> list[Image.Image]:
        """Up to `limit` distinct images from the sources of the old collection's records, for `calibrate.score`."""
        images = []
        for md5, filepath in self._seen_md5s.items():
            kind, decoded, _why = self.finder.find(md5, filepath)
            if decoded is not None and kind:
                images.append(make_thumbnail(decoded.image, CALIBRATION_SIDE))
            if len(images) >= limit:
                break
        return images


def open_old(
    settings: Settings, old_name: str, service: str | None = None, token: str | None = None
) -> tuple[OldCatalog, CollectionInfo]:
    """Open the old collection for reading (before the model loads: a wrong name costs no wait): in MILVUS_URI, or
    with `service` through the running service at that URL (`token`: an admin token of it).

    Raises StartupError (DataDirHeld for a Milvus Lite file another process holds) with a message that says why
    and what to do: the same collection as MILVUS_COLLECTION, or a missing one.
    """
    if old_name == settings.milvus_collection:
        raise StartupError(
            f"--from {old_name!r} is MILVUS_COLLECTION itself: a reindex copies the old collection into a new one. "
            "Set MILVUS_COLLECTION to the new collection's name (and the model settings of the new space)."
        )
    old: OldCollection | RemoteCollection
    old = RemoteCollection(service, old_name, token) if service else OldCollection(settings, old_name)
    try:
        info = old.open()
    except BaseException:
        old.close()
        raise
    if info is None:
        old.close()
        raise StartupError(
            f"collection {old_name!r} does not exist in {old.target}: name the collection the old service "
            "uses (its MILVUS_COLLECTION) in --from"
        )
    return old, info


def check_new_file(settings: Settings) -> None:
    """With --service on Milvus Lite: the new collection's file must be one the running service does not hold.

    Raises DataDirHeld (before the model loads) when MILVUS_URI is a file another process holds.
    """
    if settings.milvus_is_lite:
        open_reader(settings).close()


def check_space(info: CollectionInfo, space: SpaceTag) -> None:
    """Refuse an old collection of the running space: there is nothing to re-embed."""
    if info.space == space.digest:
        raise StartupError(
            f"collection {info.name!r} is already in this embedding space ({space.digest}: {space.summary}), the "
            "one these settings embed into: there is nothing to re-embed. Set the model settings of the new "
            "space (MODEL_NAME, MODEL_PRECISION, IMAGE_RESIZE...) before running the reindex."
        )


def check_target(old: CollectionInfo, store: VectorStore) -> None:
    """Refuse a new collection that is the old one behind an alias, or one of an earlier imgsim that cannot hold
    what the old one has."""
    if store.alias is not None:
        # Writing through an alias would write wherever it points (maybe the old collection itself).
        raise StartupError(
            f"MILVUS_COLLECTION {store.alias!r} is an alias (of {store.collection!r}): a reindex writes into a "
            "collection of its own. Set MILVUS_COLLECTION to the new collection's name and pass "
            f"--switch-alias {store.alias} to move the alias there at the end."
        )
    new = store.layout
    lacks = [
        what
        for what, has, needs in (
            ("namespaces and attrs", new.tenancy, old.layout.tenancy),
            ("regions", new.regions, old.layout.regions),
        )
        if needs and not has
    ]
    if lacks:
        raise StartupError(
            f"collection {store.connection.collection!r} was made by an earlier imgsim without {' or '.join(lacks)}, "
            f"which {old.name!r} has: set MILVUS_COLLECTION to a new name"
        )


def derive_threshold(run: Reindex, progress: bool) -> str:
    """Calibrate the duplicate threshold on the sources, store it on the new collection; what to report."""
    images = run.calibration_images()
    default = run.model.duplicate_default
    try:
        scores = calibrate.score(run.model, images, progress=progress)
    except ValueError as exc:
        return f"not derived ({exc}); model default {default:g}"
    threshold = scores.threshold()
    result = replace(scores.summary(threshold, len(images)), space=run.space.digest)
    where = run.store.save_duplicate_threshold(result)
    return (
        f"derived {threshold:.3f} on {len(images)} images (keeps {result.copies_kept:.0%} of generated copies), "
        f"stored in {where}"
    )


def switch_over(settings: Settings, alias_result: str | None, service: bool = False) -> list[str]:
    """How the service moves to the new collection (`service`: the old one was read through the running service)."""
    new = settings.milvus_collection
    if alias_result is not None:
        return [f"switched: {alias_result}; services reading through that alias now use {new!r}"]
    if settings.milvus_is_lite and service:
        return [
            f"to switch over: stop the service, then start it with MILVUS_URI={settings.milvus_uri} "
            f"MILVUS_COLLECTION={new} and these model settings"
        ]
    if settings.milvus_is_lite:
        return [
            f"to switch over: stop the service, then start it with MILVUS_COLLECTION={new} and these model settings"
        ]
    return [
        f"to switch over: restart the services with MILVUS_COLLECTION={new} and these model settings, "
        "or run again with --switch-alias NAME for services that read through an alias"
    ]


def write_missing(rows: Iterable[dict[str, Any]], path: Path) -> Path:
    """The records without source as a CSV file: id, namespace, key, md5, filepath, why."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "namespace", "key", "md5", "filepath", "why"])
    for r in rows:
        writer.writerow([r["id"], r["namespace"], r["key"], r["md5"], r["filepath"], r["why"]])
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def copy(run: Reindex, old_info: CollectionInfo) -> ReindexSummary:
    """Check both collections (the new one is created when missing), then copy: the bulk and catch-up passes."""
    check_space(old_info, run.space)
    run.store.connect()  # creates the new collection (in the new space) when missing
    check_target(old_info, run.store)
    return run.run()


def finish(
    run: Reindex,
    summary: ReindexSummary,
    threshold: str = "default",
    switch_alias: str | None = None,
    missing_path: Path = Path(MISSING_CSV),
    calibration_progress: bool = False,
) -> ReindexSummary:
    """After the copy: the threshold (`threshold` "derive" calibrates on the sources, "default" leaves the model's),
    the alias switch (a refusal is reported in the summary: the records are copied all the same), the missing CSV."""
    if threshold == "derive":
        summary.threshold = derive_threshold(run, calibration_progress)
    elif run.store.duplicate_threshold is not None:
        summary.threshold = f"{run.store.duplicate_threshold.score:g}, calibrated on the new collection before"
    else:
        summary.threshold = f"model default {run.model.duplicate_default:g} (--threshold derive calibrates one)"
    remote = isinstance(run.old, RemoteCollection)
    summary.switch = switch_over(run.settings, None, remote)
    if switch_alias:
        try:
            summary.switch = switch_over(run.settings, run.store.point_alias(switch_alias), remote)
        except StartupError as exc:  # the copy is done; only the switch was refused
            summary.alias_refused = str(exc)
            summary.switch = [f"the alias was NOT switched: {exc}", *summary.switch]
    if summary.missing:
        summary.missing_csv = write_missing(summary.missing, missing_path)
    return summary
