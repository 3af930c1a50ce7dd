"""What imgsim records about a collection besides its rows: the embedding space, the calibrated duplicate score.

Where it is kept depends on what the server can do, found out by trying (service.store.connection
reads and writes it):
- Collection properties (`alter_collection_properties`), on Milvus Lite and Milvus 2.3+ servers: both
  the space and the calibrated threshold live there, with the data, for every replica of the service.
- The collection description, set at creation: Milvus servers keep it, Milvus Lite drops it. The
  space is written there too, so a server that refuses property changes still carries it.
- A sidecar JSON file under MODEL_CACHE_DIR/thresholds/, keyed by collection and space, for the
  calibrated threshold when the server refuses property changes (local to this machine).

A collection created before fingerprints existed carries neither: it is adopted (the running
space is recorded on it when possible) with a warning in the log. This module is the format and
the decisions; it calls no Milvus.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from conf.settings import Settings

log = logging.getLogger(__name__)

SPACE_PROPERTY = "imgsim.space"
SPACE_SUMMARY_PROPERTY = "imgsim.space_summary"
DUPLICATE_PROPERTY = "imgsim.duplicate"
_DESCRIPTION_SPACE = re.compile(r"embedding space ([0-9a-f]{16})(?:: (.*))?$")


@dataclass(frozen=True)
class SpaceTag:
    """The embedding space of the running model: its fingerprint digest and readable summary."""

    digest: str
    summary: str

    def description(self) -> str:
        """The collection description that records this space (kept by Milvus servers)."""
        return f"imgsim image vectors; embedding space {self.digest}: {self.summary}"

    def properties(self) -> dict[str, str]:
        """The collection properties that record this space."""
        return {SPACE_PROPERTY: self.digest, SPACE_SUMMARY_PROPERTY: self.summary}


@dataclass(frozen=True)
class DuplicateThreshold:
    """A duplicate score calibrated by `python main.py calibrate DIR` for one collection and space."""

    score: float
    space: str  # the fingerprint digest it was measured in
    images: int  # distinct images it was measured on
    copies_kept: float  # share of generated copies scoring at or above it
    distinct_above: float  # share of distinct-image pairs scoring at or above it
    created: str  # ISO time

    def as_json(self) -> str:
        """The threshold as one JSON object (a property value or a sidecar file)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DuplicateThreshold:
        """Parse `as_json` output; ValueError when it is not one."""
        try:
            raw = json.loads(text)
            return cls(
                float(raw["score"]),
                str(raw["space"]),
                int(raw["images"]),
                float(raw["copies_kept"]),
                float(raw["distinct_above"]),
                str(raw["created"]),
            )
        except (TypeError, KeyError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a calibrated threshold: {exc}") from exc


def new_collection_description(space: SpaceTag | None) -> str:
    """The description a new collection is created with."""
    return space.description() if space is not None else "imgsim image vectors"


def stored_space(desc: dict[str, Any]) -> tuple[str | None, str]:
    """(digest, summary) recorded on a described collection: its properties first, then its description."""
    props = desc.get("properties") or {}
    if props.get(SPACE_PROPERTY):
        return str(props[SPACE_PROPERTY]), str(props.get(SPACE_SUMMARY_PROPERTY, ""))
    found = _DESCRIPTION_SPACE.search(str(desc.get("description") or ""))
    if found:
        return found.group(1), found.group(2) or ""
    return None, ""


def space_mismatch(where: str, space: SpaceTag, stored: str, summary: str) -> str:
    """The refusal when `where` (a collection in a Milvus) holds vectors of another embedding space."""
    return (
        f"{where} holds vectors of embedding space {stored} ({summary or 'no summary recorded'}), but this "
        f"configuration embeds into {space.digest} ({space.summary}). Vectors of different spaces cannot be "
        "compared. Either set MILVUS_COLLECTION to another (new) collection for this configuration, or "
        "re-embed: import the images again into a new collection with `python main.py import DIR`; or go "
        "back to the settings that made this one."
    )


def pick_threshold(texts: Iterable[object], space: SpaceTag) -> DuplicateThreshold | None:
    """The first of these stored thresholds (property value, sidecar text) calibrated in `space`."""
    for text in texts:
        if not text:
            continue
        try:
            found = DuplicateThreshold.from_json(str(text))
        except ValueError as exc:
            log.warning("ignoring an unreadable calibrated duplicate threshold (%s)", exc)
            continue
        if found.space == space.digest:
            return found
        log.warning(
            "ignoring the duplicate threshold calibrated in embedding space %s (running %s): run "
            "`python main.py calibrate DIR` again",
            found.space,
            space.digest,
        )
    return None


def sidecar_path(settings: Settings, space_digest: str) -> Path:
    """Where a threshold goes when the server keeps no collection properties: one file per collection and space."""
    return Path(settings.model_cache_dir) / "thresholds" / f"{settings.milvus_collection}-{space_digest}.json"


def read_sidecar(settings: Settings, space: SpaceTag) -> str | None:
    """The text of this collection's and space's sidecar threshold file, if there is one."""
    path = sidecar_path(settings, space.digest)
    return path.read_text() if path.is_file() else None


def write_sidecar(settings: Settings, threshold: DuplicateThreshold) -> str:
    """Write a threshold to its sidecar file; returns the file's path."""
    path = sidecar_path(settings, threshold.space)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(threshold.as_json())
    tmp.replace(path)  # a reader never sees half a file
    return str(path)
