"""FP16 versions of exported graphs with the numerically fragile parts kept in FP32.

Kept in FP32 (Casts at their borders): layer norms (``LayerNormalization`` and SAM's
``LayerNorm2d`` scopes), softmax, reductions, powers, square roots, exponentials, and the whole
relation construction (``/relation/`` scope: L2 normalisation, similarity, softmax statistics),
the box clip (``/box_clip`` scopes), and everything computed from the prompts alone (point
coordinates and labels, with weights and constants: the prompt encoder's Fourier features and
label embeddings). Prompt work is tiny, and coordinates up to 1024 px keep only 0.5 px in FP16:
that moves the phases of the positional encoding and the edges of a clipped box.
Everything else computes in FP16. Graph inputs and outputs stay FP32, so callers feed and read
float32 whatever the precision. Every tensor has one type and every precision change is an
explicit ``Cast``: a typed graph TensorRT builds as a strongly typed network.
"""

from __future__ import annotations

import logging
from typing import Dict, Iterable, List, Set, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from samspt.export.graph_deps import computed_from
from samspt.runtime import tensors
from samspt.runtime.errors import SamsptError

log = logging.getLogger(__name__)

FP32_OP_TYPES = frozenset({"LayerNormalization", "Softmax", "ReduceMean", "ReduceSum",
                           "ReduceL2", "Pow", "Sqrt", "Exp"})
FP32_SCOPES = ("/relation/", "/box_clip")  # /box_clip/ and /box_clip_1/: one per pass
# Graph inputs whose values, and everything computed from them alone, stay FP32.
FP32_INPUTS = (tensors.POINT_COORDS, tensors.POINT_LABELS)
# Inputs that ONNX requires to be float32 whatever the data type (index per op type).
FLOAT32_ONLY_INPUTS = {"Resize": {1, 2}, "Upsample": {1}}
FP16_MAX = float(np.finfo(np.float16).max)
FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16


class Fp16Error(SamsptError):
    """A graph cannot be converted to FP16."""


def layer_norm_2d_scopes(module) -> Set[str]:
    """``/<segment>/`` name parts of every SAM ``LayerNorm2d`` in a torch module, as the ONNX
    exporter names their nodes (a Sequential child ``neck.1`` becomes ``/neck.1/``)."""
    from segment_anything.modeling.common import LayerNorm2d

    scopes = set()
    for name, child in module.named_modules():
        if isinstance(child, LayerNorm2d):
            parts = name.split(".")
            segment = ".".join(parts[-2:]) if parts[-1].isdigit() else parts[-1]
            scopes.add(f"/{segment}/")
    return scopes


def keeps_fp32(node: onnx.NodeProto, scopes: Tuple[str, ...]) -> bool:
    return node.op_type in FP32_OP_TYPES or any(scope in node.name for scope in scopes)


def _float_tensors(model: onnx.ModelProto) -> Set[str]:
    """Names of every float32 tensor of the graph (inputs, initializers, inferred values)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    out = {i.name for i in graph.initializer if i.data_type == FLOAT}
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.type.tensor_type.elem_type == FLOAT:
            out.add(value.name)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == FLOAT:
                    out.update(node.output)
    return out


def _to_half(array: np.ndarray, name: str) -> np.ndarray:
    if np.abs(array).max(initial=0) > FP16_MAX:
        log.warning("%s has values beyond FP16's range; they are clipped to +-%g", name, FP16_MAX)
    return np.clip(array, -FP16_MAX, FP16_MAX).astype(np.float16)


def to_fp16(model: onnx.ModelProto, extra_scopes: Iterable[str] = ()) -> onnx.ModelProto:
    """FP16 copy of an FP32 graph: fragile parts in FP32, float32 inputs and outputs."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    if any(node.op_type in ("If", "Loop", "Scan") for node in graph.node):
        raise Fp16Error("graphs with control flow (If/Loop/Scan) are not supported")
    scopes = tuple(FP32_SCOPES) + tuple(extra_scopes)
    floats = _float_tensors(model)
    initializers = {init.name: init for init in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    half: Set[str] = set()  # float tensors that now hold FP16 values
    new_nodes: List[onnx.NodeProto] = []
    casts: Dict[Tuple[str, int], str] = {}
    half_inits: Dict[str, str] = {}

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            casts[key] = f"{name}__to_{'fp16' if to == FLOAT16 else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [casts[key]], to=to,
                                              name=f"{name}/Cast_{'fp16' if to == FLOAT16 else 'fp32'}"))
        return casts[key]

    def half_initializer(name: str) -> str:
        if name not in half_inits:
            array = _to_half(numpy_helper.to_array(initializers[name]), name)
            half_inits[name] = f"{name}__fp16"
            graph.initializer.append(numpy_helper.from_array(array, half_inits[name]))
        return half_inits[name]

    prompt_only = computed_from(graph, FP32_INPUTS)
    fp32_nodes = 0
    for node in graph.node:
        fp32 = keeps_fp32(node, scopes) or any(name in prompt_only for name in node.output)
        fp32_nodes += fp32
        only32 = FLOAT32_ONLY_INPUTS.get(node.op_type, set())
        for index, name in enumerate(node.input):
            if not name or name not in floats:
                continue
            wants_half = not fp32 and index not in only32
            is_half = name in half
            if wants_half and not is_half:
                node.input[index] = half_initializer(name) if name in initializers \
                    else cast(name, FLOAT16)
            elif not wants_half and is_half:
                node.input[index] = cast(name, FLOAT)
        if not fp32:
            _retype_attributes(node)
            for index, name in enumerate(node.output):
                if name in floats or _casts_to_float16(node):
                    if name in graph_outputs:  # keep the graph's output float32
                        node.output[index] = f"{name}__fp16"
                        half.add(node.output[index])
                        new_nodes.append(node)
                        node = None  # appended; the output cast follows it
                        new_nodes.append(helper.make_node("Cast", [f"{name}__fp16"], [name],
                                                          to=FLOAT, name=f"{name}/Cast_out"))
                        break
                    half.add(name)
        if node is not None:
            new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]
    log.info("FP16 graph: %d of %d nodes kept in FP32", fp32_nodes, len(new_nodes))
    return model


def _casts_to_float16(node: onnx.NodeProto) -> bool:
    return node.op_type == "Cast" and any(a.name == "to" and a.i == FLOAT16
                                          for a in node.attribute)


def _retype_attributes(node: onnx.NodeProto) -> None:
    """Float32 typed attributes of a node that now computes in FP16."""
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT:
            attr.i = FLOAT16
        elif attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR and \
                attr.t.data_type == FLOAT:  # Constant, ConstantOfShape
            array = _to_half(numpy_helper.to_array(attr.t), node.name)
            attr.t.CopyFrom(numpy_helper.from_array(array, attr.t.name))
        elif node.op_type == "EyeLike" and attr.name == "dtype" and attr.i == FLOAT:
            attr.i = FLOAT16


def store_weights_fp16(model: onnx.ModelProto, min_elements: int = 64) -> onnx.ModelProto:
    """A copy of an FP32 graph whose float32 weights (initializers of ``min_elements`` or more
    values) that float16 holds exactly are stored as float16, each read through a ``Cast`` back
    to float32: up to half the file, and the graph computes exactly what the FP32 one does (ONNX
    Runtime folds the Casts when it loads the graph). Weights saved in float16 (the bundled
    example model's) are float16 numbers; a weight the export computed from them is often not
    (a convolution with its batch norm folded in) and stays float32: rounding those changed the
    masks of a trained conv model past the FP32 parity gate."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    casts, kept = [], 0
    for init in graph.initializer:
        if init.data_type != FLOAT or int(np.prod(init.dims)) < min_elements:
            continue
        values = numpy_helper.to_array(init)
        if np.abs(values).max() > FP16_MAX:
            continue
        half = values.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), values):
            kept += 1
            continue
        name = init.name
        stored = numpy_helper.from_array(half, f"{name}__fp16")
        init.CopyFrom(stored)
        casts.append(helper.make_node("Cast", [stored.name], [name], to=FLOAT,
                                      name=f"/weights_fp16/{name}"))
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    log.info("stored %d weights as float16 (computed in float32); %d kept float32 (float16 "
             "would round them)", len(casts), kept)
    return out


def restore_weights_fp32(model: onnx.ModelProto) -> onnx.ModelProto:
    """The inverse of :func:`store_weights_fp16`: a copy whose float16-stored weights are float32
    initializers again (their ``/weights_fp16/`` Casts removed), so tools that look for constant
    weights (INT8 quantisation: a product with a constant operand) see them. Exact: float16 to
    float32 is lossless."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {init.name: init for init in graph.initializer}
    kept, restored = [], 0
    for node in graph.node:
        source = inits.get(node.input[0]) if node.op_type == "Cast" and node.input else None
        if source is not None and node.name.startswith("/weights_fp16/"):
            values = numpy_helper.to_array(source).astype(np.float32)
            source.CopyFrom(numpy_helper.from_array(values, node.output[0]))
            restored += 1
            continue
        kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    log.debug("restored %d float16-stored weights to float32", restored)
    return out
