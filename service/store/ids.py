"""Record ids: derived from (namespace, key, MD5), below 2^53, and allocated by probing when two records collide."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from service.store.filters import DEFAULT_NAMESPACE

# The largest integer a JavaScript number holds exactly: every id stays at or below it.
JS_MAX_SAFE_INTEGER = 2**53 - 1
# Candidate ids tried for one (key, md5) after its first choice is owned by another record.
MAX_ID_CANDIDATES = 16


# Which record a row is: (namespace, key, md5).
Ref = tuple[str, str, str]


def derive_id(key: str, md5: str, attempt: int = 0, namespace: str = DEFAULT_NAMESPACE) -> int:
    """A stable positive id below 2^53 for (namespace, key, md5): JavaScript numbers hold it exactly.

    The same image under the same key always maps to the same id, which is what
    makes re-adding idempotent. `attempt` > 0 gives the alternative ids tried when
    a different record already owns the first choice. The default namespace hashes
    exactly what earlier versions hashed, so the ids stored before namespaces existed
    stay the ids of their records; other namespaces add their name, so the same key
    and image in two namespaces are two records with two ids.
    """
    text = f"{attempt}\x00{key}\x00{md5}"
    if namespace != DEFAULT_NAMESPACE:
        text += f"\x00{namespace}"  # keys and MD5s hold no NUL, so no namespaced text equals a default one
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    return (int.from_bytes(digest[:7], "big") >> 3) or 1  # 56 bits >> 3 = 53 bits


@dataclass(frozen=True)
class Slot:
    """Where one (namespace, key, md5) lives: the id it is stored under, or the free id it is to take."""

    id: int
    stored: dict[str, Any] | None  # the stored row (id, key, md5, filepath...) when it is stored already


def ref_of(row: dict[str, Any]) -> Ref:
    """The (namespace, key, md5) of a stored row; a row without a namespace field is in the default one."""
    return (row.get("namespace", DEFAULT_NAMESPACE), row["key"], row["md5"])


def allocate_ids(refs: Sequence[Ref], rows_by_id: Callable[[list[int]], dict[int, dict[str, Any]]]) -> list[Slot]:
    """The slot of each (namespace, key, md5), in order: its own stored row, or the first candidate id nobody owns.

    `rows_by_id` reads the stored rows (with their namespace, key and md5) of some
    ids, one call per round of candidates, in every namespace: ids are unique across
    namespaces. A ref listed twice gets the same slot. A candidate owned by a
    different record (a 53-bit hash collision, possibly another namespace's) is
    skipped, never overwritten, and never returned as this ref's row.
    """
    attempts = {i: 0 for i in range(len(refs))}
    slots: dict[int, Slot] = {}
    claimed: dict[int, Ref] = {}  # free ids taken by an earlier ref of this call
    while attempts:
        ids = {i: derive_id(refs[i][1], refs[i][2], attempt, refs[i][0]) for i, attempt in attempts.items()}
        owners = rows_by_id(sorted(set(ids.values())))
        retry: dict[int, int] = {}
        for i, rid in ids.items():
            owner = owners.get(rid)
            if owner is not None and ref_of(owner) == refs[i]:
                slots[i] = Slot(rid, owner)
            elif owner is None and claimed.setdefault(rid, refs[i]) == refs[i]:
                slots[i] = Slot(rid, None)
            elif attempts[i] >= MAX_ID_CANDIDATES:
                raise RuntimeError(f"no free id for key {refs[i][1]!r} after {MAX_ID_CANDIDATES} candidates")
            else:
                retry[i] = attempts[i] + 1
        attempts = retry
    return [slots[i] for i in range(len(refs))]
