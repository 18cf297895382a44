"""INT8 graphs of a model folder: the export's orchestration around :mod:`samspt.export.int8`.

Each graph is quantised (static QDQ, signed: what TensorRT reads) and checked against PyTorch; an
encoder that misses the INT8 gate keeps float the fewest of its most sensitive nodes that pass
(:mod:`samspt.export.int8_fallback`); a decoder that misses it alone stays float (the manifest
says so). Each INT8 graph written gets its CPU variant (unsigned activations), kept where its
parity holds.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import onnx

from samspt.export.graph_files import graph_record, save_graph
from samspt.export.onnx_export import ExportError, Stage
from samspt.runtime.manifest import CPU_VARIANT, VARIANTS, graph_file_name
from samspt.training.modeling.model import SptSam

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Int8Graph:
    """One INT8 graph written: its file, the files it takes (the graph, then its external
    data) and its ``quantization`` description for the manifest."""

    path: Path
    files: List[str]
    info: Dict[str, Any]


def export_int8(model: SptSam, tmp: Path, graphs: Dict[str, Dict[str, Any]],
                 fp32_protos: Dict[str, onnx.ModelProto], opset: int,
                 calib_images: Optional[Sequence], prepared, stage: Stage,
                 external: bool) -> List[str]:
    """Write the INT8 graphs (see :mod:`samspt.export.int8`) and their GRAPH records; returns
    the files written. The decoder stays float where its INT8 version misses the INT8 gate
    alone (on PyTorch's embeddings), or cannot be checked (no verification); the record says
    so under ``quantization``. Each INT8 graph written gets its CPU variant (unsigned
    activations, same calibration) under ``variants``, kept where its parity holds
    (:func:`samspt.export.verify.keep_passing_variants`)."""
    from samspt.export.int8 import (calibration_for, calibration_views, decoder_feeds,
                                    encoder_feeds, quantize_graph)
    from samspt.export.verify import GATES, graph_parity, keep_passing_variants, passes
    from samspt.runtime.samples import bundled_verify_images

    config = model.config
    work = tmp / ".int8.work"
    work.mkdir()
    files: List[str] = []
    sources = {}
    for kind, proto in fp32_protos.items():
        sources[kind] = work / f"{kind}.fp32.onnx"
        save_graph(proto, sources[kind], external and kind == "encoder")
    views = calibration_views(calib_images if calib_images is not None
                              else bundled_verify_images(), config.image_size,
                              config.view_settings)
    stage(f"calibrating INT8 on {len(views)} views of real images")
    enc_feeds = encoder_feeds(views, config.pixel_mean, config.pixel_std)
    dec_feeds = decoder_feeds(views, enc_feeds, sources["encoder"])
    feeds = {"encoder": enc_feeds, "decoder": dec_feeds}

    # Nodes kept float for parity, per (graph, variant): each form searches its own.
    kept: Dict[Tuple[str, Optional[str]], List[str]] = {}

    def quantize(kind: str, variant: Optional[str] = None) -> Int8Graph:
        path = tmp / graph_file_name(kind, "int8", variant)
        info = quantize_graph(sources[kind], path, feeds[kind], external and kind == "encoder",
                              activations="uint8" if variant == CPU_VARIANT else "int8",
                              keep_float=kept.get((kind, variant), []),
                              calibration=calibration_for(kind, variant))
        try:
            onnx.checker.check_model(str(path))
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"{path.name} fails onnx.checker: {exc}") from None
        names = [path.name] + ([path.name + ".data"] if (tmp / (path.name + ".data")).exists()
                               else [])
        return Int8Graph(path, names, info)

    records: Dict[str, Int8Graph] = {}
    for kind in ("encoder", "decoder"):
        stage(f"quantising the {kind} graph to INT8 (static QDQ)")
        records[kind] = quantize(kind)
    if prepared is not None:
        records["encoder"] = _encoder_within_gate(records["encoder"], quantize, kept, sources,
                                                  feeds["encoder"], work, prepared, stage, None)

    if prepared is None:
        reason = "not verified (--no-verify): the INT8 decoder's parity could not be checked"
        keep_float = True
    else:
        # The decoder is checked alone (on PyTorch's embeddings) and behind the INT8 encoder
        # it will run with: each may pass while their errors together miss the gate, and the
        # encoder has already passed it with the float decoder, so that pair is the fallback.
        stage("checking the INT8 decoder against PyTorch (alone and behind the INT8 encoder)")
        figures = graph_parity(prepared, records["encoder"].path, records["decoder"].path)
        keep_float = not (passes(figures, "int8", "decoder_") and passes(figures, "int8"))
        reason = (f"the INT8 decoder reached mean mask IoU {figures['decoder_mean_iou']:.4f}, "
                  f"minimum {figures['decoder_min_iou']:.4f} alone and "
                  f"{figures['mean_iou']:.4f} / {figures['min_iou']:.4f} behind the INT8 "
                  f"encoder (gate {GATES['int8']}): kept float")
    for kind in ("encoder", "decoder"):
        path, names, info = records[kind].path, records[kind].files, records[kind].info
        if kind == "decoder" and keep_float:
            log.warning("decoder INT8: %s", reason)
            for name in names:
                (tmp / name).unlink()
            info = {"quantized": False, "reason": reason}
            if "fp32" in graphs["decoder"]:
                record = dict(graphs["decoder"]["fp32"])
            else:  # the float decoder the INT8 model uses, written for it alone
                path = tmp / graph_file_name("decoder", "fp32")
                names = save_graph(fp32_protos["decoder"], path, False)
                record = graph_record(fp32_protos["decoder"], path.name, names, opset,
                                      "float32")
            graphs["decoder"]["int8"] = dict(record, quantization=info)
            files += names if "fp32" not in graphs["decoder"] else []
            continue
        proto = onnx.load(str(path), load_external_data=False)
        graphs[kind]["int8"] = dict(graph_record(proto, path.name, names, opset, "int8"),
                                    quantization=info)
        files += names
        stage(f"quantising the {kind} graph's CPU variant (unsigned activations)")
        variant = quantize(kind, CPU_VARIANT)
        if kind == "encoder" and prepared is not None:
            variant = _encoder_within_gate(variant, quantize, kept, sources, feeds["encoder"],
                                           work, prepared, stage, CPU_VARIANT)
        graphs[kind]["int8"]["variants"] = {CPU_VARIANT: {
            "file": variant.path.name, "external_data": variant.files[1:],
            "activations": "uint8", "execution_provider": VARIANTS[CPU_VARIANT],
            "tensorrt": False, "quantization": variant.info}}
        files += variant.files
    if prepared is not None:
        stage("checking the INT8 CPU variants against PyTorch")
        removed = keep_passing_variants(prepared, tmp, graphs)
        files = [name for name in files if name not in removed]
    shutil.rmtree(work)
    return files


def _encoder_within_gate(record: Int8Graph, quantize: Callable[..., Int8Graph],
                         kept: Dict[Tuple[str, Optional[str]], List[str]], sources, feeds,
                         work: Path, prepared, stage: Stage,
                         variant: Optional[str]) -> Int8Graph:
    """The INT8 encoder ``record`` of ``variant`` (None: the signed graph),
    or, where it misses the INT8 gate with the FP32 decoder, one that keeps float the fewest of
    its most sensitive nodes that passes (:mod:`samspt.export.int8_fallback`), ranked for its
    own activation type; ``kept[("encoder", variant)]`` is set to them."""
    from functools import partial

    from samspt.export.int8 import calibration_for, quantizable_nodes, quantize_graph
    from samspt.export.int8_fallback import node_sensitivity, smallest_passing
    from samspt.export.verify import graph_parity, passes

    what = "INT8 encoder" + (f" ({variant} variant)" if variant else "")
    stage(f"checking the {what} against PyTorch (FP32 decoder)")
    figures = graph_parity(prepared, record.path, sources["decoder"])
    if passes(figures, "int8"):
        return record
    candidates = quantizable_nodes(onnx.load(str(sources["encoder"]), load_external_data=False))
    stage(f"{what} misses the gate (mean mask IoU {figures['mean_iou']:.4f}, minimum "
          f"{figures['min_iou']:.4f}): measuring each of its {len(candidates)} INT8 nodes")
    probe = partial(quantize_graph, activations="uint8" if variant == CPU_VARIANT else "int8",
                    calibration=calibration_for("encoder", variant))
    sensitivity = node_sensitivity(sources["encoder"], feeds, candidates, work, probe,
                                   partial(_mask_shortfall, prepared, sources["decoder"]))
    ranked = sorted(candidates, key=lambda name: -sensitivity[name])
    figures_at: Dict[int, Dict[str, Any]] = {}
    key = ("encoder", variant)

    def try_float(k: int) -> bool:
        kept[key] = ranked[:k]
        stage(f"{what} with its {k} most sensitive of {len(ranked)} nodes float")
        figures_at[k] = graph_parity(prepared, quantize("encoder", variant).path,
                                     sources["decoder"])
        return passes(figures_at[k], "int8")

    count, _ = smallest_passing(len(ranked), try_float)
    kept[key] = ranked[:count]
    record = quantize("encoder", variant)  # the file on disk is the last one tried: this one
    figures = figures_at.get(count) or graph_parity(prepared, record.path, sources["decoder"])
    log.warning("%s: %d of %d nodes kept float to hold the gate (mean mask IoU %.4f, "
                "minimum %.4f): %s", what, count, len(ranked), figures["mean_iou"],
                figures["min_iou"], ", ".join(ranked[:count]))
    record.info["parity_fallback"] = {
        "sensitivity": {n: round(sensitivity[n], 4) for n in ranked},
        "mean_iou": figures["mean_iou"], "min_iou": figures["min_iou"]}
    return record


def _mask_shortfall(prepared, decoder: Path, encoder: Path) -> float:
    """How far the masks through ``encoder`` (with the FP32 ``decoder``) fall from PyTorch's:
    (1 - mean mask IoU) + (1 - minimum), what the parity gate checks."""
    from samspt.export.verify import graph_parity

    figures = graph_parity(prepared, encoder, decoder)
    return (1.0 - figures["mean_iou"]) + (1.0 - figures["min_iou"])
