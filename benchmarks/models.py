"""The models a benchmark times: one seeded SPT model, its LoRA-merged copy (what PyTorch eager
runs and what export writes), plain SAM of the same size, and the exported folder.

Weights are random (seeded): latency and memory depend on the architecture, not on the values.
Untrained SPT tensors (LoRA B, relation scales) are zero, so every layer still runs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from samspt.training.checkpoints import build_model
from samspt.training.modeling.model import SptSam, build_sam

log = logging.getLogger(__name__)


def spt_model(model_type: str, seed: int = 0) -> SptSam:
    """A randomly initialised SPT model (float32, CPU, eval) of ``model_type``."""
    torch.manual_seed(seed)
    return build_model(model_type).float().eval()


def merged_model(model_type: str, seed: int = 0) -> SptSam:
    """The LoRA-merged copy of :func:`spt_model`: the computation of the exported graphs."""
    return spt_model(model_type, seed).merged().eval()


def vanilla_sam(model_type: str, seed: int = 0) -> torch.nn.Module:
    """segment-anything's own ``Sam`` of the same configuration (random weights)."""
    from samspt.training.modeling.config import get_config

    torch.manual_seed(seed + 1)
    return build_sam(get_config(model_type)).float().eval()


def export_folder(model: SptSam, out_dir: Path) -> Path:
    """Export ``model`` (FP32, FP16 and INT8 graphs, no parity verification: the INT8 decoder
    stays float) into ``out_dir``."""
    from samspt.export.onnx_export import export_model

    log.info("exporting %s to %s (FP32 + FP16 + INT8, unverified)", model.config.name, out_dir)
    export_model(model, out_dir, f"bench_{model.config.name}", precision="all", verify=False,
                 stage=lambda text: log.debug("export: %s", text))
    return out_dir
