"""The Embedder: backbone + preprocessing (+ optional border trim) + engine + precision -> unit vectors.

`load_embedder(settings)` is the one way the service gets a model. Everything on
the request path (`Embedder.preprocess`, `Embedder.embed`) is numpy, Pillow and
the engine: Keras and TensorFlow are imported only to build the network, which
the OpenVINO engine does only when its cache misses.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from conf.errors import StartupError
from conf.settings import ModelEngine, Pooling, Precision, ResizeMode, Settings
from model import resnet50
from model.backbones import Backbone, backbone
from model.cpu import cpu_budget
from model.engines import Engine, TensorFlowEngine
from model.fingerprint import Fingerprint, numeric_space
from model.regions import AUTO_CANDIDATES, Box, Frame, Proposal, activation_energy, strongest_blob, widen
from model.transforms import INPUT_SIZE, fit_square, trim_border, trim_box
from model.weights import RANDOM_SEED, Weights

log = logging.getLogger(__name__)

# The default backbone's vector width, for code that sizes a store before any model exists (tests,
# tools); the service asks the Embedder (`.dim`), which knows the configured backbone.
DIM = resnet50.DIM
GEM_POWER = 3.0
# A batch of model inputs; the batch dimension is left open.
INPUT_SHAPE = (None, INPUT_SIZE, INPUT_SIZE, 3)


@dataclass(frozen=True)
class ModelSpec:
    """Everything MODEL_* and IMAGE_* settings fix about the network and its inputs, resolved, no engine yet."""

    backbone: Backbone
    weights: Weights
    resize: ResizeMode
    pooling: Pooling
    trim: bool

    def cache_key(self) -> dict[str, str]:
        """What the OpenVINO cache is keyed by, besides precision and versions.

        Resize and trim do not change the FP32 network, but an INT8 model is calibrated on
        images preprocessed with them, and the two slots share this key.
        """
        return {
            "model": self.backbone.name.value,
            "weights": self.weights.identity,
            "resize": self.resize.value,
            "pooling": self.pooling.value,
            "trim": self.trim_label,
        }

    @property
    def trim_label(self) -> str:
        """IMAGE_TRIM as the cache key, /ready and the fingerprint spell it: "on" or "off"."""
        return "on" if self.trim else "off"

    def preprocess(self, img: Image.Image) -> np.ndarray:
        """A decoded RGB image -> the (224, 224, 3) float32 model input: trim (IMAGE_TRIM), resize, normalise."""
        return self.backbone.normalise(self.pixels(img))

    def preprocess_content(self, img: Image.Image) -> np.ndarray:
        """An image already trimmed (or a part of one) -> the model input: resize, normalise."""
        return self.backbone.normalise(self.pixels_content(img))

    def pixels(self, img: Image.Image) -> np.ndarray:
        """A decoded RGB image -> the (224, 224, 3) uint8 pixels the network sees: trim (IMAGE_TRIM), resize."""
        if self.trim:
            img = trim_border(img)
        return self.pixels_content(img)

    def pixels_content(self, img: Image.Image) -> np.ndarray:
        """An image already trimmed (or a part of one) -> the (224, 224, 3) uint8 pixels: resize."""
        return np.asarray(fit_square(img, self.resize))

    def feature_model(self) -> Any:
        """The backbone as a Keras model: (n, 224, 224, 3) input -> (n, 7, 7, dim) feature map."""
        if self.weights.path is None:
            import keras  # noqa: PLC0415 - only building needs Keras

            keras.utils.set_random_seed(RANDOM_SEED)
        return self.backbone.build(self.weights.path)

    def keras_model(self, with_map: bool = False) -> Any:
        """The backbone with its pooling: (n, 224, 224, 3) -> (n, dim) features, not yet normalised.

        `with_map`: the un-pooled (n, 7, 7, dim) feature map is a second output (what the TensorFlow engine
        runs; the OpenVINO engine converts the single-output model and adds that output to the compiled graph).
        """
        import keras  # noqa: PLC0415 - only building needs Keras (a cached OpenVINO model never does)

        base = self.feature_model()
        features = base.output
        if self.pooling is Pooling.GEM:
            # Generalised-mean pooling: emphasises strong local activations, which tends to help
            # instance retrieval (same product, different shot) over plain averaging.
            clipped = keras.ops.maximum(features, 1e-6)
            pooled = keras.ops.power(keras.ops.mean(keras.ops.power(clipped, GEM_POWER), axis=(1, 2)), 1.0 / GEM_POWER)
        else:
            pooled = keras.ops.mean(features, axis=(1, 2))
        return keras.Model(base.input, [pooled, features] if with_map else pooled)


class Embedder:
    """Images to L2-normalised vectors with one backbone, engine and precision.

    `preprocess` turns a decoded RGB image into the engine's input (run by request
    threads, in parallel): uint8 pixels when the engine normalises inside its
    graph (OpenVINO), else normalised float32; `embed` runs whole batches through
    the engine, which serialises them, and takes either kind of input. `info` is
    what /ready reports, `fingerprint` names the embedding space the vectors
    belong to.
    """

    def __init__(self, spec: ModelSpec, engine: Engine, fingerprint: Fingerprint) -> None:
        self.spec = spec
        self.engine = engine
        self.fingerprint = fingerprint
        self.dim = spec.backbone.dim
        self.duplicate_default = spec.backbone.duplicate_default
        self._backbone: Any = None
        self._backbone_lock = threading.Lock()

    @property
    def info(self) -> dict[str, Any]:
        """What /ready reports about the model: the configuration really in force."""
        spec = self.spec
        return {
            "name": spec.backbone.name.value,
            "weights": spec.weights.label,
            "dim": self.dim,
            "resize": spec.resize.value,
            "pooling": spec.pooling.value,
            "trim": spec.trim_label,
            "engine": self.engine.name,
            "precision": self.engine.precision,
            "threads": self.engine.threads,
            "fingerprint": self.fingerprint.digest,
            "space": self.fingerprint.summary,
        }

    def preprocess(self, img: Image.Image) -> np.ndarray:
        """A decoded RGB image -> the (224, 224, 3) engine input (trim, resize; normalise unless the engine does)."""
        return self._engine_ready(self.spec.pixels(img))

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Embed a (n, 224, 224, 3) batch into (n, dim) float32 unit vectors: uint8 pixels (as `preprocess` gives
        for an engine that normalises) or normalised float32 (as `ModelSpec.preprocess` gives), either engine."""
        return normalize(self.engine.predict(self.engine_input(batch)))

    def preprocess_box(self, img: Image.Image, box: Box) -> np.ndarray:
        """The engine input of one part of the image: cropped to `box`, resized (and normalised unless the engine
        does), never trimmed (the box already says where the content is)."""
        return self._engine_ready(self.spec.pixels_content(img.crop(box.corners)))

    def normalised(self, batch: np.ndarray) -> np.ndarray:
        """The normalised float32 model input of a batch of either kind `embed` takes (for tools that compare
        inputs)."""
        array = np.asarray(batch)
        return self.spec.backbone.normalise(array) if array.dtype == np.uint8 else array.astype(np.float32)

    def _engine_ready(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 pixels as the engine takes them: as they are, or normalised in numpy here (the request thread)."""
        return pixels if self.engine.takes_pixels else self.spec.backbone.normalise(pixels)

    def engine_input(self, batch: np.ndarray) -> np.ndarray:
        """A batch of either kind as the engine takes it (what `embed` runs; benchmarks convert ahead of their
        clock with it). Normalised floats reach an engine that takes pixels only from tools (the service hands it
        pixels); they turn back into the pixels they came from exactly."""
        array = np.asarray(batch)
        if array.dtype == np.uint8:
            return array if self.engine.takes_pixels else self.spec.backbone.normalise(array)
        return self.spec.backbone.pixel_norm.to_pixels(array) if self.engine.takes_pixels else array

    def propose(self, img: Image.Image) -> Proposal:
        """The whole image's unit vector, and candidate boxes of its main object, best first (may be none).

        Runs the engine directly (not through a batcher). The boxes come from the same pass's feature map,
        worked out when first asked for; a candidate that zooms in costs one more pass over its part.
        """
        trimmed = trim_box(img) if self.spec.trim else None
        content = img if trimmed is None else img.crop(trimmed)
        left, top = (0, 0) if trimmed is None else trimmed[:2]
        pooled, maps = self.engine.predict_with_maps(self._engine_ready(self.spec.pixels_content(content))[None])
        frame = input_frame(content.width, content.height, self.spec.resize, left, top)
        energy = activation_energy(maps[0])

        def locate() -> list[Box]:
            boxes: list[Box] = []
            for k, zoom in AUTO_CANDIDATES:
                box = self._blob(energy, k, frame, img)
                if box is not None and zoom is not None:
                    box = self._zoom(img, box, zoom)
                if box is not None and box not in boxes and not box.is_whole(img.width, img.height):
                    boxes.append(box)
            return boxes

        return Proposal(normalize(pooled)[0], locate)

    @staticmethod
    def _blob(energy: np.ndarray, k: float, frame: Frame, img: Image.Image) -> Box | None:
        found = strongest_blob(energy, k)
        return None if found is None else frame.box(*found, img.width, img.height)

    def _zoom(self, img: Image.Image, box: Box, share_and_k: tuple[float, float]) -> Box | None:
        """The blob found again inside `box` widened by `share`: a second look at 7x7 finer cells."""
        share, k = share_and_k
        around = widen(box, share, img.width, img.height)
        _, maps = self.engine.predict_with_maps(self.preprocess_box(img, around)[None])
        frame = input_frame(around.w, around.h, self.spec.resize, around.x, around.y)
        return self._blob(activation_energy(maps[0]), k, frame, img) or box

    @property
    def backbone(self) -> Any:
        """The un-pooled Keras backbone with the same weights (built on first use), for tools that pool themselves."""
        with self._backbone_lock:
            if self._backbone is None:
                self._backbone = self.spec.feature_model()
            return self._backbone


def input_frame(width: int, height: int, resize: ResizeMode, left: int = 0, top: int = 0) -> Frame:
    """Where the model's square input lies over a `width` x `height` image whose top-left is at (left, top)."""
    if resize is ResizeMode.SQUASH:
        return Frame(left, top, width, height)
    side = min(width, height) if resize is ResizeMode.CENTER_CROP else max(width, height)
    return Frame(left + (width - side) / 2, top + (height - side) / 2, side, side)


def normalize(raw: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length."""
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    # An all-zero feature vector (possible with random weights) would divide by zero.
    return raw / np.maximum(norms, 1e-12)


def model_spec(settings: Settings) -> ModelSpec:
    """The configured network, its weights resolved (StartupError with advice when they are missing)."""
    net = backbone(settings.model_name)
    weights = net.resolve(settings.model_weights, settings.model_cache_dir)
    return ModelSpec(net, weights, settings.image_resize, settings.model_pooling, settings.image_trim)


def engine_threads(settings: Settings) -> int:
    """Threads one batch runs on: TF_THREADS, or (0, the default) the CPUs this process may use."""
    return settings.tf_threads or cpu_budget()


def load_embedder(settings: Settings) -> Embedder:
    """The embedder as configured; raises StartupError saying what to do when it cannot be built."""
    spec = model_spec(settings)
    engine = _build_engine(spec, settings)
    fingerprint = space_of(
        spec,
        numeric_space(
            _space_precision(settings.model_precision, engine), _int8_model_sha256(engine), _int8_shares_fp32(engine)
        ),
    )
    embedder = Embedder(spec, engine, fingerprint)
    log.info(
        "model %s (%s weights) on %s at %s, %d threads; embedding space %s",
        spec.backbone.label,
        spec.weights.label,
        engine.name,
        engine.precision,
        engine.threads,
        fingerprint,
    )
    return embedder


def space_of(spec: ModelSpec, numeric: str) -> Fingerprint:
    """The embedding space of vectors from this network and preprocessing in this numeric space."""
    return Fingerprint(
        model=spec.backbone.name.value,
        weights=spec.weights.identity,
        input_size=INPUT_SIZE,
        resize=spec.resize.value,
        pooling=spec.pooling.value,
        trim=spec.trim_label,
        numeric=numeric,
    )


def _build_engine(spec: ModelSpec, settings: Settings) -> Engine:
    """The engine MODEL_ENGINE and MODEL_PRECISION ask for, or StartupError when they cannot be had."""
    precision = settings.model_precision
    if settings.model_engine is ModelEngine.TENSORFLOW:
        if precision is not Precision.FP32:
            raise StartupError(
                f"MODEL_PRECISION={precision.value} needs MODEL_ENGINE=openvino; the TensorFlow "
                "engine runs fp32 only. Set MODEL_ENGINE=openvino or MODEL_PRECISION=fp32."
            )
        return TensorFlowEngine(spec.keras_model(with_map=True), INPUT_SIZE, threads=engine_threads(settings))
    try:
        from model.openvino_engine import NotCalibrated, OpenVinoEngine  # noqa: PLC0415 - a missing OpenVINO gets advice
    except ImportError as exc:
        raise StartupError(
            f"MODEL_ENGINE=openvino but OpenVINO cannot be imported ({exc}): install the pinned "
            "openvino from requirements.txt, or set MODEL_ENGINE=tensorflow."
        ) from exc
    try:
        return OpenVinoEngine(
            spec.keras_model,
            cache_dir=settings.model_cache_dir,
            cache_key=spec.cache_key(),
            threads=engine_threads(settings),
            precision=precision.value,
            input_size=INPUT_SIZE,
            # Conversion and normalisation run inside the compiled graph: request threads hand over uint8.
            pixels=spec.backbone.pixel_norm,
        )
    except NotCalibrated as exc:
        raise StartupError(str(exc)) from exc


def _space_precision(requested: Precision, engine: Engine) -> str:
    """The precision that decides the vectors' space: an INT8 model's vectors are its own even where the
    CPU runs it without INT8 kernels; a float precision counts as really in force (bf16 may fall back)."""
    return "int8" if requested is Precision.INT8 else engine.precision


def _int8_model_sha256(engine: Engine) -> str | None:
    """The sha256 of the INT8 model's weights file, which names its numeric space (None for other engines)."""
    manifest = getattr(engine, "manifest", None) or {}
    return manifest.get("files", {}).get("model.bin")


def _int8_shares_fp32(engine: Engine) -> bool:
    """Whether the INT8 model was calibrated to share FP32's embedding space and met the gate (its manifest)."""
    manifest = getattr(engine, "manifest", None) or {}
    return bool((manifest.get("calibration") or {}).get("shares_fp32"))


def quantize_int8(settings: Settings, images: np.ndarray, match_fp32: bool = False) -> Any:
    """Calibrate and cache the INT8 model of the configured network on `images` (preprocessed as served:
    normalised float32, or the uint8 pixels an engine that normalises takes; calibration runs on floats).

    With `match_fp32`, a model that shares FP32's embedding space or none (GateMissed). Returns the
    CalibrationReport (cosine to FP32 and neighbour stability on held-out images, how it was made).
    """
    from model.openvino_engine import calibrate_int8  # noqa: PLC0415 - NNCF is heavy; only calibration needs it

    spec = model_spec(settings)
    return calibrate_int8(
        spec.keras_model,
        spec.backbone.normalise(images) if np.asarray(images).dtype == np.uint8 else images,
        cache_dir=settings.model_cache_dir,
        cache_key=spec.cache_key(),
        threads=engine_threads(settings),
        input_size=INPUT_SIZE,
        match_fp32=match_fp32,
    )
