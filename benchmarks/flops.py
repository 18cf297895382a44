"""The physical floor of the image encoder: its arithmetic, counted from the configuration.

Counted as segment-anything's ``ImageEncoderViT`` computes it: patch embedding; per block the
qkv and output projections and the attention (on the window-padded tokens in windowed blocks,
e.g. 64x64 -> 70x70 with 14x14 windows), the decomposed relative-position terms and the MLP;
the neck's 1x1 and 3x3 convolutions. Normalisations, softmax, GELU and additions are left out
(a few percent). One multiply-add (MAC) counts as 2 FLOPs, so ViT-B at 1024x1024 is about
487 GMACs = 0.97 TFLOP. The floor on a device is FLOPs / its peak: no implementation runs the
encoder faster than that.
"""

from __future__ import annotations

import math
from typing import Dict

from samspt.training.modeling.config import ModelConfig

MLP_RATIO = 4


def _block_macs(tokens_side: int, dim: int, window: int) -> int:
    tokens = tokens_side * tokens_side
    if window > 0:
        padded_side = math.ceil(tokens_side / window) * window
        windows, side = (padded_side // window) ** 2, window
    else:
        windows, side = 1, tokens_side
    attn_tokens = windows * side * side  # qkv/proj run on the padded windows
    per_window = side * side
    qkv_proj = attn_tokens * dim * 4 * dim
    scores_and_mix = windows * 2 * per_window * per_window * dim  # QK^T and AV, all heads
    rel_pos = windows * per_window * 2 * side * dim
    mlp = tokens * dim * MLP_RATIO * dim * 2
    return qkv_proj + scores_and_mix + rel_pos + mlp


def encoder_macs(config: ModelConfig) -> int:
    """Multiply-adds of one image through the image encoder of ``config``."""
    side = config.embedding_size
    tokens = side * side
    dim, out = config.encoder_embed_dim, config.prompt_embed_dim
    macs = tokens * dim * 3 * config.patch_size ** 2  # patch embedding
    for index in range(config.encoder_depth):
        window = 0 if index in config.encoder_global_attn_indexes else config.encoder_window_size
        macs += _block_macs(side, dim, window)
    macs += tokens * dim * out + tokens * out * out * 9  # neck: 1x1 then 3x3 convolution
    return macs


def encoder_flops(config: ModelConfig) -> int:
    """FLOPs of one image through the encoder (1 multiply-add = 2 FLOPs)."""
    return 2 * encoder_macs(config)


def floor_ms(config: ModelConfig, peak_tflops: float) -> float:
    """The encoder's physical floor (ms) on a device of ``peak_tflops`` (dense, the precision
    it runs in)."""
    return encoder_flops(config) / (peak_tflops * 1e12) * 1e3


def encoder_figures(config: ModelConfig) -> Dict[str, object]:
    """What a benchmark record keeps about the encoder's arithmetic."""
    return {"gmacs": encoder_macs(config) / 1e9, "gflop": encoder_flops(config) / 1e9,
            "counting": "1 multiply-add = 2 FLOPs; norms, softmax, GELU not counted"}


def graph_macs(path) -> int:
    """Multiply-adds of one input through an ONNX graph (its dynamic axes set to 1), counted
    from its Conv, ConvTranspose, MatMul and Gemm nodes' shapes, for graphs whose shapes ONNX's
    shape inference resolves (the conv family, QDQ and FP16 versions of it), where
    :func:`encoder_macs` knows only the ViT family. ValueError names the first product whose
    shape stays unknown (SAM's ViT export computes its reshape sizes: count it from the
    configuration)."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path), load_external_data=False)
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    graph = shape_inference.infer_shapes(model, strict_mode=False).graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    macs = 0
    for node in graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "MatMul", "Gemm"):
            continue
        out, a, b = (shapes.get(name) for name in (node.output[0], node.input[0], node.input[1]))
        if out is None or a is None or b is None:
            raise ValueError(f"{path}: no static shape for node {node.name!r} ({node.op_type}); "
                             "FLOPs cannot be counted from this graph")
        if node.op_type == "Conv":
            macs += math.prod(out) * math.prod(b[1:])
        elif node.op_type == "ConvTranspose":
            macs += math.prod(a) * math.prod(b[1:])
        elif node.op_type == "MatMul":
            macs += math.prod(out) * a[-1]
        else:
            trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
            macs += math.prod(out) * (a[0] if trans_a else a[-1])
    return macs
