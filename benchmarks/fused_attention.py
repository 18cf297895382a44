"""SAM 2's Hiera encoder graph with its attention fused for ONNX Runtime's CPU kernels, to time
beside the exported graph (:mod:`samspt.benchmarks.family_encoders`). A measurement, not an
export: the folder's graphs stay what TensorRT and the operator check read.

Two steps, both computing what the exported graph computes:

* ``onnxruntime.transformers.optimizer`` with model type ``sam2`` (ONNX Runtime's own fusion for
  SAM 2's image encoder) puts each attention into ``com.microsoft.MultiHeadAttention``; it hands
  the operator its key and value as (batch, heads, sequence, head size), a layout whose CPU
  kernel materialises the attention matrix;
* each such key and value is taken instead before its transpose, as (batch, sequence, hidden):
  the layout in which ONNX Runtime's CPU kernel runs its flash attention (tiles of the matrix,
  never the whole). Written by hand: the optimizer has no option for it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict

import numpy as np

log = logging.getLogger(__name__)

MHA = "MultiHeadAttention"
TO_HEADS = [0, 2, 1, 3]          # (B, S, N, H) -> (B, N, S, H): the transpose the fusion leaves
BSD_SHAPE = "samspt_bsd_shape"   # the Reshape target (0, 0, -1): keep B and S, merge N and H


def fuse_attention(src: Path, out: Path) -> Dict[str, int]:
    """Write ``src`` (an exported Hiera encoder graph) to ``out`` with its attentions fused
    (see the module). Returns ``{"fused": attentions fused, "flash_layout": those whose key
    and value now take the flash layout}``; zero and zero where the fusion finds no attention
    (``out`` then holds the graph as the optimizer left it)."""
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(src), model_type="sam2", num_heads=0, hidden_size=0,
                               opt_level=0, use_gpu=False)
    model = optimized.model
    flash = _flash_layout(model)
    onnx.save(model, str(out))
    fused = sum(1 for node in model.graph.node if node.op_type == MHA)
    log.info("%s: %d attentions fused, %d in the flash layout", out.name, fused, flash)
    return {"fused": fused, "flash_layout": flash}


def _flash_layout(model) -> int:
    """Point every MultiHeadAttention's key and value at the tensor before its (B, S, N, H) ->
    (B, N, S, H) transpose, reshaped to (B, S, N*H); drop transposes nothing reads any more.
    Returns how many attentions changed (both inputs, or neither)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    producer = {name: node for node in graph.node for name in node.output}
    changed, reshapes = 0, []
    for node in graph.node:
        if node.op_type != MHA or len(node.input) < 3:
            continue
        sources = [producer.get(node.input[i]) for i in (1, 2)]
        if not all(s is not None and s.op_type == "Transpose" and
                   list(helper.get_attribute_value(s.attribute[0])) == TO_HEADS
                   for s in sources):
            continue
        for index, source in zip((1, 2), sources):
            name = f"{node.input[index]}_bsd"
            reshapes.append((node, helper.make_node("Reshape", [source.input[0], BSD_SHAPE],
                                                    [name], name=name)))
            node.input[index] = name
        changed += 1
    if not changed:
        return 0
    graph.initializer.append(numpy_helper.from_array(np.array([0, 0, -1], np.int64), BSD_SHAPE))
    nodes = list(graph.node)
    for consumer, reshape in reshapes:
        nodes.insert(nodes.index(consumer), reshape)
    read = {name for node in nodes for name in node.input} | {o.name for o in graph.output}
    nodes = [n for n in nodes
             if n.op_type != "Transpose" or any(name in read for name in n.output)]
    del graph.node[:]
    graph.node.extend(nodes)
    return changed
