"""Keras 3 ResNet50 (TensorFlow, CPU) turning preprocessed images into L2-normalised vectors."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from conf.errors import StartupError
from conf.settings import Pooling, Settings
from model.cpu import cpu_budget
from model.transforms import INPUT_SIZE

log = logging.getLogger(__name__)

DIM = 2048
RANDOM_SEED = 1234
# The official "notop" ImageNet weights Keras itself downloads for ResNet50(include_top=False).
IMAGENET_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + IMAGENET_FILE
IMAGENET_MD5 = "4d473c1dd8becc155b73f8504c6f6626"
GEM_POWER = 3.0
# A batch of model inputs; the batch dimension is left open.
INPUT_SHAPE = (None, INPUT_SIZE, INPUT_SIZE, 3)


class Embedder:
    """ResNet50 without its classifier; `embed` maps a batch of images to unit vectors.

    Callers feed it whole batches (the micro-batcher, the bulk importer); a lock
    lets them share it, one batch at a time, which is also what keeps TensorFlow's
    thread pool from being split between two batches.
    """

    def __init__(self, weights: str, cache_dir: Path, pooling: Pooling, threads: int = 0) -> None:
        # Imported here so that merely importing this module (e.g. for DIM) stays cheap.
        import keras  # noqa: PLC0415
        import tensorflow as tf  # noqa: PLC0415

        # TF_THREADS=0 (the default) sizes the pools from the CPUs this process may use.
        self.threads = _set_tf_threads(tf, threads or cpu_budget())
        self._lock = threading.Lock()
        self.pooling = pooling
        resolved = self._resolve_weights(weights, cache_dir, keras)
        try:
            base = keras.applications.ResNet50(include_top=False, weights=resolved, input_shape=INPUT_SHAPE[1:])
        except (ValueError, OSError) as exc:
            raise StartupError(f"MODEL_WEIGHTS={weights}: cannot load these weights into ResNet50 "
                               f"(include_top=False): {exc}. Use the 'notop' file {IMAGENET_FILE}.") from exc
        features = base.output
        if pooling is Pooling.GEM:
            # Generalised-mean pooling: emphasises strong local activations, which tends
            # to help instance retrieval (same product, different shot) over plain averaging.
            clipped = keras.ops.maximum(features, 1e-6)
            pooled = keras.ops.power(keras.ops.mean(keras.ops.power(clipped, GEM_POWER), axis=(1, 2)),
                                     1.0 / GEM_POWER)
        else:
            pooled = keras.ops.mean(features, axis=(1, 2))
        self.backbone = base  # un-pooled, for tools that pool its feature maps themselves (bench/features.py)
        self._model = keras.Model(base.input, pooled)
        # One graph for every batch size. Keras' predict_on_batch retraces the first time it
        # meets a new batch size (3+ s on a 2-core box: a stall the micro-batcher would hit at
        # random under load); an unknown batch dimension in the signature traces exactly once.
        self._forward = tf.function(lambda x: self._model(x, training=False), autograph=False,
                                    input_signature=[tf.TensorSpec(INPUT_SHAPE, tf.float32)])
        self.embed(np.zeros((1, *INPUT_SHAPE[1:]), dtype=np.float32))  # build the graph now, not on the first request

    @staticmethod
    def _resolve_weights(weights: str, cache_dir: Path, keras: object) -> str | None:
        if weights == "random":
            keras.utils.set_random_seed(RANDOM_SEED)  # type: ignore[attr-defined]
            log.warning("!" * 72)
            log.warning("MODEL_WEIGHTS=random: the model has RANDOM weights (seed %d). Similarity "
                        "results are meaningless. This is for tests only.", RANDOM_SEED)
            log.warning("!" * 72)
            return None
        if weights == "imagenet":
            cache_dir.mkdir(parents=True, exist_ok=True)
            try:
                return keras.utils.get_file(  # type: ignore[attr-defined]
                    IMAGENET_FILE, IMAGENET_URL, cache_subdir="models", file_hash=IMAGENET_MD5,
                    cache_dir=str(cache_dir.resolve()))
            except Exception as exc:  # noqa: BLE001 - any download failure gets the same advice
                raise StartupError(
                    f"MODEL_WEIGHTS=imagenet: could not download the ImageNet weights from {IMAGENET_URL} "
                    f"({exc}). On a machine without internet, download that file elsewhere and set "
                    f"MODEL_WEIGHTS=/path/to/{IMAGENET_FILE}, or put it in "
                    f"{cache_dir.resolve() / 'models' / IMAGENET_FILE}.") from exc
        path = Path(weights).expanduser()
        if not path.is_file():
            raise StartupError(f"MODEL_WEIGHTS={weights}: no such file. Use 'imagenet', 'random' (tests "
                               f"only) or the path of a local {IMAGENET_FILE}.")
        return str(path.resolve())

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Embed a (n, INPUT_SIZE, INPUT_SIZE, 3) preprocessed batch into (n, 2048) float32 unit vectors."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        with self._lock:
            raw = self._forward(batch).numpy()
        return normalize(raw)


def normalize(raw: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length."""
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    # An all-zero feature vector (possible with random weights) would divide by zero.
    return raw / np.maximum(norms, 1e-12)


def _set_tf_threads(tf: object, threads: int) -> int:
    """Size TensorFlow's pools: `threads` inside each op, one op at a time.

    One batch at a time goes through the model, and ResNet50 is a chain of
    convolutions, so op-level parallelism is all there is to use; a second
    inter-op thread only makes two ops fight over the same cores. Returns the
    intra-op pool size in effect.
    """
    config = tf.config.threading  # type: ignore[attr-defined]
    try:
        config.set_intra_op_parallelism_threads(threads)
        config.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        # TensorFlow was initialised already (a second Embedder in the same process): its pools stay.
        log.debug("TensorFlow thread pools already initialised; keeping them")
    return int(config.get_intra_op_parallelism_threads()) or threads


def load_embedder(settings: Settings) -> Embedder:
    """The ResNet50 embedder as configured (raises StartupError with advice when weights are missing)."""
    return Embedder(settings.model_weights, settings.model_cache_dir, settings.model_pooling, settings.tf_threads)


def model_info(settings: Settings) -> dict[str, Any]:
    """What /ready reports about the model."""
    weights = settings.model_weights if settings.model_weights in ("imagenet", "random") else "local file"
    return {"name": "ResNet50", "weights": weights, "dim": DIM, "resize": settings.image_resize.value,
            "pooling": settings.model_pooling.value}
