"""The embedding-space fingerprint: which vectors can be compared with which.

Two vectors are only comparable when the same network, weights, preprocessing,
pooling and numeric space produced them. The fingerprint names that
combination: a short stable hash for machines (stored on the Milvus collection
and compared at start-up) and a readable summary for the people who read the
refusal message.

Numeric spaces, decided from measurements (README, "Embedding spaces"). Two precisions share a
space only when, on real weights and real photos, the cosine between their vectors of the same
image has 1st percentile >= SHARED_P1 and minimum >= SHARED_MIN:
- TensorFlow FP32 and OpenVINO FP32 are one space, "fp32" (EfficientNet-Lite0, 600 photos:
  cosine min 0.9999998).
- bf16 is a space of its own, "bf16": EfficientNet-Lite0, 600 photos of the benchmark corpus,
  cosine to FP32 min 0.959, 1st percentile 0.985, median 0.999: under the gate.
- INT8 is a space of its own, one per calibrated model ("int8:<model hash>"): plain INT8 drifts
  from FP32 by up to 0.33 of cosine on real weights (EfficientNet-Lite0, 1st percentile 0.87),
  and another calibration drifts differently, so neither FP32 vectors nor another calibration's
  may share its collection.
- Except an INT8 model calibrated with `--match-fp32` that meets this gate on held-out images of
  the user's folder (model.int8 keeps the layers that drift in FP32 until it does): its space is
  "fp32", so it serves FP32 collections without re-embedding.
The precision that counts is the one really in force (bf16 asked for on a CPU without bf16 runs,
and embeds, as fp32).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

FORMAT = 1
# The gate for two precisions to share a space: cosine between their vectors of one image, on real images.
SHARED_P1 = 0.995
SHARED_MIN = 0.99


@dataclass(frozen=True)
class Fingerprint:
    """What makes an embedding space; `digest` is its stable short hash, `summary` its readable form."""

    model: str
    weights: str  # "sha256:<hex>" of the weights file, or "random-seed-1234"
    input_size: int
    resize: str
    pooling: str
    trim: str  # "on" | "off"
    numeric: str  # "fp32", "bf16", or "int8:<first 12 hex of the INT8 model's sha256>"

    @property
    def digest(self) -> str:
        """16 hex digits of sha256 over the canonical JSON of every part (and the format version)."""
        canonical = json.dumps({"format": FORMAT, **asdict(self)}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def summary(self) -> str:
        """One line a person can compare: model, weights (shortened), preprocessing, numeric space."""
        weights = self.weights[:19] if self.weights.startswith("sha256:") else self.weights
        return (
            f"{self.model} weights={weights} input={self.input_size} resize={self.resize} "
            f"pooling={self.pooling} trim={self.trim} numeric={self.numeric}"
        )

    def __str__(self) -> str:
        return f"{self.digest} ({self.summary})"


def numeric_space(precision_in_force: str, int8_model_sha256: str | None, int8_shares_fp32: bool = False) -> str:
    """The numeric space of a precision really in force: "fp32", "bf16", or one per INT8 model (but "fp32" for
    an INT8 model calibrated to share it, `int8_shares_fp32`)."""
    if precision_in_force.startswith("int8"):
        if int8_shares_fp32:
            return "fp32"
        if not int8_model_sha256:
            raise ValueError("an INT8 space needs the INT8 model's sha256")
        return f"int8:{int8_model_sha256[:12]}"
    if precision_in_force not in ("fp32", "bf16"):
        raise ValueError(f"no embedding space is defined for precision {precision_in_force!r}")
    return precision_in_force
