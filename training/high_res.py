"""High-resolution features in the one ``image_embeddings`` tensor (SAM 2's decoder skips).

With ``ModelConfig.high_res_features`` the image encoder's output carries, after the C embedding
channels, the trunk's features at strides patch/2 (C/4 channels) and patch/4 (C/8 channels),
each folded onto the token grid by space-to-depth (factors 2 and 4): a Bx4Cxhxw tensor. Keeping
one tensor keeps the encoder/decoder contract (one output, one decoder input, one device buffer
between TensorRT engines, one embedding cache entry) unchanged; the decoder unfolds them with
depth-to-space (ONNX DepthToSpace) and adds them to its two upscaling stages.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch.nn import functional as F

HighRes = Tuple[torch.Tensor, torch.Tensor]


def pack(embedding: torch.Tensor, feat_s1: torch.Tensor, feat_s0: torch.Tensor) -> torch.Tensor:
    """BxCxhxw embedding, BxC/4x2hx2w and BxC/8x4hx4w features -> Bx4Cxhxw."""
    return torch.cat([embedding, F.pixel_unshuffle(feat_s1, 2), F.pixel_unshuffle(feat_s0, 4)],
                     dim=1)


def unpack(packed: torch.Tensor, dim: int, high_res: bool
           ) -> Tuple[torch.Tensor, Optional[HighRes]]:
    """The inverse of :func:`pack` for a C = ``dim`` model: (BxCxhxw embedding, (feat_s1,
    feat_s0) or None). Without high-res features the tensor is the embedding itself."""
    if not high_res:
        return packed, None
    embedding = packed[:, :dim]
    feat_s1 = F.pixel_shuffle(packed[:, dim:2 * dim], 2)
    feat_s0 = F.pixel_shuffle(packed[:, 2 * dim:], 4)
    return embedding, (feat_s1, feat_s0)
