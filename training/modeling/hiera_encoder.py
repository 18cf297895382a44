"""SAM 2.1's image path: the Hiera trunk and FPN neck from Meta's own code (the ``sam2``
distribution), so ``sam2.1_hiera_*.pt``'s ``image_encoder.*`` keys load as they are.

What SAM 2 computes for a single image without memory (``SAM2ImagePredictor.set_image``), in one
module whose output is samspt's one ``image_embeddings`` tensor:

* the trunk's four stages, the neck's FPN (top-down into the two coarsest levels, nearest
  upsampling) and the scalp that drops the coarsest level: features at strides 4, 8 and 16;
* the stride-16 features plus ``no_mem_embed`` (SAM 2's "no memory" embedding, added directly
  for an image without a memory bank) are the embedding;
* the stride-8 and stride-4 features through the mask decoder's ``conv_s1`` and ``conv_s0``
  (SAM 2 applies them once per image in ``forward_image``, not per prompt: here they live in
  the encoder, computed once per view) are the high-resolution features, packed after the
  embedding (:func:`samspt.training.modeling.high_res.pack`).

One thing differs from ``sam2``'s ``Hiera``, without changing what it computes: its background
position embedding is resized to the token grid by two fixed matrices (rows and columns) that
equal PyTorch's bicubic interpolation, which is separable (:class:`_Hiera`), where sam2 calls
``F.interpolate(mode="bicubic")`` with sizes traced from the input's shape: the exported graph
then holds two small MatMuls instead of a cubic ``Resize`` (which the ONNX-TensorRT parser
rejects) and an ``If`` from the traced tile (which TensorRT's strongly typed FP16 path and
samspt's FP16 conversion refuse).

The neck's sine position encodings are computed by its forward and not used (SAM's decoder uses
the prompt encoder's dense encoding): they depend on shapes only and leave the exported graph.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
from sam2.modeling.backbones.hieradet import Hiera
from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
from sam2.modeling.position_encoding import PositionEmbeddingSine
from torch import nn
from torch.nn import functional as F

from samspt.training.modeling.high_res import pack

# SAM 2.1's fixed choices for every Hiera size (its configs' neck and scalp settings).
FPN_TOP_DOWN_LEVELS = (2, 3)
FPN_INTERPOLATION = "nearest"
SCALP = 1
# Hiera's patch embedding: the first stage's token grid is S/4 (2x pooling into stages 2 and 3
# gives the stride-16 embedding; the fourth stage, stride 32, is dropped by the scalp).
PATCH_STRIDE = 4


def bicubic_matrix(size: int, source: int) -> torch.Tensor:
    """``size`` x ``source``: row i holds the weights PyTorch's bicubic resize (align_corners
    False) gives each source sample for output sample i, along one axis."""
    basis = torch.eye(source).reshape(1, source, source, 1)
    return F.interpolate(basis, size=(size, 1), mode="bicubic")[0, :, :, 0].T.contiguous()


class _Hiera(Hiera):
    """sam2's Hiera whose position embedding is resized to a ``grid`` x ``grid`` token grid by
    fixed matrices (see the module); other grids take sam2's own path."""

    def __init__(self, grid: int, **kwargs) -> None:
        super().__init__(**kwargs)
        source = self.pos_embed.shape[-1]
        self.grid = grid
        self.register_buffer("pos_resize", bicubic_matrix(grid, source), persistent=False)

    def _get_pos_embed(self, hw: Tuple[int, int]) -> torch.Tensor:
        if tuple(int(v) for v in hw) != (self.grid, self.grid):
            return super()._get_pos_embed(hw)
        rows = self.pos_resize.to(self.pos_embed.dtype)
        pos_embed = rows @ self.pos_embed @ rows.T                  # 1 x C x grid x grid
        window = self.pos_embed_window
        repeats = [1, 1, self.grid // window.shape[2], self.grid // window.shape[3]]
        return (pos_embed + window.repeat(repeats)).permute(0, 2, 3, 1)


class HieraEncoder(ImageEncoder):
    """Bx3xSxS (S = ``image_size``) -> Bx4CxS/16xS/16: SAM 2.1's embedding (C = ``out_chans``) with its stride-8 and
    stride-4 features packed after it.

    ``embed_dim``/``num_heads``: the first stage's width and heads (doubled at each stage);
    ``stages``: blocks per stage; ``global_blocks``: blocks with global attention;
    ``windows``: the window side per stage; ``pos_embed_side``: the side of Hiera's background
    position embedding (interpolated to the token grid).
    """

    def __init__(self, image_size: int, embed_dim: int, num_heads: int, stages: Sequence[int],
                 global_blocks: Sequence[int], windows: Sequence[int], pos_embed_side: int,
                 out_chans: int = 256) -> None:
        trunk = _Hiera(image_size // PATCH_STRIDE, embed_dim=embed_dim, num_heads=num_heads, stages=tuple(stages),
                      global_att_blocks=tuple(global_blocks), window_spec=tuple(windows),
                      window_pos_embed_bkg_spatial_size=(pos_embed_side, pos_embed_side))
        neck = FpnNeck(
            position_encoding=PositionEmbeddingSine(num_pos_feats=out_chans, normalize=True,
                                                    scale=None, temperature=10000),
            d_model=out_chans, backbone_channel_list=list(trunk.channel_list),
            fpn_top_down_levels=list(FPN_TOP_DOWN_LEVELS), fpn_interp_model=FPN_INTERPOLATION)
        super().__init__(trunk=trunk, neck=neck, scalp=SCALP)   # keys: trunk.*, neck.*
        # SAM2Base's no_mem_embed and its mask decoder's high-res projections.
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, out_chans))
        self.conv_s0 = nn.Conv2d(out_chans, out_chans // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(out_chans, out_chans // 4, kernel_size=1)
        nn.init.trunc_normal_(self.no_mem_embed, std=0.02)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        feat_s0, feat_s1, embedding = super().forward(image)["backbone_fpn"]
        embedding = embedding + self.no_mem_embed.reshape(1, -1, 1, 1)
        return pack(embedding, self.conv_s1(feat_s1), self.conv_s0(feat_s0))


def attentions(encoder: HieraEncoder):
    """The trunk's attention modules (each with a fused ``qkv``, rows [q; k; v])."""
    return [block.attn for block in encoder.trunk.blocks]
