"""Pure image transforms: bring an RGB image to the square array the model expects.

These run in the request thread, outside the model's batching queue, so that
decoding and resizing of many requests overlap with inference.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from conf.settings import ResizeMode

# The side of the square image the model sees (ResNet50's ImageNet input).
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
    """A float32 (INPUT_SIZE, INPUT_SIZE, 3) array in ResNet50's own input convention (BGR, ImageNet mean removed)."""
    # Imported on first use: importing Keras costs seconds, and decoding (model.images) needs only INPUT_SIZE.
    from keras.applications.resnet50 import preprocess_input  # noqa: PLC0415

    square = fit_square(img, mode)
    arr = np.asarray(square, dtype=np.float32)
    return preprocess_input(arr)
