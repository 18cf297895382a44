"""``ServeSettings``: what one samspt-serve application runs with (model, replicas, batching,
request limits). Checked when made, so a bad flag fails before Ray starts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from samspt.runtime.errors import ConfigError
from samspt.runtime.manifest import PRECISIONS

# A request body holds one base64 image: 32 MiB carries a 24 MB PNG/JPEG file.
DEFAULT_MAX_BODY_BYTES = 32 * 2**20
# 40 megapixels: larger than any line camera's frame; a scan of it is still minutes on a CPU.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
DEFAULT_MAX_PROMPTS = 64
# Batching across requests: views per encoder run, and how long a view waits for others.
DEFAULT_MAX_BATCH = 16
DEFAULT_BATCH_WAIT_MS = 5.0


@dataclass(frozen=True)
class ServeSettings:
    """One application: ``model_dir`` (None: the shipped example model), ``replicas`` and the
    CPUs/GPUs each holds; ``max_batch`` views per encoder run across requests (1: no batching
    across requests) and ``batch_wait_ms``, how long a view waits for others; request limits
    (``max_body_bytes``, ``max_image_pixels``, ``max_prompts``); ``max_ongoing_requests`` per
    replica; Inspector options ``backend`` and ``precision``."""

    model_dir: Optional[str] = None
    replicas: int = 1
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    max_batch: int = DEFAULT_MAX_BATCH
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_prompts: int = DEFAULT_MAX_PROMPTS
    max_ongoing_requests: int = 64
    backend: str = "auto"
    precision: Optional[str] = None

    def __post_init__(self) -> None:
        checks = [(self.replicas >= 1, "replicas must be >= 1"),
                  (self.cpus_per_replica >= 0, "cpus_per_replica must be >= 0"),
                  (self.gpus_per_replica >= 0, "gpus_per_replica must be >= 0"),
                  (self.max_batch >= 1, "max_batch must be >= 1 view (1: no batching)"),
                  (0 <= self.batch_wait_ms <= 1000, "batch_wait_ms must be in 0..1000"),
                  (self.max_body_bytes >= 1024, "max_body_bytes must be >= 1024"),
                  (self.max_image_pixels >= 4, "max_image_pixels must be >= 4"),
                  (self.max_prompts >= 1, "max_prompts must be >= 1"),
                  (self.max_ongoing_requests >= 1, "max_ongoing_requests must be >= 1"),
                  (self.backend in ("auto", "onnxruntime", "tensorrt"),
                   "backend must be auto, onnxruntime or tensorrt"),
                  (self.precision in (None,) + PRECISIONS,
                   f"precision must be one of {', '.join(PRECISIONS)}")]
        failed = [text for ok, text in checks if not ok]
        if failed:
            raise ConfigError(f"invalid serve settings: {'; '.join(failed)} (got {self})")
        if self.model_dir is not None and not Path(self.model_dir).is_dir():
            raise ConfigError(f"model folder {self.model_dir} does not exist; give an exported "
                              "samspt model folder (samspt-export --out DIR), or none for the "
                              "shipped example model")

    @property
    def resolved_model_dir(self) -> Path:
        """The model folder replicas load (the shipped example model when none was given)."""
        if self.model_dir is not None:
            return Path(self.model_dir).resolve()
        from samspt.runtime.samples import EXAMPLE_MODEL_DIR

        return EXAMPLE_MODEL_DIR

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)
