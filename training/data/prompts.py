"""Prompts from masks (numpy, OpenCV for connected components): boxes, jitter, points, negatives.

Conventions: masks are HxW bool; boxes are float32 ``(x0, y0, x1, y1)`` in image pixels with
inclusive corners, as SAM's (a one-pixel defect at x=5, y=5 has the box ``(5, 5, 5, 5)``);
points are float32 ``(x, y)`` pixel coordinates. Every random function takes a
``numpy.random.Generator`` and touches no global state.
"""

from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

from samspt.training.data.records import DatasetError


def _as_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DatasetError(f"a mask must be HxW, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def region_boxes(mask: np.ndarray, min_area: int = 1,
                 connectivity: int = 8) -> Tuple[np.ndarray, np.ndarray]:
    """Connected regions of ``mask`` with at least ``min_area`` pixels.

    Returns (boxes Kx4 float32, labels HxW int32) where region ``k`` (0-based) is
    ``labels == k + 1`` and ``boxes[k]`` its tight box; smaller regions are 0 in ``labels``.
    Regions are ordered by area, largest first (ties: top-most, then left-most).
    """
    if connectivity not in (4, 8):
        raise DatasetError(f"connectivity must be 4 or 8, got {connectivity}")
    mask = _as_mask(mask)
    count, raw, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=connectivity, ltype=cv2.CV_32S)
    ids = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= min_area]
    ids.sort(key=lambda i: (-stats[i, cv2.CC_STAT_AREA], stats[i, cv2.CC_STAT_TOP],
                            stats[i, cv2.CC_STAT_LEFT]))
    lut = np.zeros(count, dtype=np.int32)
    boxes = np.zeros((len(ids), 4), dtype=np.float32)
    for k, i in enumerate(ids):
        lut[i] = k + 1
        x, y = stats[i, cv2.CC_STAT_LEFT], stats[i, cv2.CC_STAT_TOP]
        w, h = stats[i, cv2.CC_STAT_WIDTH], stats[i, cv2.CC_STAT_HEIGHT]
        boxes[k] = (x, y, x + w - 1, y + h - 1)
    return boxes, lut[raw]


def jitter_boxes(boxes: np.ndarray, fraction: float, image_hw: Tuple[int, int],
                 rng: np.random.Generator) -> np.ndarray:
    """Move each side of Kx4 boxes by ``U(-fraction, fraction)`` times the box's size in pixels
    (``x1 - x0 + 1`` for x sides, ``y1 - y0 + 1`` for y sides), clip to the image, and never
    invert (sides that cross meet at their mean). Returns Kx4 float32."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if fraction < 0:
        raise DatasetError(f"box jitter fraction must be >= 0, got {fraction}")
    size = np.concatenate([boxes[:, 2:] - boxes[:, :2] + 1] * 2, axis=1)
    out = boxes + rng.uniform(-fraction, fraction, size=boxes.shape).astype(np.float32) * size
    for lo, hi in ((0, 2), (1, 3)):
        crossed = out[:, lo] > out[:, hi]
        mid = (out[crossed, lo] + out[crossed, hi]) / 2
        out[crossed, lo] = mid
        out[crossed, hi] = mid
    height, width = image_hw
    out[:, 0::2] = np.clip(out[:, 0::2], 0, width - 1)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, height - 1)
    return out.astype(np.float32)


def sample_points(region: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` (x, y) float32 pixel coordinates of True pixels of ``region`` (countx2),
    without repetition while the region has enough pixels; DatasetError if it is empty."""
    ys, xs = np.nonzero(_as_mask(region))
    if count and ys.size == 0:
        raise DatasetError("cannot sample points in an empty region")
    if count == 0:
        return np.zeros((0, 2), dtype=np.float32)
    idx = rng.choice(ys.size, size=count, replace=ys.size < count)
    return np.stack([xs[idx], ys[idx]], axis=1).astype(np.float32)


def random_boxes(image_hw: Tuple[int, int], count: int, rng: np.random.Generator,
                 size_range: Tuple[float, float] = (0.05, 0.5)) -> np.ndarray:
    """``count`` random boxes (countx4 float32) inside an HxW image; each side's length is
    ``U(size_range)`` times the image's side (at least one pixel), placed uniformly."""
    lo, hi = size_range
    if not 0 < lo <= hi <= 1:
        raise DatasetError(f"size_range must satisfy 0 < min <= max <= 1, got {size_range}")
    height, width = image_hw
    sides = rng.uniform(lo, hi, size=(count, 2)) * np.array([width, height])
    w = np.clip(np.round(sides[:, 0]), 1, width).astype(np.int64)
    h = np.clip(np.round(sides[:, 1]), 1, height).astype(np.int64)
    x0 = np.floor(rng.random(count) * (width - w + 1)).astype(np.int64)
    y0 = np.floor(rng.random(count) * (height - h + 1)).astype(np.int64)
    return np.stack([x0, y0, x0 + w - 1, y0 + h - 1], axis=1).astype(np.float32)


def negative_boxes(mask: np.ndarray, count: int, rng: np.random.Generator,
                   size_range: Tuple[float, float] = (0.05, 0.5),
                   tries: int = 20) -> np.ndarray:
    """Up to ``count`` random boxes (Mx4 float32, M <= count) that hold no True pixel of
    ``mask``: negative prompts, whose target is an empty mask. On an empty mask any box
    qualifies (M == count); on a mask covering most of the image M may be smaller."""
    mask = _as_mask(mask)
    if count <= 0:
        return np.zeros((0, 4), dtype=np.float32)
    if not mask.any():
        return random_boxes(mask.shape, count, rng, size_range)
    integral = cv2.integral(mask.astype(np.uint8), sdepth=cv2.CV_32S)  # (H+1)x(W+1)
    found = []
    lo = size_range[0]
    for attempt in range(tries):
        # Later attempts shrink the size range towards its minimum: small gaps fit small boxes.
        hi = max(lo, size_range[1] * (1 - attempt / tries))
        cand = random_boxes(mask.shape, 4 * count, rng, (lo, hi)).astype(np.int64)
        x0, y0, x1, y1 = cand.T
        inside = (integral[y1 + 1, x1 + 1] - integral[y0, x1 + 1] - integral[y1 + 1, x0]
                  + integral[y0, x0])
        found += list(cand[inside == 0][: count - len(found)])
        if len(found) >= count:
            break
    return np.asarray(found, dtype=np.float32).reshape(-1, 4)
