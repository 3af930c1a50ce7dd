"""The `path` input kind: read an image file from the shared volume, but only below PATH_ROOTS."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from conf.errors import BadInput, Forbidden, TooLarge
from conf.settings import Settings
from service.inputs import Source


@dataclass(frozen=True)
class SharedPath:
    """An image file below PATH_ROOTS; its recorded filepath defaults to the path as the caller gave it."""

    path: str

    def load(self, settings: Settings) -> Source:
        """Read the file (see `read_allowed`)."""
        data, _real = read_allowed(self.path, settings.allowed_roots, settings.max_image_bytes)
        return Source(data, self.path)


def resolve_allowed(raw: str, roots: list[Path]) -> Path:
    """Resolve `raw` (symlinks and `..` included) and require it to lie below one of `roots`.

    A relative path is taken relative to the first root. Raises Forbidden
    outside the roots, BadInput for an empty path.
    """
    if not raw or not raw.strip():
        raise BadInput("field 'path' is empty; send the absolute path of an image on the shared volume")
    if "\x00" in raw:
        raise BadInput("field 'path' contains a NUL byte")
    candidate = Path(raw)
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    real = Path(os.path.realpath(candidate))
    for root in roots:
        if real == root or root in real.parents:
            return real
    allowed = ", ".join(str(r) for r in roots)
    raise Forbidden(
        f"path {raw!r} is outside the folders this service may read ({allowed}); "
        "put the image below one of them or add its folder to PATH_ROOTS"
    )


def missing_message(raw: str, real: Path, roots: list[Path]) -> str:
    """The "does not exist" message: the path the service looked for, and how a relative path was resolved.

    Only called for a path that resolved below a root, so it shows nothing outside PATH_ROOTS.
    """
    message = f"path {raw!r} does not exist: the service looked for {str(real)!r}"
    if not Path(raw).is_absolute():
        message += (
            f" (a relative path is resolved against the first folder of PATH_ROOTS, {str(roots[0])!r}, "
            "not against the caller's working directory; send an absolute path or one relative to it)"
        )
    return message


def read_allowed(raw: str, roots: list[Path], max_bytes: int) -> tuple[bytes, Path]:
    """The bytes of an allowed regular file, and its resolved path.

    Opens without following a last-moment symlink swap and without blocking on
    FIFOs, then checks the opened file itself (not the name) is a regular file.
    """
    real = resolve_allowed(raw, roots)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise BadInput(missing_message(raw, real, roots)) from None
    except PermissionError:
        raise BadInput(f"path {raw!r} is not readable by the service (permission denied)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            try:
                os.path.realpath(real, strict=True)
            except OSError:  # realpath left it unresolved: a symlink that loops back on itself
                raise BadInput(f"path {raw!r} is a symlink loop; send the path of an image file") from None
            # The path was swapped for a symlink after we resolved it.
            raise Forbidden(f"path {raw!r} changed into a symlink while being opened") from None
        if exc.errno == errno.EISDIR:
            raise BadInput(f"path {raw!r} is a directory; send the path of an image file") from None
        raise BadInput(f"path {raw!r} cannot be opened ({exc.strerror})") from None
    try:  # check the opened file before wrapping it: os.fdopen itself refuses a directory with an OSError
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise BadInput(f"path {raw!r} is a directory; send the path of an image file")
        if not stat.S_ISREG(info.st_mode):
            raise BadInput(f"path {raw!r} is not a regular file (a device, FIFO or socket)")
        if info.st_size > max_bytes:
            raise TooLarge(
                f"file {raw!r} is {info.st_size} bytes; the limit is {max_bytes} (MAX_IMAGE_BYTES)",
                reason="too_many_bytes",
            )
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:  # the file grew after fstat
        raise TooLarge(
            f"file {raw!r} is over the limit of {max_bytes} bytes (MAX_IMAGE_BYTES)", reason="too_many_bytes"
        )
    return data, real
