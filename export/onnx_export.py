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
from samspt.runtime.files import atomic_dir
from samspt.runtime.manifest import (PRECISIONS, InputSpec, Manifest, file_entry,
                                     graph_file_name, tensorrt_graph_files, write_manifest)
from samspt.runtime.postprocess import MASK_THRESHOLD
from samspt.export.fp16 import layer_norm_2d_scopes, store_weights_fp16, to_fp16
from samspt.export.graph_files import graph_record, save_graph
from samspt.export.graphs import (DECODER_DYNAMIC_AXES, ENCODER_DYNAMIC_AXES, DecoderGraph,
                                  example_inputs)
from samspt.training.modeling.model import SptSam

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
    manifest: Manifest
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
                names = save_graph(proto, path, external and kind == "encoder")
                try:
                    onnx.checker.check_model(str(path))
                except onnx.checker.ValidationError as exc:
                    raise ExportError(f"{path.name} fails onnx.checker: {exc}") from None
                files += names
                graphs[kind][prec] = graph_record(proto, path.name, names, opset,
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
            from samspt.export.int8_export import export_int8

            files += export_int8(model, tmp, graphs, fp32_protos, opset, calib_images,
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

        manifest = Manifest(
            name=name,
            model=config.to_dict(),
            lora={"rank": model.lora.rank if model.lora else None,
                  "alpha": model.lora.alpha if model.lora else None, "merged": True},
            input=InputSpec(config.image_size, tuple(config.pixel_mean), tuple(config.pixel_std),
                            layout="Vx3xSxS float32: each view (samspt.runtime.views; the whole "
                                   "image: its longest side) resized to S (bilinear), normalised "
                                   "(x - mean) / std, zero-padded"),
            mask_threshold=MASK_THRESHOLD,
            low_res_size=config.embedding_size * tensors.LOW_RES_UPSCALE,
            views=config.view_settings,
            scan_head=scan_head,
            graphs=graphs,
            files={f: file_entry(tmp / f) for f in files},
            verification=verification,
            tools=_tool_versions(),
            sources=sources or {},
            created=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        write_manifest(tmp, manifest)
        sizes = {f: (tmp / f).stat().st_size for f in files}
    stage(f"wrote {out_dir}")
    return ExportResult(Path(out_dir), manifest, sizes)
