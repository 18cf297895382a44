"""SPT's mask decoder: SAM's ``MaskDecoder`` whose two-way blocks mix the image relation into
their keys, and the prompt embedding of the ``point_coords``/``point_labels`` contract.

Single-mask output (SAM's multimask off) is the only mode: SPT's draft and refine passes each give
one mask per prompt. SAM 2's decoder is the same network with two more heads
(``object_score``): an object-score token and MLP whose negative score sets the mask to SAM 2's
"no object" logit in eval mode, and a sigmoid on the IoU prediction (``score_sigmoid``). SAM 2's
stability-based choice among its multimask outputs for single-point prompts is not reproduced:
the first mask token answers, as SAM's single-mask output.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
from segment_anything.modeling.mask_decoder import MLP
from torch import nn

from samspt.runtime import tensors
from samspt.training.modeling.high_res import HighRes
from samspt.training.modeling.relation import ImageRelation

# SAM 2's mask logit where its object score says no object is present (sam2_base.NO_OBJ_SCORE).
NO_OBJECT_LOGIT = -1024.0


def embed_points(prompt_encoder: PromptEncoder, point_coords: torch.Tensor,
                 point_labels: torch.Tensor) -> torch.Tensor:
    """Sparse prompt embeddings BxNxC of BxNx2 coords (input frame) and BxN labels.

    Labels: 2/3 box corners, 1 foreground, 0 background, -1 padding. Equals SAM's
    ``PromptEncoder`` for the same points and boxes (boxes given as their two corners).
    """
    embedding = prompt_encoder.pe_layer.forward_with_coords(
        point_coords + 0.5, prompt_encoder.input_image_size)
    labels = point_labels[..., None]
    padding = (labels == tensors.LABEL_PADDING).to(embedding.dtype)
    embedding = embedding * (1 - padding) + prompt_encoder.not_a_point_embed.weight * padding
    for label, table in enumerate(prompt_encoder.point_embeddings):
        embedding = embedding + table.weight * (labels == label).to(embedding.dtype)
    return embedding


def no_mask_dense(prompt_encoder: PromptEncoder) -> torch.Tensor:
    """Dense embedding 1xCxhxw used when no mask prompt is given."""
    size = prompt_encoder.image_embedding_size
    return prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, *size)


def mask_dense(prompt_encoder: PromptEncoder, low_res_logits: torch.Tensor) -> torch.Tensor:
    """Dense embedding Bx Cxhxw of Bx1x4hx4w mask logits (SAM's mask-prompt path)."""
    return prompt_encoder.mask_downscaling(low_res_logits)


class ResidualConv(nn.Module):
    """``x + conv(GELU(conv(x)))``, 3x3 convolutions, the second zero-initialised: the identity
    until trained (a pretrained decoder computes what it did)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.act = nn.GELU()
        self.conv_b = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv_b.weight)
        nn.init.zeros_(self.conv_b.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_b(self.act(self.conv_a(x)))


class SptMaskDecoder(MaskDecoder):
    """SAM's mask decoder plus one zero-initialised relation scale (C-vector) per two-way block."""

    def __init__(self, transformer_dim: int, transformer: TwoWayTransformer,
                 iou_head_hidden_dim: int, upscale_convs: bool = False,
                 object_score: bool = False, score_sigmoid: bool = False) -> None:
        super().__init__(transformer_dim=transformer_dim, transformer=transformer,
                         num_multimask_outputs=3, iou_head_depth=3,
                         iou_head_hidden_dim=iou_head_hidden_dim)
        # SAM 2's heads (names as in sam2's MaskDecoder, so its checkpoints load as they are).
        if object_score:
            self.obj_score_token = nn.Embedding(1, transformer_dim)
            self.pred_obj_score_head = MLP(transformer_dim, transformer_dim, 1, 3)
        self.object_score = object_score
        self.iou_prediction_head.sigmoid_output = score_sigmoid
        self.relation_scales = nn.ParameterList(
            [nn.Parameter(torch.zeros(transformer_dim)) for _ in transformer.layers])
        # ModelConfig.upscale_convs: a residual 3x3 block after each upscaling stage.
        self.upscale_refine = (nn.ModuleList([ResidualConv(transformer_dim // 4),
                                              ResidualConv(transformer_dim // 8)])
                               if upscale_convs else None)

    def forward(  # type: ignore[override]
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_embeddings: torch.Tensor,
        dense_embeddings: torch.Tensor,
        relation: Optional[ImageRelation],
        high_res: Optional[HighRes] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One image, B prompts -> (logits Bx1x4hx4w, scores Bx1).

        ``image_embeddings``, ``image_pe``: 1xCxhxw; ``sparse_embeddings``: BxNxC;
        ``dense_embeddings``: 1xCxhxw (same for all prompts) or BxCxhxw; ``high_res``: the
        (C/4 x 2h x 2w, C/8 x 4h x 4w) features added to the two upscaling stages (SAM 2).
        Image-only work broadcasts over the prompts instead of being copied B times.
        """
        batch = sparse_embeddings.shape[0]
        heads = [self.obj_score_token.weight] if self.object_score else []
        first = len(heads)                         # the IoU token's index (SAM 2: 1)
        output_tokens = torch.cat(heads + [self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat(
            [output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse_embeddings], dim=1)
        src = image_embeddings + dense_embeddings
        _, channels, height, width = src.shape
        queries, keys = self._two_way(src, image_pe, tokens, relation)

        upscaled = self._upscale(keys.transpose(1, 2).reshape(batch, channels, height, width),
                                 high_res)
        _, up_channels, up_height, up_width = upscaled.shape
        # B x C/8, the first mask token's
        hyper = self.output_hypernetworks_mlps[0](queries[:, first + 1, :])
        logits = hyper.unsqueeze(1) @ upscaled.reshape(batch, up_channels, up_height * up_width)
        logits = logits.reshape(batch, 1, up_height, up_width)
        scores = self.iou_prediction_head(queries[:, first, :])[:, 0:1]
        if self.object_score and not self.training:
            present = self.pred_obj_score_head(queries[:, 0, :]) > 0       # B x 1
            logits = torch.where(present[:, :, None, None], logits,
                                 torch.full_like(logits, NO_OBJECT_LOGIT))
        return logits, scores

    def _upscale(self, src: torch.Tensor, high_res: Optional[HighRes]) -> torch.Tensor:
        if high_res is None and self.upscale_refine is None:
            return self.output_upscaling(src)
        dc1, ln1, act1, dc2, act2 = self.output_upscaling
        feat_s1, feat_s0 = high_res if high_res is not None else (0.0, 0.0)
        refine = self.upscale_refine if self.upscale_refine is not None else (None, None)
        stage1 = act1(ln1(dc1(src) + feat_s1))
        if refine[0] is not None:
            stage1 = refine[0](stage1)
        stage2 = act2(dc2(stage1) + feat_s0)
        return refine[1](stage2) if refine[1] is not None else stage2

    def _two_way(self, src: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor,
                 relation: Optional[ImageRelation]) -> Tuple[torch.Tensor, torch.Tensor]:
        """SAM's ``TwoWayTransformer.forward`` with ``keys += (R @ keys) * scale`` after each
        block's last norm. Returns (queries BxNxC, keys BxTxC)."""
        transformer = self.transformer
        keys = src.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = tokens
        for layer, scale in zip(transformer.layers, self.relation_scales):
            queries, keys = layer(queries=queries, keys=keys, query_pe=tokens, key_pe=key_pe)
            if relation is not None:
                keys = keys + relation.apply(keys) * scale
        attn_out = transformer.final_attn_token_to_image(
            q=queries + tokens, k=keys + key_pe, v=keys)
        queries = transformer.norm_final_attn(queries + attn_out)
        return queries, keys
