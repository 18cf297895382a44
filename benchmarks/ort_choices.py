"""ONNX Runtime's session and graph choices for the encoder, measured side by side (interleaved)
rather than assumed: threads, graph optimisation level, ``onnxruntime.transformers`` fusions
(where a model type applies), and the INT8 variants ONNX Runtime offers.

For each encoder (the run's model, and the shipped example model: the conv family on views),
one view per call:

* ``fp32`` sessions: ``all`` (ORT_ENABLE_ALL, the runtime's choice), ``extended``, ``basic``,
  one intra-op thread (``threads1``), threads that sleep between ops instead of spinning
  (``sleep``: the runtime's choice, :class:`samspt.runtime.ort_backend.OrtGraphs`; the other
  sessions spin, ONNX Runtime's default), and for the ViT family the graph rewritten by
  ``onnxruntime.transformers.optimizer`` (model type ``vit``; the fused op counts are recorded);
* INT8 variants, each quantised here from the FP32 graph with the export's calibration (the
  bundled samples' views) and nodes (:mod:`samspt.export.int8`): ``qdq_s8s8_channel`` (what
  export writes and TensorRT reads), ``qdq_u8s8_channel`` (unsigned activations),
  ``qdq_s8s8_tensor`` (per-tensor weights), ``qop_u8s8_channel`` (QOperator: QLinearConv /
  QLinearMatMul, ONNX Runtime only).

These variants quantise every convolution and product the export would (no parity gate, MinMax
ranges). For the example model the export itself also runs (``samspt-export --precision
fp32,int8`` into a temporary folder, with its parity gate: its search for nodes to keep float
and the CPU variant's percentile ranges, about a minute; it needs torch), and its two INT8
encoders are timed beside the rest: ``export_int8_cpu`` (what the Inspector runs on ONNX
Runtime's CPU provider) and ``export_int8`` (the signed graph TensorRT reads).

Each form's median and its ratio to the FP32 ``all`` session go to the record
(``ort_choices``); ``encoder_int8_vs_fp32_example`` is ``export_int8_cpu`` on the example model,
``encoder_int8_signed_vs_fp32_example`` ``export_int8`` (without torch: ``qdq_u8s8_channel`` and
``qdq_s8s8_channel``, the fully quantised forms, as the record's notes say).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from samspt.benchmarks import stats
from samspt.runtime import tensors
from samspt.runtime.manifest import CPU_VARIANT, Manifest, read_manifest

log = logging.getLogger(__name__)

INT8_VARIANTS = {"qdq_s8s8_channel": ("QDQ", "int8", True),
                 "qdq_u8s8_channel": ("QDQ", "uint8", True),
                 "qdq_s8s8_tensor": ("QDQ", "int8", False),
                 "qop_u8s8_channel": ("QOperator", "uint8", True)}
# The export's two INT8 forms: the signed graph (TensorRT's) and the CPU variant.
SIGNED_FORM, CPU_VARIANT_FORM = "qdq_s8s8_channel", "qdq_u8s8_channel"
CALIBRATION_IMAGES = 3


def _session(path: Path, level: str = "all", threads: int = 0, spin: bool = True):
    import onnxruntime as ort

    from samspt.runtime.ort_backend import set_spinning

    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[level]
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    set_spinning(options, spin)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _transformer_fusions(path: Path, out: Path, manifest: Manifest) -> Dict[str, Any]:
    """The ViT encoder rewritten by ``onnxruntime.transformers.optimizer`` (model type vit)."""
    from onnxruntime.transformers.optimizer import optimize_model

    model = manifest.model
    optimized = optimize_model(str(path), model_type="vit",
                               num_heads=int(model["encoder_num_heads"]),
                               hidden_size=int(model["encoder_embed_dim"]), opt_level=0)
    optimized.save_model_to_file(str(out))
    return {name: count for name, count in optimized.get_fused_operator_statistics().items()
            if count}


def encoder_choices(folder: Path, label: str, reps: int, warmup: int, threads: int = 0,
                    tick: Optional[Callable[[], None]] = None,
                    exported: Optional[Dict[str, Path]] = None) -> Dict[str, Any]:
    """Medians (ms, one view per call) of the FP32 session choices and INT8 variants of the
    encoder in the model folder ``folder``, timed interleaved; ``exported``: more encoder
    graphs to time beside them, by name; see the module doc."""
    from samspt.export.int8 import calibration_views, encoder_feeds, quantize_graph
    from samspt.runtime.samples import bundled_verify_images

    manifest = read_manifest(folder, verify_files=False)
    fp32 = folder / manifest.graph("encoder", "fp32")["file"]
    size = manifest.input.image_size
    mean, std = manifest.input.pixel_mean, manifest.input.pixel_std
    views = calibration_views(bundled_verify_images()[:CALIBRATION_IMAGES], size,
                              manifest.views)
    feeds = encoder_feeds(views, mean, std)
    image = feeds[0][tensors.IMAGE]
    sessions, notes = {}, {}
    with tempfile.TemporaryDirectory(prefix="samspt-ort-choices-") as tmp:
        if manifest.graph("encoder", "fp32").get("weights_storage") == "float16":
            # a compact graph (the shipped example): weights as float32 initializers again, so
            # the quantiser sees products with constant weights
            import onnx

            from samspt.export.fp16 import restore_weights_fp32

            restored = Path(tmp) / "encoder.fp32.onnx"
            onnx.save(restore_weights_fp32(onnx.load(str(fp32))), str(restored))
            fp32 = restored
            notes["weights"] = "stored float16 in the folder; restored to float32 initializers"
        for level in ("all", "extended", "basic"):
            sessions[f"fp32_{level}"] = _session(fp32, level, threads)
        sessions["fp32_threads1"] = _session(fp32, "all", 1)
        sessions["fp32_sleep"] = _session(fp32, "all", threads, spin=False)
        if manifest.model.get("encoder", "vit") == "vit" and \
                int(manifest.model.get("encoder_embed_dim", 0)) > 0:   # SAM's ViT only
            fused = Path(tmp) / "encoder.fused.onnx"
            try:
                notes["transformers_fusions"] = _transformer_fusions(fp32, fused, manifest)
                sessions["fp32_transformers_optimizer"] = _session(fused, "all", threads)
            except Exception as exc:  # noqa: BLE001 - the optimizer raises what it meets
                notes["transformers_fusions"] = f"failed: {exc}"
        else:
            notes["transformers_fusions"] = ("not applicable: no transformer in a conv "
                                             "encoder; ORT's own Conv+Relu/Add fusions run "
                                             "at level all")
        for name, (fmt, activations, per_channel) in INT8_VARIANTS.items():
            path = Path(tmp) / f"encoder.{name}.onnx"
            try:
                info = quantize_graph(fp32, path, feeds, quant_format=fmt,
                                      activations=activations, per_channel=per_channel)
                sessions[name] = _session(path, "all", threads)
            except Exception as exc:  # noqa: BLE001 - a variant ORT cannot make or run
                notes[name] = f"failed: {exc}"
                log.warning("%s encoder: INT8 variant %s failed: %s", label, name, exc)
                continue
            notes[name] = {"quantized_nodes": info["quantized_nodes"],
                           "float_nodes": info["float_nodes"]}
        for name, path in (exported or {}).items():
            sessions[name] = _session(path, "all", threads)
            notes[name] = f"the export's {path.name}"
        calls = {name: (lambda s=session: s.run(None, {tensors.IMAGE: image}))
                 for name, session in sessions.items()}
        log.info("%s encoder: timing %d ONNX Runtime choices interleaved", label, len(calls))
        medians = {name: stats.summarize(values)["median_ms"]
                   for name, values in stats.interleaved(calls, reps, warmup, tick).items()}
    base = medians["fp32_all"]
    return {"encoder": fp32.name, "input": list(image.shape),
            "calibration_views": len(feeds), "medians_ms": medians,
            "vs_fp32_all": {name: stats.ratio(ms, base) for name, ms in medians.items()},
            "notes": notes}


def measure_choices(run_folder: Path, reps: int, warmup: int, threads: int = 0,
                    tick: Optional[Callable[[], None]] = None) -> Dict[str, Any]:
    """:func:`encoder_choices` for the run's model and the shipped example model (with the
    export's own INT8 encoders, where torch is installed)."""
    from samspt.runtime.samples import EXAMPLE_MODEL_DIR

    out = {"run_model": encoder_choices(run_folder, "run model", reps, warmup, threads, tick)}
    with tempfile.TemporaryDirectory(prefix="samspt-export-int8-") as tmp:
        exported, note = _export_example_int8(Path(tmp) / "example")
        out["example_model"] = encoder_choices(EXAMPLE_MODEL_DIR, "example model", reps,
                                               warmup, threads, tick, exported)
    out["example_model"]["notes"]["export"] = note
    return out


def _export_example_int8(folder: Path):
    """({export_int8, export_int8_cpu: encoder graph}, a note) of the example model exported
    FP32 + INT8 with its parity gate into ``folder``; ({}, why) where that cannot run."""
    try:
        from samspt.export.model_source import load_export_model
        from samspt.export.onnx_export import export_model
    except ImportError as exc:      # the export needs torch (samspt[train])
        return {}, f"not run ({exc}): INT8 ratios from the fully quantised forms"
    model, name, sources = load_export_model()
    log.info("example model: exporting FP32 + INT8 with the parity gate (about a minute)")
    result = export_model(model, folder, name, precision="fp32,int8", sources=sources)
    entry = result.manifest.graph("encoder", "int8")
    graphs = {"export_int8": folder / entry["file"]}
    kept = {"export_int8": entry["quantization"].get("kept_float_for_parity", [])}
    variant = entry.get("variants", {}).get(CPU_VARIANT)
    if variant is not None:
        graphs["export_int8_cpu"] = folder / variant["file"]
        kept["export_int8_cpu"] = variant["quantization"].get("kept_float_for_parity", [])
    return graphs, {"kept_float_for_parity": kept,
                    "parity": {k: {"mean_iou": v["mean_iou"], "min_iou": v["min_iou"]}
                               for k, v in (result.manifest.verification or {}).items()
                               if k.startswith("int8")}}


def choice_ratios(choices: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """``encoder_int8_vs_fp32_example``: the export's INT8 CPU variant / FP32, the example
    model; ``encoder_int8_signed_vs_fp32_example``: its signed INT8 graph / FP32 (the fully
    quantised forms where the export could not run)."""
    ratios = choices["example_model"]["vs_fp32_all"]
    return {"encoder_int8_vs_fp32_example": ratios.get("export_int8_cpu",
                                                       ratios.get(CPU_VARIANT_FORM)),
            "encoder_int8_signed_vs_fp32_example": ratios.get("export_int8",
                                                              ratios.get(SIGNED_FORM))}
