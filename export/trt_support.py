"""TensorRT on paper: exported graphs checked against the ONNX-TensorRT parser's operator support
list, where TensorRT itself cannot run.

The lists are data (``export/trt_ops/tensorrt_<version>.json``: each op's support, the data
types it accepts and the documented restrictions, with the source URL and version they were read
from): 10.3 (JetPack 6) and the newest 10.x found. :func:`check_graph` reports, node by node:

* op types the parser does not support (or lists not at all), nodes outside the default ONNX
  domain (the parser would look for a plugin), and an opset outside the list's range;
* the data type of each node's typed inputs (ONNX's type ``T``, not indices, shapes or axes)
  against the op's list; UINT8 anywhere but a graph input or output (the lists' note);
* the documented restrictions that apply to the ops our graphs use (:data:`RULES`): zero points
  of Q/DQ, axes that must be initializers, pooling rank and dilations, Resize modes, single
  outputs of LayerNormalization and MaxPool, ScatterND's reduction, Constant's attributes.

An op whose restriction text has no rule here is reported too (``unchecked restriction``), so a
new op in a graph cannot pass without someone reading what the parser says about it.

``samspt-export`` checks every graph it writes against every kept list, and ``samspt-build``
(or ``--print-trtexec``) the graphs it builds from against the list that stands for the target
TensorRT version (:func:`kept_version_for`); both log a warning naming each rejected node and go
on, since TensorRT's own parser has the last word.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import onnx
from onnx import TensorProto, numpy_helper

TRT_OPS_DIR = Path(__file__).resolve().parent / "trt_ops"
#: TensorRT versions whose parser lists are kept: JetPack 6's, and the newest 10.x found.
TRT_VERSIONS = ("10.3", "10.15")

_TYPE_NAMES = {TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16",
               TensorProto.BFLOAT16: "BF16", TensorProto.INT32: "INT32",
               TensorProto.INT64: "INT64", TensorProto.INT8: "INT8", TensorProto.UINT8: "UINT8",
               TensorProto.BOOL: "BOOL", TensorProto.DOUBLE: "DOUBLE",
               TensorProto.FLOAT8E4M3FN: "FP8", TensorProto.INT4: "INT4"}

# Which inputs carry an op's type T (ONNX's operator specs): the others are indices, shapes, axes
# or parameters of their own types. Ops not named here: every input.
_TYPED_INPUTS: Dict[str, Sequence[int]] = {
    "Resize": (0,), "Gather": (0,), "GatherElements": (0,), "GatherND": (0,), "Reshape": (0,),
    "Expand": (0,), "Tile": (0,), "Slice": (0,), "Squeeze": (0,), "Unsqueeze": (0,),
    "Pad": (0,), "ScatterND": (0, 2), "ScatterElements": (0, 2), "Where": (1, 2),
    "TopK": (0,), "CumSum": (0,), "OneHot": (2,), "QuantizeLinear": (0,),
    "DequantizeLinear": (0,), "ConstantOfShape": (), "Constant": (), "Shape": (0,),
    "ReduceMean": (0,), "ReduceSum": (0,), "ReduceMax": (0,), "ReduceMin": (0,),
    "ReduceL2": (0,), "ReduceL1": (0,), "ReduceProd": (0,), "ReduceSumSquare": (0,),
    "ReduceLogSum": (0,), "ReduceLogSumExp": (0,), "LayerNormalization": (0, 1, 2),
    "Split": (0,), "Dropout": (0,), "Clip": (0, 1, 2), "Range": (0, 1, 2)}
# Ops whose output type is their value's type (checked against the list as well).
_TYPED_OUTPUTS = {"Cast": (0,), "Constant": (0,), "ConstantOfShape": (0,)}


@dataclass(frozen=True)
class Rejection:
    """One thing the parser's list rejects: the node (name and op type) and why."""

    node: str
    op_type: str
    reason: str

    def __str__(self) -> str:
        return f"node {self.node!r} ({self.op_type}): {self.reason}"


@lru_cache(maxsize=None)
def support_list(version: str) -> Dict[str, object]:
    """The parser's list for a TensorRT version of :data:`TRT_VERSIONS` (the JSON's content)."""
    path = TRT_OPS_DIR / f"tensorrt_{version}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX-TensorRT operator list for TensorRT {version} "
                                f"({path}); kept: {', '.join(TRT_VERSIONS)}")
    return json.loads(path.read_text())


class _Graph:
    """Types, constants and consumers of one model's tensors."""

    def __init__(self, model: onnx.ModelProto) -> None:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        graph = inferred.graph
        self.types: Dict[str, int] = {}
        for value in list(graph.input) + list(graph.output) + list(graph.value_info):
            if value.type.HasField("tensor_type"):
                self.types[value.name] = value.type.tensor_type.elem_type
        self.constants = {init.name: init for init in graph.initializer}
        for init in graph.initializer:
            self.types[init.name] = init.data_type
        for node in graph.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        self.constants[node.output[0]] = attr.t
                        self.types[node.output[0]] = attr.t.data_type
        self.io = {v.name for v in list(graph.input) + list(graph.output)}
        self.used: Set[str] = {name for node in graph.node for name in node.input}
        self.used |= {v.name for v in graph.output}
        self.nodes = list(graph.node)

    def is_constant(self, name: str) -> bool:
        return name in self.constants

    def values(self, name: str):
        return numpy_helper.to_array(self.constants[name])


def _attr(node: onnx.NodeProto, name: str, default=None):
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


Rule = Callable[[onnx.NodeProto, _Graph, Dict[str, object]], Optional[str]]


def _zero_point(index: int, what: str) -> Rule:
    def rule(node, graph, entry):
        if len(node.input) <= index or not node.input[index]:
            return None
        name = node.input[index]
        if not graph.is_constant(name):
            return f"{what} must be a constant zero; it is computed"
        if graph.values(name).any():
            return f"{what} must be zero (TensorRT quantizes symmetrically)"
        return None
    return rule


def _constant_input(index: int, what: str) -> Rule:
    def rule(node, graph, entry):
        if len(node.input) > index and node.input[index] and \
                not graph.is_constant(node.input[index]):
            return f"{what} must be an initializer (a constant); it is computed"
        return None
    return rule


def _pooling(node, graph, entry):
    kernel = _attr(node, "kernel_shape", [])
    if len(kernel) not in (2, 3):
        return f"2D or 3D pooling only; kernel_shape is {list(kernel)}"
    dilations = _attr(node, "dilations", [])
    if dilations and any(d != 1 for d in dilations):
        return f"dilations must be empty or all ones; they are {list(dilations)}"
    if len(node.output) > 1 and node.output[1] and node.output[1] in graph.used:
        return "the Indices output is unsupported, and is used"
    return None


def _first_output_only(node, graph, entry):
    extra = [name for name in node.output[1:] if name and name in graph.used]
    return f"only the first output is supported; {extra} are used" if extra else None


def _resize(node, graph, entry):
    problems = []
    transform = _text(_attr(node, "coordinate_transformation_mode", b"half_pixel"))
    if transform not in ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn",
                         "asymmetric", "align_corners"):
        problems.append(f"coordinate_transformation_mode {transform!r}")
    mode = _text(_attr(node, "mode", b"nearest"))
    if mode not in ("nearest", "linear"):
        problems.append(f"mode {mode!r}")
    nearest = _text(_attr(node, "nearest_mode", b"round_prefer_floor"))
    if mode == "nearest" and nearest not in ("floor", "ceil", "round_prefer_floor",
                                             "round_prefer_ceil"):
        problems.append(f"nearest_mode {nearest!r}")
    if _attr(node, "antialias", 0):
        problems.append("antialias")
    if _text(_attr(node, "keep_aspect_ratio_policy", b"stretch")) != "stretch":
        problems.append("keep_aspect_ratio_policy other than stretch")
    return f"unsupported {', '.join(problems)}" if problems else None


def _scatter_nd(node, graph, entry):
    reduction = _text(_attr(node, "reduction", b"none"))
    return None if reduction == "none" else f"reduction {reduction!r} is not supported"


def _constant(node, graph, entry):
    bad = [a.name for a in node.attribute if a.name in ("sparse_value", "value_string",
                                                        "value_strings")]
    return f"attributes {bad} are unsupported" if bad else None


_REDUCE = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
           "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare")
#: The documented restrictions checked, per op (only where the list states one for the version).
RULES: Dict[str, Rule] = {
    "QuantizeLinear": _zero_point(2, "y_zero_point"),
    "DequantizeLinear": _zero_point(2, "x_zero_point"),
    "Slice": _constant_input(3, "axes"),
    "Pad": _constant_input(3, "axes"),
    "Squeeze": _constant_input(1, "axes"),
    "Unsqueeze": _constant_input(1, "axes"),
    "CumSum": _constant_input(1, "axis"),
    "TopK": _constant_input(1, "K"),
    **{op: _constant_input(1, "axes") for op in _REDUCE},
    "MaxPool": _pooling,
    "AveragePool": _pooling,
    "LayerNormalization": _first_output_only,
    "Resize": _resize,
    "ScatterND": _scatter_nd,
    "Constant": _constant,
}


def check_graph(model: onnx.ModelProto, version: str) -> List[Rejection]:
    """What TensorRT ``version``'s ONNX parser list rejects in ``model``, node by node (empty:
    nothing). See the module doc for what is checked."""
    data = support_list(version)
    ops: Dict[str, Dict[str, object]] = data["ops"]  # type: ignore[assignment]
    low, high = data["opsets"]  # type: ignore[misc]
    graph = _Graph(model)
    out: List[Rejection] = []
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and not low <= opset.version <= high:
            out.append(Rejection("(model)", "opset", f"opset {opset.version} is outside "
                                 f"TensorRT {version}'s {low}..{high}"))
    for index, node in enumerate(graph.nodes):
        name = node.name or f"#{index}"
        entry = ops.get(node.op_type)
        if node.domain not in ("", "ai.onnx"):
            out.append(Rejection(name, node.op_type, f"domain {node.domain!r} is not ONNX's: "
                                 "TensorRT's parser would need a plugin"))
            continue
        if entry is None or not entry["supported"]:
            state = "not in" if entry is None else "unsupported in"
            out.append(Rejection(name, node.op_type, f"{state} TensorRT {version}'s ONNX "
                                 f"parser list ({data['source']})"))
            continue
        allowed = set(entry["types"])  # type: ignore[arg-type]
        inputs = _TYPED_INPUTS.get(node.op_type, range(len(node.input)))
        tensors = [node.input[i] for i in inputs if i < len(node.input) and node.input[i]]
        tensors += [node.output[i] for i in _TYPED_OUTPUTS.get(node.op_type, ())]
        for tensor in tensors:
            elem = graph.types.get(tensor)
            if elem is None:
                continue   # untyped after inference: nothing to say
            type_name = _TYPE_NAMES.get(elem, TensorProto.DataType.Name(elem))
            if type_name not in allowed:
                out.append(Rejection(name, node.op_type, f"input/output {tensor!r} is "
                                     f"{type_name}; TensorRT {version} accepts "
                                     f"{', '.join(sorted(allowed))}"))
        for tensor in node.output:
            if graph.types.get(tensor) == TensorProto.UINT8 and tensor not in graph.io:
                out.append(Rejection(name, node.op_type, f"output {tensor!r} is UINT8 inside "
                                     "the network: TensorRT takes UINT8 only as a network "
                                     "input or output (quantize to signed INT8)"))
        if entry.get("restrictions"):
            rule = RULES.get(node.op_type)
            reason = (f"unchecked restriction: {entry['restrictions']!r} (add a rule to "
                      "samspt.export.trt_support.RULES)") if rule is None else \
                rule(node, graph, entry)
            if reason:
                out.append(Rejection(name, node.op_type, reason))
    return out


def kept_version_for(version: str) -> str:
    """The kept list that stands for TensorRT ``version`` ("10.8.0.43"): the newest kept list
    not newer than it (10.3 for JetPack 6's 10.3), else the nearest newer one."""
    def key(text: str) -> Tuple[int, ...]:
        return tuple(int(p) for p in text.split(".")[:2] if p.isdigit())

    target = key(version)
    older = [v for v in TRT_VERSIONS if key(v) <= target]
    return max(older, key=key) if older else min(TRT_VERSIONS, key=key)


def check_files(paths: Sequence[Path], versions: Sequence[str] = TRT_VERSIONS
                ) -> Dict[str, List[str]]:
    """{version: ["file: rejection", ...]} for ONNX files checked against each kept list (an
    empty list: the parser's list accepts every node). External weights are not read: types and
    the small constants the rules look at stay in the graph file."""
    report: Dict[str, List[str]] = {version: [] for version in versions}
    for path in paths:
        model = onnx.load(str(path), load_external_data=False)
        for version in versions:
            report[version] += [f"{path.name}: {r}" for r in check_graph(model, version)]
    return report


def log_check(report: Dict[str, List[str]], logger: logging.Logger, shown: int = 5) -> bool:
    """Log a :func:`check_files` report (a warning naming nodes where a list rejects some);
    True when every list accepts every node."""
    clean = True
    for version, rejections in report.items():
        if not rejections:
            logger.info("TensorRT %s's ONNX parser list accepts every node", version)
            continue
        clean = False
        more = f" (and {len(rejections) - shown} more)" if len(rejections) > shown else ""
        logger.warning("TensorRT %s's ONNX parser list rejects %d node(s)%s; TensorRT may refuse "
                       "these graphs:\n  %s", version, len(rejections), more,
                       "\n  ".join(rejections[:shown]))
    return clean
