"""A light convolutional image encoder for the SAM family: a ``timm`` CNN trunk cut at the
configuration's stride, and SAM's neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d) to the
prompt embedding's channels.

Edge deployments of SAM swap the ViT-B/L/H encoder for a light one (MobileSAM's TinyViT,
EfficientViT-SAM) and keep the prompt encoder and mask decoder. A conv trunk also learns from
scratch far faster than a ViT on a few thousand defect views, which is how the bundled example
model is trained. The trunk comes from ``timm`` (no pretrained weights are fetched: the
architecture alone); its output at ``stride`` (8 or 16) is the image embedding grid, so
``image_size / stride`` tokens per side, as ``patch_size`` is for the ViT.

With ``high_res`` the trunk's features at strides stride/2 and stride/4 are projected (1x1 conv,
as SAM 2's ``conv_s1``/``conv_s0``) to C/4 and C/8 channels and packed after the embedding
(:mod:`samspt.training.modeling.high_res`) for the decoders' upscaling stages. With
``pixel_decoder`` they come from a top-down path instead (:class:`TopDown`, an FPN): each
stride's trunk features plus the coarser result upsampled, through a 3x3 conv block, so the fine
features carry what the deep layers saw (a U-Net's skip connections), not only the edges of the
first layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

from samspt.runtime.errors import ConfigError
from samspt.training.modeling import high_res as hr


class TopDown(nn.Module):
    """One step of a top-down path: (fine BxC_fxHxW trunk features, coarse BxC_cx(H/2)x(W/2)) ->
    Bx``width``xHxW: 1x1 lateral of the fine + 1x1 of the coarse upsampled (nearest), then a 3x3
    conv, batch norm and ReLU (folded into the convolution at export)."""

    def __init__(self, fine_chans: int, coarse_chans: int, width: int) -> None:
        super().__init__()
        self.lateral = nn.Conv2d(fine_chans, width, kernel_size=1)
        self.coarse = nn.Conv2d(coarse_chans, width, kernel_size=1)
        self.block = nn.Sequential(nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False),
                                   nn.BatchNorm2d(width), nn.ReLU(inplace=True))

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(self.coarse(coarse), scale_factor=2.0, mode="nearest")
        return self.block(self.lateral(fine) + up)


class ConvImageEncoder(nn.Module):
    """Bx3xSxS preprocessed images -> BxC'x(S/stride)x(S/stride) image embeddings (C' = C, or
    4C with the high-res features packed in)."""

    def __init__(self, arch: str, stride: int, out_chans: int, high_res: bool = False,
                 pixel_decoder: bool = False, drop_path: float = 0.0) -> None:
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
        wanted = [stride // 4, stride // 2, stride] if high_res else [stride]
        missing = [s for s in wanted if s not in reductions]
        if missing:
            raise ConfigError(f"timm {arch} has feature strides {reductions}; the configuration "
                              f"asks for stride{'s' if len(wanted) > 1 else ''} "
                              f"{', '.join(map(str, wanted))}")
        self.trunk = timm.create_model(arch, pretrained=False, features_only=True,
                                       out_indices=tuple(reductions.index(s) for s in wanted),
                                       **({"drop_path_rate": drop_path} if drop_path else {}))
        all_channels = self.trunk.feature_info.channels()
        channels = all_channels[-1]
        self.high_res = high_res
        self.pixel_decoder = pixel_decoder and high_res
        if self.pixel_decoder:
            # Widths of the top-down path at stride/2 and stride/4: at least the packed
            # channels, at most the trunk's (a few per cent of the trunk's operations).
            wide_s1 = max(out_chans // 4, min(64, all_channels[1]))
            wide_s0 = max(out_chans // 8, min(32, all_channels[0]))
            self.top_s1 = TopDown(all_channels[1], out_chans, wide_s1)
            self.top_s0 = TopDown(all_channels[0], wide_s1, wide_s0)
            self.conv_s0 = nn.Conv2d(wide_s0, out_chans // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(wide_s1, out_chans // 4, kernel_size=1)
        elif high_res:
            self.conv_s0 = nn.Conv2d(all_channels[0], out_chans // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(all_channels[1], out_chans // 4, kernel_size=1)
        self.neck = nn.Sequential(
            nn.Conv2d(channels, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.trunk(image)
        embedding = self.neck(features[-1])
        if not self.high_res:
            return embedding
        if self.pixel_decoder:
            top_s1 = self.top_s1(features[1], embedding)
            top_s0 = self.top_s0(features[0], top_s1)
            return hr.pack(embedding, self.conv_s1(top_s1), self.conv_s0(top_s0))
        return hr.pack(embedding, self.conv_s1(features[1]), self.conv_s0(features[0]))
