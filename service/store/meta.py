"""What imgsim records about a collection besides its rows: the embedding space, the calibrated duplicate score.

Where it is kept depends on what the server can do, found out by trying:
- Collection properties (`alter_collection_properties`), on Milvus Lite and Milvus 2.3+ servers: both
  the space and the calibrated threshold live there, with the data, for every replica of the service.
- The collection description, set at creation: Milvus servers keep it, Milvus Lite drops it. The
  space is written there too, so a server that refuses property changes still carries it.
- A sidecar JSON file under MODEL_CACHE_DIR/thresholds/, keyed by collection and space, for the
  calibrated threshold when the server refuses property changes (local to this machine).

A collection created before fingerprints existed carries neither: it is adopted (the running
space is recorded on it when possible) with a warning in the log.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from conf.errors import StartupError
from conf.settings import Settings
from service.store.client import MilvusClient, MilvusException, describe_target, short

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
            return cls(float(raw["score"]), str(raw["space"]), int(raw["images"]), float(raw["copies_kept"]),
                       float(raw["distinct_above"]), str(raw["created"]))
        except (TypeError, KeyError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a calibrated threshold: {exc}") from exc


def new_collection_description(space: SpaceTag | None) -> str:
    """The description a new collection is created with."""
    return space.description() if space is not None else "imgsim image vectors"


def check_space(client: MilvusClient, settings: Settings, space: SpaceTag, existing: dict[str, Any] | None) -> None:
    """Record the space on a new collection (`existing` None); on an existing one, given its description
    (describe_collection), refuse another space and adopt a pre-fingerprint one.

    Raises StartupError naming both spaces and the ways out on a mismatch.
    """
    name = settings.milvus_collection
    if existing is None:
        if not _set_properties(client, settings, {SPACE_PROPERTY: space.digest, SPACE_SUMMARY_PROPERTY: space.summary}):
            log.warning("%s does not accept collection properties; the embedding space of %r is recorded in its "
                        "description only", describe_target(settings), name)
        return
    stored, summary = stored_space(existing)
    if stored is None:
        log.warning("collection %r in %s has no embedding-space fingerprint (created before imgsim recorded one): "
                    "adopting it as %s. If its vectors came from another model, weights or preprocessing, "
                    "searches will be wrong: re-import into a new MILVUS_COLLECTION.", name,
                    describe_target(settings), space)
        _set_properties(client, settings, {SPACE_PROPERTY: space.digest, SPACE_SUMMARY_PROPERTY: space.summary})
        return
    if stored != space.digest:
        raise StartupError(
            f"collection {name!r} in {describe_target(settings)} holds vectors of embedding space {stored} "
            f"({summary or 'no summary recorded'}), but this configuration embeds into {space.digest} "
            f"({space.summary}). Vectors of different spaces cannot be compared. Either set MILVUS_COLLECTION to "
            f"another (new) collection for this configuration, or re-embed: import the images again into a new "
            f"collection with `python main.py import DIR`; or go back to the settings that made this one.")


def stored_space(desc: dict[str, Any]) -> tuple[str | None, str]:
    """(digest, summary) recorded on a described collection: its properties first, then its description."""
    props = desc.get("properties") or {}
    if props.get(SPACE_PROPERTY):
        return str(props[SPACE_PROPERTY]), str(props.get(SPACE_SUMMARY_PROPERTY, ""))
    found = _DESCRIPTION_SPACE.search(str(desc.get("description") or ""))
    if found:
        return found.group(1), found.group(2) or ""
    return None, ""


def read_threshold(client: MilvusClient, settings: Settings, space: SpaceTag) -> DuplicateThreshold | None:
    """The threshold calibrated for this collection in this space: from its properties, else the sidecar file."""
    props = client.describe_collection(settings.milvus_collection, timeout=settings.milvus_timeout).get(
        "properties") or {}
    texts = [props.get(DUPLICATE_PROPERTY)]
    sidecar = sidecar_path(settings, space.digest)
    if sidecar.is_file():
        texts.append(sidecar.read_text())
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
        log.warning("ignoring the duplicate threshold calibrated in embedding space %s (running %s): run "
                    "`python main.py calibrate DIR` again", found.space, space.digest)
    return None


def write_threshold(client: MilvusClient, settings: Settings, threshold: DuplicateThreshold) -> str:
    """Store a calibrated threshold with the collection (or in the sidecar file); returns where it went."""
    if _set_properties(client, settings, {DUPLICATE_PROPERTY: threshold.as_json()}):
        return f"property {DUPLICATE_PROPERTY} of collection {settings.milvus_collection!r}"
    path = sidecar_path(settings, threshold.space)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(threshold.as_json())
    tmp.replace(path)  # a reader never sees half a file
    return str(path)


def sidecar_path(settings: Settings, space_digest: str) -> Path:
    """Where a threshold goes when the server keeps no collection properties: one file per collection and space."""
    return Path(settings.model_cache_dir) / "thresholds" / f"{settings.milvus_collection}-{space_digest}.json"


def _set_properties(client: MilvusClient, settings: Settings, properties: dict[str, str]) -> bool:
    """Set collection properties; False (logged) when the server refuses."""
    try:
        client.alter_collection_properties(settings.milvus_collection, properties=properties,
                                           timeout=settings.milvus_timeout)
        return True
    except MilvusException as exc:
        log.info("%s refused collection properties %s (%s)", describe_target(settings), sorted(properties), short(exc))
        return False
