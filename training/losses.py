"""Segmentation losses on SPT's two passes: BCE + Dice on draft and final logits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms. The draft only learns if it is supervised (``draft > 0``)."""

    bce: float = 1.0
    dice: float = 1.0
    draft: float = 1.0
    final: float = 1.0
    score: float = 0.0  # MSE between the predicted score and the final mask's true IoU


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Mean soft Dice loss over prompts; logits/targets KxHxW (targets 0/1 float)."""
    probs = torch.sigmoid(logits).flatten(1)
    targets = targets.flatten(1)
    inter = (probs * targets).sum(-1)
    return (1 - (2 * inter + smooth) / (probs.sum(-1) + targets.sum(-1) + smooth)).mean()


def mask_loss(logits: torch.Tensor, targets: torch.Tensor, weights: LossWeights) -> torch.Tensor:
    """BCE + Dice of KxHxW logits against KxHxW 0/1 targets."""
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    return weights.bce * bce + weights.dice * dice_loss(logits, targets)


def to_input_frame(low_res: torch.Tensor, size: int) -> torch.Tensor:
    """Kx1x(S/4)x(S/4) low-res logits -> KxSxS logits in the model's input frame (bilinear)."""
    return F.interpolate(low_res.float(), (size, size), mode="bilinear", align_corners=False)[:, 0]


def spt_loss(draft_low: torch.Tensor, final_low: torch.Tensor, scores: torch.Tensor,
             targets: torch.Tensor, weights: LossWeights) -> Dict[str, torch.Tensor]:
    """Loss terms of one image's K prompts; ``targets``: KxSxS 0/1 float in the input frame.

    Returns ``{"loss", "draft", "final", "score"}`` (``loss`` is the weighted total).
    """
    size = targets.shape[-1]
    final = to_input_frame(final_low, size)
    out = {"draft": mask_loss(to_input_frame(draft_low, size), targets, weights),
           "final": mask_loss(final, targets, weights)}
    total = weights.draft * out["draft"] + weights.final * out["final"]
    if weights.score > 0:
        with torch.no_grad():
            pred = final > 0
            truth = targets > 0.5
            union = (pred | truth).flatten(1).sum(-1)
            iou = torch.where(union > 0, (pred & truth).flatten(1).sum(-1) / union.clamp_min(1),
                              torch.ones_like(union, dtype=torch.float32))
        out["score"] = F.mse_loss(scores[:, 0].float(), iou.float())
        total = total + weights.score * out["score"]
    out["loss"] = total
    return out
