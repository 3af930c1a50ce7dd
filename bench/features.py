"""Model inputs and features for the benchmarks, computed exactly as the service computes them.

The quality benchmark compares average and GeM pooling of the same feature map
instead of running the model once per pooling: `feature_maps` is the
embedder's un-pooled backbone, and `pool` repeats the arithmetic of the
Embedder's graph (the benchmark checks that it agrees).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from conf.settings import Pooling, ResizeMode
from model.embedder import GEM_POWER, INPUT_SHAPE, Embedder, normalize
from model.images import decode_image
from model.transforms import to_model_input

_traced: dict[int, Any] = {}  # id(embedder) -> its backbone as one traced graph


def feature_maps(embedder: Embedder, batch: np.ndarray) -> np.ndarray:
    """ResNet50's last feature map, (n, 7, 7, 2048), before any pooling."""
    import tensorflow as tf  # noqa: PLC0415 - only the quality benchmark pays for it

    forward = _traced.get(id(embedder))
    if forward is None:
        backbone = embedder.backbone
        forward = tf.function(lambda x: backbone(x, training=False), autograph=False,
                              input_signature=[tf.TensorSpec(INPUT_SHAPE, tf.float32)])
        _traced[id(embedder)] = forward
    return forward(np.ascontiguousarray(batch, dtype=np.float32)).numpy()


def pool(maps: np.ndarray, pooling: Pooling) -> np.ndarray:
    """Pool (n, 7, 7, 2048) feature maps into unit vectors exactly as the Embedder's graph does."""
    maps = np.asarray(maps, dtype=np.float32)
    if pooling is Pooling.GEM:
        pooled = np.power(np.mean(np.power(np.maximum(maps, 1e-6), GEM_POWER), axis=(1, 2)), 1.0 / GEM_POWER)
    else:
        pooled = np.mean(maps, axis=(1, 2))
    return normalize(pooled.astype(np.float32))


def decoded(path: Path) -> Image.Image:
    """A benchmark image decoded exactly as the service decodes uploads (without the service's size caps)."""
    return decode_image(path.read_bytes(), max_bytes=1 << 30, max_pixels=1 << 31).image


def model_inputs(paths: list[Path], mode: ResizeMode) -> np.ndarray:
    """The model input batch of these images, preprocessed as the service does with IMAGE_RESIZE=mode."""
    return np.stack([to_model_input(decoded(p), mode) for p in paths])
