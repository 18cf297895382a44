"""Encoder families side by side: each family's exported FP32 encoder against ViT-B's at the
same input, on ONNX Runtime, in one run.

* ``encoder_tinyvit_vs_vit_b``: MobileSAM's TinyViT encoder (``mobile_sam_vit_t``) / SAM's
  ViT-B encoder, 1024 px, one view per call, calls interleaved (:func:`stats.interleaved`);
  ``encoder_gflop_tinyvit_vs_vit_b``: their GFLOP per view, the same way.
* ``encoder_hiera_t_vs_vit_b``, ``encoder_gflop_hiera_t_vs_vit_b``: SAM 2.1's Hiera-T image
  path (``sam2.1_hiera_t``: trunk, FPN neck and the high-res projections), the same way.

Each encoder is exported through the project's own export (LoRA merged, random weights: the
arithmetic is the weights' shapes', not their values) and timed as the Inspector runs it
(``OrtGraphs.encode``); Hiera-T also with its attention fused for ONNX Runtime's CPU kernels
(:mod:`samspt.benchmarks.fused_attention`: ``encoders["sam2.1_hiera_t"]["fused_attention"]``,
its time and its ratio to ViT-B's). GFLOP per view come from PyTorch's FLOP counter on the
merged encoder (``torch.utils.flop_counter``: matrix products, attention's included, and
convolutions; 1 multiply-add = 2 FLOPs), the same counting for every family.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch

from samspt.benchmarks import stats
from samspt.benchmarks.models import spt_model
from samspt.benchmarks.settings import FAMILIES
from samspt.runtime.errors import ConfigError

log = logging.getLogger(__name__)

REFERENCE = "vit_b"
# Hiera-T is also timed with its attention fused for ONNX Runtime's CPU kernels (a figure of
# ``encoders``, not a tracked ratio: the folder's graph is the one TensorRT reads).
FUSED_FAMILY = "sam2.1_hiera_t"
FUSED = FUSED_FAMILY + "+fused_attention"

BASIS = {
    "encoder_tinyvit_vs_vit_b": "MobileSAM's TinyViT encoder / SAM's ViT-B encoder, exported "
                                "FP32, 1024 px, one view per call, ONNX Runtime, interleaved",
    "encoder_gflop_tinyvit_vs_vit_b": "their GFLOP per 1024 px view (PyTorch's FLOP counter: "
                                      "matrix products, attention's included, and convolutions)",
    "encoder_hiera_t_vs_vit_b": "SAM 2.1's Hiera-T image path (trunk, FPN neck, high-res "
                                "projections) / SAM's ViT-B encoder, exported FP32, 1024 px, one "
                                "view per call, ONNX Runtime, interleaved",
    "encoder_gflop_hiera_t_vs_vit_b": "their GFLOP per 1024 px view (PyTorch's FLOP counter: "
                                      "matrix products, attention's included, and convolutions)",
}


def parse_families(text: str) -> list:
    """``--families``: comma-separated names of :data:`FAMILIES`, ``all`` or ``none``."""
    text = text.strip().lower()
    if text == "none":
        return []
    if text == "all":
        return list(FAMILIES)
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown or not names:
        raise ConfigError(f"--families takes {', '.join(FAMILIES)}, all or none; got {text!r}")
    return names


def forward_gflop(module: torch.nn.Module, *inputs: torch.Tensor) -> float:
    """GFLOP of ``module(*inputs)`` by PyTorch's FLOP counter, attention included.

    ``F.scaled_dot_product_attention`` (SAM 2's Hiera calls it) runs on its math backend here:
    the CPU's fused kernel (``_scaled_dot_product_flash_attention_for_cpu``) has no formula in
    the counter, which would count its two products (a quarter of Hiera-T's arithmetic at
    1024 px) as zero; the math backend's are matrix products the counter knows."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), sdpa_kernel([SDPBackend.MATH]):
        module(*inputs)
    return counter.get_total_flops() / 1e9


def encoder_gflop(model: torch.nn.Module, size: int) -> float:
    """GFLOP of one ``size`` px view through ``model``'s image encoder (:func:`forward_gflop`)."""
    return forward_gflop(model.image_encoder, torch.zeros(1, 3, size, size))


def _exported_encoder(model_type: str, out_dir: Path, seed: int):
    """(input side, GFLOP per view) of ``model_type``, exported (FP32) into ``out_dir``."""
    from samspt.export.onnx_export import export_model

    model = spt_model(model_type, seed)
    gflop = encoder_gflop(model.merged().eval(), model.config.image_size)
    log.info("exporting %s (FP32, unverified) for the family comparison", model_type)
    export_model(model, out_dir, f"bench_{model_type}", precision="fp32", verify=False,
                 stage=lambda text: log.debug("export: %s", text))
    return model.config.image_size, gflop


def _fused_attention(folder: Path, threads: int, graphs: list):
    """(figures, sessions) of ``folder``'s encoder with ONNX Runtime's fused attention
    (:mod:`samspt.benchmarks.fused_attention`), or None where the fusion finds none."""
    from samspt.benchmarks.fused_attention import fuse_attention
    from samspt.runtime.ort_backend import OrtGraphs

    path = folder / "encoder.fused-attention.onnx"
    counts = fuse_attention(folder / "encoder.fp32.onnx", path)
    if not counts["fused"]:
        log.warning("ONNX Runtime's sam2 fusion found no attention in %s", folder.name)
        return None
    pair = OrtGraphs(path, folder / "decoder.fp32.onnx", threads=threads)
    graphs.append(pair)
    return dict(counts, graph="the exported FP32 graph, each attention fused into "
                "com.microsoft.MultiHeadAttention (ONNX Runtime's sam2 fusion), key and value "
                "in the layout of its CPU flash attention"), pair


def compare_families(families: Sequence[str], reps: int, warmup: int, threads: int = 0,
                     seed: int = 0, tick: Optional[Callable[[], None]] = None
                     ) -> Dict[str, Any]:
    """``{"ratios": {key: time ratio}, "encoders": {model type: {median_ms, gflop,
    image_size}}}`` for ``families`` (names of :data:`FAMILIES`) against ViT-B."""
    from samspt.runtime.ort_backend import OrtGraphs

    empty = {key: None for key in BASIS}
    if not families:
        return {"ratios": empty, "encoders": {}}
    types = [REFERENCE] + [FAMILIES[name][1] for name in families]
    figures: Dict[str, Dict[str, Any]] = {}
    calls: Dict[str, Callable[[], object]] = {}
    graphs = []
    with tempfile.TemporaryDirectory(prefix="samspt-families-") as tmp:
        try:
            for model_type in types:
                folder = Path(tmp) / model_type
                size, gflop = _exported_encoder(model_type, folder, seed)
                figures[model_type] = {"image_size": size, "gflop": gflop}
                pair = OrtGraphs(folder / "encoder.fp32.onnx", folder / "decoder.fp32.onnx",
                                 threads=threads)
                graphs.append(pair)
                view = np.random.default_rng(seed).standard_normal(
                    (1, 3, size, size)).astype(np.float32)
                calls[model_type] = (lambda p=pair, v=view: p.encode(v))
                if model_type == FUSED_FAMILY:
                    fused = _fused_attention(folder, threads, graphs)
                    if fused is not None:
                        figures[model_type]["fused_attention"] = fused[0]
                        calls[FUSED] = (lambda p=fused[1], v=view: p.encode(v))
            samples = stats.interleaved(calls, reps, warmup, tick=tick)
        finally:
            for pair in graphs:
                pair.close()
    for model_type, ms in samples.items():
        if model_type == FUSED:
            figures[FUSED_FAMILY]["fused_attention"]["median_ms"] = stats.percentile(ms, 50)
        else:
            figures[model_type]["median_ms"] = stats.percentile(ms, 50)
    reference = figures[REFERENCE]
    ratios = dict(empty)
    for name in families:
        key, model_type = FAMILIES[name]
        if figures[model_type]["image_size"] != reference["image_size"]:
            raise ConfigError(f"{model_type} runs at {figures[model_type]['image_size']} px, "
                              f"ViT-B at {reference['image_size']}: not the same input")
        ratios[key] = stats.ratio(figures[model_type]["median_ms"], reference["median_ms"])
        ratios[key.replace("encoder_", "encoder_gflop_", 1)] = \
            figures[model_type]["gflop"] / reference["gflop"]
        fused = figures[model_type].get("fused_attention")
        if fused and "median_ms" in fused:
            fused["vs_vit_b"] = stats.ratio(fused["median_ms"], reference["median_ms"])
    return {"ratios": ratios, "encoders": figures}
