"""Reference predictors that answer box prompts the way the SPT model does, without learning.

Both follow the evaluation's predictor protocol (:class:`samspt.training.evaluation.Predictor`):
``predict(image HxWx3 uint8, boxes Kx4 float32) -> (final KxHxW bool, draft KxHxW bool)``; a
baseline has one pass, so ``final`` and ``draft`` are the same array.

* :class:`BoxAsMask`: the box itself is the mask. With the tight ground-truth box its IoU is the
  ground truth's area over the box's area: the floor a model has to beat.
* :class:`GrabCut`: OpenCV's GrabCut (Rother et al. 2004) seeded with the box
  (``GC_INIT_WITH_RECT``, 5 iterations by default); pixels labelled foreground or probable
  foreground form the mask. Where GrabCut cannot run (a box one pixel wide or high, a box covering
  the whole image so no background is left to model), the box is the answer.

Box convention (the one of :func:`samspt.runtime.preprocess.mask_box`): ``(x0, y0, x1, y1)`` in image
pixels, both corners inclusive, so a tight box around a one-pixel defect is ``(x, y, x, y)``.
Fractional corners are rounded to the nearest pixel; boxes are clipped to the image.
"""

from __future__ import annotations

import logging
from typing import Optional, Tuple

import cv2
import numpy as np

from samspt.runtime.errors import InputError
from samspt.runtime.preprocess import as_rgb_uint8

log = logging.getLogger(__name__)

Masks = Tuple[np.ndarray, np.ndarray]


def as_boxes(boxes: np.ndarray) -> np.ndarray:
    """Check and return prompts as a Kx4 float32 array of (x0, y0, x1, y1) image pixels.

    A single box of shape (4,) is accepted as 1x4. Raises :class:`InputError` for another shape,
    non-finite values or a corner order other than x0 <= x1, y0 <= y1.
    """
    arr = np.asarray(boxes, dtype=np.float32)
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise InputError(f"boxes must be Kx4 (x0, y0, x1, y1), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError("boxes hold NaN or infinite values; give finite pixel coordinates")
    bad = np.nonzero((arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1]))[0]
    if bad.size:
        raise InputError(f"box {int(bad[0])} {arr[bad[0]].tolist()} has x1 < x0 or y1 < y0; "
                         "boxes are (x0, y0, x1, y1) with the top-left corner first")
    return arr


def pixel_box(box: np.ndarray, shape: Tuple[int, int]) -> Optional[Tuple[int, int, int, int]]:
    """Integer inclusive (x0, y0, x1, y1) of a float box, rounded and clipped to an HxW image;
    ``None`` if nothing of the box lies inside the image."""
    height, width = shape[:2]
    x0, y0, x1, y1 = (int(np.floor(float(v) + 0.5)) for v in box)
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, width - 1), min(y1, height - 1)
    if x1 < x0 or y1 < y0:
        return None
    return x0, y0, x1, y1


def box_mask(box: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """HxW bool mask of the pixels inside an (x0, y0, x1, y1) box (corners inclusive)."""
    mask = np.zeros(shape[:2], dtype=bool)
    pixels = pixel_box(box, shape)
    if pixels is not None:
        x0, y0, x1, y1 = pixels
        mask[y0:y1 + 1, x0:x1 + 1] = True
    return mask


def _boxes_only(name: str, boxes: Optional[np.ndarray],
                points: Optional[np.ndarray]) -> np.ndarray:
    """The Kx4 boxes of a call to a box-only baseline, or an InputError."""
    if points is not None:
        raise InputError(f"the {name} baseline answers box prompts only; evaluate it with the box "
                         "protocol (--prompt box)")
    if boxes is None:
        raise InputError(f"the {name} baseline needs box prompts")
    return as_boxes(boxes)


class BoxAsMask:
    """The box is the mask: ``predict(image, boxes) -> (KxHxW bool, same array)``."""

    name = "box-as-mask"

    def predict(self, image: np.ndarray, boxes: Optional[np.ndarray] = None,
                points: Optional[np.ndarray] = None) -> Masks:
        arr = _boxes_only(self.name, boxes, points)
        rgb = as_rgb_uint8(image)
        masks = np.stack([box_mask(b, rgb.shape[:2]) for b in arr]) if len(arr) else \
            np.zeros((0,) + rgb.shape[:2], dtype=bool)
        return masks, masks


class GrabCut:
    """OpenCV GrabCut seeded with each box: ``predict(image, boxes) -> (KxHxW bool, same)``.

    ``iterations`` GrabCut iterations (5, as the dataset's reference figure); ``seed`` seeds
    OpenCV's random generator before every call (GrabCut's k-means initialisation draws from it),
    so a box's answer does not depend on what ran before.
    """

    name = "grabcut"

    def __init__(self, iterations: int = 5, seed: int = 0) -> None:
        if int(iterations) < 1:
            raise InputError(f"GrabCut needs at least 1 iteration, got {iterations}")
        self.iterations = int(iterations)
        self.seed = int(seed)

    def predict(self, image: np.ndarray, boxes: Optional[np.ndarray] = None,
                points: Optional[np.ndarray] = None) -> Masks:
        arr = _boxes_only(self.name, boxes, points)
        rgb = as_rgb_uint8(image)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        masks = np.zeros((len(arr),) + rgb.shape[:2], dtype=bool)
        for k, box in enumerate(arr):
            masks[k] = self._one(bgr, box)
        return masks, masks

    def _one(self, bgr: np.ndarray, box: np.ndarray) -> np.ndarray:
        height, width = bgr.shape[:2]
        pixels = pixel_box(box, (height, width))
        if pixels is None:
            return np.zeros((height, width), dtype=bool)
        x0, y0, x1, y1 = pixels
        rect = (x0, y0, x1 - x0 + 1, y1 - y0 + 1)
        if rect[2] < 2 or rect[3] < 2:
            log.debug("box %s is one pixel wide or high: GrabCut cannot model it, using the box",
                      pixels)
            return box_mask(box, (height, width))
        if rect[2] == width and rect[3] == height:
            log.debug("box %s covers the whole image: no background for GrabCut, using the box",
                      pixels)
            return box_mask(box, (height, width))
        labels = np.zeros((height, width), dtype=np.uint8)
        background = np.zeros((1, 65), dtype=np.float64)
        foreground = np.zeros((1, 65), dtype=np.float64)
        cv2.setRNGSeed(self.seed)
        try:
            cv2.grabCut(bgr, labels, rect, background, foreground, self.iterations,
                        cv2.GC_INIT_WITH_RECT)
        except cv2.error as exc:
            log.debug("GrabCut failed on box %s (%s); using the box", pixels,
                      str(exc).strip().splitlines()[-1])
            return box_mask(box, (height, width))
        return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
