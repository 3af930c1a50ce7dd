"""MODEL_WEIGHTS resolved to a file and an identity, the part every backbone shares."""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from conf.errors import StartupError

log = logging.getLogger(__name__)

RANDOM_SEED = 1234
RANDOM_IDENTITY = f"random-seed-{RANDOM_SEED}"


@dataclass(frozen=True)
class Weights:
    """Resolved MODEL_WEIGHTS: the file to load (None: seeded random), its identity, and a label for /ready."""

    path: Path | None
    identity: str  # "sha256:<hex>" of the file, or RANDOM_IDENTITY
    label: str  # "imagenet", "random" or "local file"


@functools.lru_cache(maxsize=8)
def _file_sha256(path: Path, size: int, mtime_ns: int) -> str:
    """sha256 of a file; cached per (path, size, mtime) because a start may ask more than once."""
    del size, mtime_ns  # part of the cache key only
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def file_identity(path: Path) -> str:
    """The weights identity of a file: "sha256:<hex digest>"."""
    stat = path.stat()
    return "sha256:" + _file_sha256(path.resolve(), stat.st_size, stat.st_mtime_ns)


def local_file(weights: str, what: str) -> Weights:
    """MODEL_WEIGHTS as a path; StartupError naming the accepted values when there is no such file."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise StartupError(
            f"MODEL_WEIGHTS={weights}: no such file. Use 'imagenet', 'random' (tests only) "
            f"or the path of a local {what}."
        )
    return Weights(path.resolve(), file_identity(path), "local file")


def random_weights() -> Weights:
    """Seeded random weights, announced loudly: similarity results mean nothing with them."""
    log.warning("!" * 72)
    log.warning(
        "MODEL_WEIGHTS=random: the model has RANDOM weights (seed %d). Similarity "
        "results are meaningless. This is for tests only.",
        RANDOM_SEED,
    )
    log.warning("!" * 72)
    return Weights(None, RANDOM_IDENTITY, "random")
