"""Run the PyTorch SPT model on HxW(x3) uint8 images with pixel-space prompts, through the
runtime's shared views, pre- and post-processing (the reference path export and runtime are
checked against)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch

from samspt.runtime.postprocess import MASK_THRESHOLD
from samspt.runtime.preprocess import as_rgb_uint8
from samspt.runtime.find_segment import head_scan
from samspt.runtime.view_inference import infer_views
from samspt.runtime.views import View, plan_views
from samspt.training.modeling.model import SptSam


@dataclass
class TorchPrediction:
    """Masks KxHxW bool at the image's size; logits Kx1x4hx4w low-res float32 (each prompt's
    view frame); scores K; the view of each prompt (a scan: one row, all its views)."""

    masks: np.ndarray
    draft_masks: np.ndarray
    logits: np.ndarray
    draft_logits: np.ndarray
    scores: np.ndarray
    views: List[View]


@torch.no_grad()
def predict(model: SptSam, image: np.ndarray, boxes: Optional[np.ndarray] = None,
            points: Optional[np.ndarray] = None, point_labels: Optional[np.ndarray] = None,
            views: str = "auto") -> TorchPrediction:
    """K prompts on one image; boxes Kx4 / points KxPx2 in image pixels. ``views``: "auto"
    (each prompt in its view, the model's view settings) or "image" (the whole image). No
    prompt at all: the prompt-free scan, one merged row."""
    config = model.config
    rgb = as_rgb_uint8(image)
    image_hw = rgb.shape[:2]
    device = next(model.parameters()).device
    plan = plan_views(image_hw, config.image_size, config.view_settings, views, boxes, points,
                      point_labels)

    def encode(batch: np.ndarray) -> torch.Tensor:
        return model.encode(torch.from_numpy(batch).to(device))

    def decode(embedding: torch.Tensor, view_coords: np.ndarray, view_labels: np.ndarray):
        out = model.decode(embedding, torch.from_numpy(view_coords).to(device),
                           torch.from_numpy(view_labels).to(device))
        return (out.draft_logits.float().cpu().numpy(), out.logits.float().cpu().numpy(),
                out.scores[:, 0].float().cpu().numpy())

    if plan.scan and views == "auto" and model.scan_head is not None:
        found = head_scan(rgb, config.view_settings, config.image_size, _TorchHead(model), encode, decode, config.pixel_mean, config.pixel_std,
                          mask_threshold=MASK_THRESHOLD)
        empty = np.zeros((0, 1, 1, 1), np.float32)
        return TorchPrediction(found.masks, found.draft_masks, empty, empty,
                               np.array([found.score], np.float32), found.views)
    out = infer_views(rgb, plan, encode, decode, config.pixel_mean, config.pixel_std)
    return TorchPrediction(out.logits > MASK_THRESHOLD, out.draft_logits > MASK_THRESHOLD,
                           out.low_res, out.draft_low_res, out.scores, out.views)


class _TorchHead:
    """The model's scan head for :func:`~samspt.runtime.find_segment.head_scan`."""

    def __init__(self, model: SptSam) -> None:
        self.model = model

    def logits(self, embeddings) -> np.ndarray:
        return self.model.defect_logits(torch.cat(list(embeddings))).float().cpu().numpy()
