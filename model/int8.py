"""INT8 quantization with NNCF, judged on images it was not calibrated on; on request, FP32 layers where INT8 drifts.

`quantize` gets the FP32 OpenVINO model and the caller's preprocessed images:

1. One image in HOLD_OUT_EVERY is held out; NNCF's post-training quantization
   takes its activation ranges from the others.
2. The cosine between INT8 and FP32 vectors of the held-out images is measured
   against the gate for sharing FP32's embedding space (model.fingerprint).
   Plain INT8 is the default: the fastest model, an embedding space of its own.
   ResNet50 meets the gate here (cosine 0.99997 with random weights).
3. With `match_fp32` (`main.py calibrate --match-fp32`), a plain model that
   misses the gate is replaced: NNCF's accuracy control quantizes again, with
   ranges from half of the calibration images, and reverts groups of layers to
   floating point, the most harmful first, until the 1st-percentile cosine to
   FP32 on the other half reaches the gate plus a margin. EfficientNet-Lite0
   needs this: its stem and several depthwise and 1x1 convolutions drift. The
   held-out images are measured again; a model that meets the gate there shares
   FP32's embedding space, so an FP32 collection can be served by it without
   re-embedding. It is slower than plain INT8 (README, "Embedding spaces").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import openvino as ov

from model.fingerprint import SHARED_MIN, SHARED_P1

log = logging.getLogger(__name__)

HOLD_OUT_EVERY = 4  # one image in four is held out to judge the INT8 model
# Accuracy control aims this far above the gate's 1st percentile on the calibration images: measured on
# EfficientNet-Lite0, a model that just meets the gate in-sample misses it on held-out photos by ~0.002.
AC_MARGIN = 0.002
AC_RANKING_IMAGES = 100  # NNCF ranks layers on this many of the worst-matching calibration images
_WEIGHTED_OPS = ("Convolution", "GroupConvolution", "MatMul")

# Features of a batch of images under an uncompiled model (FP32 hint, the caller's threads).
EmbedFn = Callable[[ov.Model, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Gate:
    """The cosine INT8 vectors must keep to FP32 ones on held-out images: 1st percentile and minimum."""

    p1: float = SHARED_P1
    min: float = SHARED_MIN

    def met(self, cosine: Cosines) -> bool:
        """Whether held-out cosines meet this gate."""
        return cosine.p1 >= self.p1 and cosine.min >= self.min


@dataclass(frozen=True)
class Cosines:
    """INT8 against FP32 on the same images: cosine of their vectors (minimum, 1st percentile, median) and
    whether each image keeps its `neighbours` nearest neighbours among them (`top_same_share`: share of
    images keeping the same set; `top_overlap`: mean share of the set kept)."""

    images: int
    min: float
    p1: float
    median: float
    neighbours: int
    top_same_share: float
    top_overlap: float

    @classmethod
    def of(cls, reference: np.ndarray, candidate: np.ndarray) -> Cosines:
        """Compare FP32 (`reference`) and INT8 (`candidate`) features of the same images, row by row."""
        ref, cand = unit(reference), unit(candidate)
        cosine = (ref * cand).sum(axis=1)
        k = max(1, min(10, len(ref) - 1))
        overlap = np.array(
            [len(set(a) & set(b)) / k for a, b in zip(_top_k(ref, k).tolist(), _top_k(cand, k).tolist(), strict=True)]
        )
        return cls(
            len(cosine),
            float(cosine.min()),
            float(np.percentile(cosine, 1)),
            float(np.median(cosine)),
            k,
            float(np.mean(overlap == 1.0)),
            float(overlap.mean()),
        )


@dataclass(frozen=True)
class Quantized:
    """An INT8 model and how it was made.

    `method`: "ptq" (plain post-training quantization) or "accuracy-control";
    `held_out`: its cosine to FP32 on the held-out images; `plain`: the plain
    model's held-out figures (the same as `held_out` when `method` is "ptq");
    `float_layers`: the weighted layers left in floating point, in graph order;
    `weighted_layers`: how many weighted layers the network has; `match_fp32`:
    whether the caller asked for a model that shares FP32's embedding space.
    """

    model: ov.Model
    method: str
    held_out: Cosines
    plain: Cosines
    float_layers: tuple[str, ...]
    weighted_layers: int
    gate: Gate
    calibration_images: int
    match_fp32: bool = False

    @property
    def gate_met(self) -> bool:
        """Whether the held-out cosines meet the gate."""
        return self.gate.met(self.held_out)

    @property
    def shares_fp32(self) -> bool:
        """Whether its vectors may share a collection with FP32 ones: asked for, and the gate is met."""
        return self.match_fp32 and self.gate_met


def split_held_out(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(calibration, held-out): every HOLD_OUT_EVERY-th image is held out, spread over the whole set."""
    held = np.zeros(len(array), dtype=bool)
    held[HOLD_OUT_EVERY - 1 :: HOLD_OUT_EVERY] = True
    return array[~held], array[held]


def quantize(
    model: ov.Model,
    array: np.ndarray,
    embed: EmbedFn,
    gate: Gate = Gate(),
    match_fp32: bool = False,
    max_reverted: int | None = None,
) -> Quantized:
    """Plain PTQ of `model` on most of `array`, judged on the rest against `gate`; with `match_fp32`,
    accuracy control when the plain model misses the gate.

    `max_reverted`: at most this many groups of layers go back to FP32 (None: as
    many as the gate needs), which bounds the time accuracy control may take.
    """
    calibration, held_out = split_held_out(array)
    reference = embed(model, held_out)
    plain_model = _ptq(model, calibration)
    plain = Cosines.of(reference, embed(plain_model, held_out))
    total = len(weighted_layers(model))
    if gate.met(plain) or not match_fp32:
        return Quantized(plain_model, "ptq", plain, plain, (), total, gate, len(calibration), match_fp32)
    log.info(
        "plain INT8 misses the gate on %d held-out images (cosine to FP32 1st pct %.4f, min %.4f; gate %.3f, "
        "%.3f): reverting the layers that drift most to floating point (NNCF accuracy control)",
        plain.images,
        plain.p1,
        plain.min,
        gate.p1,
        gate.min,
    )
    # Layers are judged on images their activation ranges were not taken from: on those ranges come from,
    # nothing clips, and the layers that look harmless there are not the ones that drift on new images.
    ranges, judge = calibration[0::2], calibration[1::2]
    controlled = _accuracy_control(model, ranges, judge, embed(model, judge), gate.p1 + AC_MARGIN, max_reverted)
    held = Cosines.of(reference, embed(controlled, held_out))
    return Quantized(
        controlled,
        "accuracy-control",
        held,
        plain,
        tuple(float_layers(controlled)),
        total,
        gate,
        len(calibration),
        match_fp32,
    )


def _ptq(model: ov.Model, array: np.ndarray) -> ov.Model:
    """NNCF post-training quantization of `model` with activation ranges from `array`."""
    import nncf  # noqa: PLC0415 - heavy, and only calibration needs it

    # subset_size = all images: NNCF's default (300) would silently ignore the rest.
    return nncf.quantize(
        model,
        _dataset(array),
        subset_size=len(array),
        preset=nncf.QuantizationPreset.PERFORMANCE,
        target_device=nncf.TargetDevice.CPU,
    )


def _accuracy_control(
    model: ov.Model,
    ranges: np.ndarray,
    judge: np.ndarray,
    reference: np.ndarray,
    target: float,
    max_reverted: int | None,
) -> ov.Model:
    """NNCF's accuracy control: quantize with activation ranges from `ranges`, then revert layers to FP32 until
    the 1st-percentile cosine of each `judge` image's INT8 vector to its FP32 vector (`reference`) reaches
    `target`."""
    import nncf  # noqa: PLC0415 - heavy, and only calibration needs it
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters  # noqa: PLC0415 - as nncf

    items = [(judge[i : i + 1], reference[i]) for i in range(len(judge))]

    def validate(
        compiled: ov.CompiledModel, data: Sequence[tuple[np.ndarray, np.ndarray]]
    ) -> tuple[float, list[float]]:
        # NNCF calls this on single items (their values rank the images) and on sets (the metric).
        cosine = [float(unit(compiled(image)[0])[0] @ unit(ref[None])[0]) for image, ref in data]
        return float(np.percentile(cosine, 1)), cosine

    restorer = AdvancedAccuracyRestorerParameters(ranking_subset_size=min(AC_RANKING_IMAGES, len(judge)))
    if max_reverted is not None:
        restorer.max_num_iterations = max_reverted  # one iteration reverts one group of layers
    # The first convolution, which sees the image itself, is the one accuracy control always reverted first;
    # starting with it in FP32, and with full bias correction (slower than NNCF's fast one, but exact), gives
    # the margin the held-out check needs. EfficientNet-Lite0 calibrated on 300 tune photos, measured on 1,200
    # eval images: 1st percentile 0.9971, min 0.9937 with 20 of 49 convolutions in FP32 (before: 0.9951 and
    # 0.986 with 21), 153 s on 2 cores.
    first = weighted_layers(model)[0].get_friendly_name()
    # max_drop from FP32's own metric (1.0): the drop allowed leaves the 1st percentile at `target`.
    return nncf.quantize_with_accuracy_control(
        model,
        _dataset(ranges),
        nncf.Dataset(items, lambda item: item[0]),
        validate,
        max_drop=1.0 - target,
        subset_size=len(ranges),
        preset=nncf.QuantizationPreset.PERFORMANCE,
        target_device=nncf.TargetDevice.CPU,
        fast_bias_correction=False,
        ignored_scope=nncf.IgnoredScope(names=[first]),
        advanced_accuracy_restorer_parameters=restorer,
    )


def _dataset(array: np.ndarray) -> Any:
    """One image per NNCF item, matching the model's (batch, h, w, c) input; views, not copies."""
    import nncf  # noqa: PLC0415 - heavy, and only calibration needs it

    return nncf.Dataset([array[i : i + 1] for i in range(len(array))])


def weighted_layers(model: ov.Model) -> list[ov.Node]:
    """The convolutions and matrix products of `model`, in graph order."""
    return [op for op in model.get_ordered_ops() if op.get_type_name() in _WEIGHTED_OPS]


def float_layers(model: ov.Model) -> list[str]:
    """Labels of the weighted layers of a quantized model whose weights stayed in floating point."""
    layers = weighted_layers(model)
    return [layer_label(op, i, len(layers)) for i, op in enumerate(layers, 1) if not _int8_weights(op)]


def layer_label(op: ov.Node, index: int, total: int) -> str:
    """A readable name for a weighted layer: its position and shape ("#2/49 depthwise 3x3 x32")."""
    shape = [d.get_length() for d in op.input_value(1).get_partial_shape()]
    if op.get_type_name() == "GroupConvolution":  # (groups, out/group, in/group, kh, kw)
        kind = "depthwise" if shape[1] == shape[2] == 1 else f"grouped({shape[0]})"
        return f"#{index}/{total} {kind} {shape[3]}x{shape[4]} x{shape[0] * shape[1]}"
    if op.get_type_name() == "Convolution":  # (out, in, kh, kw)
        return f"#{index}/{total} conv {shape[2]}x{shape[3]} {shape[1]}->{shape[0]}"
    return f"#{index}/{total} matmul {'x'.join(map(str, shape))}"


def _int8_weights(op: ov.Node) -> bool:
    """Whether a layer's weights are quantized: an 8-bit constant or a FakeQuantize on their path."""
    node = op.input_value(1).get_node()
    for _ in range(6):  # weights reach the layer through Convert / Subtract / Multiply (dequantization)
        if node.get_type_name() == "FakeQuantize":
            return True
        if node.get_type_name() == "Constant":
            return node.get_element_type() in (ov.Type.i8, ov.Type.u8, ov.Type.i4, ov.Type.u4)
        node = node.input_value(0).get_node()
    return False


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (an all-zero row stays zero)."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _top_k(unit_rows: np.ndarray, k: int) -> np.ndarray:
    """Indices of each row's k most similar other rows (order within the k not defined)."""
    if len(unit_rows) < 2:
        return np.zeros((len(unit_rows), 0), dtype=np.int64)
    similarity = unit_rows @ unit_rows.T
    np.fill_diagonal(similarity, -np.inf)  # an image is not its own neighbour
    return np.argpartition(-similarity, k - 1, axis=1)[:, :k]
