"""A graph file of a model folder: saving an ONNX graph (its weights beside it past protobuf's
limit) and the GRAPH record the manifest keeps of it (:mod:`samspt.runtime.manifest`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import onnx


def io_spec(values) -> List[Dict[str, Any]]:
    out = []
    for value in values:
        kind = value.type.tensor_type
        shape = [d.dim_param if d.dim_param else d.dim_value for d in kind.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(kind.elem_type).name
        out.append({"name": value.name, "shape": shape, "dtype": dtype})
    return out


def save_graph(proto: onnx.ModelProto, path: Path, external: bool) -> List[str]:
    """Save ``proto``; with ``external`` its weights go to ``<file>.data``. Returns file names."""
    if external:
        onnx.save_model(proto, str(path), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=path.name + ".data",
                        size_threshold=1024)
        return [path.name, path.name + ".data"]
    onnx.save_model(proto, str(path))
    return [path.name]


def graph_record(proto: onnx.ModelProto, file: str, names: List[str], opset: int,
                 storage: str) -> Dict[str, Any]:
    """The manifest's GRAPH record of a graph saved as ``names`` (the file, then its external
    data), its inputs and outputs read from ``proto``."""
    return {"file": file, "opset": opset, "weights_storage": storage,
            "external_data": names[1:], "inputs": io_spec(proto.graph.input),
            "outputs": io_spec(proto.graph.output)}
