"""The Keras network run by OpenVINO's CPU runtime, with an on-disk cache of the converted model.

Converting the Keras model takes seconds, so the converted model (OpenVINO IR:
an .xml graph and a .bin of weights) is kept in a cache directory, one slot per
model and stored precision:

    <cache_dir>/openvino/<model>-fp32/   model.xml, model.bin, manifest.json
    <cache_dir>/openvino/<model>-int8/   the same, written only by `calibrate_int8`

The manifest records the full key (the caller's mapping plus stored precision,
input size, OpenVINO version and cache format) and the sha256 of both files. A
slot is used only when its key equals the running one and both hashes match;
otherwise it is stale or corrupt and is rebuilt (FP32) or refused (INT8, which
needs the user's images). Slots are written to a temporary directory and
renamed into place, so a crash or a concurrent reader never sees half a model.

Precision: "fp32" and "bf16" run the same FP32 IR (bf16 is a compile-time hint);
"int8" runs a model quantized by NNCF on images the caller supplies. The hint is
always passed explicitly because on CPUs with AVX512_BF16 or AMX OpenVINO would
otherwise run a model "compiled as FP32" in bf16.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
from openvino.preprocess import PrePostProcessor

from model import int8
from model.engines import PixelNorm, check_batch
from model.int8 import Gate

log = logging.getLogger(__name__)

# Requested precision -> INFERENCE_PRECISION_HINT. INT8 models keep a few layers in floating
# point (the first input conversion, pooling); f32 there keeps INT8 as the only source of drift.
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
CALIBRATE_COMMAND = "python main.py calibrate DIR"
CACHE_FORMAT = 1
MIN_CALIBRATION_IMAGES = 16
RECOMMENDED_CALIBRATION_IMAGES = 200
XML, BIN, MANIFEST = "model.xml", "model.bin", "manifest.json"
_RESERVED_KEYS = frozenset({"precision", "input_size", "openvino", "format"})
_LEFTOVER_AGE_S = 3600.0  # temp/old slot directories older than this are debris of a crashed writer
_OV_TO_LABEL = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}

KerasFactory = Callable[[], Any]
CacheKey = Mapping[str, str | int | float | bool]


class OpenVinoEngineError(Exception):
    """Base class of this module's errors."""


class NotCalibrated(OpenVinoEngineError):
    """INT8 was requested but no usable calibrated model is cached for this configuration."""


class GateMissed(OpenVinoEngineError):
    """An INT8 model asked to share FP32's embedding space missed the gate on held-out images; it was not cached."""

    def __init__(self, report: CalibrationReport) -> None:
        super().__init__("\n".join(report.lines()))
        self.report = report


@dataclass(frozen=True)
class CalibrationReport:
    """How the INT8 model was made and how close it stays to FP32 on held-out images it was not calibrated on.

    `images`: all images given; `held_out`: how many of them were kept out of
    calibration to measure the model (model.int8.HOLD_OUT_EVERY). `cosine_*`:
    cosine of INT8 to FP32 vectors of the held-out images; `plain_cosine_*`: the
    same for plain post-training quantization. `method`: "ptq", or
    "accuracy-control" when plain PTQ missed the gate (`gate_p1`, `gate_min`) and
    the layers in `float_layers` (of `weighted_layers`) were reverted to FP32.
    `top10_same_share`: share of held-out images whose `neighbours` nearest
    neighbours among them are the same set under INT8 as under FP32;
    `top10_overlap`: mean share of those neighbours kept. `match_fp32`: a model
    sharing FP32's embedding space was asked for (`--match-fp32`); `shares_fp32`:
    it was asked for and meets the gate, so FP32 collections accept its vectors.
    """

    images: int
    held_out: int
    cosine_min: float
    cosine_p1: float
    cosine_median: float
    top10_same_share: float
    top10_overlap: float
    neighbours: int
    method: str
    float_layers: list[str]
    weighted_layers: int
    gate_p1: float
    gate_min: float
    gate_met: bool
    plain_cosine_min: float
    plain_cosine_p1: float
    match_fp32: bool
    shares_fp32: bool
    seconds: float
    cache_path: str

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON-serialisable values."""
        return asdict(self)

    def lines(self) -> list[str]:
        """The report for a person: how the model was made, its held-out figures, what stayed in FP32."""
        saved = "" if self.match_fp32 and not self.shares_fp32 else f" ({self.cache_path})"
        out = [
            f"INT8 model calibrated on {self.images - self.held_out} images in {self.seconds:.0f} s{saved}, "
            f"judged on {self.held_out} other images of the folder: cosine to FP32 min "
            f"{self.cosine_min:.4f}, 1st percentile {self.cosine_p1:.4f}, median {self.cosine_median:.4f}; "
            f"top-{self.neighbours} neighbours among them unchanged for {self.top10_same_share:.1%} of images "
            f"(mean overlap {self.top10_overlap:.1%})."
        ]
        if self.method == "ptq":
            out.append(f"Every one of the {self.weighted_layers} convolution/matmul layers runs in INT8.")
        else:
            out.append(
                f"Plain INT8 missed the gate (1st percentile {self.plain_cosine_p1:.4f}, min "
                f"{self.plain_cosine_min:.4f}), so NNCF's accuracy control kept {len(self.float_layers)} of "
                f"the {self.weighted_layers} convolution/matmul layers in FP32: " + ", ".join(self.float_layers) + "."
            )
        gate = (
            f"the gate for sharing FP32's embedding space (1st percentile >= {self.gate_p1}, min >= "
            f"{self.gate_min} on held-out images)"
        )
        if self.shares_fp32:
            out.append(
                f"The model meets {gate}: it shares FP32's embedding space, so collections of FP32 vectors "
                "of this model are served without re-embedding."
            )
        elif self.match_fp32:
            out.append(
                f"The model MISSES {gate}, so it was not saved. Calibrate on more images of the catalog, or "
                "drop --match-fp32 for a faster INT8 model in an embedding space of its own."
            )
        else:
            out.append(
                f"The model {'meets' if self.gate_met else 'misses'} {gate}, but is an embedding space of "
                "its own: collections filled by FP32 or by a previous INT8 model must be re-imported "
                "(--match-fp32 makes a slower INT8 model that shares FP32's space)."
            )
        return out


@dataclass
class _Lookup:
    """Outcome of looking in a cache slot: a model when status == "hit", else why not."""

    status: str  # "hit" | "missing" | "stale" | "corrupt"
    detail: str = ""
    model: ov.Model | None = None
    manifest: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Prepared:
    """An uncompiled model ready for the CPU plugin, and where it came from."""

    model: ov.Model
    slot: Path
    converted: bool
    cache_status: str
    manifest: dict[str, Any]


class OpenVinoEngine:
    """The network compiled for OpenVINO's CPU plugin; one batch at a time through one infer request.

    Attributes after construction: `precision` (really in force: "fp32", "bf16",
    "int8", or e.g. "int8+bf16"), `requested_precision`, `threads`, `width`
    (feature size), `converted` (True when this construction converted the Keras
    model, False when it reused the cache), `cache_status` ("hit", "missing",
    "stale", "corrupt"), `cache_path`, `manifest`, `prepare_seconds`, `compile_seconds`,
    `takes_pixels` (True when built with `pixels`: batches are uint8 RGB pixels).
    """

    name = "openvino"

    def __init__(
        self,
        model_factory: KerasFactory | None,
        *,
        cache_dir: Path,
        cache_key: CacheKey,
        threads: int,
        precision: str = "fp32",
        input_size: int = 224,
        pixels: PixelNorm | None = None,
    ) -> None:
        """Load the cached model (converting `model_factory()` on a miss) and compile it for the CPU.

        `model_factory` is called only when the FP32 cache misses, so a warm start
        never builds the Keras model; it may be None for precision "int8", which
        never converts. `cache_key`: everything that changes the network's output
        (see `full_cache_key`). `pixels`: the compiled model takes uint8 RGB pixels
        and applies this normalisation itself (the cached IR, FP32 or INT8, stays
        float: it is applied at compile time). Raises NotCalibrated for "int8"
        without a usable calibrated model.
        """
        if precision not in PRECISION_HINTS:
            raise ValueError(f"precision must be one of {sorted(PRECISION_HINTS)}, got {precision!r}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.requested_precision = precision
        self.input_size = input_size
        core = ov.Core()
        started = time.perf_counter()
        if precision == "int8":
            prepared = _load_int8(core, Path(cache_dir), cache_key, input_size)
        else:
            prepared = _fp32_model(core, model_factory, Path(cache_dir), cache_key, input_size)
        self.prepare_seconds = time.perf_counter() - started
        self.converted, self.cache_status, self.cache_path = prepared.converted, prepared.cache_status, prepared.slot
        # The cached slot's manifest (its files' sha256 name an INT8 model's embedding space); {} when just converted.
        self.manifest = prepared.manifest
        started = time.perf_counter()
        # The feature map before pooling becomes a second output: "auto" regions read where the object is
        # from it, at no extra cost (the network computes it anyway). The cached IR stays as it was.
        prepared.model.add_outputs([feature_map_output(prepared.model)])
        self.takes_pixels = pixels is not None
        model = prepared.model if pixels is None else with_pixel_input(prepared.model, pixels)
        self._compiled = _compile(core, model, threads, PRECISION_HINTS[precision])
        self.compile_seconds = time.perf_counter() - started
        self.precision = _precision_in_force(self._compiled, precision)
        self.threads = int(self._compiled.get_property("INFERENCE_NUM_THREADS"))
        self.width = int(prepared.model.output(0).get_partial_shape()[1].get_length())
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()
        self._log_ready(prepared)

    def _log_ready(self, prepared: _Prepared) -> None:
        """One INFO line saying whether the model was converted or reused, and how long it took."""
        how = (
            f"converted the Keras model in {self.prepare_seconds:.1f} s (cache {self.cache_status})"
            if self.converted
            else f"reused the cached model in {self.prepare_seconds:.1f} s"
        )
        log.info(
            "OpenVINO %s: %s [%s]; compiled in %.1f s; precision in force %s, %d threads",
            self.requested_precision,
            how,
            self.cache_path,
            self.compile_seconds,
            self.precision,
            self.threads,
        )
        calibration = prepared.manifest.get("calibration")
        if calibration:
            log.info(
                "INT8 model (%s, %d layers in FP32) calibrated at %s: cosine to FP32 on %s held-out images "
                "median %.5f, 1st pct %.5f, min %.5f",
                calibration.get("method"),
                len(calibration.get("float_layers", [])),
                prepared.manifest.get("created"),
                calibration.get("held_out"),
                calibration.get("cosine_median"),
                calibration.get("cosine_p1"),
                calibration.get("cosine_min"),
            )

    def _input(self, batch: np.ndarray) -> np.ndarray:
        """The batch as the compiled model's input array: uint8 pixels or float32, as it was compiled."""
        if self.takes_pixels and np.asarray(batch).dtype != np.uint8:
            raise ValueError(f"this engine takes uint8 RGB pixels, got {np.asarray(batch).dtype} (normalised?)")
        return check_batch(batch, self.input_size, np.uint8 if self.takes_pixels else np.float32)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Features of a (n, size, size, 3) batch (see `takes_pixels`) as an (n, width) float32 array."""
        array = self._input(batch)
        if not len(array):
            return np.zeros((0, self.width), np.float32)
        # One infer request behind a lock: the compiled model has one stream using every thread,
        # so a second concurrent batch would only queue; reusing the request avoids re-allocating
        # its buffers. share_inputs reads the caller's array in place; outputs come back as copies.
        with self._lock:
            # share_outputs: only the vectors are copied out, never the feature map nobody asked for.
            return np.array(self._request.infer({0: array}, share_inputs=True, share_outputs=True)[0], np.float32)

    def predict_with_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features (n, width) and the backbone's last feature map (n, h, w, channels) of a batch."""
        array = self._input(batch)
        with self._lock:
            out = self._request.infer({0: array}, share_inputs=True, share_outputs=True)
            # The converted graph keeps its maps channels-first; callers get Keras' channels-last layout.
            return np.array(out[0], np.float32), np.array(out[1], np.float32).transpose(0, 2, 3, 1)


# Elementwise steps a pooling head may put between the backbone's map and the pooled vector (GeM's clip and
# power; an INT8 model's quantize and convert nodes).
_POOLING_STEPS = frozenset({"Power", "Maximum", "Multiply", "FakeQuantize", "Convert", "ReduceMean"})


def feature_map_output(model: ov.Model) -> ov.Output:
    """The backbone's last feature map in a pooled model: walking back from the vector, the first 4-d tensor
    that is not itself a pooling step."""
    node = model.output(0).get_node().input_value(0).get_node()
    while True:
        shape = node.output(0).get_partial_shape()
        if shape.rank.is_static and shape.rank.get_length() == 4 and node.get_type_name() not in _POOLING_STEPS:
            return node.output(0)
        if not node.inputs():
            raise ValueError("no feature map before the pooled output of this model")
        node = node.input_value(0).get_node()


def with_pixel_input(model: ov.Model, norm: PixelNorm) -> ov.Model:
    """`model` taking uint8 RGB pixels (NHWC): the conversion to float, the channel order and the
    normalisation run inside the compiled graph instead of numpy in every request thread; a request then
    hands the batcher a quarter of the bytes to copy and stack. `model` is changed in place and returned."""
    ppp = PrePostProcessor(model)
    image = ppp.input(0)
    image.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    image.model().set_layout(ov.Layout("NHWC"))
    steps = image.preprocess().convert_element_type(ov.Type.f32)
    if norm.reverse_channels:
        steps.reverse_channels()
    steps.mean(list(norm.mean)).scale(list(norm.scale))
    return ppp.build()


def full_cache_key(cache_key: CacheKey, stored_precision: str, input_size: int) -> dict[str, Any]:
    """The key a cache slot must carry: the caller's mapping plus what this module adds.

    The caller's mapping names everything that changes the network's output
    (model name under "model", weights file hash, resize mode, pooling, ...);
    values must be JSON scalars. Added here: stored precision, input size,
    OpenVINO version and the cache format.
    """
    clash = _RESERVED_KEYS & set(cache_key)
    if clash:
        raise ValueError(f"cache_key may not use the reserved names {sorted(clash)}")
    for name, value in cache_key.items():
        if not isinstance(value, (str, int, float, bool)):
            raise TypeError(f"cache_key[{name!r}] must be a str, int, float or bool, not {type(value).__name__}")
    key = {
        **cache_key,
        "precision": stored_precision,
        "input_size": input_size,
        "openvino": ov.get_version(),
        "format": CACHE_FORMAT,
    }
    return json.loads(json.dumps(key))  # exactly what a manifest round trip gives back


def cache_slot(cache_dir: Path, key: Mapping[str, Any]) -> Path:
    """The slot directory of a full key: one per model name and stored precision."""
    model = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(key.get("model", "model"))).strip(".") or "model"
    return Path(cache_dir) / "openvino" / f"{model}-{key['precision']}"


def _fp32_model(
    core: ov.Core, model_factory: KerasFactory | None, cache_dir: Path, cache_key: CacheKey, input_size: int
) -> _Prepared:
    """The FP32 IR from the cache if it is valid, else converted from Keras and cached."""
    key = full_cache_key(cache_key, "fp32", input_size)
    slot = cache_slot(cache_dir, key)
    found = _load_cached(core, slot, key)
    if found.model is not None:
        return _Prepared(found.model, slot, False, found.status, found.manifest)
    if found.status != "missing":
        log.warning("OpenVINO cache %s is %s (%s): converting the model again", slot, found.status, found.detail)
    if model_factory is None:
        raise ValueError("no usable cached FP32 model and no model_factory to convert one from")
    started = time.perf_counter()
    model = _convert(model_factory, input_size)
    seconds = time.perf_counter() - started
    try:
        _publish(slot, model, key, {"convert_seconds": round(seconds, 2)})
    except OSError as exc:
        # A read-only or full disk costs a conversion at the next start, not the service.
        log.warning("could not write the OpenVINO cache %s (%s); the next start will convert again", slot, exc)
    return _Prepared(model, slot, True, found.status, {})


def _load_int8(core: ov.Core, cache_dir: Path, cache_key: CacheKey, input_size: int) -> _Prepared:
    """The calibrated INT8 IR from the cache, or NotCalibrated saying how to make one."""
    key = full_cache_key(cache_key, "int8", input_size)
    slot = cache_slot(cache_dir, key)
    found = _load_cached(core, slot, key)
    if found.model is not None:
        return _Prepared(found.model, slot, False, found.status, found.manifest)
    if found.status == "missing":
        why = f"there is no calibrated INT8 model in {slot}"
    else:
        why = f"the calibrated INT8 model in {slot} is {found.status} ({found.detail})"
        log.warning("OpenVINO INT8 cache %s is %s (%s); not using it", slot, found.status, found.detail)
    raise NotCalibrated(
        f"MODEL_PRECISION=int8 needs a calibrated INT8 model, but {why}. Run `{CALIBRATE_COMMAND}` "
        f"with DIR a folder of a few hundred of your own images (same MODEL_* and cache settings), "
        f"or use MODEL_PRECISION=fp32."
    )


def _convert(model_factory: KerasFactory, input_size: int) -> ov.Model:
    """Convert the Keras model to OpenVINO IR with a dynamic batch and fixed image dimensions."""
    import tensorflow as tf  # noqa: PLC0415 - only a cache miss needs TensorFlow

    keras_model = model_factory()
    # Converting a tf.function with an explicit signature (rather than the Keras object)
    # gives the input a stable name and a batch dimension that is unknown, not guessed.
    spec = tf.TensorSpec((None, input_size, input_size, 3), tf.float32, name="images")
    forward = tf.function(lambda x: keras_model(x, training=False), autograph=False, input_signature=[spec])
    model = ov.convert_model(forward)
    # Some conversion paths leave every dimension dynamic; pin the image ones so the CPU
    # plugin can pick static-shape kernels for everything but the batch.
    model.reshape({model.input(0): ov.PartialShape([-1, input_size, input_size, 3])})
    return model


def _load_cached(core: ov.Core, slot: Path, key: Mapping[str, Any]) -> _Lookup:
    """Read a slot, trusting it only when its key matches and both files hash as recorded."""
    if not slot.exists():
        return _Lookup("missing")
    try:
        manifest = json.loads((slot / MANIFEST).read_text())
        stored_key, files = manifest["key"], dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return _Lookup("corrupt", f"unreadable manifest: {exc}")
    if stored_key != key:
        differ = sorted(name for name in set(stored_key) | set(key) if stored_key.get(name) != key.get(name))
        return _Lookup("stale", "key differs in " + ", ".join(differ))
    for name in (XML, BIN):
        try:
            digest = _sha256(slot / name)
        except OSError as exc:
            return _Lookup("corrupt", f"cannot read {name}: {exc}")
        if digest != files.get(name):
            return _Lookup("corrupt", f"sha256 of {name} does not match the manifest")
    try:
        model = core.read_model(str(slot / XML), str(slot / BIN))
    except RuntimeError as exc:
        return _Lookup("corrupt", f"OpenVINO cannot read it: {exc}")
    return _Lookup("hit", model=model, manifest=manifest)


def _publish(slot: Path, model: ov.Model, key: Mapping[str, Any], extra: Mapping[str, Any]) -> None:
    """Write the model and its manifest to a temporary directory, then rename it into the slot."""
    slot.parent.mkdir(parents=True, exist_ok=True)
    _sweep_leftovers(slot.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{slot.name}.tmp-", dir=slot.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the cache from a service running as another user
        # compress_to_fp16=False: save_model's default would store FP16 weights, and an
        # "FP32" model would then drift from Keras by FP16 rounding.
        ov.save_model(model, str(tmp / XML), compress_to_fp16=False)
        manifest = {
            "key": dict(key),
            "files": {name: _sha256(tmp / name) for name in (XML, BIN)},
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **extra,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        for name in (XML, BIN, MANIFEST):  # on disk before the rename makes them visible
            _fsync(tmp / name)
        _swap_in(tmp, slot)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, slot: Path) -> None:
    """Replace `slot` by `tmp`: move the old slot aside, rename the new one in, delete the old one."""
    # A directory cannot be renamed over a non-empty one, hence the two steps; a reader
    # that falls between them sees "missing" and converts, which is slow but correct.
    old = slot.with_name(f".{slot.name}.old-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(slot, old)
        replaced = True
    except FileNotFoundError:  # the first model of this slot
        replaced = False
    try:
        os.rename(tmp, slot)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        # Another process published the same slot between our two renames; theirs is as good.
        shutil.rmtree(tmp, ignore_errors=True)
    if replaced:
        shutil.rmtree(old, ignore_errors=True)


def _sweep_leftovers(parent: Path) -> None:
    """Delete temporary and replaced slot directories left by a writer that crashed an hour or more ago."""
    cutoff = time.time() - _LEFTOVER_AGE_S
    for entry in parent.iterdir():
        if entry.name.startswith(".") and (".tmp-" in entry.name or ".old-" in entry.name):
            try:
                if entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)
            except OSError:
                continue


def _sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _fsync(path: Path) -> None:
    """Flush a file's data to disk."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _compile(core: ov.Core, model: ov.Model, threads: int, hint: str) -> ov.CompiledModel:
    """Compile for the CPU: `threads` threads in one stream, with an explicit precision hint."""
    # LATENCY = one stream using every thread: batches arrive one at a time, and the
    # THROUGHPUT hint would split the cores into streams that only pay off for concurrent calls.
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": hint,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
    }
    return core.compile_model(model, "CPU", config)


def _precision_in_force(compiled: ov.CompiledModel, requested: str) -> str:
    """The precision the compiled model really runs at, warning when it is not the one requested."""
    hint = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    floating = _OV_TO_LABEL.get(hint, hint)
    if requested == "int8":
        if not _int8_op_count(compiled):
            log.warning("the INT8 model runs no INT8 kernels on this CPU; it runs at %s", floating)
            return floating
        return "int8" if floating == "fp32" else f"int8+{floating}"
    if floating != requested:
        # e.g. bf16 asked for on a CPU without bf16 support: OpenVINO falls back to f32.
        log.warning("OpenVINO precision %s was requested but this CPU runs the model at %s", requested, floating)
    return floating


def _int8_op_count(compiled: ov.CompiledModel) -> int:
    """How many operations of the compiled graph the CPU plugin runs on 8-bit integers."""
    count = 0
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "runtimePrecision" in info and info["runtimePrecision"].astype(str) in ("u8", "i8"):
            count += 1
    return count


def calibrate_int8(
    model_factory: KerasFactory | None,
    images: np.ndarray,
    *,
    cache_dir: Path,
    cache_key: CacheKey,
    threads: int,
    input_size: int = 224,
    gate: Gate = Gate(),
    match_fp32: bool = False,
    max_reverted: int | None = None,
) -> CalibrationReport:
    """Quantize the FP32 model to INT8 with NNCF on the caller's real, preprocessed images and cache it.

    `images`: (n, size, size, 3) float32, preprocessed exactly as the service
    preprocesses its inputs, n >= 16 (a few hundred is better). One in four is
    held out to judge the model against `gate`. With `match_fp32`, when plain
    post-training quantization misses the gate, the layers that drift most are
    kept in FP32 (model.int8), and a model that still misses it is not cached
    (GateMissed); `max_reverted` bounds how many groups of layers may go back to
    FP32. Refuses inputs that look like random noise: calibrating on noise
    breaks retrieval. Returns how close INT8 is to FP32 on the held-out images.
    """
    array = check_batch(images, input_size)
    _check_calibration_set(array)
    started = time.perf_counter()
    core = ov.Core()
    prepared = _fp32_model(core, model_factory, Path(cache_dir), cache_key, input_size)

    def embed(model: ov.Model, batch: np.ndarray) -> np.ndarray:
        return _embed_all(_compile(core, model, threads, "f32"), batch)

    made = int8.quantize(prepared.model, array, embed, gate, match_fp32, max_reverted)
    key = full_cache_key(cache_key, "int8", input_size)
    slot = cache_slot(Path(cache_dir), key)
    report = _report(made, len(array), time.perf_counter() - started, slot)
    if match_fp32 and not made.shares_fp32:
        raise GateMissed(report)  # the cached model, if any, stays what it was
    import nncf  # noqa: PLC0415 - loaded already by int8.quantize; only for its version

    _publish(slot, made.model, key, {"calibration": report.as_dict(), "nncf": nncf.__version__})
    log.info(
        "INT8 model (%s, %d of %d layers in FP32) calibrated on %d images in %.1f s -> %s: cosine to FP32 on "
        "%d held-out images median %.5f, 1st pct %.5f, min %.5f (gate %s)",
        report.method,
        len(report.float_layers),
        report.weighted_layers,
        report.images - report.held_out,
        report.seconds,
        slot,
        report.held_out,
        report.cosine_median,
        report.cosine_p1,
        report.cosine_min,
        "met" if report.gate_met else "MISSED",
    )
    if report.shares_fp32:
        log.info("the INT8 model shares FP32's embedding space: it was asked to (match_fp32) and meets the gate")
    return report


def _report(made: int8.Quantized, images: int, seconds: float, slot: Path) -> CalibrationReport:
    """The calibration report of an INT8 model: held-out agreement with FP32, how it was made."""
    held, plain = made.held_out, made.plain
    return CalibrationReport(
        images=images,
        held_out=held.images,
        cosine_min=held.min,
        cosine_p1=held.p1,
        cosine_median=held.median,
        top10_same_share=held.top_same_share,
        top10_overlap=held.top_overlap,
        neighbours=held.neighbours,
        method=made.method,
        float_layers=list(made.float_layers),
        weighted_layers=made.weighted_layers,
        gate_p1=made.gate.p1,
        gate_min=made.gate.min,
        gate_met=made.gate_met,
        plain_cosine_min=plain.min,
        plain_cosine_p1=plain.p1,
        match_fp32=made.match_fp32,
        shares_fp32=made.shares_fp32,
        seconds=round(seconds, 2),
        cache_path=str(slot),
    )


def _check_calibration_set(array: np.ndarray) -> None:
    """Refuse too few images or images that look like noise; warn about a small set."""
    if len(array) < MIN_CALIBRATION_IMAGES:
        raise ValueError(
            f"INT8 calibration needs at least {MIN_CALIBRATION_IMAGES} images "
            f"(a few hundred is better), got {len(array)}"
        )
    if len(array) < RECOMMENDED_CALIBRATION_IMAGES:
        log.warning(
            "calibrating INT8 on only %d images; %d or more give a model closer to FP32",
            len(array),
            RECOMMENDED_CALIBRATION_IMAGES,
        )
    # Photos are smooth almost everywhere: horizontally adjacent pixels correlate strongly
    # (typically > 0.8). Random noise does not, and quantization ranges taken from it are wrong.
    left, right = array[:, :, :-1, :].reshape(len(array), -1), array[:, :, 1:, :].reshape(len(array), -1)
    left, right = left - left.mean(axis=1, keepdims=True), right - right.mean(axis=1, keepdims=True)
    denominator = np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1)
    correlation = np.where(denominator > 0, (left * right).sum(axis=1) / np.maximum(denominator, 1e-12), 1.0)
    if float(np.median(correlation)) < 0.5:
        raise ValueError(
            "the calibration images look like random noise (neighbouring pixels are uncorrelated); "
            "calibrate on real images of the catalog"
        )


def _embed_all(compiled: ov.CompiledModel, array: np.ndarray, batch: int = 16) -> np.ndarray:
    """Features of every image, `batch` at a time."""
    request = compiled.create_infer_request()
    parts = [request.infer({0: array[i : i + batch]})[0] for i in range(0, len(array), batch)]
    return np.concatenate(parts).astype(np.float32)
