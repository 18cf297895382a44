"""A light convolutional image encoder for the SAM family: a ``timm`` CNN trunk cut at the
configuration's stride, and SAM's neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d) to the
prompt embedding's channels.

Edge deployments of SAM swap the ViT-B/L/H encoder for a light one (MobileSAM's TinyViT,
EfficientViT-SAM) and keep the prompt encoder and mask decoder. A conv trunk also learns from
scratch far faster than a ViT on a few thousand defect views, which is how the bundled example
model is trained. The trunk comes from ``timm`` (no pretrained weights are fetched: the
architecture alone); its output at ``stride`` (8 or 16) is the image embedding grid, so
``image_size / stride`` tokens per side, as ``patch_size`` is for the ViT.
"""

from __future__ import annotations

import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

from samspt.runtime.errors import ConfigError


class ConvImageEncoder(nn.Module):
    """Bx3xSxS preprocessed images -> BxCx(S/stride)x(S/stride) image embeddings."""

    def __init__(self, arch: str, stride: int, out_chans: int) -> None:
        super().__init__()
        try:
            import timm
        except ImportError as exc:  # pragma: no cover - timm is in the [train] extra
            raise ConfigError("the conv encoder family needs timm: pip install 'samspt[train]'"
                              ) from exc
        try:
            probe = timm.create_model(arch, pretrained=False, features_only=True)
        except RuntimeError as exc:
            raise ConfigError(f"timm has no architecture {arch!r} with feature outputs: {exc}"
                              ) from None
        reductions = list(probe.feature_info.reduction())
        if stride not in reductions:
            raise ConfigError(f"timm {arch} has feature strides {reductions}; the configuration "
                              f"asks for stride {stride}")
        self.trunk = timm.create_model(arch, pretrained=False, features_only=True,
                                       out_indices=(reductions.index(stride),))
        channels = self.trunk.feature_info.channels()[-1]
        self.neck = nn.Sequential(
            nn.Conv2d(channels, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.neck(self.trunk(image)[-1])
