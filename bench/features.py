"""Model inputs and features for the quality benchmark, computed exactly as the service computes them.

One network run gives both poolings: the bench's network is the backbone's
feature map pooled by average and by GeM side by side, converted and run by
OpenVINO at FP32 (the service's default engine). Preprocessing variants (resize
mode x border trim) reuse one decode per image. `check_against_service` makes
sure that what the bench computes is what the service's own Embedder computes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from conf.settings import MODEL_BATCH, Pooling, ResizeMode, Settings
from model.embedder import GEM_POWER, model_spec, normalize
from model.images import decode_image
from model.transforms import fit_square, trim_border

log = logging.getLogger("bench.features")


@dataclass(frozen=True)
class Variant:
    """One preprocessing of the service: IMAGE_RESIZE and IMAGE_TRIM (both poolings come from one run)."""

    mode: ResizeMode
    trim: bool

    def name(self, pooling: Pooling) -> str:
        """'center-crop+avg', 'pad+gem+trim' and so on."""
        return f"{self.mode.value}+{pooling.value}" + ("+trim" if self.trim else "")


def variant_name(mode: ResizeMode, pooling: Pooling, trim: bool) -> str:
    """The name of the service configuration IMAGE_RESIZE=mode, MODEL_POOLING=pooling, IMAGE_TRIM=trim."""
    return Variant(mode, trim).name(pooling)


def variant_parts(name: str) -> tuple[str, str, str]:
    """('squash', 'gem', 'on') for 'squash+gem+trim': IMAGE_RESIZE, MODEL_POOLING and IMAGE_TRIM of a variant."""
    bits = name.split("+")
    return bits[0], bits[1], "on" if bits[-1] == "trim" else "off"


def settings_variant(settings: Settings) -> str:
    """The variant name of the configuration `settings` describe."""
    return variant_name(settings.image_resize, settings.model_pooling, settings.image_trim)


def decoded(path: Path) -> Image.Image:
    """A benchmark image decoded exactly as the service decodes uploads (without the service's size caps)."""
    return decoded_bytes(path.read_bytes())


def decoded_bytes(data: bytes) -> Image.Image:
    """Image bytes decoded exactly as the service decodes uploads (without the service's size caps)."""
    return decode_image(data, max_bytes=1 << 30, max_pixels=1 << 31).image


def model_input(img: Image.Image, variant: Variant, normalise: Any) -> np.ndarray:
    """The model input of a decoded image under one preprocessing variant."""
    square = fit_square(trim_border(img) if variant.trim else img, variant.mode)
    return normalise(np.asarray(square))


class PooledFeatures:
    """A backbone's last feature map, average- and GeM-pooled in one OpenVINO FP32 run, as unit vectors."""

    def __init__(self, settings: Settings, threads: int) -> None:
        """Build (or reuse from MODEL_CACHE_DIR) the network MODEL_NAME and MODEL_WEIGHTS of `settings` name."""
        from model.openvino_engine import OpenVinoEngine  # noqa: PLC0415 - heavy; only the quality bench needs it

        self.spec = model_spec(settings)
        self.normalise = self.spec.backbone.normalise
        self.dim = self.spec.backbone.dim
        key = {"model": f"bench-{self.spec.backbone.name.value}-avg-gem", "weights": self.spec.weights.identity}
        self.engine = OpenVinoEngine(
            self._keras_model, cache_dir=settings.model_cache_dir, cache_key=key, threads=threads, precision="fp32"
        )

    def _keras_model(self) -> Any:
        """The service's backbone (same weights, same seed) -> [average pool | GeM pool], the Embedder's arithmetic."""
        import keras  # noqa: PLC0415 - Keras (TensorFlow, slow to import) only when the model cache misses

        fmap = self.spec.feature_model()
        x = fmap.output
        avg = keras.ops.mean(x, axis=(1, 2))
        gem = keras.ops.power(
            keras.ops.mean(keras.ops.power(keras.ops.maximum(x, 1e-6), GEM_POWER), axis=(1, 2)), 1.0 / GEM_POWER
        )
        return keras.Model(fmap.input, keras.ops.concatenate([avg, gem], axis=1))

    def __call__(self, batch: np.ndarray) -> dict[Pooling, np.ndarray]:
        """Unit vectors of a preprocessed batch for each pooling."""
        both = self.engine.predict(batch)
        return {Pooling.AVG: normalize(both[:, : self.dim]), Pooling.GEM: normalize(both[:, self.dim :])}


def check_against_service(
    features: PooledFeatures,
    embedder: Any,
    settings: Settings,
    paths: Sequence[Path],
) -> dict[str, float]:
    """Largest differences between the bench's inputs and vectors and the service Embedder's, on a few images."""
    imgs = [decoded(p) for p in paths]
    ours = np.stack(
        [model_input(i, Variant(settings.image_resize, settings.image_trim), features.normalise) for i in imgs]
    )
    theirs = embedder.normalised(np.stack([embedder.preprocess(i) for i in imgs]))
    vectors = features(ours)[settings.model_pooling]
    return {
        "input_max_abs_diff": float(np.abs(ours - theirs).max()),
        "vector_max_abs_diff": float(np.abs(vectors - embedder.embed(theirs)).max()),
    }


def _load(path: Path, variants: Sequence[Variant], normalise: Any, phash: bool) -> tuple[list[np.ndarray], int]:
    """Decode once, then one model input per variant, and the 64-bit pHash when asked."""
    import imagehash  # noqa: PLC0415 - only the pHash baseline needs it

    img = decoded(path)
    arrays = [model_input(img, v, normalise) for v in variants]
    if not phash:
        return arrays, 0
    bits = imagehash.phash(img).hash.flatten()
    return arrays, int(np.packbits(bits.astype(np.uint8)).view(">u8")[0])


def embed_all(
    features: PooledFeatures, paths: Sequence[Path], variants: Sequence[Variant], label: str, phash: bool = False
) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    """Vectors of every image for every variant and pooling, pHashes (zeros unless asked), model seconds.

    Decoding and preprocessing run a batch ahead of the model in two threads.
    """
    vectors = {v.name(p): np.empty((len(paths), features.dim), np.float32) for v in variants for p in Pooling}
    hashes = np.zeros(len(paths), dtype=np.uint64)
    model_s = 0.0
    chunks = [list(range(i, min(len(paths), i + MODEL_BATCH))) for i in range(0, len(paths), MODEL_BATCH)]
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="bench-decode") as pool:

        def submit(chunk: list[int]) -> list[Any]:
            return [pool.submit(_load, paths[i], variants, features.normalise, phash) for i in chunk]

        ahead = submit(chunks[0]) if chunks else []
        for n, chunk in enumerate(chunks):
            current, ahead = ahead, (submit(chunks[n + 1]) if n + 1 < len(chunks) else [])
            loaded = [f.result() for f in current]
            hashes[chunk] = [h for _, h in loaded]
            for k, variant in enumerate(variants):
                t0 = time.perf_counter()
                pooled = features(np.stack([arrays[k] for arrays, _ in loaded]))
                model_s += time.perf_counter() - t0
                for pooling, vec in pooled.items():
                    vectors[variant.name(pooling)][chunk] = vec
            if n % 20 == 0:
                log.info("%s: %d/%d images", label, chunk[-1] + 1, len(paths))
    return vectors, hashes, model_s


def embed_with(
    embedder: Any, paths: Sequence[Any], label: str, load: Callable[[Any], Image.Image] = decoded
) -> np.ndarray:
    """Vectors of every image through a service Embedder (its own preprocessing), a batch at a time.

    `paths` are files by default; with `load` they are whatever it decodes (`decoded_bytes`: image bytes)."""
    out = np.empty((len(paths), embedder.dim), np.float32)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="bench-decode") as pool:
        for start in range(0, len(paths), MODEL_BATCH):
            part = paths[start : start + MODEL_BATCH]
            batch = list(pool.map(lambda p: embedder.preprocess(load(p)), part))
            out[start : start + len(part)] = embedder.embed(np.stack(batch))
            if (start // MODEL_BATCH) % 40 == 0:
                log.info("%s: %d/%d images", label, start + len(part), len(paths))
    return out
