"""Segmentation losses on SPT's two passes: BCE + Dice on draft and final logits."""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F

from samspt.training.modeling.box_region import box_region
from samspt.training.loss_weights import LossWeights


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss per prompt (K); logits/targets KxHxW (targets 0/1 float)."""
    probs = torch.sigmoid(logits).flatten(1)
    targets = targets.flatten(1)
    inter = (probs * targets).sum(-1)
    return 1 - (2 * inter + smooth) / (probs.sum(-1) + targets.sum(-1) + smooth)


def focus_masks(point_coords: torch.Tensor, point_labels: torch.Tensor, size: int,
                margin: float) -> torch.Tensor:
    """KxSxS bool: each box prompt's box grown by ``margin`` of its size per side (input frame);
    all True for prompts without a box."""
    return box_region(point_coords, point_labels, size, size, margin)


def mask_loss(logits: torch.Tensor, targets: torch.Tensor, weights: LossWeights,
              focus: Optional[torch.Tensor] = None,
              prompt_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """BCE + Dice of KxHxW logits against KxHxW 0/1 targets, averaged over the prompts (those
    with an empty target weighted ``weights.empty_mask``, each also by ``prompt_weight``, K,
    where given); with a KxHxW bool ``focus``, BCE is the mean inside it plus
    ``weights.outside`` times the mean outside it."""
    per_pixel = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if focus is None:
        inside = torch.ones_like(per_pixel)
    else:
        inside = focus.float()
    if weights.defect_share > 0:
        bce = _balanced_mean(per_pixel, targets, inside, weights.defect_share)
    else:
        bce = _mean(per_pixel, inside)
    if focus is not None and weights.outside > 0:
        bce = bce + weights.outside * _mean(per_pixel, 1.0 - inside)
    per_prompt = weights.bce * bce + weights.dice * dice_loss(logits, targets)
    empty = targets.flatten(1).amax(-1) <= 0.5
    weight = torch.where(empty, torch.full_like(per_prompt, weights.empty_mask),
                         torch.ones_like(per_prompt))
    if prompt_weight is not None:
        weight = weight * prompt_weight.to(weight.dtype)
    return (per_prompt * weight).sum() / weight.sum().clamp_min(1e-6)


def _mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-prompt weighted mean of KxHxW values (K)."""
    return (values * weight).flatten(1).sum(-1) / weight.flatten(1).sum(-1).clamp_min(1)


def _balanced_mean(values: torch.Tensor, targets: torch.Tensor, inside: torch.Tensor,
                   defect_share: float) -> torch.Tensor:
    """Per-prompt mean of defect pixels inside the focus weighted ``defect_share``, plus the
    mean of background pixels weighted the rest (K)."""
    positive = inside * (targets > 0.5).float()
    negative = inside - positive
    has_positive = positive.flatten(1).sum(-1) > 0
    balanced = (defect_share * _mean(values, positive)
                + (1.0 - defect_share) * _mean(values, negative))
    return torch.where(has_positive, balanced, _mean(values, negative))


def to_input_frame(low_res: torch.Tensor, size: int) -> torch.Tensor:
    """Kx1x(S/4)x(S/4) low-res logits -> KxSxS logits in the model's input frame (bilinear)."""
    return F.interpolate(low_res.float(), (size, size), mode="bilinear", align_corners=False)[:, 0]


def scan_head_loss(token_logits: torch.Tensor, token_targets: torch.Tensor) -> torch.Tensor:
    """BCE of Bxhxw token logits against Bxhxw 0/1 targets, each view's tokens averaged, the
    views' means averaged."""
    return F.binary_cross_entropy_with_logits(token_logits.float(), token_targets.float())


def token_targets(view_mask: torch.Tensor, tokens: int) -> torch.Tensor:
    """SxS 0/1 mask in a view's input frame -> tokens x tokens 0/1: a token is a defect where
    any pixel of its cell is."""
    size = view_mask.shape[-1]
    cell = size // tokens
    return view_mask.reshape(tokens, cell, tokens, cell).amax(dim=(1, 3))


def spt_loss(draft_low: torch.Tensor, final_low: torch.Tensor, scores: torch.Tensor,
             targets: torch.Tensor, weights: LossWeights,
             focus: Optional[torch.Tensor] = None,
             prompt_weight: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """Loss terms of one image's K prompts; ``targets``: KxSxS 0/1 float in the input frame;
    ``focus``: KxSxS bool from :func:`focus_masks` (None: plain BCE over the image);
    ``prompt_weight``: K weights of the prompts (0: the prompt trains nothing; None: all 1).

    Returns ``{"loss", "draft", "final", "score"}`` (``loss`` is the weighted total).
    """
    size = targets.shape[-1]
    final = to_input_frame(final_low, size)
    out = {"draft": mask_loss(to_input_frame(draft_low, size), targets, weights, focus,
                              prompt_weight),
           "final": mask_loss(final, targets, weights, focus, prompt_weight)}
    total = weights.draft * out["draft"] + weights.final * out["final"]
    if weights.score > 0:
        with torch.no_grad():
            pred = final > 0
            truth = targets > 0.5
            union = (pred | truth).flatten(1).sum(-1)
            iou = torch.where(union > 0, (pred & truth).flatten(1).sum(-1) / union.clamp_min(1),
                              torch.ones_like(union, dtype=torch.float32))
        errors = (scores[:, 0].float() - iou.float()) ** 2
        if prompt_weight is None:
            out["score"] = errors.mean()
        else:
            w = prompt_weight.float()
            out["score"] = (errors * w).sum() / w.sum().clamp_min(1e-6)
        total = total + weights.score * out["score"]
    out["loss"] = total
    return out
