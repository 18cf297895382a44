"""Run the PyTorch SPT model on HxW(x3) uint8 images with pixel-space prompts, through the
runtime's shared pre- and post-processing (the reference path export and runtime are checked
against)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from samspt.runtime import preprocess as pp
from samspt.training.model import SptSam


@dataclass
class TorchPrediction:
    """Masks KxHxW bool at the image's size; logits Kx1x4hx4w low-res float32; scores K."""

    masks: np.ndarray
    draft_masks: np.ndarray
    logits: np.ndarray
    draft_logits: np.ndarray
    scores: np.ndarray


@torch.no_grad()
def predict(model: SptSam, image: np.ndarray, boxes: Optional[np.ndarray] = None,
            points: Optional[np.ndarray] = None,
            point_labels: Optional[np.ndarray] = None) -> TorchPrediction:
    """K prompts on one image; boxes Kx4 / points KxPx2 in image pixels."""
    config = model.config
    rgb = pp.as_rgb_uint8(image)
    original = rgb.shape[:2]
    tensor, resized = pp.preprocess_image(rgb, config.image_size, config.pixel_mean,
                                          config.pixel_std)
    coords, labels = pp.pack_prompts(boxes, points, point_labels)
    coords = pp.scale_coords(coords, original, resized)
    device = next(model.parameters()).device
    out = model(torch.from_numpy(tensor).to(device), torch.from_numpy(coords).to(device),
                torch.from_numpy(labels).to(device))
    draft = out.draft_logits.float().cpu().numpy()
    final = out.logits.float().cpu().numpy()

    def full(low_res: np.ndarray) -> np.ndarray:
        return pp.upscale_logits(low_res, resized, original, config.image_size) > pp.MASK_THRESHOLD

    return TorchPrediction(full(final), full(draft), final, draft,
                           out.scores[:, 0].float().cpu().numpy())
