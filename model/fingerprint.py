"""The embedding-space fingerprint: which vectors can be compared with which.

Two vectors are only comparable when the same network, weights, preprocessing,
pooling and numeric space produced them. The fingerprint names that
combination: a short stable hash for machines (stored on the Milvus collection
and compared at start-up) and a readable summary for the people who read the
refusal message.

Numeric spaces (decided from measurements, see the README's model section):
- TensorFlow FP32 and OpenVINO FP32 are one space (cosine to each other > 0.9999).
- bf16 joins FP32's space: on EfficientNet-Lite0 with its real weights, cosine to FP32 has
  1st percentile >= BF16_P1 and minimum >= BF16_MIN (measured; see the README), the gate used here.
- INT8 is a space of its own, one per calibrated model: on real weights INT8 vectors drift from
  FP32 by up to 0.12 of cosine (1st percentile 0.90), so neither FP32 vectors nor the vectors of
  another calibration may share its collection.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

FORMAT = 1
FLOAT_SPACE = "float"
# The gate that made bf16 part of the float space: cosine(bf16, fp32) on real images.
BF16_P1 = 0.995
BF16_MIN = 0.99


@dataclass(frozen=True)
class Fingerprint:
    """What makes an embedding space; `digest` is its stable short hash, `summary` its readable form."""

    model: str
    weights: str  # "sha256:<hex>" of the weights file, or "random-seed-1234"
    input_size: int
    resize: str
    pooling: str
    trim: str  # "on" | "off"
    numeric: str  # FLOAT_SPACE, or "int8:<first 12 hex of the INT8 model's sha256>"

    @property
    def digest(self) -> str:
        """16 hex digits of sha256 over the canonical JSON of every part (and the format version)."""
        canonical = json.dumps({"format": FORMAT, **asdict(self)}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def summary(self) -> str:
        """One line a person can compare: model, weights (shortened), preprocessing, numeric space."""
        weights = self.weights[:19] if self.weights.startswith("sha256:") else self.weights
        return (f"{self.model} weights={weights} input={self.input_size} resize={self.resize} "
                f"pooling={self.pooling} trim={self.trim} numeric={self.numeric}")

    def __str__(self) -> str:
        return f"{self.digest} ({self.summary})"


def numeric_space(precision_in_force: str, int8_model_sha256: str | None) -> str:
    """The numeric space of a precision really in force: FP32 and bf16 share one, each INT8 model has its own."""
    if precision_in_force.startswith("int8"):
        if not int8_model_sha256:
            raise ValueError("an INT8 space needs the INT8 model's sha256")
        return f"int8:{int8_model_sha256[:12]}"
    return FLOAT_SPACE
