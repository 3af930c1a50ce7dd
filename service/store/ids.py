"""Record ids: derived from (key, MD5), below 2^53, and allocated by probing when two records collide."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# The largest integer a JavaScript number holds exactly: every id stays at or below it.
JS_MAX_SAFE_INTEGER = 2**53 - 1
# Candidate ids tried for one (key, md5) after its first choice is owned by another record.
MAX_ID_CANDIDATES = 16


def derive_id(key: str, md5: str, attempt: int = 0) -> int:
    """A stable positive id below 2^53 for (key, md5): JavaScript numbers hold it exactly.

    The same image under the same key always maps to the same id, which is what
    makes re-adding idempotent. `attempt` > 0 gives the alternative ids tried when
    a different record already owns the first choice.
    """
    digest = hashlib.sha256(f"{attempt}\x00{key}\x00{md5}".encode("utf-8", "surrogatepass")).digest()
    return (int.from_bytes(digest[:7], "big") >> 3) or 1  # 56 bits >> 3 = 53 bits


@dataclass(frozen=True)
class Slot:
    """Where one (key, md5) lives: the id it is stored under, or the free id it is to take."""

    id: int
    stored: dict[str, Any] | None  # the stored row (id, key, md5, filepath) when it is stored already


def allocate_ids(pairs: Sequence[tuple[str, str]],
                 rows_by_id: Callable[[list[int]], dict[int, dict[str, Any]]]) -> list[Slot]:
    """The slot of each (key, md5), in order: its own stored row, or the first candidate id nobody owns.

    `rows_by_id` reads the stored rows (with their key and md5) of some ids, one
    call per round of candidates. A pair listed twice gets the same slot. A
    candidate owned by a different record (a 53-bit hash collision) is skipped,
    never overwritten.
    """
    attempts = {i: 0 for i in range(len(pairs))}
    slots: dict[int, Slot] = {}
    claimed: dict[int, tuple[str, str]] = {}  # free ids taken by an earlier pair of this call
    while attempts:
        ids = {i: derive_id(*pairs[i], attempt) for i, attempt in attempts.items()}
        owners = rows_by_id(sorted(set(ids.values())))
        retry: dict[int, int] = {}
        for i, rid in ids.items():
            owner = owners.get(rid)
            if owner is not None and (owner["key"], owner["md5"]) == pairs[i]:
                slots[i] = Slot(rid, owner)
            elif owner is None and claimed.setdefault(rid, pairs[i]) == pairs[i]:
                slots[i] = Slot(rid, None)
            elif attempts[i] >= MAX_ID_CANDIDATES:
                raise RuntimeError(f"no free id for key {pairs[i][0]!r} after {MAX_ID_CANDIDATES} candidates")
            else:
                retry[i] = attempts[i] + 1
        attempts = retry
    return [slots[i] for i in range(len(pairs))]
