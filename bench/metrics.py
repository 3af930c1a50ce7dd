"""Retrieval metrics of the quality benchmark: ranks, summaries with bootstrap intervals, duplicate thresholds.

Every query has exactly one relevant gallery item (the photo it was made from),
so average precision is the reciprocal rank of that item, and mAP is the mean
reciprocal rank. Queries made from the same photo are not independent (an easy
photo is easy under every transform), so the intervals resample photos, not
queries: a cluster bootstrap over the photos of the split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

BOOTSTRAP = 2000
METRICS = (("r@1", "recall_at_1"), ("r@10", "recall_at_10"), ("ap", "map"))


def rank_stats(sim: np.ndarray, true_idx: np.ndarray, distinct: np.ndarray) -> dict[str, np.ndarray]:
    """Per query: expected recall@1/@10 and AP under random tie-breaking, and the scores a threshold must split.

    `distinct` (queries x gallery, bool) marks the gallery items made from another photo
    than the query's: the true non-matches (tiles of the query's own photo share content
    with it and are neither the answer nor unrelated). Ties (frequent with a 64-bit hash)
    count as a uniformly random order: recall@k = P(rank <= k), AP = E[1 / rank].
    """
    rows = np.arange(len(true_idx))
    s_true = sim[rows, true_idx]
    better = (sim > s_true[:, None]).sum(axis=1)
    ties = (sim == s_true[:, None]).sum(axis=1) - 1  # other items scoring exactly the same
    out = {f"r@{k}": np.clip((k - better) / (ties + 1), 0.0, 1.0) for k in (1, 10)}
    # E[1/rank] for a rank uniform in better+1 .. better+ties+1 (harmonic numbers).
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, sim.shape[1] + 1))])
    out["ap"] = (harmonic[better + ties + 1] - harmonic[better]) / (ties + 1)
    masked = sim.copy()
    masked[rows, true_idx] = -np.inf
    out["true"] = s_true.astype(np.float64)
    out["nonmatch"] = masked.max(axis=1).astype(np.float64)
    out["gap"] = out["true"] - out["nonmatch"]
    out["distinct"] = np.where(distinct, sim, -np.inf).max(axis=1).astype(np.float64)
    return out


def cluster_ci(values: np.ndarray, groups: np.ndarray, seed: int = 0) -> list[float]:
    """95% interval of the mean of per-group means, resampling groups (photos) with replacement."""
    _, index = np.unique(groups, return_inverse=True)
    means = np.bincount(index, weights=values) / np.bincount(index)
    rng = np.random.default_rng(seed)
    draws = means[rng.integers(0, len(means), (BOOTSTRAP, len(means)))].mean(axis=1)
    return [_r(np.percentile(draws, 2.5)), _r(np.percentile(draws, 97.5))]


def summarise(
    stats: dict[str, np.ndarray], transforms: np.ndarray, photos: np.ndarray, names: Sequence[str]
) -> dict[str, Any]:
    """Metrics per transform and overall (the mean over transforms), each with a 95% interval over photos."""
    per: dict[str, dict[str, Any]] = {}
    for t in names:
        sel = transforms == t
        per[t] = {
            "n": int(sel.sum()),
            "gap_median": _r(np.median(stats["gap"][sel])),
            "true_score_median": _r(np.median(stats["true"][sel])),
        }
        for key, label in METRICS:
            per[t][label] = _r(stats[key][sel].mean())
            per[t][f"{label}_ci95"] = cluster_ci(stats[key][sel], photos[sel])
    overall: dict[str, Any] = {"gap_median": _r(np.median([per[t]["gap_median"] for t in names]))}
    sel = np.isin(transforms, names)
    for key, label in METRICS:
        overall[label] = _r(np.mean([per[t][label] for t in names]))
        overall[f"{label}_ci95"] = cluster_ci(stats[key][sel], photos[sel])
    return {"per_transform": per, "overall": overall}


def duplicate_threshold(
    stats: dict[str, np.ndarray], transforms: np.ndarray, copies: Sequence[str], keep: float = 0.95
) -> dict[str, Any]:
    """The score that keeps `keep` of the true copies, and the share of queries an unrelated image would pass.

    True copies: the queries made by the transforms in `copies` (resized, re-compressed,
    slightly cropped, flipped, bordered...), scored against their original. Non-matches:
    for every query (of any transform) its best-scoring gallery item made from another photo.
    """
    true = stats["true"][np.isin(transforms, copies)]
    threshold = float(np.percentile(true, 100 * (1 - keep)))
    return {
        "threshold": _r(threshold),
        "keep": keep,
        "true_copies": int(len(true)),
        "queries": int(len(stats["distinct"])),
        "nonmatch_share": _r((stats["distinct"] >= threshold).mean()),
    }


def check_threshold(
    stats: dict[str, np.ndarray], transforms: np.ndarray, copies: Sequence[str], threshold: float
) -> dict[str, Any]:
    """How a threshold chosen elsewhere does here: share of true copies kept, share of queries a non-match passes."""
    true = stats["true"][np.isin(transforms, copies)]
    return {
        "copies_kept": _r((true >= threshold).mean()),
        "nonmatch_share": _r((stats["distinct"] >= threshold).mean()),
    }


def _r(value: float) -> float:
    """Rounded for the results JSON."""
    return round(float(value), 4)
