"""High-resolution features in the one ``image_embeddings`` tensor (SAM 2's decoder skips).

With ``ModelConfig.high_res_features`` the image encoder's output carries, after the C embedding
channels, the trunk's features at strides patch/2 (C/4 channels) and patch/4 (C/8 channels),
each folded onto the token grid by space-to-depth (factors 2 and 4): a Bx4Cxhxw tensor. Keeping
one tensor keeps the encoder/decoder contract (one output, one decoder input, one device buffer
between TensorRT engines, one embedding cache entry) unchanged; the decoder unfolds them with
depth-to-space and adds them to its two upscaling stages.

The fold is ONNX's own order (DCR: channel ``(dy * r + dx) * C + c``), exported as one
``SpaceToDepth`` / ``DepthToSpace`` node. ``pixel_unshuffle``'s order (CRD) has no ONNX
SpaceToDepth form and exports as Reshape-Transpose-Reshape, whose 6-D transpose ONNX Runtime
runs about 7x slower than SpaceToDepth on this tensor: 0.5 ms of the example encoder's 7.7 ms
(FP32) and of its 3.7 ms (INT8) on one CPU thread. The order is a layout of activations only: no
weight depends on it.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

HighRes = Tuple[torch.Tensor, torch.Tensor]


def _fold(x: torch.Tensor, r: int) -> torch.Tensor:
    """BxCxHxW -> Bx(r*r*C)x(H/r)x(W/r), DCR order (ONNX SpaceToDepth)."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // r, r, w // r, r).permute(0, 3, 5, 1, 2, 4) \
        .reshape(b, r * r * c, h // r, w // r)


def _unfold(x: torch.Tensor, r: int) -> torch.Tensor:
    """The inverse of :func:`_fold` (ONNX DepthToSpace, mode DCR)."""
    b, c, h, w = x.shape
    return x.reshape(b, r, r, c // (r * r), h, w).permute(0, 3, 4, 1, 5, 2) \
        .reshape(b, c // (r * r), h * r, w * r)


class _Fold(torch.autograd.Function):
    """:func:`_fold` (``inverse`` False: ONNX SpaceToDepth) or :func:`_unfold` (True:
    DepthToSpace, DCR), exported as that one node; each one's gradient is the other."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, r: int,  # type: ignore[override]
                inverse: bool) -> torch.Tensor:
        ctx.r, ctx.inverse = r, inverse
        return _unfold(x, r) if inverse else _fold(x, r)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return (_fold(grad, ctx.r) if ctx.inverse else _unfold(grad, ctx.r)), None, None

    @staticmethod
    def symbolic(g, x, r: int, inverse: bool):
        if inverse:
            return g.op("DepthToSpace", x, blocksize_i=r, mode_s="DCR")
        return g.op("SpaceToDepth", x, blocksize_i=r)


def pack(embedding: torch.Tensor, feat_s1: torch.Tensor, feat_s0: torch.Tensor) -> torch.Tensor:
    """BxCxhxw embedding, BxC/4x2hx2w and BxC/8x4hx4w features -> Bx4Cxhxw."""
    return torch.cat([embedding, _Fold.apply(feat_s1, 2, False),
                      _Fold.apply(feat_s0, 4, False)], dim=1)


def unpack(packed: torch.Tensor, dim: int, high_res: bool
           ) -> Tuple[torch.Tensor, Optional[HighRes]]:
    """The inverse of :func:`pack` for a C = ``dim`` model: (BxCxhxw embedding, (feat_s1,
    feat_s0) or None). Without high-res features the tensor is the embedding itself."""
    if not high_res:
        return packed, None
    embedding = packed[:, :dim]
    feat_s1 = _Fold.apply(packed[:, dim:2 * dim], 2, True)
    feat_s0 = _Fold.apply(packed[:, 2 * dim:], 4, True)
    return embedding, (feat_s1, feat_s0)
