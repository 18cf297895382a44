"""MobileSAM's image encoder: TinyViT, from MobileSAM's own code (the ``mobilesam-mirror``
distribution's ``mobile_sam`` package), so ``mobile_sam.pt``'s ``image_encoder.*`` keys load as
they are.

Three things differ from ``mobile_sam.modeling.TinyViT``, both needed for sizes other than
MobileSAM's 1024 px and neither changing what the 1024 px model computes:

* ``forward_features`` reshapes the last stage's tokens to the grid the input size gives
  (MobileSAM's fixes 64x64, so only a 1024 px input runs);
* its patch merging reads the batch size from the tensor's shape (MobileSAM's ``len(x)`` is
  traced as the constant 1, so an exported encoder would refuse a batch of views);
* the neck ends at ``out_chans`` channels (MobileSAM's: 256, SAM's prompt width), so small
  configurations for tests can pair it with a narrower decoder.

Importing ``mobile_sam`` re-registers timm's ``tiny_vit_*`` model names with MobileSAM's
builders (its own side effect); samspt's conv encoders use other timm models.

Its attention keeps a precomputed bias table (``ab``) while in eval mode; weights loaded into an
encoder in eval mode refresh it (a load hook), so a loaded model never runs stale biases.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import nn

with warnings.catch_warnings():
    # mobile_sam imports timm's deprecated module paths and registers its TinyViT builders
    # under timm's own names (tiny_vit_5m_224, ...): warnings about both, not ours to fix.
    warnings.simplefilter("ignore", FutureWarning)
    warnings.simplefilter("ignore", UserWarning)
    from mobile_sam.modeling.common import LayerNorm2d
    from mobile_sam.modeling.tiny_vit_sam import Attention, PatchMerging, TinyViT

# MobileSAM's TinyViT reaches stride 16: a stride-4 stem, then stride-2 merges, except into a
# last stage of ModelConfig's TINYVIT_LAST_STAGE_DIMS channels (its merge keeps stride 1).
TINYVIT_STRIDE = 16


class TinyVitEncoder(TinyViT):
    """MobileSAM's TinyViT at ``img_size``, its neck to ``out_chans`` channels:
    Bx3xSxS -> Bx out_chans x S/16 x S/16."""

    def __init__(self, img_size: int, embed_dims: Sequence[int], depths: Sequence[int],
                 num_heads: Sequence[int], window_sizes: Sequence[int],
                 out_chans: int = 256) -> None:
        super().__init__(img_size=img_size, in_chans=3, num_classes=1000,
                         embed_dims=list(embed_dims), depths=list(depths),
                         num_heads=list(num_heads), window_sizes=list(window_sizes),
                         mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0,
                         use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3,
                         layer_lr_decay=0.8)   # MobileSAM's build_sam_vit_t arguments
        if out_chans != 256:
            self.neck = nn.Sequential(
                nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
                LayerNorm2d(out_chans),
                nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
                LayerNorm2d(out_chans))
        self.grid = img_size // TINYVIT_STRIDE
        for module in self.modules():
            if type(module) is PatchMerging:
                module.__class__ = _BatchedPatchMerging
        self.register_load_state_dict_post_hook(_refresh_attention_biases)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        batch, _, channels = x.shape
        x = x.view(batch, self.grid, self.grid, channels).permute(0, 3, 1, 2)
        return self.neck(x)


class _BatchedPatchMerging(PatchMerging):
    """MobileSAM's PatchMerging, the batch size read from the shape (exported: a Shape node)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            height, width = self.input_resolution
            x = x.view(x.shape[0], height, width, -1).permute(0, 3, 1, 2)
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(x).flatten(2).transpose(1, 2)


def _refresh_attention_biases(module: nn.Module, _incompatible) -> None:
    """After a load: rebuild each attention's eval-mode bias table from the loaded biases."""
    for attention in module.modules():
        if isinstance(attention, Attention) and not attention.training:
            attention.train(False)


def attentions(encoder: nn.Module):
    """(attention module, its head count) of every TinyViT attention in ``encoder``."""
    return [(m, m.num_heads) for m in encoder.modules() if isinstance(m, Attention)]
