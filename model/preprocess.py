"""Bring an RGB image to the 224x224 array ResNet50 expects.

This runs in the request thread, outside the model's batching queue, so that
decoding and resizing of many requests overlap with inference.
"""

from __future__ import annotations

import numpy as np
from keras.applications.resnet50 import preprocess_input
from PIL import Image, ImageOps

from conf.settings import ResizeMode

INPUT_SIZE = 224
_WHITE = (255, 255, 255)


def fit_square(img: Image.Image, mode: ResizeMode, size: int = INPUT_SIZE) -> Image.Image:
    """Resize an RGB image to size x size: squash, centre-crop, or pad with white to a square."""
    if mode is ResizeMode.CENTER_CROP:
        return ImageOps.fit(img, (size, size), method=Image.Resampling.BILINEAR)
    if mode is ResizeMode.PAD:
        # White padding: product photos are usually shot on white, so padding adds no new "content".
        return ImageOps.pad(img, (size, size), method=Image.Resampling.BILINEAR, color=_WHITE)
    return img.resize((size, size), Image.Resampling.BILINEAR)


def to_model_input(img: Image.Image, mode: ResizeMode) -> np.ndarray:
    """A float32 (224, 224, 3) array in ResNet50's own input convention (BGR, ImageNet mean removed)."""
    square = fit_square(img, mode)
    arr = np.asarray(square, dtype=np.float32)
    return preprocess_input(arr)
