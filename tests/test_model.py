"""The real ResNet50 embedder (default engine): vector shape and norm, resize modes, pooling, weight loading."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conf.errors import StartupError
from conf.settings import Pooling, ResizeMode
from model.embedder import Embedder, load_embedder
from model.images import decode_image
from model.resnet50 import IMAGENET_FILE
from model.transforms import fit_square, to_model_input
from tests.conftest import ROOT, make_settings, photo


def batch(*seeds: int) -> np.ndarray:
    images = [decode_image(photo(s), max_bytes=10**7, max_pixels=10**8).image for s in seeds]
    return np.stack([to_model_input(img, ResizeMode.SQUASH) for img in images])


def test_numpy_preprocessing_matches_keras(embedder: Embedder) -> None:
    from keras.applications.resnet50 import preprocess_input  # noqa: PLC0415 - Keras only for the tests using it

    img = decode_image(photo(7), max_bytes=10**7, max_pixels=10**8).image
    # The numpy path (TensorFlow engine, INT8 calibration); the OpenVINO graph's own is held to it in test_pixel_input.
    ours = embedder.spec.preprocess(img)
    theirs = preprocess_input(np.asarray(fit_square(img, embedder.spec.resize), dtype=np.float32))
    assert ours.dtype == np.float32 and ours.shape == (224, 224, 3)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)


def test_vectors_are_2048_d_unit_length_and_deterministic(embedder: Embedder) -> None:
    vecs = embedder.embed(batch(1, 2, 3))
    assert vecs.shape == (3, 2048) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert np.allclose(embedder.embed(batch(2))[0], vecs[1], atol=1e-5)  # batching does not change a vector
    assert not np.allclose(vecs[0], vecs[2], atol=1e-4)


@pytest.mark.parametrize("mode", list(ResizeMode))
def test_every_resize_mode_gives_the_model_input_size(mode: ResizeMode) -> None:
    wide = Image.new("RGB", (400, 100), (10, 200, 10))
    out = fit_square(wide, mode)
    assert out.size == (224, 224)
    corner = out.getpixel((0, 0))
    # Only padding puts white above a wide image; squash and crop fill the square with the picture.
    assert (corner == (255, 255, 255)) == (mode is ResizeMode.PAD)


def test_gem_pooling_and_a_local_weights_file(tmp_path: Path, embedder: Embedder) -> None:
    import keras  # noqa: PLC0415 - Keras only for the tests using it

    # An air-gapped site points MODEL_WEIGHTS at a local file: save weights, load them back, same vectors.
    keras.utils.set_random_seed(99)
    donor = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(224, 224, 3))
    path = tmp_path / "resnet50_notop.weights.h5"
    donor.save_weights(path)
    settings = make_settings(
        tmp_path, model_weights=str(path), model_pooling=Pooling.GEM, model_cache_dir=tmp_path / "cache"
    )
    first, second = load_embedder(settings), load_embedder(settings)  # the second reuses the converted model
    x = batch(5, 6)
    a, b = first.embed(x), second.embed(x)
    assert np.allclose(a, b, atol=1e-5) and np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(a, embedder.embed(x), atol=1e-3)  # different weights, different vectors
    assert first.info["weights"] == "local file" and first.info["pooling"] == "gem"
    assert first.fingerprint.digest != embedder.fingerprint.digest


def test_missing_weights_fail_with_advice(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="no such file"):
        load_embedder(make_settings(tmp_path, model_weights=str(tmp_path / "nope.h5")))
    # No model hub is reachable from here, which is exactly the air-gapped case users meet: the message
    # names the model that works at once, and the manual download.
    with pytest.raises(StartupError, match=f"MODEL_WEIGHTS=/path/to/{IMAGENET_FILE}") as caught:
        load_embedder(make_settings(tmp_path, model_weights="imagenet", model_cache_dir=tmp_path / "cache"))
    assert "MODEL_NAME=efficientnet-lite0" in str(caught.value)


def test_service_refuses_to_start_without_weights_and_says_how(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MODEL_WEIGHTS": str(tmp_path / "missing.h5"),
        "MILVUS_URI": str(tmp_path / "m.db"),
        "API_PORT": "7999",
    }
    result = subprocess.run(
        [sys.executable, "main.py", "serve"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2
    assert "cannot start" in result.stderr and "no such file" in result.stderr
    assert "RANDOM weights" not in result.stderr  # never a silent fallback to random weights
