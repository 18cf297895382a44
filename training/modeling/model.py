"""The SPT model: SAM's image encoder and prompt encoder, a draft and a refine decoder.

Self-drafting: the draft decoder answers the box/point prompt with the "no mask" dense embedding;
the refine decoder takes the same prompt plus the draft's low-res logits (detached) through SAM's
mask-prompt path, and gives the final logits. Both decoders share one image relation.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from functools import partial
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from segment_anything.modeling import ImageEncoderViT, PromptEncoder, TwoWayTransformer
from segment_anything.modeling.transformer import Attention as DecoderAttention
from torch import nn

from samspt.runtime.errors import ConfigError
from samspt.runtime.tensors import LABEL_BOX_TOP_LEFT
from samspt.training.modeling.box_region import BoxClip, box_region
from samspt.training.modeling.config import LoraConfig, ModelConfig
from samspt.training.modeling.conv_encoder import ConvImageEncoder
from samspt.training.modeling.decoder import SptMaskDecoder, embed_points, mask_dense, no_mask_dense
from samspt.training.modeling.high_res import HighRes, unpack
from samspt.training.modeling.lora import (LoRALinear, LoRAQKV, is_lora_parameter,
                                           lora_from_linear, merge_lora_)
from samspt.training.modeling.relation import ImageRelation, RelationBuilder

log = logging.getLogger(__name__)

TRAIN_MODES = ("spt", "full")


@dataclass
class SptOutput:
    """Low-res logits Bx1x4hx4w of both passes and the final mask's predicted IoU (Bx1)."""

    draft_logits: torch.Tensor
    logits: torch.Tensor
    scores: torch.Tensor


def _image_encoder(config: ModelConfig) -> nn.Module:
    if config.encoder == "tinyvit":
        from samspt.training.modeling.tinyvit_encoder import TinyVitEncoder

        return TinyVitEncoder(config.image_size, config.encoder_stage_dims,
                              config.encoder_stage_depths, config.encoder_stage_heads,
                              config.encoder_stage_windows, out_chans=config.prompt_embed_dim)
    if config.encoder == "hiera":
        from samspt.training.modeling.hiera_encoder import HieraEncoder

        return HieraEncoder(config.image_size, config.encoder_embed_dim, config.encoder_num_heads,
                            config.encoder_stage_depths, config.encoder_global_attn_indexes,
                            config.encoder_stage_windows, config.encoder_pos_embed_side,
                            out_chans=config.prompt_embed_dim)
    if config.encoder == "conv":
        return ConvImageEncoder(config.encoder_arch, config.patch_size, config.prompt_embed_dim,
                                high_res=config.high_res_features,
                                pixel_decoder=config.pixel_decoder,
                                drop_path=config.encoder_drop_path)
    return ImageEncoderViT(
        depth=config.encoder_depth, embed_dim=config.encoder_embed_dim,
        img_size=config.image_size, mlp_ratio=4,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=config.encoder_num_heads,
        patch_size=config.patch_size, qkv_bias=True, use_rel_pos=True,
        global_attn_indexes=config.encoder_global_attn_indexes,
        window_size=config.encoder_window_size, out_chans=config.prompt_embed_dim)


def _decoder(config: ModelConfig) -> SptMaskDecoder:
    transformer = TwoWayTransformer(depth=config.decoder_depth,
                                    embedding_dim=config.prompt_embed_dim,
                                    mlp_dim=config.decoder_mlp_dim,
                                    num_heads=config.decoder_num_heads)
    return SptMaskDecoder(config.prompt_embed_dim, transformer, config.iou_head_hidden_dim,
                          upscale_convs=config.upscale_convs,
                          object_score=config.decoder_object_score,
                          score_sigmoid=config.decoder_score_sigmoid)


class SptSam(nn.Module):
    """SAM made SPT. State-dict keys keep SAM's names (``image_encoder.*``, ``prompt_encoder.*``);
    SAM's ``mask_decoder.*`` initialises both ``draft_decoder.*`` and ``refine_decoder.*``."""

    def __init__(self, config: ModelConfig, lora: Optional[LoraConfig] = LoraConfig()) -> None:
        super().__init__()
        self.config = config
        self.lora = lora
        size = config.embedding_size
        self.image_encoder = _image_encoder(config)
        self.prompt_encoder = PromptEncoder(
            embed_dim=config.prompt_embed_dim, image_embedding_size=(size, size),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans)
        if config.pe_scale != 1.0:
            with torch.no_grad():
                self.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.mul_(
                    config.pe_scale)
        self.draft_decoder = _decoder(config)
        self.refine_decoder = _decoder(config)
        # The box as a dense prompt (ModelConfig.box_dense_prompt): one vector per pass (draft,
        # refine) added at the tokens inside the box; zero: off until trained.
        self.box_dense = (nn.Parameter(torch.zeros(2, config.prompt_embed_dim))
                          if config.box_dense_prompt else None)
        # The box at mask resolution (ModelConfig.box_high_res): per upscaling stage one vector
        # per pass (draft, refine) added to the high-res features inside the box; zero: off.
        self.box_high_res = (nn.ParameterList(
            [nn.Parameter(torch.zeros(2, config.prompt_embed_dim // 4)),
             nn.Parameter(torch.zeros(2, config.prompt_embed_dim // 8))])
            if config.box_high_res else None)   # ModelConfig checks the high-res features
        self.box_clip = (None if config.box_clip_margin is None
                         else BoxClip(config.image_size, config.box_clip_margin))
        self.relation = RelationBuilder()
        self.scan_head = (ScanHead(config.prompt_embed_dim, config.scan_head_hidden)
                          if config.scan_head else None)
        if lora is not None:
            self._inject_lora(lora)

    def _inject_lora(self, lora: LoraConfig) -> None:
        for block in getattr(self.image_encoder, "blocks", ()):  # conv encoders have no attention
            block.attn.qkv = lora_from_linear(LoRAQKV, block.attn.qkv, lora)
        if self.config.encoder == "tinyvit":     # fused qkv, rows per head
            from samspt.training.modeling.tinyvit_encoder import attentions

            for attention, heads in attentions(self.image_encoder):
                attention.qkv = lora_from_linear(LoRAQKV, attention.qkv, lora, groups=heads)
        if self.config.encoder == "hiera":       # fused qkv, rows [q; k; v] as SAM's ViT
            from samspt.training.modeling import hiera_encoder

            for attention in hiera_encoder.attentions(self.image_encoder):
                attention.qkv = lora_from_linear(LoRAQKV, attention.qkv, lora)
        for decoder in (self.draft_decoder, self.refine_decoder):
            for attention in decoder.transformer.modules():
                if isinstance(attention, DecoderAttention):
                    attention.q_proj = lora_from_linear(LoRALinear, attention.q_proj, lora)
                    attention.v_proj = lora_from_linear(LoRALinear, attention.v_proj, lora)

    # ----------------------------------------------------------------------------- forward
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Bx3xSxS preprocessed images -> BxC'xhxw image embeddings (C' is
        ``config.embedding_channels``: the high-res features, if any, are packed in)."""
        return self.image_encoder(image)

    def defect_logits(self, image_embedding: torch.Tensor) -> torch.Tensor:
        """BxC'xhxw image embeddings -> Bxhxw logits of "this token's cell holds a defect" (the
        scan head, :class:`ScanHead`); a ConfigError for a model without one."""
        if self.scan_head is None:
            raise ConfigError(f"{self.config.name} has no scan head (ModelConfig.scan_head)")
        return self.scan_head(image_embedding[:, :self.config.prompt_embed_dim])

    def decode(self, image_embedding: torch.Tensor, point_coords: torch.Tensor,
               point_labels: torch.Tensor) -> SptOutput:
        """One image embedding (1xCxhxw) and B prompts (BxNx2 coords in the input frame, BxN
        labels), or B views' embeddings (BxC'xhxw) with one prompt each."""
        image_embedding, high_res = unpack(image_embedding, self.config.prompt_embed_dim,
                                           self.config.high_res_features)
        relation = ImageRelation(*self.relation(image_embedding))
        # Positional encodings in float32 even under autocast: they are sin/cos of a random
        # projection of coordinates, and a bf16 projection scrambles the phases that say where
        # a prompt is (a from-scratch model then never learns to follow its box).
        with torch.autocast(device_type=image_embedding.device.type, enabled=False):
            image_pe = self.prompt_encoder.get_dense_pe()
            sparse = embed_points(self.prompt_encoder, point_coords.float(), point_labels)
        inside = self._inside_box(point_coords, point_labels)
        inside_fine = self._inside_box_fine(point_coords, point_labels)
        draft_logits, _ = self.draft_decoder(
            image_embedding, image_pe, sparse,
            self._with_box(no_mask_dense(self.prompt_encoder), inside, 0), relation,
            self._with_box_fine(high_res, inside_fine, 0))
        draft_logits = self._clip(draft_logits, point_coords, point_labels)
        dense = mask_dense(self.prompt_encoder, draft_logits.detach())
        logits, scores = self.refine_decoder(image_embedding, image_pe, sparse,
                                             self._with_box(dense, inside, 1), relation,
                                             self._with_box_fine(high_res, inside_fine, 1))
        return SptOutput(draft_logits, self._clip(logits, point_coords, point_labels), scores)

    def _inside_box(self, point_coords: torch.Tensor,
                    point_labels: torch.Tensor) -> Optional[torch.Tensor]:
        """Bx1xhxw float 0/1: tokens whose cell centre lies within half a cell of the box prompt
        (so a box smaller than a cell still marks one); 0 for prompts without a box. None when
        the model has no box dense prompt."""
        if self.box_dense is None:
            return None
        size = self.config.embedding_size
        region = box_region(point_coords, point_labels, self.config.image_size, size, 0.0,
                            slack_cells=0.5)
        is_box = (point_labels == LABEL_BOX_TOP_LEFT).any(dim=1)
        return (region & is_box[:, None, None]).to(torch.float32)[:, None]

    def _inside_box_fine(self, point_coords: torch.Tensor, point_labels: torch.Tensor
                         ) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """(Bx1x2hx2w, Bx1x4hx4w) float 0/1: the pixels of each upscaling stage inside the box
        prompt (half a pixel of slack); 0 for prompts without a box. None without box_high_res."""
        if self.box_high_res is None:
            return None
        size = self.config.embedding_size
        is_box = (point_labels == LABEL_BOX_TOP_LEFT).any(dim=1)[:, None, None]
        return tuple((box_region(point_coords, point_labels, self.config.image_size, size * r,
                                 0.0, slack_cells=0.5) & is_box).to(torch.float32)[:, None]
                     for r in (2, 4))

    def _with_box_fine(self, high_res: Optional[HighRes],
                       inside: Optional[Tuple[torch.Tensor, torch.Tensor]],
                       index: int) -> Optional[HighRes]:
        """A pass's high-res features plus its box vectors inside each prompt's box."""
        if high_res is None or inside is None:
            return high_res
        return tuple(feat + mark.to(feat.dtype)
                     * vectors[index].to(feat.dtype)[None, :, None, None]
                     for feat, mark, vectors in zip(high_res, inside, self.box_high_res))

    def _with_box(self, dense: torch.Tensor, inside: Optional[torch.Tensor],
                  index: int) -> torch.Tensor:
        """A pass's dense embedding (1xCxhxw or BxCxhxw) plus its box vector at the tokens
        inside each prompt's box: BxCxhxw (unchanged without a box dense prompt)."""
        if inside is None:
            return dense
        return dense + inside.to(dense.dtype) * self.box_dense[index].to(dense.dtype)[None, :,
                                                                                        None, None]

    def _clip(self, logits: torch.Tensor, point_coords: torch.Tensor,
              point_labels: torch.Tensor) -> torch.Tensor:
        if self.box_clip is None:
            return logits
        return self.box_clip(logits, point_coords, point_labels)

    def forward(self, image: torch.Tensor, point_coords: torch.Tensor,
                point_labels: torch.Tensor) -> SptOutput:
        """One preprocessed image (1x3xSxS) and its B prompts."""
        return self.decode(self.encode(image), point_coords, point_labels)

    # ------------------------------------------------------------------- training helpers
    def set_train_mode(self, mode: str) -> int:
        """``spt``: only LoRA tensors and relation scales train; ``full``: everything.
        Returns the number of trainable parameters."""
        if mode not in TRAIN_MODES:
            raise ConfigError(f"unknown train mode {mode!r}; choose one of {TRAIN_MODES}")
        if mode == "spt" and self.lora is None:
            raise ConfigError("train mode 'spt' needs LoRA layers; build the model with a "
                              "LoraConfig")
        for name, param in self.named_parameters():
            param.requires_grad_(mode == "full" or is_spt_parameter(name))
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def spt_state_dict(self) -> Dict[str, torch.Tensor]:
        """Only the tensors SPT trains: LoRA A/B and relation scales."""
        return {k: v for k, v in self.state_dict().items() if is_spt_parameter(k)}

    def merged(self) -> "SptSam":
        """A copy with every LoRA layer folded into plain ``nn.Linear`` weights."""
        model = copy.deepcopy(self)
        merge_lora_(model)
        model.lora = None
        return model


def is_spt_parameter(name: str) -> bool:
    """True for state-dict names of SPT's trained tensors: LoRA, relation scales, and the
    additions a configuration may switch on beside SAM's own weights (the box dense prompt,
    the upscaling refinement blocks), which start at zero and so exist only once trained."""
    return (is_lora_parameter(name) or ".relation_scales." in name or name == "box_dense"
            or name.startswith("box_high_res.")
            or ".upscale_refine." in name or name.startswith("scan_head."))


class ScanHead(nn.Module):
    """BxCxhxw image embedding -> Bxhxw defect logits per token: 1x1 conv to C/4, ReLU, 1x1 conv
    to one channel (what :mod:`samspt.runtime.scan_head` computes in numpy)."""

    def __init__(self, channels: int, hidden: int = 0) -> None:
        super().__init__()
        hidden = int(hidden) or max(8, channels // 4)
        self.hidden = nn.Conv2d(channels, hidden, kernel_size=1)
        self.out = nn.Conv2d(hidden, 1, kernel_size=1)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(embedding)))[:, 0]

    def arrays(self) -> Dict[str, np.ndarray]:
        """The weights as the runtime's numpy head reads them (float32)."""
        return {"hidden_weight": self.hidden.weight.detach().float().cpu().numpy()[:, :, 0, 0],
                "hidden_bias": self.hidden.bias.detach().float().cpu().numpy(),
                "out_weight": self.out.weight.detach().float().cpu().numpy()[:, :, 0, 0],
                "out_bias": self.out.bias.detach().float().cpu().numpy()}

    def load_arrays(self, arrays: Dict[str, np.ndarray]) -> None:
        """Set the weights from arrays of :meth:`arrays`' form."""
        with torch.no_grad():
            self.hidden.weight.copy_(torch.from_numpy(arrays["hidden_weight"])[:, :, None, None])
            self.hidden.bias.copy_(torch.from_numpy(arrays["hidden_bias"]))
            self.out.weight.copy_(torch.from_numpy(
                np.asarray(arrays["out_weight"]).reshape(1, -1))[:, :, None, None])
            self.out.bias.copy_(torch.from_numpy(np.asarray(arrays["out_bias"]).reshape(1)))


def build_sam(config: ModelConfig) -> nn.Module:
    """Segment Anything's own ``Sam`` for ``config`` (randomly initialised), built from the same
    modules as :class:`SptSam`: the reference for equivalence tests and vanilla baselines."""
    from segment_anything.modeling import MaskDecoder, Sam

    spt = SptSam(config, lora=None)
    transformer = TwoWayTransformer(depth=config.decoder_depth,
                                    embedding_dim=config.prompt_embed_dim,
                                    mlp_dim=config.decoder_mlp_dim,
                                    num_heads=config.decoder_num_heads)
    decoder = MaskDecoder(transformer_dim=config.prompt_embed_dim, transformer=transformer,
                          num_multimask_outputs=3, iou_head_depth=3,
                          iou_head_hidden_dim=config.iou_head_hidden_dim)
    return Sam(spt.image_encoder, spt.prompt_encoder, decoder,
               pixel_mean=list(config.pixel_mean), pixel_std=list(config.pixel_std)).eval()
