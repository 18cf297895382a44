"""What one benchmark run measures, validated before anything is built."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from samspt.benchmarks.backends import check_backends, default_backends
from samspt.runtime.errors import ConfigError
from samspt.training.modeling.config import MODEL_CONFIGS

log = logging.getLogger(__name__)

DEFAULT_MODEL = "small"
DEFAULT_PROMPTS = (1, 4, 16, 64)
DEVICES = ("auto", "cpu", "cuda")
# The relation comparison runs at vit_b's size whatever the model: 64x64 tokens, 256 channels.
# Encoder families timed against ViT-B at 1024 px (family_encoders.py):
# family -> (ratio key, model type).
FAMILIES: Dict[str, tuple] = {"tinyvit": ("encoder_tinyvit_vs_vit_b", "mobile_sam_vit_t"),
                              "hiera": ("encoder_hiera_t_vs_vit_b", "sam2.1_hiera_t")}
VIT_B_TOKENS = 64 * 64
VIT_B_CHANNELS = 256


def parse_int_list(text: str, what: str = "--prompts") -> List[int]:
    """``"1,4,16"`` -> [1, 4, 16] (sorted, unique); ConfigError unless all are integers >= 1."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"{what} takes comma-separated whole numbers such as 1,4,16,64; got "
                          f"{text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{what} needs at least one number, all >= 1; got {text!r}")
    return sorted(set(values))


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` where PyTorch sees a GPU, else ``cpu``; ``cuda`` must exist."""
    if device not in DEVICES:
        raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda, but PyTorch sees no CUDA device (CPU-only torch build, "
                          "no driver, or CUDA_VISIBLE_DEVICES empty); use --device cpu")
    return device


@dataclass
class Settings:
    """A benchmark run. ``backends`` None: every backend available on ``device``."""

    model: str = DEFAULT_MODEL
    prompts: List[int] = field(default_factory=lambda: list(DEFAULT_PROMPTS))
    reps: int = 5
    warmup: int = 1
    backends: Optional[List[str]] = None
    device: str = "auto"
    relation_tokens: int = VIT_B_TOKENS
    relation_channels: int = VIT_B_CHANNELS
    threads: int = 0
    seed: int = 0
    train_steps: int = 12  # steps of the one command's recipe timed (train_rate.py); 0: none
    scan_model: Optional[str] = None  # a model folder with a scan head (scan_cost.py); None:
    #                                   the shipped example model
    # encoder families timed against ViT-B at 1024 px (family_encoders.py); empty: none
    families: List[str] = field(default_factory=lambda: list(FAMILIES))

    def resolved(self) -> "Settings":
        """A copy with the device and backends resolved and everything checked."""
        if self.model not in MODEL_CONFIGS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of "
                              f"{', '.join(MODEL_CONFIGS)}")
        if self.reps < 1:
            raise ConfigError(f"--reps must be >= 1, got {self.reps}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup must be >= 0, got {self.warmup}")
        if self.relation_tokens < 2 or self.relation_channels < 1:
            raise ConfigError("the relation comparison needs >= 2 tokens and >= 1 channel")
        if self.train_steps < 0:
            raise ConfigError(f"--train-steps must be >= 0 (0: no training measurement), got "
                              f"{self.train_steps}")
        if self.threads < 0:
            raise ConfigError(f"--threads must be >= 0 (0: the libraries' default), got "
                              f"{self.threads}")
        prompts = parse_int_list(",".join(str(p) for p in self.prompts))
        device = resolve_device(self.device)
        backends = check_backends(self.backends, device) if self.backends else \
            default_backends(device)
        if not backends:
            raise ConfigError("no backend to run")
        if self.model.startswith("vit_") and device == "cpu":
            log.warning("%s on a CPU: expect minutes per call at 64 prompts; --prompts 1,4 and "
                        "--reps 3 keep it bearable", self.model)
        return dataclasses.replace(self, prompts=prompts, device=device, backends=backends)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def parse_backends(text: str) -> Optional[List[str]]:
    """``"auto"`` -> None (every available backend); else the comma-separated names."""
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names or names == ["auto"]:
        return None
    return names

