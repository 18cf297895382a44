"""Export an SPT model to a model folder: merged encoder + draft/refine decoder, FP32 and FP16,
checked, verified against PyTorch, described by ``manifest.json``.

The folder is built in a temporary sibling and renamed into place only when complete, so an
interrupted or failed export never leaves a half-written model folder behind.
"""

from __future__ import annotations

import datetime as _dt
import logging
import platform
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import onnx
import torch

import samspt
from samspt.runtime import tensors
from samspt.runtime.errors import ConfigError, SamsptError
from samspt.runtime.files import atomic_dir, atomic_write_text
from samspt.runtime.manifest import (MANIFEST, PRECISIONS, SCHEMA_VERSION, file_entry,
                                     graph_file_name)
from samspt.runtime.preprocess import MASK_THRESHOLD
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


def export_model(model: SptSam, out_dir: Path, name: str, precision: str = "both",
                 opset: int = DEFAULT_OPSET, verify: bool = True,
                 verify_images: Optional[Sequence] = None,
                 sources: Optional[Dict[str, Any]] = None,
                 stage: Optional[Stage] = None, compact: bool = False) -> ExportResult:
    """Export ``model`` (unmerged SPT, float32) into ``out_dir`` (replaced only on success).

    ``verify_images``: list of (name, HxWx3 uint8, Kx4 boxes) for the parity check; default:
    the bundled samples. ``compact``: FP32 graphs store their weights as float16 (computed in
    float32; see :func:`samspt.export.fp16.store_weights_fp16`). Raises :class:`samspt.export.verify.VerificationError` when a parity
    gate is missed.
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(f"opset {opset} is not supported: use {MIN_OPSET}..{MAX_OPSET} (17 is "
                          "what TensorRT 10 and ONNX Runtime >= 1.16 all read)")
    if precision not in ("fp32", "fp16", "both"):
        raise ConfigError(f"precision must be fp32, fp16 or both, got {precision!r}")
    precisions = list(PRECISIONS) if precision == "both" else [precision]
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
        for prec in precisions:
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
                graphs[kind][prec] = {"file": path.name, "opset": opset,
                                      "weights_storage": "float16" if compact or prec == "fp16"
                                      else "float32",
                                      "external_data": names[1:],
                                      "inputs": _io_spec(proto.graph.input),
                                      "outputs": _io_spec(proto.graph.output)}
        fp32_protos.clear()

        verification = None
        if verify:
            from samspt.export.verify import verify_folder

            verification = verify_folder(model, tmp, graphs, verify_images, stage=stage)

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
