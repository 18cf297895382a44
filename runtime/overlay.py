"""Overlay pictures of inspection results (PIL only): draft and final outlines, scores, and each
prompt's view enlarged beside the whole image, so a 10 px defect's outline can be seen."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from samspt.runtime.files import atomic_path
from samspt.runtime.result import InspectionResult
from samspt.runtime.views import View, ViewSettings, box_view
from samspt.runtime.preprocess import crop_view

DRAFT_COLOR = (255, 170, 0)
FINAL_COLOR = (255, 0, 60)
BOX_COLOR = (0, 200, 255)
VIEW_COLOR = (120, 255, 120)
INSET_SIDE = 256     # pixels of an enlarged view beside the image
MAX_INSETS = 6


def outline(mask: np.ndarray) -> np.ndarray:
    """HxW bool: the pixels of ``mask`` that touch a pixel outside it (4-neighbourhood)."""
    padded = np.pad(mask, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def render_overlay(image: np.ndarray, result: InspectionResult,
                   boxes: Optional[np.ndarray] = None, insets: bool = True) -> Image.Image:
    """The RGB image with each prompt's box (cyan), draft outline (orange), final mask (red tint
    and outline) and score; with ``insets``, each prompt's view (green frame) enlarged in a
    column on the right, outlines drawn at the enlarged size (a scan: its detection). A scan with
    an anomaly map (a model with a scan head) gets the map as a heat picture below."""
    picture = _with_insets(image, result, _render_whole(image, result, boxes), insets)
    if result.anomaly_map is None:
        return picture
    heat = heat_picture(image, result.anomaly_map)
    out = Image.new("RGB", (max(picture.width, heat.width), picture.height + heat.height + 14),
                    (32, 32, 32))
    out.paste(picture, (0, 0))
    ImageDraw.Draw(out).text((2, picture.height + 1), "anomaly map (defect probability)",
                             fill=VIEW_COLOR)
    out.paste(heat, (0, picture.height + 14))
    return out


def heat_picture(image: np.ndarray, probability: np.ndarray) -> Image.Image:
    """The image in grey with a defect probability map laid over it (black-red-yellow)."""
    grey = image if image.ndim == 2 else image.mean(axis=2)
    p = np.clip(np.asarray(probability, np.float32), 0.0, 1.0)[..., None]
    heat = np.concatenate([np.clip(2 * p, 0, 1), np.clip(2 * p - 1, 0, 1), np.zeros_like(p)],
                          axis=2) * 255.0
    base = np.repeat(np.asarray(grey, np.float32)[..., None], 3, axis=2) * 0.5
    return Image.fromarray(np.clip(base + heat * 0.5 + 0.5 * base * (1 - p), 0, 255)
                           .astype(np.uint8))


def _with_insets(image: np.ndarray, result: InspectionResult, picture: Image.Image,
                 insets: bool) -> Image.Image:
    windows = _inset_windows(image.shape[:2], result) if insets else []
    if not windows:
        return picture
    draw = ImageDraw.Draw(picture)
    for _, view in windows:
        draw.rectangle([view.x0, view.y0, view.x0 + view.side - 1, view.y0 + view.side - 1],
                       outline=VIEW_COLOR)
    column = [_inset(image, result, k, view) for k, view in windows]
    height = max(picture.height, sum(tile.height for tile in column))
    out = Image.new("RGB", (picture.width + INSET_SIDE + 4, height), (32, 32, 32))
    out.paste(picture, (0, 0))
    top = 0
    for tile in column:
        out.paste(tile, (picture.width + 4, top))
        top += tile.height
    return out


def _inset_windows(image_hw: Tuple[int, int], result: InspectionResult) -> List[Tuple[int, View]]:
    """(row, window) of the rows worth enlarging: a prompt's own view when it is smaller than the
    image; for a scan row (several views), a view around what it found."""
    out = []
    for k in range(len(result)):
        views = result.views[k:k + 1] if len(result.views) == len(result) else result.views
        if len(views) == 1:
            view = views[0]
        elif result.pred_label[k]:
            view = box_view(result.bbox[k], image_hw, INSET_SIDE, ViewSettings(min_side=32))
        else:
            continue
        if not view.is_whole_image:
            out.append((k, view))
    return out[:MAX_INSETS]


def enlarged_view(image: np.ndarray, view: View, side: int,
                  outlines: Sequence[Tuple[np.ndarray, Tuple[int, int, int]]],
                  tint: Optional[Tuple[np.ndarray, Tuple[int, int, int]]] = None) -> np.ndarray:
    """``side``x``side``x3 uint8: the image inside ``view`` enlarged, with each (HxW bool mask,
    colour) of ``outlines`` outlined at the enlarged size (so a few-pixel defect's shape shows)
    and an optional (mask, colour) ``tint`` under them."""
    inset = View(view.x0, view.y0, view.side, view.image_hw, side)
    canvas = crop_view(inset, np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image)

    def big(mask: np.ndarray) -> np.ndarray:
        return crop_view(inset, mask.astype(np.uint8) * 255, Image.NEAREST) > 127

    if tint is not None:
        region = big(tint[0])
        canvas[region] = (canvas[region] * 0.6 + np.asarray(tint[1]) * 0.4).astype(np.uint8)
    for mask, color in outlines:
        canvas[outline(big(mask))] = color
    return canvas


def _inset(image: np.ndarray, result: InspectionResult, k: int, view: View) -> Image.Image:
    """Row ``k``'s masks and image inside ``view``, enlarged to INSET_SIDE, with a caption."""
    canvas = enlarged_view(image, view, INSET_SIDE,
                           [(result.draft_masks[k], DRAFT_COLOR), (result.masks[k], FINAL_COLOR)],
                           tint=(result.masks[k], FINAL_COLOR))
    tile = Image.new("RGB", (INSET_SIDE, INSET_SIDE + 14), (32, 32, 32))
    tile.paste(Image.fromarray(canvas), (0, 14))
    ImageDraw.Draw(tile).text((2, 1), f"prompt {k}: x{INSET_SIDE / view.side:.1f}",
                              fill=VIEW_COLOR)
    return tile


def _render_whole(image: np.ndarray, result: InspectionResult,
                  boxes: Optional[np.ndarray]) -> Image.Image:
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
        text = f"{label} {result.scores[k]:.2f}"
        if len(result.pred_score) == len(result):
            text += f" (pred {result.pred_score[k]:.2f})"
        draw.text(anchor, text, fill=BOX_COLOR)
    return picture


def save_overlay(picture: Image.Image, path: Path) -> Path:
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return path
