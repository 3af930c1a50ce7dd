"""Thumbnails of the stored images, for the ops console: small WEBP files named by the image's MD5.

One file per distinct image, however many records (keys, namespaces) hold it: `<root>/ab/c/abc...ef.webp`.
Two levels of fan-out, 256 x 16 = 4,096 folders: a million images make ~250 files a folder, and the
folders themselves cost at most 16 MB (a two-hex-digit second level, 65,536 folders, would cost a 4 KiB
block per image in a catalog of 100,000, as much again as the thumbnails). A thumbnail is written once, with the
first record of its image, and removed when the last record with that MD5 goes. Files are written to a
temporary name in the same folder and renamed into place, so a reader or a crash never sees half a file.

Framework-free: it knows Pillow and the filesystem, not the store; the use cases decide when to write and
when to remove (service/usecases/add.py, delete.py, thumbnail.py).
"""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from PIL import Image

log = logging.getLogger(__name__)

THUMB_SIDE = 256  # the longest side, in pixels: a sharp grid card on a high-density screen
# WEBP quality 80: clean product photos at ~7 kB median (scikit-image samples; see the README's thumbnail cost).
THUMB_QUALITY = 80
# libwebp's effort, 0-6. Method 2 encodes a thumbnail in 1.8 ms against 4.1 ms at 4, for 3% more bytes (100
# bench gallery images); at 4 the bulk import's thumbnails took a core from the INT8 model for half the import.
THUMB_METHOD = 2
_MD5 = re.compile(r"[0-9a-f]{32}")


def make_thumbnail(image: Image.Image, side: int = THUMB_SIDE) -> Image.Image:
    """A copy of an RGB image that fits in side x side (never enlarged), for `Thumbnails.write`."""
    if max(image.size) <= side:
        thumb = image.copy()
    else:  # reducing_gap: a cheap integer reduction first, so a 50 MP PNG is not filtered at full size
        thumb = image.resize(_fit(image.size, side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return thumb if thumb.mode == "RGB" else thumb.convert("RGB")


def _fit(size: tuple[int, int], side: int) -> tuple[int, int]:
    width, height = size
    scale = side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode(thumb: Image.Image) -> bytes:
    """The WEBP file of a thumbnail."""
    buf = io.BytesIO()
    thumb.save(buf, "WEBP", quality=THUMB_QUALITY, method=THUMB_METHOD)
    return buf.getvalue()


class Thumbnails:
    """The thumbnail folder (THUMB_DIR)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # Serialises "is this MD5 still used? then remove its file" against writes of the same files,
        # so a delete racing an add of the same image never removes the file the add just wrote.
        self.lock = threading.Lock()

    def path_of(self, md5: str) -> Path:
        """Where the thumbnail of the image with this MD5 lives; ValueError for anything but 32 hex digits."""
        if not _MD5.fullmatch(md5):
            raise ValueError(f"not an MD5: {md5!r}")
        return self.root / md5[:2] / md5[2] / f"{md5}.webp"

    def read(self, md5: str) -> bytes | None:
        """The thumbnail's WEBP bytes, or None when there is none."""
        try:
            return self.path_of(md5).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, md5: str, thumb: Image.Image) -> bytes:
        """Store a thumbnail made by `make_thumbnail` (kept as it is when the file exists); returns its bytes."""
        data = encode(thumb)
        self.store(md5, data)
        return data

    def store(self, md5: str, data: bytes) -> None:
        """Store encoded thumbnail bytes under `md5`, unless a file is there already (same MD5, same picture)."""
        path = self.path_of(md5)
        with self.lock:
            if not path.exists():
                _write_atomically(path, data)

    def write_many(self, thumbs: Iterable[tuple[str, Image.Image | None]]) -> None:
        """Write the thumbnails missing among (md5, thumbnail) pairs; a failure is logged, never raised.

        A record is worth more than its picture: a full disk must not fail an add or an import (the
        console shows a placeholder, and the thumbnail is made on first view if the file is readable).
        """
        for md5, thumb in thumbs:
            if thumb is None:
                continue
            try:
                if not self.path_of(md5).exists():
                    self.write(md5, thumb)
            except (OSError, ValueError) as exc:
                log.warning("cannot write the thumbnail of %s under %s: %s", md5, self.root, exc)

    def forget(self, md5s: Iterable[str], in_use: Callable[[set[str]], set[str]]) -> int:
        """Remove the thumbnails of these MD5s that no record uses any more (`in_use` asks the store).

        Returns how many files were removed. Failures are logged: a stale thumbnail costs only disk.
        """
        wanted = {m for m in md5s if _MD5.fullmatch(m)}
        if not wanted:
            return 0
        removed = 0
        with self.lock:
            for md5 in wanted - in_use(wanted):
                try:
                    self.path_of(md5).unlink()
                    removed += 1
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    log.warning("cannot remove the thumbnail of %s: %s", md5, exc)
        return removed


def _write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, flush it to disk, and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
