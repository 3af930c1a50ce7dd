"""Bulk import of a folder of images: batched embedding, resumable, with a summary.

Used by `python main.py import DIR` and by the start-up import of IMAGE_INC_PATH.
Each batch is stored with one upsert *before* its files are moved, and record
ids derive from (key, MD5), so an import killed at any point can simply be run
again: what was stored is recognised and skipped, nothing is stored twice.

Three stages overlap so the model waits as little as possible: worker threads
decode the next batch, the model embeds the current one, and a writer thread
stores (and moves) the previous one.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from conf.errors import ApiError
from conf.settings import MODEL_BATCH, Settings
from model.embedder import Embedder
from model.images import md5_hex
from service.store.filters import DEFAULT_NAMESPACE
from service.store.records import Scope, VectorStore
from service.thumbs import Sources, Thumbnails
from service.usecases.add import Embedded, embed_unstored, keep_files, put_embedded
from service.usecases.prepare import PreparedImage, stored_input

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    """Why one file was not imported: a reason code, and the message for a person."""

    reason: str
    message: str


@dataclass
class ImportSummary:
    """What an import did."""

    imported: int = 0
    duplicates: int = 0
    failed: dict[str, Failure] = field(default_factory=dict)  # file -> why
    files: int = 0
    seconds: float = 0.0  # the import itself: after the model loaded and the store connected
    model_seconds: float = 0.0  # of which the model was embedding (the rest: decoding, Milvus, moving)

    def lines(self) -> list[str]:
        """A human summary, one line per fact and per failure reason."""
        rate = f", {self.files / self.seconds:.1f} files/s" if self.seconds > 0 else ""
        out = [
            f"imported: {self.imported}",
            f"skipped as duplicates: {self.duplicates}",
            f"failed: {len(self.failed)}",
            f"took: {self.seconds:.2f} s for {self.files} files{rate}; model busy {self.model_seconds:.2f} s",
        ]
        example = {f.reason: f.message for f in reversed(list(self.failed.values()))}  # the first of each reason
        for reason, n in Counter(f.reason for f in self.failed.values()).most_common():
            out.append(f"  {n} x {reason} (e.g. {example[reason]})")
        return out


def _nothing(*_args: object) -> None:
    """The default hook: nobody is listening."""


@dataclass(frozen=True)
class ImportHooks:
    """What an import tells its observer (service.runtime feeds metrics with these)."""

    started: Callable[[], None] = _nothing  # an import begins
    finished: Callable[[], None] = _nothing  # it ended, done or failed
    batch: Callable[[int, float], None] = _nothing  # the model embedded a batch: (images, seconds)


@dataclass
class _Item:
    """One file of the folder: prepared for the model, or why it cannot be."""

    src: Path
    image: PreparedImage | None = None
    dest: Path | None = None
    failure: Failure | None = None


def iter_images(folder: Path) -> list[Path]:
    """Every regular file below `folder` (hidden files and folders skipped), in a stable order."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _destination(src: Path, root: Path, move_to: Path, md5: str) -> Path:
    dest = move_to / src.relative_to(root)
    if dest.exists() and md5_hex(dest.read_bytes()) != md5:
        # A different image already has this name in the pool: keep both, deterministically.
        dest = dest.with_name(f"{dest.stem}-{md5[:8]}{dest.suffix}")
    return dest


def _move(src: Path, dest: Path) -> None:
    """Move a file so that `dest` never holds part of it: a rename, or (to another filesystem) a copy
    to a hidden name beside `dest` that is then renamed into place.

    shutil.move copies straight to `dest`: a kill mid-copy left a truncated image there, already
    named by its record, and the rerun put the whole image under another name beside it.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(src, dest)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    part = dest.with_name(f".{dest.name}.part")  # a fixed name: a rerun overwrites what a kill left
    shutil.copy2(src, part)
    os.replace(part, dest)
    src.unlink()


class Importer:
    """Imports folders of images into the store, embedding them in batches."""

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder,
        store: VectorStore,
        batch_size: int = MODEL_BATCH,
        hooks: ImportHooks | None = None,
        thumbs: Thumbnails | None = None,
        sources: Sources | None = None,
    ) -> None:
        """`thumbs`, `sources`: the service's own folder objects when it runs the import (one lock against its
        deletes); new ones on THUMB_DIR and SOURCE_DIR by default (`main.py import`, a process of its own)."""
        self._settings = settings
        self._embedder = embedder
        self._store = store
        self._batch_size = batch_size
        self._hooks = hooks or ImportHooks()
        self._thumbs = thumbs or Thumbnails(settings.thumb_dir)
        self._sources = sources or Sources(settings.source_dir)

    def _load(self, src: Path, root: Path, key_mode: str, move_to: Path | None) -> _Item:
        item = _Item(src)
        try:
            md5, array, thumb, source = stored_input(src.read_bytes(), self._settings, self._embedder.preprocess)
        except ApiError as exc:
            item.failure = Failure(exc.reason, exc.msg)
            return item
        except OSError as exc:
            item.failure = Failure("unreadable", f"cannot read file ({exc.strerror})")
            return item
        item.dest = _destination(src, root, move_to, md5) if move_to else None
        filepath = str((item.dest or src).resolve())
        item.image = PreparedImage(src.stem if key_mode == "filename" else md5, md5, filepath, array, thumb, source)
        return item

    def _batches(
        self, files: list[Path], root: Path, key_mode: str, move_to: Path | None, pool: ThreadPoolExecutor
    ) -> Iterator[list[_Item]]:
        # Decode the next batch in worker threads while the model embeds the current one.
        chunks = [files[i : i + self._batch_size] for i in range(0, len(files), self._batch_size)]
        ahead: list[Future[_Item]] = (
            [pool.submit(self._load, f, root, key_mode, move_to) for f in chunks[0]] if chunks else []
        )
        for nxt in [*chunks[1:], []]:
            current = ahead
            ahead = [pool.submit(self._load, f, root, key_mode, move_to) for f in nxt]
            yield [fut.result() for fut in current]

    def run(
        self,
        folder: Path,
        key_mode: str = "md5",
        move_to: Path | None = None,
        progress: bool = True,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> ImportSummary:
        """Import every image below `folder` into `namespace`; `key_mode` is 'md5' or 'filename' (the stem).

        Raises NamespaceError for a malformed namespace and Conflict when the collection cannot hold
        it (one created before namespaces existed), both before any file is read.
        """
        if key_mode not in ("md5", "filename"):
            raise ValueError("key_mode must be 'md5' or 'filename'")
        scope = self._store.scope(namespace)
        self._hooks.started()
        try:
            return self._run(folder, key_mode, move_to, progress, scope)
        finally:
            self._hooks.finished()

    def _run(self, folder: Path, key_mode: str, move_to: Path | None, progress: bool, scope: Scope) -> ImportSummary:
        root = folder.resolve()
        if move_to is not None:
            move_to = move_to.resolve()
        files = iter_images(root)
        summary = ImportSummary(files=len(files))
        started = time.perf_counter()
        with (
            ThreadPoolExecutor(max_workers=2, thread_name_prefix="import-decode") as pool,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="import-store") as writer,
            tqdm(total=len(files), unit="img", disable=not progress, desc=f"import {root}") as bar,
        ):
            storing: Future[tuple[int, int, int]] | None = None
            for batch in self._batches(files, root, key_mode, move_to, pool):
                embedded = self._embed_batch(batch, summary, scope)
                # One batch in the writer at a time: its failure stops the import before anything later
                # is stored or moved, and this batch is stored only after the previous one.
                if storing is not None:
                    bar.update(self._collect(storing, summary))
                storing = writer.submit(self._store_batch, batch, embedded, scope)
            if storing is not None:
                bar.update(self._collect(storing, summary))
        summary.seconds = time.perf_counter() - started
        return summary

    def _embed_batch(self, batch: list[_Item], summary: ImportSummary, scope: Scope) -> list[Embedded]:
        """Record the failures, skip what is stored already, and embed the rest."""
        for it in batch:
            if it.failure is not None:
                summary.failed[str(it.src)] = it.failure
        good = [it.image for it in batch if it.image is not None]
        # On a rerun most images are already stored: those skip the model. A stored image keeps the
        # filepath it was recorded with.
        embedded, _held = embed_unstored(
            self._store, scope, lambda arrays: self._embed(arrays, summary), good, refresh_filepath=False
        )
        summary.duplicates += len(good) - len(embedded)
        return embedded

    def _embed(self, arrays: Sequence[np.ndarray], summary: ImportSummary) -> list[np.ndarray]:
        started = time.perf_counter()
        try:
            return list(self._embedder.embed(np.stack(arrays)))  # one vector per image
        finally:
            seconds = time.perf_counter() - started
            summary.model_seconds += seconds
            self._hooks.batch(len(arrays), seconds)

    def _store_batch(self, batch: list[_Item], embedded: list[Embedded], scope: Scope) -> tuple[int, int, int]:
        """Store the embedded images, then move the batch's files; returns (imported, duplicates, files)."""
        # The thumbnails and sources are encoded here, in the writer thread, while the model embeds the next batch.
        results = put_embedded(self._store, scope, self._thumbs, self._sources, embedded)
        # Images stored by an earlier run (before thumbnails or sources existed, or killed in between) get theirs.
        keep_files(self._thumbs, self._sources, [it.image for it in batch if it.image is not None])
        imported = sum(1 for _rid, created in results if created)
        duplicates = len(results) - imported
        # Move only after the records are safely stored: a crash before this line leaves
        # the files in place, and the rerun recognises them as already stored.
        for it in batch:
            if it.image is not None and it.dest is not None and it.dest != it.src:
                if it.dest.exists():
                    it.src.unlink()
                else:
                    _move(it.src, it.dest)
        return imported, duplicates, len(batch)

    @staticmethod
    def _collect(storing: Future[tuple[int, int, int]], summary: ImportSummary) -> int:
        """Wait for a batch in the writer (raising its error), count it; returns its number of files."""
        imported, duplicates, files = storing.result()
        summary.imported += imported
        summary.duplicates += duplicates
        return files
