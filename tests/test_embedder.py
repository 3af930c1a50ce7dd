"""load_embedder on the real ResNet50 (random weights): both engines, FP32 and calibrated INT8, fingerprints.

INT8 is calibrated here on generated structured pictures (never noise), in tests only; the service
itself only ever calibrates on the user's images (`python main.py calibrate DIR`).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conf.errors import StartupError
from conf.settings import ModelEngine, ModelName, Pooling, Precision, ResizeMode, Settings
from model.embedder import Embedder, load_embedder, model_spec, quantize_int8, space_of
from model.images import decode_image
from model.openvino_engine import CALIBRATE_COMMAND
from tests.conftest import ROOT, make_settings, photo


def pictures(*seeds: int) -> list[Image.Image]:
    """Structured synthetic photos, decoded as the service decodes uploads."""
    return [decode_image(photo(s, size=(300, 260)), max_bytes=10**7, max_pixels=10**8).image for s in seeds]


def inputs(model: Embedder, *seeds: int) -> np.ndarray:
    """A batch of model inputs preprocessed by `model`."""
    return np.stack([model.preprocess(img) for img in pictures(*seeds)])


@pytest.fixture(scope="module")
def tf_embedder(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    """The same ResNet50 (random weights, same seed) on the TensorFlow engine."""
    return load_embedder(make_settings(tmp_path_factory.mktemp("tf"), model_engine=ModelEngine.TENSORFLOW))


@pytest.fixture(scope="module")
def int8_embedder(embedder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    """ResNet50 INT8, calibrated (into the session's model cache) on 32 structured pictures."""
    settings = make_settings(tmp_path_factory.mktemp("int8"), model_precision=Precision.INT8)
    report = quantize_int8(settings, inputs(embedder, *range(500, 532)))
    assert report.images == 32 and report.cosine_min > 0.99
    return load_embedder(settings)


def test_default_engine_is_openvino_fp32(embedder: Embedder) -> None:
    info = embedder.info
    assert (info["engine"], info["precision"], info["name"], info["dim"]) == ("openvino", "fp32", "resnet50", 2048)
    assert info["fingerprint"] == embedder.fingerprint.digest and "numeric=fp32" in info["space"]


@pytest.mark.parametrize("which", ["embedder", "tf_embedder", "int8_embedder"])
def test_same_image_same_vector_twice(which: str, request: pytest.FixtureRequest) -> None:
    model: Embedder = request.getfixturevalue(which)
    x = inputs(model, 1, 2, 3)
    first, second = model.embed(x), model.embed(x)
    np.testing.assert_array_equal(first, second)
    assert first.shape == (3, 2048) and np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)


def test_openvino_fp32_agrees_with_tensorflow_and_is_one_space(embedder: Embedder, tf_embedder: Embedder) -> None:
    x = inputs(embedder, 4, 5, 6, 7)
    cosine = (embedder.embed(x) * tf_embedder.embed(x)).sum(axis=1)
    assert cosine.min() > 0.9999
    assert tf_embedder.info["engine"] == "tensorflow"
    assert tf_embedder.fingerprint.digest == embedder.fingerprint.digest  # TF and OpenVINO FP32: one space


def test_int8_is_its_own_space(embedder: Embedder, int8_embedder: Embedder) -> None:
    assert int8_embedder.info["precision"] in ("int8", "fp32")  # fp32 only on CPUs without INT8 kernels
    assert int8_embedder.fingerprint.numeric.startswith("int8:")
    assert int8_embedder.fingerprint.digest != embedder.fingerprint.digest
    x = inputs(embedder, 8, 9, 10)  # held out: not among the calibration pictures
    assert (embedder.embed(x) * int8_embedder.embed(x)).sum(axis=1).min() > 0.99


def test_int8_calibrated_to_match_fp32_shares_the_fp32_space(embedder: Embedder, tmp_path: Path) -> None:
    # A private cache (a copy of the session's converted FP32 model): this INT8 model must not replace the
    # session's, which other tests expect in a space of its own.
    shutil.copytree(Path(make_settings(tmp_path).model_cache_dir) / "openvino", tmp_path / "cache" / "openvino")
    settings = make_settings(tmp_path, model_precision=Precision.INT8, model_cache_dir=tmp_path / "cache")
    report = quantize_int8(settings, inputs(embedder, *range(500, 532)), match_fp32=True)
    # Random weights: plain INT8 already meets the gate on the 8 held-out pictures, so no layer stays FP32.
    assert report.match_fp32 and report.shares_fp32 and report.method == "ptq" and report.float_layers == []
    assert any("shares FP32's embedding space" in line for line in report.lines())
    matched = load_embedder(settings)
    assert matched.info["precision"] in ("int8", "fp32")  # fp32 only on CPUs without INT8 kernels
    assert matched.fingerprint.numeric == "fp32" and matched.fingerprint.digest == embedder.fingerprint.digest
    x = inputs(embedder, 8, 9, 10)
    assert (embedder.embed(x) * matched.embed(x)).sum(axis=1).min() > 0.99


def test_every_setting_of_the_space_changes_the_fingerprint(embedder: Embedder, tmp_path: Path) -> None:
    base = make_settings(tmp_path)
    spaces = {space_of(model_spec(base), "fp32").digest, space_of(model_spec(base), "bf16").digest}
    for change in (
        {"image_resize": ResizeMode.PAD},
        {"model_pooling": Pooling.GEM},
        {"image_trim": True},
        {"model_name": ModelName.EFFICIENTNET_LITE0},
    ):
        spaces.add(space_of(model_spec(make_settings(tmp_path, **change)), "fp32").digest)
    assert len(spaces) == 6 and embedder.fingerprint.digest in spaces
    # Stable: the same settings give the same digest in another process (it is stored on collections).
    assert space_of(model_spec(base), "fp32").digest == embedder.fingerprint.digest


def test_int8_without_calibration_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="python main.py calibrate DIR"):
        load_embedder(make_settings(tmp_path, model_precision=Precision.INT8, model_cache_dir=tmp_path / "empty"))
    # Through the entry point, as a user meets it.
    env = {
        **os.environ,
        "MODEL_PRECISION": "int8",
        "MODEL_WEIGHTS": "random",
        "MODEL_CACHE_DIR": str(tmp_path / "c"),
        "MILVUS_URI": str(tmp_path / "m.db"),
        "API_PORT": "7998",
    }
    result = subprocess.run(
        [sys.executable, "main.py", "serve"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2 and "cannot start" in result.stderr
    assert CALIBRATE_COMMAND in result.stderr and "MODEL_PRECISION=fp32" in result.stderr


def test_tensorflow_refuses_reduced_precisions(tmp_path: Path) -> None:
    for precision in (Precision.BF16, Precision.INT8):
        with pytest.raises(StartupError, match="MODEL_ENGINE=openvino"):
            load_embedder(make_settings(tmp_path, model_engine=ModelEngine.TENSORFLOW, model_precision=precision))


def test_cache_reused_on_a_second_start_without_keras(tmp_path: Path) -> None:
    # A second process with the session's cache: reuses the converted model and never imports TensorFlow.
    cache_dir = str(make_settings(tmp_path).model_cache_dir)
    code = (
        "import sys, logging; logging.basicConfig(level=logging.INFO); from conf.settings import Settings; "
        "from model.embedder import load_embedder; "
        f"load_embedder(Settings(_env_file=None, model_weights='random', model_cache_dir={cache_dir!r})); "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["False", "False"]
    assert "reused the cached model in" in result.stderr


def test_bf16_embeds_in_its_own_space_when_in_force(
    embedder: Embedder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    bf16 = load_embedder(make_settings(tmp_path, model_precision=Precision.BF16))  # same FP32 model, other hint
    assert "reused the cached model" in caplog.text
    expected = "bf16" if bf16.info["precision"] == "bf16" else "fp32"  # CPUs without bf16 run fp32
    assert bf16.fingerprint.numeric == expected


def test_each_backbone_gets_the_preprocessing_measured_best_for_it_unless_the_environment_chooses() -> None:
    """EfficientNet-Lite0 defaults to squash + border trim (best on real weights); ResNet50 keeps center-crop."""
    lite = Settings(_env_file=None, model_name="efficientnet-lite0")  # type: ignore[call-arg] - _env_file: pydantic-settings' option
    assert (lite.image_resize, lite.image_trim) == (ResizeMode.SQUASH, True)
    chosen = Settings(
        _env_file=None,
        model_name="efficientnet-lite0",  # type: ignore[call-arg] - as above
        image_resize="center-crop",
        image_trim="off",
    )
    assert (chosen.image_resize, chosen.image_trim) == (ResizeMode.CENTER_CROP, False)
    resnet = Settings(_env_file=None, model_name="resnet50")  # type: ignore[call-arg] - _env_file: pydantic-settings' option
    assert (resnet.image_resize, resnet.image_trim) == (ResizeMode.CENTER_CROP, False)
    # The bench switches backbones: each copy gets its own backbone's defaults, the chosen values stay.
    assert (
        resnet.for_model(ModelName.EFFICIENTNET_LITE0, "imagenet").image_resize,
        lite.for_model(ModelName.RESNET50, "random").image_resize,
    ) == (ResizeMode.SQUASH, ResizeMode.CENTER_CROP)
    assert chosen.for_model(ModelName.RESNET50, "random").image_resize == ResizeMode.CENTER_CROP
    assert chosen.for_model(ModelName.EFFICIENTNET_LITE0, "imagenet").image_trim is False


@pytest.mark.parametrize("which", ["embedder", "tf_embedder", "int8_embedder"])
def test_the_feature_map_is_what_the_vector_pools(which: str, request: pytest.FixtureRequest) -> None:
    """Region search reads the object's place from the feature map the engine hands out beside the vectors: it
    must be the map those vectors are pooled from (average pooling here), on every engine and precision."""
    model: Embedder = request.getfixturevalue(which)
    batch = inputs(model, 11, 12)
    pooled, maps = model.engine.predict_with_maps(batch)
    assert maps.shape == (2, 7, 7, model.dim)
    np.testing.assert_allclose(pooled, model.engine.predict(batch), rtol=1e-5, atol=1e-5)
    means = maps.mean(axis=(1, 2))
    cosines = (means * pooled).sum(axis=1) / (np.linalg.norm(means, axis=1) * np.linalg.norm(pooled, axis=1))
    # FP32 agrees to rounding; INT8 quantizes between the map and the pooling (measured 0.9999+).
    assert cosines.min() > 0.999


def test_propose_gives_the_whole_image_vector_and_boxes_inside_the_image(embedder: Embedder) -> None:
    """propose() runs the whole image once: its vector is the one a plain embed gives, and every box it proposes
    lies inside the image and is smaller than it."""
    [img] = pictures(21)
    proposal = embedder.propose(img)
    np.testing.assert_allclose(proposal.vector, embedder.embed(embedder.preprocess(img)[None])[0], atol=1e-5)
    for box in proposal.boxes:
        assert 0 <= box.x and 0 <= box.y and box.w > 0 and box.h > 0
        assert box.x + box.w <= img.width and box.y + box.h <= img.height
        assert not box.is_whole(img.width, img.height)
