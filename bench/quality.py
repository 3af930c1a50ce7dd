"""Retrieval-quality benchmark: does the service find the photo after it was resized, cropped, watermarked...?

For every query of the corpus (a transformed copy of one gallery photo; see
bench/corpus.py) the whole gallery is ranked, and per transform we report:

* recall@1 and recall@10: the true photo is the first hit / among the first ten;
* mAP: with exactly one relevant gallery item per query this is the mean
  reciprocal rank of the true photo;
* the score gap: true-match score minus the best non-match score (what a
  dedupe threshold has to live in; negative means a non-match scored higher).

Side by side, in the same run: every preprocessing variant of the embedder
(squash / centre-crop / pad-to-square x average / GeM pooling) and a classical
baseline, the 64-bit perceptual hash of the `imagehash` package. The model runs
once per resize mode; both poolings are taken from the same feature map, with
the same arithmetic as the service's graph (checked at the start of the run).

Ties (frequent with a 64-bit hash) are broken at random in expectation: a query
whose true match ties with t others at rank r counts recall@k = P(rank <= k)
and AP = E[1 / rank] over a uniformly random order of the tie.

    python -m bench.quality [--small]          # writes bench/results/quality.json
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import imagehash
import numpy as np

from bench.cli import RESULTS, bench_arguments, bench_settings, parse_and_log, write_json
from bench.features import decoded, feature_maps, model_inputs, pool
from conf.settings import MODEL_BATCH, Pooling, ResizeMode, Settings
from model.embedder import DIM
from model.transforms import to_model_input

log = logging.getLogger("bench.quality")
BOOTSTRAP = 2000


def variant_name(mode: ResizeMode, pooling: Pooling) -> str:
    """'squash+avg' and so on."""
    return f"{mode.value}+{pooling.value}"


# --------------------------------------------------------------------------------------------
# Embedding the corpus
# --------------------------------------------------------------------------------------------

def _load(path: Path, modes: Sequence[ResizeMode]) -> tuple[dict[ResizeMode, np.ndarray], int]:
    """Decode like the service does, then one model input per resize mode, and the 64-bit pHash."""
    img = decoded(path)
    arrays = {mode: to_model_input(img, mode) for mode in modes}
    bits = imagehash.phash(img).hash.flatten()
    return arrays, int(np.packbits(bits.astype(np.uint8)).view(">u8")[0])


def embed_all(embedder: Any, paths: Sequence[Path], modes: Sequence[ResizeMode],
              poolings: Sequence[Pooling], label: str) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, float]]:
    """Vectors of every image for every variant, and the pHashes; decoding runs a batch ahead of the model."""
    vectors = {variant_name(m, p): np.empty((len(paths), DIM), dtype=np.float32) for m in modes for p in poolings}
    hashes = np.empty(len(paths), dtype=np.uint64)
    model_s = 0.0
    t0 = time.perf_counter()
    chunks = [list(range(i, min(len(paths), i + MODEL_BATCH))) for i in range(0, len(paths), MODEL_BATCH)]
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="quality-decode") as pool_ex:
        def submit(chunk: list[int]) -> list[Any]:
            return [pool_ex.submit(_load, paths[i], modes) for i in chunk]

        ahead = submit(chunks[0]) if chunks else []
        for n, chunk in enumerate(chunks):
            current, ahead = ahead, (submit(chunks[n + 1]) if n + 1 < len(chunks) else [])
            loaded = [f.result() for f in current]
            for j, (_arrays, h) in zip(chunk, loaded, strict=True):
                hashes[j] = h
            for mode in modes:
                t1 = time.perf_counter()
                maps = feature_maps(embedder, np.stack([arrays[mode] for arrays, _ in loaded]))
                model_s += time.perf_counter() - t1
                for pooling in poolings:
                    vectors[variant_name(mode, pooling)][chunk] = pool(maps, pooling)
            if n % 10 == 0:
                log.info("%s: %d/%d images", label, chunk[-1] + 1, len(paths))
    return vectors, hashes, {"seconds": time.perf_counter() - t0, "model_seconds": model_s}


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------

def rank_stats(sim: np.ndarray, true_idx: np.ndarray) -> dict[str, np.ndarray]:
    """Per query: expected recall@1/@10 and AP under random tie-breaking, true and best non-match scores."""
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
    return out


def summarise(stats: dict[str, np.ndarray], transforms: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Metrics per transform, their macro mean, and where a dedupe threshold would sit."""
    per: dict[str, dict[str, float]] = {}
    for t in names:
        sel = transforms == t
        per[t] = {"n": int(sel.sum()), "recall_at_1": _r(stats["r@1"][sel].mean()),
                  "recall_at_10": _r(stats["r@10"][sel].mean()), "map": _r(stats["ap"][sel].mean()),
                  "true_score_mean": _r(stats["true"][sel].mean()),
                  "best_nonmatch_mean": _r(stats["nonmatch"][sel].mean()),
                  "gap_median": _r(np.median(stats["gap"][sel])),
                  "gap_positive": _r((stats["gap"][sel] > 0).mean())}
    overall = {key: _r(np.mean([per[t][key] for t in names])) for key in
               ("recall_at_1", "recall_at_10", "map", "gap_median", "gap_positive")}
    # A dedupe threshold that keeps 95 % of true matches, and how many best non-matches it lets through.
    keep95 = float(np.percentile(stats["true"], 5))
    overall["dedupe_threshold_keep95"] = _r(keep95)
    overall["nonmatch_above_threshold"] = _r((stats["nonmatch"] >= keep95).mean())
    return {"per_transform": per, "overall": overall}


def _r(value: float) -> float:
    return round(float(value), 4)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, seed: int = 0) -> list[float]:
    """95 % interval of mean(a - b) over queries, by resampling queries."""
    rng = np.random.default_rng(seed)
    diff = a - b
    idx = rng.integers(0, len(diff), (BOOTSTRAP, len(diff)))
    means = diff[idx].mean(axis=1)
    return [_r(np.percentile(means, 2.5)), _r(np.percentile(means, 97.5))]


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

def run(corpus: Any, embedder: Any, settings: Settings, modes: Sequence[ResizeMode] | None = None,
        transforms: Sequence[str] | None = None) -> dict[str, Any]:
    """Rank the gallery for every query with every variant and pHash; returns the results dict."""
    modes = list(modes or ResizeMode)
    queries = [q for q in corpus.queries if transforms is None or q.transform in transforms]
    names = [t for t in dict.fromkeys(q.transform for q in corpus.queries) if transforms is None or t in transforms]
    index = {g.id: i for i, g in enumerate(corpus.gallery)}
    true_idx = np.array([index[q.match] for q in queries])
    q_transform = np.array([q.transform for q in queries])
    t0 = time.perf_counter()
    check = _pooling_check(corpus, embedder, settings)
    g_vec, g_hash, g_time = embed_all(embedder, [g.file for g in corpus.gallery], modes, list(Pooling), "gallery")
    q_vec, q_hash, q_time = embed_all(embedder, [q.file for q in queries], modes, list(Pooling), "queries")

    variants: dict[str, Any] = {}
    per_query_ap: dict[str, np.ndarray] = {}
    for name in g_vec:
        stats = rank_stats(q_vec[name] @ g_vec[name].T, true_idx)
        per_query_ap[name] = stats["ap"]
        variants[name] = summarise(stats, q_transform, names)
    # pHash: similarity = 1 - Hamming distance / 64.
    dist = np.bitwise_count(q_hash[:, None] ^ g_hash[None, :]).astype(np.float64)
    ph_stats = rank_stats(1.0 - dist / 64.0, true_idx)
    per_query_ap["phash"] = ph_stats["ap"]
    baseline = summarise(ph_stats, q_transform, names)
    model_images = (len(corpus.gallery) + len(queries)) * len(modes)
    return {
        "weights": embedder_weights(settings),
        "random_weights": settings.model_weights == "random",
        "corpus": {"root": str(corpus.root), "photos": len(corpus.photos), "gallery": len(corpus.gallery),
                   "gallery_kinds": corpus.counts()["gallery"], "queries": len(queries), "transforms": names},
        "metric_notes": "one relevant gallery item per query, so mAP = mean reciprocal rank; ties broken "
                        "at random in expectation; overall = mean over transforms",
        "pooling_check_max_abs_diff": check,
        "variants": variants,
        "phash": baseline,
        "pick": _pick(variants, baseline, per_query_ap, variant_name(settings.image_resize, settings.model_pooling)),
        "timing": {"seconds": _r(time.perf_counter() - t0), "model_images": model_images,
                   "model_img_per_s": _r(model_images / (g_time["model_seconds"] + q_time["model_seconds"]))},
    }


def _pooling_check(corpus: Any, embedder: Any, settings: Settings) -> float:
    """The bench pools feature maps itself: make sure that is exactly what the service computes."""
    probe = model_inputs([g.file for g in corpus.gallery[:4]], settings.image_resize)
    check = float(np.abs(pool(feature_maps(embedder, probe), embedder.pooling) - embedder.embed(probe)).max())
    if check > 1e-4:
        raise RuntimeError(f"bench pooling differs from the service's embedder by {check}")
    return check


def _pick(variants: dict[str, Any], baseline: dict[str, Any], per_query_ap: dict[str, np.ndarray],
          default: str) -> dict[str, Any]:
    """The best variant by mAP, and every variant against the default, with 95 % intervals."""
    best = max(variants, key=lambda v: (variants[v]["overall"]["map"], variants[v]["overall"]["recall_at_1"]))
    pick: dict[str, Any] = {"best_by_map": best, "current_default": default}
    if default in variants:
        ci = paired_bootstrap(per_query_ap[best], per_query_ap[default])
        pick.update({"map_gain_over_default": _r(variants[best]["overall"]["map"]
                                                 - variants[default]["overall"]["map"]),
                     "map_gain_ci95": ci, "gain_is_significant": bool(ci[0] > 0)})
        # Every variant against the default, with a 95 % interval: is the default's lead real?
        pick["default_vs"] = {name: {"map_delta": _r(variants[default]["overall"]["map"] - v["overall"]["map"]),
                                     "ci95": paired_bootstrap(per_query_ap[default], per_query_ap[name])}
                              for name, v in [*variants.items(), ("phash", baseline)] if name != default}
    return pick


def embedder_weights(settings: Settings) -> str:
    """What MODEL_WEIGHTS named: imagenet, random or a local file."""
    w = settings.model_weights
    return w if w in ("imagenet", "random") else f"local file {Path(w).name}"


def iter_table(result: dict[str, Any]) -> Iterator[tuple[str, dict[str, float]]]:
    """(name, overall metrics) for every variant, then pHash."""
    for name, v in result["variants"].items():
        yield name, v["overall"]
    yield "phash (imagehash, 64 bit)", result["phash"]["overall"]


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.quality`: build the corpus, run, write the JSON."""
    ap = bench_arguments("python -m bench.quality", __doc__, RESULTS / "quality.json")
    ap.add_argument("--small", action="store_true", help="the scikit-image corpus and one resize mode (seconds)")
    args = parse_and_log(ap, argv)
    from bench.corpus import build_corpus  # noqa: PLC0415
    from model.embedder import load_embedder  # noqa: PLC0415

    settings = bench_settings(args.weights)
    corpus = build_corpus(small=args.small)
    result = run(corpus, load_embedder(settings), settings, modes=[settings.image_resize] if args.small else None)
    write_json(args.out, result)
    for name, overall in iter_table(result):
        print(f"{name:28s} R@1 {overall['recall_at_1']:.3f}  R@10 {overall['recall_at_10']:.3f}  "
              f"mAP {overall['map']:.3f}  gap {overall['gap_median']:+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
