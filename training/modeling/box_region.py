"""Where a box prompt allows a defect: its box grown by a margin, on any grid over the input frame.

One home for the rule, used by the loss (BCE focused on the box) and by the model's box clip
(logits outside a box prompt's grown box are set to a fixed negative value). Written with plain
tensor ops so the clip exports to ONNX inside the decoder graph.
"""

from __future__ import annotations

import torch
from torch import nn

from samspt.runtime.tensors import LABEL_BOX_BOTTOM_RIGHT, LABEL_BOX_TOP_LEFT

# Logit given to cells outside a clipped box: sigmoid(-16) ~ 1e-7, and exact in float16.
CLIPPED_LOGIT = -16.0


def box_region(point_coords: torch.Tensor, point_labels: torch.Tensor, image_size: int,
               grid: int, margin: float, slack_cells: float = 0.0) -> torch.Tensor:
    """BxGxG bool over a ``grid``-cell grid covering the ``image_size`` input frame: True where a
    cell's centre lies in the prompt's box (inclusive pixel corners) grown by ``margin`` of its
    size per side plus ``slack_cells`` cells. All True for prompts without a box."""
    cell = image_size / grid
    is_box = (point_labels == LABEL_BOX_TOP_LEFT).float().amax(dim=1) > 0
    top_left = _corner(point_coords, point_labels, LABEL_BOX_TOP_LEFT)
    bottom_right = _corner(point_coords, point_labels, LABEL_BOX_BOTTOM_RIGHT)
    extent = (bottom_right - top_left).clamp_min(1.0) * margin + slack_cells * cell
    low, high = top_left - extent, bottom_right + 1.0 + extent
    centres = (torch.arange(grid, device=point_coords.device, dtype=torch.float32) + 0.5) * cell
    inside_x = (centres[None] >= low[:, 0:1]) & (centres[None] <= high[:, 0:1])
    inside_y = (centres[None] >= low[:, 1:2]) & (centres[None] <= high[:, 1:2])
    region = inside_y[:, :, None] & inside_x[:, None, :]
    return region | ~is_box[:, None, None]


def clip_to_boxes(logits: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor,
                  image_size: int, margin: float) -> torch.Tensor:
    """Bx1xGxG logits with every cell outside its prompt's grown box set to CLIPPED_LOGIT (one cell
    of slack on each side, so bilinear upscaling never eats into the box)."""
    region = box_region(point_coords, point_labels, image_size, logits.shape[-1], margin,
                        slack_cells=1.0)
    clipped = torch.full((), CLIPPED_LOGIT, dtype=logits.dtype, device=logits.device)
    return torch.where(region[:, None], logits, clipped)


class BoxClip(nn.Module):
    """:func:`clip_to_boxes` as a module, so the exported graph holds it in one named scope
    (``/box_clip``, one per pass) that the FP16 converter keeps in FP32: its grid of cell centres
    (a ``Range`` on constants, which ONNX does not define for float16) and the comparisons with
    box corners of up to 1024 px, which float16 rounds to 0.5 px."""

    def __init__(self, image_size: int, margin: float) -> None:
        super().__init__()
        self.image_size = image_size
        self.margin = margin

    def forward(self, logits: torch.Tensor, point_coords: torch.Tensor,
                point_labels: torch.Tensor) -> torch.Tensor:
        return clip_to_boxes(logits, point_coords, point_labels, self.image_size, self.margin)


def _corner(coords: torch.Tensor, labels: torch.Tensor, label: int) -> torch.Tensor:
    pick = (labels == label).float().unsqueeze(-1)
    return (coords.float() * pick).sum(dim=1) / pick.sum(dim=1).clamp_min(1.0)
