"""Export an SPT model to a model folder: merged encoder + draft/refine decoder, FP32, FP16 and
INT8 (static QDQ, :mod:`samspt.export.int8`), checked, verified against PyTorch, described by
``manifest.json``.

The folder is built in a temporary sibling and renamed into place only when complete, so an
interrupted or failed export never leaves a half-written model folder behind.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import math
import platform
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import torch

import samspt
from samspt.runtime import tensors
from samspt.runtime.errors import ConfigError, SamsptError
from samspt.runtime.files import atomic_dir, atomic_write_text
from samspt.runtime.manifest import (CPU_VARIANT, MANIFEST, PRECISIONS, SCHEMA_VERSION,
                                     VARIANTS, file_entry, graph_file_name,
                                     tensorrt_graph_files)
from samspt.runtime.postprocess import MASK_THRESHOLD
from samspt.export.fp16 import layer_norm_2d_scopes, store_weights_fp16, to_fp16
from samspt.export.graphs import (DECODER_DYNAMIC_AXES, ENCODER_DYNAMIC_AXES, DecoderGraph,
                                  example_inputs)
from samspt.training.model import SptSam

log = logging.getLogger(__name__)

MIN_OPSET, MAX_OPSET, DEFAULT_OPSET = 17, 20, 17
# Protobuf cannot hold a file over 2 GiB; keep a margin for the graph itself.
EXTERNAL_DATA_BYTES = 1_800_000_000
Stage = Callable[[str], None]


class ExportError(SamsptError):
    """The export could not be completed (tracing, checking or saving a graph)."""


@dataclass
class ExportResult:
    out_dir: Path
    manifest: Dict[str, Any]
    files: Dict[str, int] = field(default_factory=dict)  # name -> bytes


def _tool_versions() -> Dict[str, str]:
    import onnxruntime

    versions = {"samspt": samspt.__version__, "torch": torch.__version__,
                "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                "python": platform.python_version()}
    try:
        from importlib.metadata import version

        versions["segment_anything"] = version("segment-anything")
    except Exception:  # noqa: BLE001 - versions are informative only
        pass
    return versions


def _io_spec(values) -> List[Dict[str, Any]]:
    out = []
    for value in values:
        kind = value.type.tensor_type
        shape = [d.dim_param if d.dim_param else d.dim_value for d in kind.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(kind.elem_type).name
        out.append({"name": value.name, "shape": shape, "dtype": dtype})
    return out


def _save(proto: onnx.ModelProto, path: Path, external: bool) -> List[str]:
    """Save ``proto``; with ``external`` its weights go to ``<file>.data``. Returns file names."""
    if external:
        onnx.save_model(proto, str(path), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=path.name + ".data",
                        size_threshold=1024)
        return [path.name, path.name + ".data"]
    onnx.save_model(proto, str(path))
    return [path.name]


def _trace(module: torch.nn.Module, args: Tuple, path: Path, inputs: Sequence[str],
           outputs: Sequence[str], opset: int, dynamic_axes: Optional[Dict] = None) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        try:
            torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset,
                              input_names=list(inputs), output_names=list(outputs),
                              dynamic_axes=dynamic_axes or {}, do_constant_folding=True)
        except Exception as exc:  # noqa: BLE001
            raise ExportError(f"tracing {path.name} failed: {exc}") from None


def parse_precisions(text: str) -> List[str]:
    """``fp32``, ``fp16``, ``int8``, ``both`` (FP32 + FP16), ``all`` (FP32 + FP16 + INT8) or a
    comma-separated list (``fp32,int8``) -> the precisions, in :data:`PRECISIONS` order."""
    named = {"both": ["fp32", "fp16"], "all": list(PRECISIONS)}
    parts = named.get(text) or [p.strip() for p in str(text).split(",") if p.strip()]
    unknown = [p for p in parts if p not in PRECISIONS]
    if unknown or not parts:
        raise ConfigError(f"precision must be {', '.join(PRECISIONS)}, both (fp32,fp16), all "
                          f"(fp32,fp16,int8) or a comma-separated list, got {text!r}")
    return [p for p in PRECISIONS if p in parts]


def _graph_record(proto: onnx.ModelProto, file: str, names: List[str], opset: int,
                  storage: str) -> Dict[str, Any]:
    return {"file": file, "opset": opset, "weights_storage": storage,
            "external_data": names[1:], "inputs": _io_spec(proto.graph.input),
            "outputs": _io_spec(proto.graph.output)}


def _export_int8(model: SptSam, tmp: Path, graphs: Dict[str, Dict[str, Any]],
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
        _save(proto, sources[kind], external and kind == "encoder")
    views = calibration_views(calib_images if calib_images is not None
                              else bundled_verify_images(), config.image_size,
                              config.view_settings)
    stage(f"calibrating INT8 on {len(views)} views of real images")
    enc_feeds = encoder_feeds(views, config.pixel_mean, config.pixel_std)
    dec_feeds = decoder_feeds(views, enc_feeds, sources["encoder"])
    feeds = {"encoder": enc_feeds, "decoder": dec_feeds}

    # Nodes kept float for parity, per (graph, variant): each form searches its own.
    kept: Dict[Tuple[str, Optional[str]], List[str]] = {}

    def quantize(kind: str, variant: Optional[str] = None):
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
        return path, names, info

    records = {}
    for kind in ("encoder", "decoder"):
        stage(f"quantising the {kind} graph to INT8 (static QDQ)")
        records[kind] = quantize(kind)
    if prepared is not None:
        records["encoder"] = _encoder_within_gate(records["encoder"], quantize, kept, sources,
                                                  feeds["encoder"], work, prepared, stage, None)

    decoder_path, decoder_names, decoder_info = records["decoder"]
    if prepared is None:
        reason = "not verified (--no-verify): the INT8 decoder's parity could not be checked"
        keep_float = True
    else:
        stage("checking the INT8 decoder alone against PyTorch")
        figures = graph_parity(prepared, sources["encoder"], decoder_path)
        keep_float = not passes(figures, "int8", "decoder_")
        reason = (f"the INT8 decoder alone reached mean mask IoU "
                  f"{figures['decoder_mean_iou']:.4f}, minimum {figures['decoder_min_iou']:.4f} "
                  f"(gate {GATES['int8']}): kept float")
    for kind in ("encoder", "decoder"):
        path, names, info = records[kind]
        if kind == "decoder" and keep_float:
            log.warning("decoder INT8: %s", reason)
            for name in names:
                (tmp / name).unlink()
            info = {"quantized": False, "reason": reason}
            if "fp32" in graphs["decoder"]:
                record = dict(graphs["decoder"]["fp32"])
            else:  # the float decoder the INT8 model uses, written for it alone
                path = tmp / graph_file_name("decoder", "fp32")
                names = _save(fp32_protos["decoder"], path, False)
                record = _graph_record(fp32_protos["decoder"], path.name, names, opset,
                                       "float32")
            graphs["decoder"]["int8"] = dict(record, quantization=info)
            files += names if "fp32" not in graphs["decoder"] else []
            continue
        proto = onnx.load(str(path), load_external_data=False)
        graphs[kind]["int8"] = dict(_graph_record(proto, path.name, names, opset, "int8"),
                                    quantization=info)
        files += names
        stage(f"quantising the {kind} graph's CPU variant (unsigned activations)")
        path, names, info = quantize(kind, CPU_VARIANT)
        if kind == "encoder" and prepared is not None:
            path, names, info = _encoder_within_gate((path, names, info), quantize, kept,
                                                     sources, feeds["encoder"], work, prepared,
                                                     stage, CPU_VARIANT)
        graphs[kind]["int8"]["variants"] = {CPU_VARIANT: {
            "file": path.name, "external_data": names[1:], "activations": "uint8",
            "execution_provider": VARIANTS[CPU_VARIANT], "tensorrt": False,
            "quantization": info}}
        files += names
    if prepared is not None:
        stage("checking the INT8 CPU variants against PyTorch")
        removed = keep_passing_variants(prepared, tmp, graphs)
        files = [name for name in files if name not in removed]
    shutil.rmtree(work)
    return files


def _encoder_within_gate(record, quantize, kept: Dict[Tuple[str, Optional[str]], List[str]],
                         sources, feeds, work: Path, prepared, stage: Stage,
                         variant: Optional[str]):
    """The INT8 encoder ``record`` (path, names, info) of ``variant`` (None: the signed graph),
    or, where it misses the INT8 gate with the FP32 decoder, one that keeps float the fewest of
    its most sensitive nodes that passes (:mod:`samspt.export.int8_fallback`), ranked for its
    own activation type; ``kept[("encoder", variant)]`` is set to them."""
    from functools import partial

    from samspt.export.int8 import calibration_for, quantizable_nodes, quantize_graph
    from samspt.export.int8_fallback import node_sensitivity, smallest_passing
    from samspt.export.verify import graph_parity, passes

    what = "INT8 encoder" + (f" ({variant} variant)" if variant else "")
    stage(f"checking the {what} against PyTorch (FP32 decoder)")
    figures = graph_parity(prepared, record[0], sources["decoder"])
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
        figures_at[k] = graph_parity(prepared, quantize("encoder", variant)[0],
                                     sources["decoder"])
        return passes(figures_at[k], "int8")

    count, _ = smallest_passing(len(ranked), try_float)
    kept[key] = ranked[:count]
    record = quantize("encoder", variant)  # the file on disk is the last one tried: this one
    figures = figures_at.get(count) or graph_parity(prepared, record[0], sources["decoder"])
    log.warning("%s: %d of %d nodes kept float to hold the gate (mean mask IoU %.4f, "
                "minimum %.4f): %s", what, count, len(ranked), figures["mean_iou"],
                figures["min_iou"], ", ".join(ranked[:count]))
    record[2]["parity_fallback"] = {
        "sensitivity": {n: round(sensitivity[n], 4) for n in ranked},
        "mean_iou": figures["mean_iou"], "min_iou": figures["min_iou"]}
    return record


def _mask_shortfall(prepared, decoder: Path, encoder: Path) -> float:
    """How far the masks through ``encoder`` (with the FP32 ``decoder``) fall from PyTorch's:
    (1 - mean mask IoU) + (1 - minimum), what the parity gate checks."""
    from samspt.export.verify import graph_parity

    figures = graph_parity(prepared, encoder, decoder)
    return (1.0 - figures["mean_iou"]) + (1.0 - figures["min_iou"])


def with_scan_min_score(config, score: float):
    """``config`` (a ModelConfig) with the prompt-free scan's gate set to ``score``;
    :class:`ConfigError` for a whole-image model (it has no scan views) or a score that is not a
    finite number."""
    return _with_gate(config, "scan_min_score", "its scan is one view, with no scan views to "
                      "gate", score)


def with_prompt_min_score(config, score: Optional[float]):
    """``config`` (a ModelConfig) with the prompts' gate set to ``score`` (None: off): prompts
    scored below it are answered empty; :class:`ConfigError` for a whole-image model (the gate
    is a view setting) or a score that is not a finite number."""
    if score is None:
        return dataclasses.replace(config, prompt_min_score=None)
    return _with_gate(config, "prompt_min_score", "the prompt gate is a view setting", score)


def _with_gate(config, key: str, why: str, score: float):
    flag = "--" + key.replace("_", "-")
    if config.view_settings is None:
        raise ConfigError(f"{config.name} is a whole-image model: {why}; leave {flag} out")
    if not math.isfinite(score):
        raise ConfigError(f"{flag} must be a finite number, got {score}")
    return dataclasses.replace(config, **{key: float(score)})


def export_model(model: SptSam, out_dir: Path, name: str, precision: str = "both",
                 opset: int = DEFAULT_OPSET, verify: bool = True,
                 verify_images: Optional[Sequence] = None,
                 sources: Optional[Dict[str, Any]] = None,
                 stage: Optional[Stage] = None, compact: bool = False,
                 calib_images: Optional[Sequence] = None) -> ExportResult:
    """Export ``model`` (unmerged SPT, float32) into ``out_dir`` (replaced only on success).

    ``precision``: see :func:`parse_precisions` (``both``: FP32 and FP16; ``all``: and INT8).
    ``verify_images``: list of (name, HxWx3 uint8, Kx4 boxes) for the parity check; default:
    the bundled samples. ``calib_images``: the same kind of list for INT8 calibration (default:
    the bundled samples). ``compact``: FP32 graphs store as float16 the weights float16 holds
    exactly (computed in float32; see :func:`samspt.export.fp16.store_weights_fp16`). Raises
    :class:`samspt.export.verify.VerificationError` when a parity gate is missed.
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(f"opset {opset} is not supported: use {MIN_OPSET}..{MAX_OPSET} (17 is "
                          "what TensorRT 10 and ONNX Runtime >= 1.16 all read)")
    precisions = parse_precisions(precision)
    stage = stage or (lambda text: log.info("%s", text))
    model = model.float().cpu().eval()
    merged = model.merged().eval()
    config = merged.config
    encoder_bytes = sum(p.numel() for p in merged.image_encoder.parameters()) * 4
    external = config.name == "vit_h" or encoder_bytes > EXTERNAL_DATA_BYTES
    enc_args, dec_args = example_inputs(merged)

    with atomic_dir(out_dir) as tmp:
        graphs: Dict[str, Dict[str, Any]] = {"encoder": {}, "decoder": {}}
        files: List[str] = []
        fp32_protos: Dict[str, onnx.ModelProto] = {}
        for kind, module, args, inputs, outputs, axes in (
                ("encoder", merged.image_encoder, enc_args, tensors.ENCODER_INPUTS,
                 tensors.ENCODER_OUTPUTS, ENCODER_DYNAMIC_AXES),
                ("decoder", DecoderGraph(merged), dec_args, tensors.DECODER_INPUTS,
                 tensors.DECODER_OUTPUTS, DECODER_DYNAMIC_AXES)):
            stage(f"tracing the {kind} graph (opset {opset})")
            # A folder of its own: over 2 GB (vit_h) the tracer writes one external-data file
            # per weight beside the graph, and none of them may end up in the model folder.
            trace_dir = tmp / f".{kind}.trace"
            trace_dir.mkdir()
            _trace(module, args, trace_dir / "graph.onnx", inputs, outputs, opset, axes)
            fp32_protos[kind] = onnx.load(str(trace_dir / "graph.onnx"))
            shutil.rmtree(trace_dir)
        scopes = layer_norm_2d_scopes(merged)
        for prec in [p for p in precisions if p != "int8"]:
            for kind in ("encoder", "decoder"):
                proto = fp32_protos[kind]
                if prec == "fp16":
                    stage(f"converting the {kind} graph to FP16")
                    proto = to_fp16(proto, scopes)
                elif compact:
                    proto = store_weights_fp16(proto)
                path = tmp / graph_file_name(kind, prec)
                names = _save(proto, path, external and kind == "encoder")
                try:
                    onnx.checker.check_model(str(path))
                except onnx.checker.ValidationError as exc:
                    raise ExportError(f"{path.name} fails onnx.checker: {exc}") from None
                files += names
                graphs[kind][prec] = _graph_record(proto, path.name, names, opset,
                                                   "float16" if compact or prec == "fp16"
                                                   else "float32")
        scan_head = None
        if getattr(merged, "scan_head", None) is not None:
            from samspt.runtime.scan_head import SCAN_HEAD_FILE, head_record

            arrays = merged.scan_head.arrays()
            np.savez(tmp / SCAN_HEAD_FILE, **arrays)
            files.append(SCAN_HEAD_FILE)
            scan_head = head_record(config.prompt_embed_dim, arrays["hidden_bias"].shape[0])
        prepared = None
        if verify:
            from samspt.export.verify import prepare_reference

            prepared = prepare_reference(model, verify_images)
        if "int8" in precisions:
            files += _export_int8(model, tmp, graphs, fp32_protos, opset, calib_images,
                                  prepared, stage, external)
        fp32_protos.clear()

        verification = None
        if verify:
            from samspt.export.verify import verify_folder

            verification = verify_folder(model, tmp, graphs, verify_images, stage=stage,
                                         prepared=prepared)
        stage("checking the graphs against TensorRT's ONNX parser lists")
        from samspt.export.trt_support import check_files, log_check

        # The plain graphs only: a GRAPH's "variants" (INT8 CPU: UINT8 activations, which
        # TensorRT rejects inside a network) are for ONNX Runtime and never given to TensorRT.
        log_check(check_files([tmp / name for name in tensorrt_graph_files(graphs)]), log)

        manifest = {
            "schema_version": SCHEMA_VERSION,
            "name": name,
            "model": config.to_dict(),
            "lora": {"rank": model.lora.rank if model.lora else None,
                     "alpha": model.lora.alpha if model.lora else None, "merged": True},
            "input": {"image_size": config.image_size, "pixel_mean": list(config.pixel_mean),
                      "pixel_std": list(config.pixel_std), "preprocessing": "runtime",
                      "layout": "Vx3xSxS float32: each view (samspt.runtime.views; the whole "
                                "image: its longest side) resized to S (bilinear), normalised "
                                "(x - mean) / std, zero-padded"},
            "mask_threshold": MASK_THRESHOLD,
            "low_res_size": config.embedding_size * tensors.LOW_RES_UPSCALE,
            "views": config.view_settings.to_dict() if config.view_settings else None,
            **({"scan_head": scan_head} if scan_head else {}),
            "graphs": graphs,
            "files": {f: file_entry(tmp / f) for f in files},
            "verification": verification,
            "tools": _tool_versions(),
            "sources": sources or {},
            "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        import json

        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        sizes = {f: (tmp / f).stat().st_size for f in files}
    stage(f"wrote {out_dir}")
    return ExportResult(Path(out_dir), manifest, sizes)
