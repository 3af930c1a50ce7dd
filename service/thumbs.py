"""The content-addressed image files: thumbnails for the ops console, and the kept source of each image.

Both are named by the image's MD5, one file per distinct image however many records (keys, namespaces) hold
it: `<root>/ab/c/abc...ef.<ext>`. Two levels of fan-out, 256 x 16 = 4,096 folders: a million images make ~250
files a folder, and the folders themselves cost at most 16 MB (a two-hex-digit second level, 65,536 folders,
would cost a 4 KiB block per image in a catalog of 100,000, as much again as the thumbnails). A file is written
once, with the first record of its image, and removed when the last record with that MD5 goes. Files are
written to a temporary name in the same folder and renamed into place, so a reader or a crash never sees half
a file.

- Thumbnails (THUMB_DIR): 256 px WEBP pictures the console shows.
- Kept sources (SOURCE_DIR, KEEP_SOURCES): the decoded image at a bounded size, what a reindex into a new
  embedding space re-embeds from when the caller's original is gone (an upload, base64). The original's size
  (after EXIF orientation, what a record's region refers to) travels inside the file, in its EXIF
  PixelXDimension/PixelYDimension, so a region can be mapped onto the kept picture.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from PIL import ExifTags, Image

log = logging.getLogger(__name__)

THUMB_SIDE = 256  # the longest side, in pixels: a sharp grid card on a high-density screen
# WEBP quality 80: clean product photos at ~9 kB median (scikit-image samples; docs/operations.md, "Thumbnails").
THUMB_QUALITY = 80
# libwebp's effort, 0-6. The encode is the largest cost of a stored image outside the model (3.5 of 6.1 ms of CPU
# per bench gallery photo at 2), and every ms of it is taken from the model's cores during a bulk import. Method 1
# encodes in 35% less time than 2 for 10% more bytes at the same PSNR (200 bench gallery images); 2 had already
# halved 4's time for 3% more bytes. docs/operations.md, "Thumbnails".
THUMB_METHOD = 1

# The kept source: the longest side in pixels, the file format and its quality. Chosen from the re-embedding
# quality loss measured by `make bench` (docs/deployment.md gives the figures and the disk cost).
SOURCE_SIDE = 512
SOURCE_FORMAT = "JPEG"
SOURCE_QUALITY = 90
_SUFFIX = {"JPEG": "jpg", "WEBP": "webp", "PNG": "png"}

_MD5 = re.compile(r"[0-9a-f]{32}")
T = TypeVar("T")


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


class Decoded(Protocol):
    """What `make_source` needs of a decoded image (model.images.DecodedImage, a layer this module does not
    import)."""

    @property
    def image(self) -> Image.Image: ...

    @property
    def full_size(self) -> tuple[int, int]: ...


@dataclass(frozen=True)
class KeptSource:
    """The picture a record can be re-embedded from, without the caller."""

    image: Image.Image  # RGB, fits SOURCE_SIDE x SOURCE_SIDE, EXIF orientation already applied
    full_size: tuple[int, int]  # the original's size after EXIF orientation (what a record's region refers to)


def make_source(decoded: Decoded) -> KeptSource:
    """The kept source of a decoded image: its picture scaled down to fit SOURCE_SIDE (never enlarged).

    A large JPEG is decoded at a reduced scale that keeps its short side at least the model's input size, so
    its source may be smaller than SOURCE_SIDE: it holds all the model ever saw of it.
    """
    return KeptSource(make_thumbnail(decoded.image, SOURCE_SIDE), decoded.full_size)


def encode_source(source: KeptSource) -> bytes:
    """The file of a kept source: SOURCE_FORMAT at SOURCE_QUALITY, the original's size in its EXIF."""
    exif = Image.Exif()
    sizes = exif.get_ifd(ExifTags.IFD.Exif)
    sizes[ExifTags.Base.ExifImageWidth], sizes[ExifTags.Base.ExifImageHeight] = source.full_size
    buf = io.BytesIO()
    source.image.save(buf, SOURCE_FORMAT, quality=SOURCE_QUALITY, exif=exif.tobytes())
    return buf.getvalue()


def decode_source(data: bytes) -> KeptSource:
    """A kept source from its file; ValueError when the file does not say the original's size."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        sizes = img.getexif().get_ifd(ExifTags.IFD.Exif)
        width, height = sizes.get(ExifTags.Base.ExifImageWidth), sizes.get(ExifTags.Base.ExifImageHeight)
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            raise ValueError("the file does not carry the original's size")
        # No orientation is applied: the picture was stored turned already, and its EXIF holds only the size.
        return KeptSource(img.convert("RGB"), (width, height))


class _Folder:
    """A folder of files named by MD5: the shared path scheme, atomic write and forget-when-unused."""

    suffix = ""  # the files' extension
    what = ""  # what a file is, for log lines

    def __init__(self, root: Path) -> None:
        self.root = root
        # Serialises "is this MD5 still used? then remove its file" against writes of the same files,
        # so a delete racing an add of the same image never removes the file the add just wrote.
        self.lock = threading.Lock()

    def path_of(self, md5: str) -> Path:
        """Where the file of the image with this MD5 lives; ValueError for anything but 32 hex digits."""
        if not _MD5.fullmatch(md5):
            raise ValueError(f"not an MD5: {md5!r}")
        return self.root / md5[:2] / md5[2] / f"{md5}.{self.suffix}"

    def read_bytes(self, md5: str) -> bytes | None:
        """The file's bytes, or None when there is none."""
        try:
            return self.path_of(md5).read_bytes()
        except FileNotFoundError:
            return None

    def store(self, md5: str, data: bytes) -> None:
        """Store encoded bytes under `md5`, unless a file is there already (same MD5, same picture)."""
        path = self.path_of(md5)
        with self.lock:
            if not path.exists():
                _write_atomically(path, data)

    def _write_missing(self, items: Iterable[tuple[str, T | None]], encode_one: Callable[[T], bytes]) -> None:
        """Encode and store the items whose file is missing (None items skipped); failures logged, never raised.

        A record is worth more than its picture: a full disk must not fail an add or an import.
        """
        for md5, item in items:
            if item is None:
                continue
            try:
                if not self.path_of(md5).exists():
                    self.store(md5, encode_one(item))
            except (OSError, ValueError) as exc:
                log.warning("cannot write the %s of %s under %s: %s", self.what, md5, self.root, exc)

    def forget(self, md5s: Iterable[str], in_use: Callable[[set[str]], set[str]]) -> int:
        """Remove the files of these MD5s that no record uses any more (`in_use` asks the store).

        Returns how many files were removed. Failures are logged: a stale file costs only disk.
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
                    log.warning("cannot remove the %s of %s: %s", self.what, md5, exc)
        return removed


class Thumbnails(_Folder):
    """The thumbnail folder (THUMB_DIR)."""

    suffix = "webp"
    what = "thumbnail"

    def read(self, md5: str) -> bytes | None:
        """The thumbnail's WEBP bytes, or None when there is none."""
        return self.read_bytes(md5)

    def write(self, md5: str, thumb: Image.Image) -> bytes:
        """Store a thumbnail made by `make_thumbnail` (kept as it is when the file exists); returns its bytes."""
        data = encode(thumb)
        self.store(md5, data)
        return data

    def write_many(self, thumbs: Iterable[tuple[str, Image.Image | None]]) -> None:
        """Write the thumbnails missing among (md5, thumbnail) pairs; a failure is logged, never raised.

        The console shows a placeholder, and the thumbnail is made on first view if the file is readable.
        """
        self._write_missing(thumbs, encode)


class Sources(_Folder):
    """The kept sources' folder (SOURCE_DIR): one picture per MD5 to re-embed from."""

    suffix = _SUFFIX[SOURCE_FORMAT]
    what = "kept source"

    def read(self, md5: str) -> KeptSource | None:
        """The kept source of the image with this MD5, or None when it is absent or unreadable."""
        data = self.read_bytes(md5)
        if data is None:
            return None
        try:
            return decode_source(data)
        except (OSError, ValueError, SyntaxError) as exc:  # Pillow's ways of saying "not a good image file"
            log.warning("cannot read the kept source of %s under %s: %s", md5, self.root, exc)
            return None

    def write(self, md5: str, source: KeptSource) -> None:
        """Store a kept source made by `make_source` (kept as it is when the file exists)."""
        self.store(md5, encode_source(source))

    def write_many(self, items: Iterable[tuple[str, KeptSource | None]]) -> None:
        """Write the kept sources missing among (md5, source) pairs; a failure is logged, never raised.

        Without its source a record can still be re-embedded from its filepath or its thumbnail.
        """
        self._write_missing(items, encode_source)


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
