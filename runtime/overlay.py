"""Overlay pictures of inspection results (PIL only): draft and final outlines, scores."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw

from samspt.runtime.files import atomic_path
from samspt.runtime.result import InspectionResult

DRAFT_COLOR = (255, 170, 0)
FINAL_COLOR = (255, 0, 60)
BOX_COLOR = (0, 200, 255)


def outline(mask: np.ndarray) -> np.ndarray:
    """HxW bool: the pixels of ``mask`` that touch a pixel outside it (4-neighbourhood)."""
    padded = np.pad(mask, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def render_overlay(image: np.ndarray, result: InspectionResult,
                   boxes: Optional[np.ndarray] = None) -> Image.Image:
    """The RGB image with each prompt's box (cyan), draft outline (orange), final mask (red tint
    and outline) and score."""
    rgb = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image.copy()
    canvas = rgb.astype(np.float32)
    for k in range(len(result)):
        canvas[result.masks[k]] = canvas[result.masks[k]] * 0.6 + np.asarray(FINAL_COLOR) * 0.4
    canvas = canvas.astype(np.uint8)
    for k in range(len(result)):
        canvas[outline(result.draft_masks[k])] = DRAFT_COLOR
        canvas[outline(result.masks[k])] = FINAL_COLOR
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for k in range(len(result)):
        if boxes is not None and k < len(boxes):
            x0, y0, x1, y1 = (float(v) for v in boxes[k])
            draw.rectangle([x0, y0, x1, y1], outline=BOX_COLOR)
            anchor = (x0 + 2, max(0.0, y0 - 12))
        else:
            anchor = (2, 2 + 12 * k)
        label = "defect" if result.pred_label[k] else "ok"
        draw.text(anchor, f"{label} {result.scores[k]:.2f}", fill=BOX_COLOR)
    return picture


def save_overlay(picture: Image.Image, path: Path) -> Path:
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return path
