"""The ratios the project tracks, each from calls timed side by side (interleaved) in one run.

* ``encoder_ort_vs_torch``: exported FP32 encoder on ONNX Runtime / PyTorch eager FP32, same device.
* ``spt_vs_vanilla_encoder``: merged SPT encoder / plain SAM encoder (PyTorch eager FP32); 1.00
  within noise, since merging LoRA leaves SAM's structure.
* ``spt_vs_vanilla_decoder``: SPT decoder (prompt encoder + draft + relation + refine) / plain
  SAM decoder (prompt encoder + mask decoder, single mask), one box prompt, PyTorch eager FP32.
* ``batched_vs_single_k16``: one ONNX Runtime decoder call with 16 prompts / 16 calls with one
  prompt each (FP32 graph, the runtime's ``OrtGraphs``).
* ``relation_vs_materialized_time`` and ``relation_vs_materialized_mem``: see
  :mod:`samspt.benchmarks.relation_compare`.

Below 1 means the first is faster (or smaller).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from samspt.benchmarks import stats
from samspt.benchmarks.backends import ort_providers
from samspt.runtime.preprocess import preprocess_image
from samspt.runtime.prompts import pack_prompts, scale_coords
from samspt.runtime.manifest import read_manifest
from samspt.runtime.ort_backend import OrtGraphs

log = logging.getLogger(__name__)

RATIO_KEYS = ("encoder_ort_vs_torch", "spt_vs_vanilla_encoder", "spt_vs_vanilla_decoder",
              "batched_vs_single_k16", "relation_vs_materialized_time",
              "relation_vs_materialized_mem", "relation_vs_materialized_mem_ort",
              "relation_vs_materialized_mem_train",
              "encoder_int8_vs_fp32", "encoder_batch8_vs_single", "postprocess_share_k64",
              "postprocess_share_k64_example", "encoder_peak_share",
              "encoder_int8_signed_vs_fp32", "encoder_int8_signed_vs_fp32_example",
              "encoder_int8_vs_fp32_example", "encoder_tinyvit_vs_vit_b",
              "encoder_gflop_tinyvit_vs_vit_b", "encoder_hiera_t_vs_vit_b",
              "encoder_gflop_hiera_t_vs_vit_b")
# Keys computed from the stage timings (:func:`result_ratios`): None when the run lacks the
# backend or 64 prompts.
RESULT_KEYS = ("postprocess_share_k64", "postprocess_share_k64_example", "encoder_peak_share")
RESULT_BASIS = {
    "postprocess_share_k64": "ONNX Runtime FP32 (ort), the run's model, 64 boxes: Inspector "
                             "postprocess median / end-to-end median",
    "postprocess_share_k64_example": "the same on the shipped example model (ort-example: "
                                     "trained conv model, prompts on views)",
    "encoder_peak_share": "ort's encoder TFLOP/s / the device's FP32 peak (backends.ort)",
    "encoder_int8_vs_fp32_example": "shipped example model's encoder (conv, 128 px view): "
                                    "the export's QDQ INT8 CPU variant, parity-gated (u8s8, per "
                                    "channel: what the Inspector runs on ONNX Runtime's CPU "
                                    "provider) / FP32, ONNX Runtime CPU (ort_choices "
                                    "export_int8_cpu)",
    "encoder_int8_signed_vs_fp32_example": "the same with the export's signed QDQ INT8 graph "
                                           "(s8s8, per channel: what TensorRT reads)",
}
BATCH = 16
VIEWS = 8


def _sync_after(fn: Callable[[], Any], device: str) -> Callable[[], None]:
    def call() -> None:
        with torch.no_grad():
            fn()
        if device == "cuda":
            torch.cuda.synchronize()
    return call


def _vanilla_decode(sam: torch.nn.Module, embedding: torch.Tensor, box: torch.Tensor) -> Any:
    """SAM's decoder on the embedding's first C channels (a model with high-res features packs
    them after the embedding; SAM's own decoder has no high-res skips to take them)."""
    sparse, dense = sam.prompt_encoder(points=None, boxes=box, masks=None)
    embedding = embedding[:, :sparse.shape[-1]]
    return sam.mask_decoder(image_embeddings=embedding,
                            image_pe=sam.prompt_encoder.get_dense_pe(),
                            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                            multimask_output=False)


def measure_ratios(merged: torch.nn.Module, sam: torch.nn.Module, model_dir: Path, device: str,
                   image: np.ndarray, boxes: np.ndarray, reps: int, warmup: int,
                   relation: Dict[str, Any], threads: int = 0,
                   tick: Optional[Callable[[], None]] = None) -> Dict[str, Any]:
    """``{"ratios": {key: value}, "details": {...}}`` for the keys of :data:`RATIO_KEYS`.

    ``merged``/``sam``: torch models on ``device``; ``boxes``: at least 16 boxes (Kx4 image
    pixels) on ``image``; ``relation``: the result of ``relation_compare.compare_relation``.
    """
    config = merged.config
    tensor, resized = preprocess_image(image, config.image_size, config.pixel_mean,
                                          config.pixel_std)
    coords, labels = pack_prompts(boxes[:BATCH])
    coords = scale_coords(coords, image.shape[:2], resized)
    manifest = read_manifest(model_dir, verify_files=False)
    providers = ort_providers(device)
    graphs = OrtGraphs(model_dir / manifest.graph("encoder", "fp32")["file"],
                       model_dir / manifest.graph("decoder", "fp32")["file"],
                       providers=providers, threads=threads)
    ort_device = "cuda" if graphs.providers[0] == "CUDAExecutionProvider" else "cpu"
    embedding = graphs.encode(tensor)
    # what the Inspector runs at int8 on these providers (on the CPU: the CPU variant)
    int8 = OrtGraphs.for_precision(model_dir, manifest, "int8", providers=providers,
                                   threads=threads)
    int8_signed = OrtGraphs(model_dir / manifest.graph("encoder", "int8")["file"],
                            model_dir / manifest.graph("decoder", "int8")["file"],
                            providers=providers, threads=threads)
    views8 = np.repeat(tensor, VIEWS, axis=0)

    image_t = torch.from_numpy(tensor).to(device)
    embedding_t = torch.from_numpy(embedding).to(device)
    coords_t, labels_t = (torch.from_numpy(a[:1]).to(device) for a in (coords, labels))
    box_t = coords_t.reshape(1, 4)
    encoder = merged.image_encoder
    if ort_device != device:  # compare on one device: a CPU copy of the torch encoder
        encoder = copy.deepcopy(encoder).cpu()
    image_ort_t = image_t.to(ort_device)

    calls = {
        "encoder_torch": _sync_after(lambda: encoder(image_ort_t), ort_device),
        "encoder_ort": lambda: graphs.encode(tensor),
        "encoder_int8": lambda: int8.encode(tensor),
        "encoder_int8_signed": lambda: int8_signed.encode(tensor),
        f"encoder_ort_{VIEWS}views_1call": lambda: graphs.encode(views8),
        f"encoder_ort_{VIEWS}views_{VIEWS}calls": lambda: [graphs.encode(tensor)
                                                           for _ in range(VIEWS)],
        "encoder_spt": _sync_after(lambda: merged.image_encoder(image_t), device),
        "encoder_sam": _sync_after(lambda: sam.image_encoder(image_t), device),
        "decoder_spt_1": _sync_after(lambda: merged.decode(embedding_t, coords_t, labels_t),
                                     device),
        "decoder_sam_1": _sync_after(lambda: _vanilla_decode(sam, embedding_t, box_t), device),
        f"decoder_ort_{BATCH}x1": lambda: graphs.decode(embedding, coords, labels),
        f"decoder_ort_1x{BATCH}": lambda: [graphs.decode(embedding, coords[i:i + 1],
                                                         labels[i:i + 1])
                                           for i in range(len(coords))],
    }
    log.info("timing the tracked ratios (%d calls, %d reps, interleaved)", len(calls), reps)
    medians = {name: stats.summarize(values)["median_ms"]
               for name, values in stats.interleaved(calls, reps, warmup, tick).items()}
    ratios = {
        "encoder_ort_vs_torch": stats.ratio(medians["encoder_ort"], medians["encoder_torch"]),
        "spt_vs_vanilla_encoder": stats.ratio(medians["encoder_spt"], medians["encoder_sam"]),
        "spt_vs_vanilla_decoder": stats.ratio(medians["decoder_spt_1"], medians["decoder_sam_1"]),
        "batched_vs_single_k16": stats.ratio(medians[f"decoder_ort_{BATCH}x1"],
                                             medians[f"decoder_ort_1x{BATCH}"]),
        "relation_vs_materialized_time": relation.get("time_ratio"),
        "relation_vs_materialized_mem": relation.get("mem_ratio"),
        "relation_vs_materialized_mem_ort": relation.get("mem_ratio_ort"),
        "relation_vs_materialized_mem_train": relation.get("mem_ratio_train"),
        "encoder_int8_vs_fp32": stats.ratio(medians["encoder_int8"], medians["encoder_ort"]),
        "encoder_int8_signed_vs_fp32": stats.ratio(medians["encoder_int8_signed"],
                                                   medians["encoder_ort"]),
        "encoder_batch8_vs_single": stats.ratio(medians[f"encoder_ort_{VIEWS}views_1call"],
                                                medians[f"encoder_ort_{VIEWS}views_{VIEWS}calls"]),
    }
    ort_method = relation.get("memory_ort", {}).get("method", "not measured")
    basis = {
        "encoder_ort_vs_torch": f"ONNX Runtime ({graphs.providers[0]}) / PyTorch eager, FP32, "
                                f"{ort_device}, encoder",
        "spt_vs_vanilla_encoder": f"PyTorch eager FP32 on {device}: merged SPT / plain SAM "
                                  "image encoder",
        "spt_vs_vanilla_decoder": f"PyTorch eager FP32 on {device}, 1 box: SPT draft+relation+"
                                  "refine / SAM mask decoder (single mask), prompt encoder in both",
        "batched_vs_single_k16": f"ONNX Runtime FP32 decoder on {ort_device}: 1 call x 16 "
                                 "prompts / 16 calls x 1 prompt",
        "relation_vs_materialized_time": f"{relation['tokens']} tokens x {relation['channels']} "
                                         f"channels, {relation['prompts']} prompt, "
                                         f"{relation['device']}: built / materialized",
        "relation_vs_materialized_mem": "peak memory above baseline: built / materialized ("
                                        f"{relation['memory'].get('method', 'not measured')})",
        "encoder_int8_vs_fp32": f"ONNX Runtime ({graphs.providers[0]}) encoder: static QDQ "
                                f"INT8 graph the Inspector runs ({int8.files[0]}) / FP32 "
                                "graph, one view",
        "encoder_int8_signed_vs_fp32": f"the same with the signed INT8 graph TensorRT reads "
                                       f"({int8_signed.files[0]})",
        "encoder_batch8_vs_single": f"ONNX Runtime FP32 encoder on {ort_device}: one call "
                                    f"with {VIEWS} views / {VIEWS} calls with one",
        "relation_vs_materialized_mem_ort": "the same as ONNX graphs on ONNX Runtime ("
                                            f"{ort_method})",
        "relation_vs_materialized_mem_train": "the same for a training step (forward with "
                                              "gradients + backward), PyTorch",
    }
    return {"ratios": ratios, "details": {"medians_ms": medians, "basis": basis}}


def result_ratios(results: List[Dict[str, Any]],
                  backends: Dict[str, Dict[str, Any]]) -> Dict[str, Optional[float]]:
    """The keys of :data:`RESULT_KEYS` from a run's stage medians: post-processing's share of
    end to end at 64 prompts (ONNX Runtime FP32, the run's model; and the shipped example model
    on views), and the ONNX Runtime FP32 encoder's share of the device's peak."""
    def share(backend: str) -> Optional[float]:
        for entry in results:
            if entry["backend"] == backend and entry["prompts"] == 64:
                stages = entry["stages"]
                return stats.ratio(stages["postprocess"]["median_ms"],
                                   stages["end_to_end"]["median_ms"])
        return None

    return {"postprocess_share_k64": share("ort"),
            "postprocess_share_k64_example": share("ort-example"),
            "encoder_peak_share": backends.get("ort", {}).get("encoder_peak_share")}
