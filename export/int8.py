"""INT8 versions of exported graphs: static QDQ quantisation with ONNX Runtime's own tools
(``onnxruntime.quantization.quantize_static``), calibrated on views of real images.

* Format: QDQ (explicit ``QuantizeLinear``/``DequantizeLinear`` pairs around the quantised ops), the
  form both ONNX Runtime and TensorRT's strongly typed builder read; TensorRT needs no calibrator.
* Types: signed INT8 weights, symmetric, per output channel; signed INT8 activations, symmetric
  (zero point 0: what TensorRT's explicit quantisation accepts), ranges from MinMax calibration
  (the extremes of each tensor's calibration values).
  Biases stay float (TensorRT's parser dequantizes INT8 only, not INT32 biases).
* What is quantised is named explicitly (:data:`INT8_OP_TYPES`): convolutions and the products
  with a weight matrix (``MatMul`` with a constant B, ``Gemm``). Everything else computes in float:
  LayerNorm, Softmax, GELU, the attention score and attention-times-value products (both inputs
  are activations), the relation (``/relation/`` scope), the box clip, and everything computed
  from the prompts alone (see :mod:`samspt.export.fp16`). Outputs of the products stay float
  (``OpTypesToExcludeOutputQuantization``): their bias and residual additions follow in float.
* Calibration data: the views each image's box prompts are answered in, plus the image's
  prompt-free scan views (:mod:`samspt.runtime.views`); the decoder is calibrated on the FP32
  encoder's embeddings of those views with their box prompts.
* CPU variant: beside each INT8 graph written, ``<kind>.int8-cpu.onnx`` (manifest: the int8
  GRAPH's ``variants.cpu``), quantised from the same FP32 graph on the same calibration data with
  unsigned asymmetric activations (``activations="uint8"``; weights as above): ONNX Runtime's x86
  kernels are u8 x s8, and signed activations cost a shift at run time (the example model's
  encoder: INT8/FP32 0.92 signed, about 0.4 unsigned). The Inspector runs it on ONNX Runtime's CPU
  provider; other providers and TensorRT (which rejects UINT8 inside a network) read the signed
  graph, and the TensorRT parser-list check leaves the variant out. The variant's encoder takes
  percentile ranges (the 99.99th percentile of each tensor's values,
  :func:`calibration_for`): a few extreme values stretch a MinMax range over steps coarser than
  the grey levels a defect differs by. Fully quantised, the example model's encoder misses the
  gate either way; with percentile ranges, keeping its first convolution float holds it, where
  MinMax ranges need 7 of its 14 convolutions float (INT8/FP32 about 0.45-0.5 against 0.63 on one
  thread, ``samspt-bench``'s ``encoder_int8_vs_fp32_example``; validation mIoU 0.734 against
  FP32's 0.741). Percentile ranges clip what the calibration views rarely reach, so the signed
  graph keeps MinMax ranges: samspt-build checks its engines on whole images, beyond the
  views' ranges. Decoders are calibrated MinMax: their tensors change shape with the number of
  prompts, which ONNX Runtime's histogram calibrators cannot pool. A variant is kept only where
  the graphs the CPU provider would run pass the same parity gate; export drops it otherwise,
  with a warning (:func:`samspt.export.verify.keep_passing_variants` says why).
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import onnx

from samspt.runtime import tensors
from samspt.runtime.manifest import CPU_VARIANT
from samspt.runtime.errors import SamsptError
from samspt.runtime.samples import VerifyImage
from samspt.runtime.views import View, ViewSettings, plan_views
from samspt.export.fp16 import FP32_INPUTS, FP32_SCOPES
from samspt.export.graph_deps import computed_from, weights_only
from samspt.runtime.preprocess import view_input

log = logging.getLogger(__name__)

INT8_OP_TYPES = ("Conv", "MatMul", "Gemm")
FLOAT_SCOPES = FP32_SCOPES  # the relation and the box clip
# How activation ranges are calibrated: name -> (onnxruntime CalibrationMethod, extra options).
CALIBRATION_PERCENTILE = 99.99
CALIBRATIONS = {"percentile": ("Percentile", {"CalibPercentile": CALIBRATION_PERCENTILE}),
                "minmax": ("MinMax", {})}
DEFAULT_CALIBRATION = "minmax"


def calibration_for(kind: str, variant: Optional[str]) -> str:
    """How the export calibrates graph ``kind`` (encoder, decoder) of ``variant`` (None: the
    signed graph; ``cpu``): percentile ranges for the CPU variant's encoder, MinMax otherwise
    (see the module's notes)."""
    return "percentile" if kind == "encoder" and variant == CPU_VARIANT else "minmax"
# At most this many encoder inputs are calibrated on (each view is one Sx S input).
MAX_CALIBRATION_VIEWS = 64


class Int8Error(SamsptError):
    """A graph cannot be quantised to INT8 (calibration or quantisation failed)."""


def calibration_views(images: Sequence[VerifyImage], input_size: int,
                      settings: Optional[ViewSettings]) -> List[Tuple[np.ndarray, View,
                                                                       np.ndarray, np.ndarray]]:
    """(image, view, coords NxK x2 in the view's input frame, labels) of every distinct view
    of the images' box prompts and of their prompt-free scans, at most
    :data:`MAX_CALIBRATION_VIEWS` (box views first)."""
    out = []
    for _, image, boxes in images:
        for prompts in (boxes, None):
            plan = plan_views(image.shape[:2], input_size, settings, "auto", boxes=prompts)
            groups: Dict[View, List[int]] = {}
            for index, view in enumerate(plan.views):
                groups.setdefault(view, []).append(index)
            for view, index in groups.items():
                out.append((image, view, view.to_input(plan.coords[index]),
                            plan.labels[index]))
    return out[:MAX_CALIBRATION_VIEWS]


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: List[Dict[str, np.ndarray]]) -> None:
        self._feeds = feeds
        self._iter: Iterator[Dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self._feeds)


def encoder_feeds(views, pixel_mean, pixel_std) -> List[Dict[str, np.ndarray]]:
    """One ``image`` feed (1x3xSxS float32) per calibration view."""
    return [{tensors.IMAGE: view_input(view, image, pixel_mean, pixel_std)[None]}
            for image, view, _, _ in views]


def decoder_feeds(views, encoder_feeds_: List[Dict[str, np.ndarray]],
                  fp32_encoder: Path) -> List[Dict[str, np.ndarray]]:
    """One decoder feed per calibration view: the FP32 encoder's embedding of the view and the
    view's prompts (coords, labels float32)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(fp32_encoder), options,
                                   providers=["CPUExecutionProvider"])
    feeds = []
    for (_, _, coords, labels), feed in zip(views, encoder_feeds_):
        embedding = session.run(None, feed)[0]
        feeds.append({tensors.IMAGE_EMBEDDINGS: embedding,
                      tensors.POINT_COORDS: np.ascontiguousarray(coords, np.float32),
                      tensors.POINT_LABELS: np.ascontiguousarray(labels, np.float32)})
    return feeds


def float_nodes(model: onnx.ModelProto) -> List[str]:
    """Names of the nodes of :data:`INT8_OP_TYPES` that stay float: products of two
    activations (attention scores, attention times values, the relation), nodes in
    :data:`FLOAT_SCOPES`, nodes computed from the prompts alone and nodes computed from weights
    alone (SAM 2.1's resized position embedding: a constant the runtimes fold, which ONNX
    Runtime's CPU kernels cannot run quantised per channel)."""
    graph = model.graph
    constants = {i.name for i in graph.initializer}
    constants.update(o for n in graph.node if n.op_type == "Constant" for o in n.output)
    prompt_only = computed_from(graph, FP32_INPUTS)
    fixed = weights_only(graph)
    keep = []
    for node in graph.node:
        if node.op_type not in INT8_OP_TYPES:
            continue
        weighted = len(node.input) > 1 and node.input[1] in constants
        if not weighted or any(scope in node.name for scope in FLOAT_SCOPES) or \
                any(name in prompt_only for name in node.output) or \
                all(name in fixed for name in node.output):
            keep.append(node.name)
    return keep


def quantizable_nodes(model: onnx.ModelProto) -> List[str]:
    """Names of the nodes :func:`quantize_graph` quantises (before any kept float for parity)."""
    keep = set(float_nodes(model))
    return [n.name for n in model.graph.node if n.op_type in INT8_OP_TYPES and n.name not in keep]


def quantize_graph(fp32_path: Path, out_path: Path, feeds: List[Dict[str, np.ndarray]],
                   external_data: bool = False, quant_format: str = "QDQ",
                   activations: str = "int8", per_channel: bool = True,
                   keep_float: Sequence[str] = (),
                   calibration: str = DEFAULT_CALIBRATION) -> Dict[str, Any]:
    """Write the static QDQ INT8 version of the FP32 graph ``fp32_path`` to ``out_path``,
    calibrated on ``feeds``. Returns its description for the manifest.

    The defaults are what export writes (what TensorRT reads); ``activations`` ``uint8``
    (asymmetric; TensorRT rejects UINT8 inside a network) is the export's CPU variant. The others
    exist to measure what ONNX Runtime's CPU kernels prefer (``samspt-bench``): ``quant_format``
    ``QOperator`` (QLinearConv/QLinearMatMul nodes: ONNX Runtime only), ``per_channel``
    False. ``keep_float``: more nodes to leave float (the export's parity fallback,
    :mod:`samspt.export.int8_fallback`). ``calibration``: a key of :data:`CALIBRATIONS`."""
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    if not feeds:
        raise Int8Error("no calibration data: give --calib-data a folder of images, or keep the "
                        "bundled samples")
    if quant_format not in ("QDQ", "QOperator") or activations not in ("int8", "uint8"):
        raise Int8Error(f"unknown INT8 variant: format {quant_format!r} (QDQ, QOperator), "
                        f"activations {activations!r} (int8, uint8)")
    if calibration not in CALIBRATIONS:
        raise Int8Error(f"unknown calibration {calibration!r}: use one of "
                        f"{', '.join(CALIBRATIONS)}")
    signed = activations == "int8"
    model = onnx.load(str(fp32_path))
    for_parity = list(keep_float)
    keep_float = float_nodes(model) + for_parity
    quantizable = [n.name for n in model.graph.node if n.op_type in INT8_OP_TYPES]

    def run(method: str, calib_options: Dict[str, Any]) -> None:
        with _quantiser_quiet():
            quantize_static(
                str(fp32_path), str(out_path), _Reader(feeds),
                quant_format=getattr(QuantFormat, quant_format),
                op_types_to_quantize=list(INT8_OP_TYPES), per_channel=per_channel,
                activation_type=QuantType.QInt8 if signed else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, method), nodes_to_exclude=keep_float,
                use_external_data_format=external_data,
                extra_options={"ActivationSymmetric": signed, "WeightSymmetric": True,
                               "MatMulConstBOnly": True, "QuantizeBias": False,
                               "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"],
                               **calib_options},
                calibration_providers=["CPUExecutionProvider"])

    method, calib_options = CALIBRATIONS[calibration]
    fallback = None
    try:
        try:
            run(method, calib_options)
        except ValueError as exc:
            # onnxruntime's histogram calibration cannot bin a tensor whose values span almost
            # nothing (a dead channel of untrained weights): its ranges come from MinMax then.
            if method == "MinMax" or "bins" not in str(exc):
                raise
            fallback = f"{method} calibration failed ({exc}); MinMax ranges instead"
            log.warning("%s: %s", fp32_path.name, fallback)
            method, calib_options = CALIBRATIONS["minmax"]
            run(method, calib_options)
    except Exception as exc:  # noqa: BLE001 - the quantiser raises plain exceptions
        raise Int8Error(f"quantising {fp32_path.name} failed: {exc}") from None
    written = onnx.load(str(out_path), load_external_data=False)
    quantized = (quantized_nodes(written) if quant_format == "QDQ" else
                 [n.name for n in written.graph.node if n.op_type.startswith("QLinear")])
    log.info("%s: %d of %d Conv/MatMul/Gemm nodes quantised to INT8", out_path.name,
             len(quantized), len(quantizable))
    return {"quantized": True, "format": quant_format, "op_types": list(INT8_OP_TYPES),
            "weights": f"int8, symmetric, per {'channel' if per_channel else 'tensor'}",
            "activations": "int8, symmetric" if signed else "uint8, asymmetric",
            "calibration": {"method": method, "inputs": len(feeds),
                            **({"percentile": CALIBRATION_PERCENTILE}
                               if method == "Percentile" else {}),
                            **({"fallback": fallback} if fallback else {})},
            "quantized_nodes": len(quantized),
            "float_nodes": len(quantizable) - len(quantized),
            "kept_float_for_parity": for_parity}


class _ToDebug(logging.Handler):
    """Passes the root logger's records to this module's logger at DEBUG."""

    def emit(self, record: logging.LogRecord) -> None:
        log.debug("onnxruntime.quantization: %s", record.getMessage())


@contextlib.contextmanager
def _quantiser_quiet() -> Iterator[None]:
    """:func:`_root_logger_kept`, and the quantiser's histogram calibrators' progress lines
    (printed to stdout) sent to this module's logger at DEBUG: library code does not print."""
    out = io.StringIO()
    try:
        with _root_logger_kept(), contextlib.redirect_stdout(out):
            yield
    finally:
        for line in out.getvalue().splitlines():
            log.debug("onnxruntime.quantization: %s", line)


@contextlib.contextmanager
def _root_logger_kept() -> Iterator[None]:
    """Keep the root logger as it is across ONNX Runtime's quantiser: it logs through
    ``logging.warning``, which installs a stderr handler on an unconfigured root logger (every
    later record of the process, samspt's included, then prints twice). Its records go to this
    module's logger at DEBUG instead."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    forward = _ToDebug()
    root.addHandler(forward)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def quantized_nodes(model: onnx.ModelProto) -> List[str]:
    """Names of the nodes of a QDQ graph that take INT8 weights (a DequantizeLinear of an
    initializer among their inputs)."""
    inits = {i.name for i in model.graph.initializer}
    weights = {n.output[0] for n in model.graph.node
               if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    return [n.name for n in model.graph.node
            if n.op_type in INT8_OP_TYPES and any(i in weights for i in n.input)]
