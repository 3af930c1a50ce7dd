"""Inference engines: what turns a preprocessed image batch into backbone features.

The Embedder owns preprocessing, pooling choice and L2 normalisation; an engine
only runs the network. Two implementations: `TensorFlowEngine` here (Keras as
built, works everywhere TensorFlow does) and `OpenVinoEngine` in
`model.openvino_engine` (the same network converted for OpenVINO's CPU runtime).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)


@runtime_checkable
class Engine(Protocol):
    """A compiled network: (n, size, size, 3) model inputs in, (n, width) float32 features out.

    `name` says which runtime runs it ("tensorflow", "openvino"), `precision`
    the arithmetic really in force ("fp32", "bf16", "int8"; not merely what was
    asked for), `threads` the size of the pool one batch runs on. `takes_pixels`:
    the inputs are uint8 RGB pixels the network normalises itself (else float32
    inputs already normalised). `predict` is safe to call from several threads;
    batches run one at a time.
    """

    name: str
    precision: str
    threads: int
    takes_pixels: bool

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Features of a (n, size, size, 3) float32 batch as an (n, width) float32 array."""
        ...

    def predict_with_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features (n, width) and the backbone's last feature map (n, h, w, channels) of a batch."""
        ...


@dataclass(frozen=True)
class PixelNorm:
    """How a backbone turns uint8 RGB pixels into its float input: reverse the channels to BGR when
    `reverse_channels`, then (x - mean) / scale per channel (in the order after the reversal)."""

    mean: tuple[float, float, float]
    scale: tuple[float, float, float]
    reverse_channels: bool = False

    def to_pixels(self, inputs: np.ndarray) -> np.ndarray:
        """The uint8 RGB pixels that normalise to float `inputs` (exact for inputs made from 8-bit pixels)."""
        x = np.asarray(inputs, np.float32) * np.asarray(self.scale, np.float32) + np.asarray(self.mean, np.float32)
        if self.reverse_channels:
            x = x[..., ::-1]
        return np.ascontiguousarray(np.clip(np.rint(x), 0, 255).astype(np.uint8))


def check_batch(batch: np.ndarray, input_size: int, dtype: type = np.float32) -> np.ndarray:
    """The batch as a C-contiguous `dtype` array, or ValueError if its shape is not (n, size, size, 3)."""
    array: np.ndarray = np.ascontiguousarray(batch, dtype=dtype)
    if array.ndim != 4 or array.shape[1:] != (input_size, input_size, 3):
        raise ValueError(f"expected a (n, {input_size}, {input_size}, 3) batch, got shape {array.shape}")
    return array


class TensorFlowEngine:
    """The Keras model run by TensorFlow through one traced graph.

    Keras' own predict retraces the first time it sees a new batch size (several
    seconds on two cores: a stall the micro-batcher would hit at random), so the
    model is wrapped in one tf.function whose batch dimension is unknown: it is
    traced exactly once, here, at construction.
    """

    name = "tensorflow"
    takes_pixels = False  # the Embedder normalises in numpy (request threads), as the Keras model expects

    def __init__(self, keras_model: Any, input_size: int = 224, threads: int = 1) -> None:
        """Wrap `keras_model` (input (None, input_size, input_size, 3); outputs the pooled features and the
        feature map, see ModelSpec.keras_model); size TF's pools to `threads`."""
        import tensorflow as tf  # noqa: PLC0415 - keep `import model.engines` free of TensorFlow

        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.input_size = input_size
        self.threads = set_tf_threads(tf, threads)
        self.precision = _keras_precision(keras_model)
        self._lock = threading.Lock()
        spec = tf.TensorSpec((None, input_size, input_size, 3), tf.float32, name="images")
        self._forward = tf.function(lambda x: keras_model(x, training=False), autograph=False, input_signature=[spec])
        self.width = int(self.predict(np.zeros((1, input_size, input_size, 3), np.float32)).shape[1])

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Features of a (n, size, size, 3) float32 batch as an (n, width) float32 array."""
        return self._run(batch)[0]

    def predict_with_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features (n, width) and the backbone's last feature map (n, h, w, channels) of a batch."""
        pooled, feature_map = self._run(batch)
        if feature_map is None:
            raise ValueError("this Keras model has no feature-map output (build it with keras_model(with_map=True))")
        return pooled, feature_map

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        array = check_batch(batch, self.input_size)
        # One batch at a time: two concurrent graph runs would split the same intra-op
        # pool and each take twice as long, for no gain in throughput.
        with self._lock:
            out = self._forward(array)
        if isinstance(out, (list, tuple)):
            return np.asarray(out[0], np.float32), np.asarray(out[1], np.float32)
        return np.asarray(out, np.float32), None


def _keras_precision(keras_model: Any) -> str:
    """The compute dtype of the Keras model as "fp32" / "bf16" / "fp16" (a mixed-precision policy changes it)."""
    policy = getattr(keras_model, "dtype_policy", None)
    compute = str(getattr(policy, "compute_dtype", "float32"))
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(compute, compute)


def set_tf_threads(tf: Any, threads: int) -> int:
    """Size TensorFlow's pools: `threads` inside each op, one op at a time; return the intra-op size in force.

    One batch at a time goes through the model, and a CNN is a chain of
    convolutions, so parallelism inside each op is all there is to use; a second
    inter-op thread only makes two ops fight over the same cores. Without this
    TensorFlow sizes its pool from the host's core count, not the container's.
    """
    config = tf.config.threading
    try:
        config.set_intra_op_parallelism_threads(threads)
        config.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        # TensorFlow's runtime was initialised already (a second engine in one process): its pools stay.
        log.debug("TensorFlow thread pools already initialised; keeping them")
    return int(config.get_intra_op_parallelism_threads()) or threads
