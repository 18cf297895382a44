"""Checks of what a caller hands the Inspector: every malformed input becomes an
:class:`~samspt.runtime.errors.InputError` that names the problem and the fix.

Conventions: images are HxW (grey) or HxWx3 (RGB) uint8; boxes are Kx4 (x0, y0, x1, y1) in
image pixels with inclusive corners; points are KxPx2 (x, y) in image pixels with KxP labels
(1 foreground, 0 background, -1 padding).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from samspt.runtime.errors import InputError
from samspt.runtime.preprocess import as_rgb_uint8

# 100 megapixels: beyond what any line camera sends, small enough to never exhaust memory.
DEFAULT_MAX_PIXELS = 100_000_000
MIN_SIDE = 2
POINT_LABELS = (-1, 0, 1)


def check_image(image: object, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """HxW or HxWx3 (or HxWx1) uint8 -> contiguous HxWx3 uint8."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"image must be a numpy array (HxWx3 RGB or HxW grey uint8), got "
                         f"{type(image).__name__}; e.g. np.asarray(PIL.Image.open(path))")
    if image.ndim not in (2, 3):
        raise InputError(f"image must be HxW or HxWx3, got {image.ndim} dimensions "
                         f"(shape {image.shape}); for a batch, call inspect once per image")
    if image.shape[0] < MIN_SIDE or image.shape[1] < MIN_SIDE:
        raise InputError(f"image is {image.shape[1]}x{image.shape[0]} pixels; it needs at least "
                         f"{MIN_SIDE}x{MIN_SIDE}")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise InputError(f"image has {image.shape[0] * image.shape[1]:,} pixels, more than the "
                         f"limit of {max_pixels:,}; downscale it or raise max_image_pixels")
    return as_rgb_uint8(image)


def _float_array(value: object, what: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be numbers, got {type(value).__name__}") from None
    if not np.isfinite(array).all():
        raise InputError(f"{what} contain NaN or infinite values")
    return array


def check_boxes(boxes: object, hw: Tuple[int, int], max_prompts: int) -> np.ndarray:
    """(4,) or Kx4 boxes -> Kx4 float32, clipped to the image.

    Refused: NaN/inf, x1 < x0 or y1 < y0 (inverted), boxes entirely outside the image,
    more than ``max_prompts`` boxes.
    """
    array = _float_array(boxes, "boxes")
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 4:
        raise InputError(f"boxes must be Kx4 (x0, y0, x1, y1), got shape {array.shape}")
    _check_count(array.shape[0], max_prompts, "boxes")
    h, w = hw
    inverted = np.nonzero((array[:, 2] < array[:, 0]) | (array[:, 3] < array[:, 1]))[0]
    if inverted.size:
        raise InputError(f"box {int(inverted[0])} is inverted ({array[inverted[0]].tolist()}): "
                         "boxes are (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1")
    outside = np.nonzero((array[:, 2] < 0) | (array[:, 3] < 0) | (array[:, 0] > w - 1) |
                         (array[:, 1] > h - 1))[0]
    if outside.size:
        raise InputError(f"box {int(outside[0])} ({array[outside[0]].tolist()}) lies outside the "
                         f"{w}x{h} image")
    array[:, 0::2] = array[:, 0::2].clip(0, w - 1)
    array[:, 1::2] = array[:, 1::2].clip(0, h - 1)
    return array.astype(np.float32)


def check_points(points: object, labels: object, hw: Tuple[int, int],
                 max_prompts: int) -> Tuple[np.ndarray, np.ndarray]:
    """(P,2)/KxPx2 points and (P,)/KxP labels -> (KxPx2 float32, KxP float32)."""
    if labels is None:
        raise InputError("points need point_labels (1 foreground, 0 background, -1 padding), "
                         "one per point")
    array = _float_array(points, "points")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[2] != 2 or array.shape[1] < 1:
        raise InputError(f"points must be KxPx2 (or Px2 for one prompt), got shape {array.shape}")
    label_array = _float_array(labels, "point_labels")
    if label_array.ndim == 1:
        label_array = label_array[None]
    if label_array.shape != array.shape[:2]:
        raise InputError(f"point_labels has shape {label_array.shape} but points need "
                         f"{array.shape[:2]}: one label per point")
    bad = set(np.unique(label_array).tolist()) - set(POINT_LABELS)
    if bad:
        raise InputError(f"point labels must be 1 (foreground), 0 (background) or -1 (padding), "
                         f"got {sorted(bad)}; boxes go in `boxes`")
    _check_count(array.shape[0], max_prompts, "point prompts")
    h, w = hw
    real = label_array != -1
    off = real & ((array[..., 0] < 0) | (array[..., 0] > w - 1) | (array[..., 1] < 0) |
                  (array[..., 1] > h - 1))
    if off.any():
        k, p = np.argwhere(off)[0]
        raise InputError(f"point {int(p)} of prompt {int(k)} ({array[k, p].tolist()}) lies "
                         f"outside the {w}x{h} image")
    return array.astype(np.float32), label_array.astype(np.float32)


def _check_count(count: int, max_prompts: int, what: str) -> None:
    if count < 1:
        raise InputError(f"{what} is empty: give at least one, or none for the prompt-free scan")
    if count > max_prompts:
        raise InputError(f"{count} {what} in one call, more than the limit of {max_prompts}; "
                         "split them over several calls or raise max_prompts (TensorRT: rebuild "
                         "the engines with a larger --prompts maximum)")


def check_prompts(boxes: Optional[object], points: Optional[object],
                  point_labels: Optional[object], hw: Tuple[int, int],
                  max_prompts: int) -> Tuple[Optional[np.ndarray], Optional[np.ndarray],
                                             Optional[np.ndarray]]:
    """Validated (boxes Kx4 | None, points KxPx2 | None, labels KxP | None); no prompt at all
    gives (None, None, None): the prompt-free scan."""
    if point_labels is not None and points is None:
        raise InputError("point_labels given without points")
    checked_boxes = check_boxes(boxes, hw, max_prompts) if boxes is not None else None
    checked_points = checked_labels = None
    if points is not None:
        checked_points, checked_labels = check_points(points, point_labels, hw, max_prompts)
        if checked_boxes is not None and checked_boxes.shape[0] != checked_points.shape[0]:
            raise InputError(f"{checked_boxes.shape[0]} boxes but {checked_points.shape[0]} point "
                             "prompts: give one of each per prompt, or only one kind")
    return checked_boxes, checked_points, checked_labels
