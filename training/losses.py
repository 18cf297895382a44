"""Segmentation losses on SPT's two passes: BCE + Dice on draft and final logits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F

from samspt.runtime.tensors import LABEL_BOX_BOTTOM_RIGHT, LABEL_BOX_TOP_LEFT


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms. The draft only learns if it is supervised (``draft > 0``)."""

    bce: float = 1.0
    dice: float = 1.0
    draft: float = 1.0
    final: float = 1.0
    score: float = 0.0  # MSE between the predicted score and the final mask's true IoU
    # BCE is averaged separately inside each prompt's box (grown by ``focus_margin`` of its size
    # on every side) and outside it, the outside mean weighted by ``outside``. Averaged over the
    # whole image instead, a defect covering 0.1% of it drowns in background and the model
    # collapses to "no defect anywhere".
    focus_margin: float = 0.25
    outside: float = 0.5


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Mean soft Dice loss over prompts; logits/targets KxHxW (targets 0/1 float)."""
    probs = torch.sigmoid(logits).flatten(1)
    targets = targets.flatten(1)
    inter = (probs * targets).sum(-1)
    return (1 - (2 * inter + smooth) / (probs.sum(-1) + targets.sum(-1) + smooth)).mean()


def focus_masks(point_coords: torch.Tensor, point_labels: torch.Tensor, size: int,
                margin: float) -> torch.Tensor:
    """KxSxS bool: each box prompt's box grown by ``margin`` of its size per side (input frame);
    all True for prompts without a box."""
    count = point_coords.shape[0]
    is_box = (point_labels == LABEL_BOX_TOP_LEFT).any(dim=1)
    top_left = _corner(point_coords, point_labels, LABEL_BOX_TOP_LEFT)
    bottom_right = _corner(point_coords, point_labels, LABEL_BOX_BOTTOM_RIGHT)
    extent = (bottom_right - top_left).clamp_min(1.0) * margin
    low, high = top_left - extent, bottom_right + extent
    grid = torch.arange(size, device=point_coords.device, dtype=torch.float32) + 0.5
    inside_x = (grid[None] >= low[:, 0:1]) & (grid[None] <= high[:, 0:1] + 1)
    inside_y = (grid[None] >= low[:, 1:2]) & (grid[None] <= high[:, 1:2] + 1)
    focus = inside_y[:, :, None] & inside_x[:, None, :]
    return focus | ~is_box.view(count, 1, 1)


def _corner(coords: torch.Tensor, labels: torch.Tensor, label: int) -> torch.Tensor:
    pick = (labels == label).float().unsqueeze(-1)
    return (coords.float() * pick).sum(dim=1) / pick.sum(dim=1).clamp_min(1.0)


def mask_loss(logits: torch.Tensor, targets: torch.Tensor, weights: LossWeights,
              focus: Optional[torch.Tensor] = None) -> torch.Tensor:
    """BCE + Dice of KxHxW logits against KxHxW 0/1 targets; with a KxHxW bool ``focus``, BCE is
    the mean inside it plus ``weights.outside`` times the mean outside it."""
    per_pixel = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if focus is None:
        bce = per_pixel.mean()
    else:
        inside = focus.float()
        outside = 1.0 - inside
        bce = ((per_pixel * inside).flatten(1).sum(-1) / inside.flatten(1).sum(-1).clamp_min(1)
               + weights.outside * (per_pixel * outside).flatten(1).sum(-1)
               / outside.flatten(1).sum(-1).clamp_min(1)).mean()
    return weights.bce * bce + weights.dice * dice_loss(logits, targets)


def to_input_frame(low_res: torch.Tensor, size: int) -> torch.Tensor:
    """Kx1x(S/4)x(S/4) low-res logits -> KxSxS logits in the model's input frame (bilinear)."""
    return F.interpolate(low_res.float(), (size, size), mode="bilinear", align_corners=False)[:, 0]


def spt_loss(draft_low: torch.Tensor, final_low: torch.Tensor, scores: torch.Tensor,
             targets: torch.Tensor, weights: LossWeights,
             focus: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """Loss terms of one image's K prompts; ``targets``: KxSxS 0/1 float in the input frame;
    ``focus``: KxSxS bool from :func:`focus_masks` (None: plain BCE over the image).

    Returns ``{"loss", "draft", "final", "score"}`` (``loss`` is the weighted total).
    """
    size = targets.shape[-1]
    final = to_input_frame(final_low, size)
    out = {"draft": mask_loss(to_input_frame(draft_low, size), targets, weights, focus),
           "final": mask_loss(final, targets, weights, focus)}
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
