"""Segmentation metrics on HxW bool masks (numpy and OpenCV only).

* :func:`mask_iou`: intersection over union of two masks.
* :func:`boundary_iou`: Boundary IoU (Cheng, Girshick, Dollár, Berg and Kirillov, "Boundary IoU:
  Improving Object-Centric Image Segmentation Evaluation", CVPR 2021): the IoU of the two masks'
  inner boundary bands, a band being the mask minus its erosion. The erosion radius is
  ``d = max(1, round(dilation_ratio * image diagonal))`` pixels (a 3x3 square element applied ``d``
  times); pixels outside the image count as background, so a mask cut by the border has a band
  along the border too. This is the authors' reference ``mask_to_boundary``.
* :func:`false_positive_area`: the share of the image predicted defect where there is none (on a
  defect-free image: the predicted area fraction).

Conventions: two empty masks agree perfectly (IoU 1.0); an empty and a non-empty mask do not
overlap at all (0.0). Every function returns a Python float in [0, 1].
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from samspt.runtime.errors import InputError

#: Boundary IoU's default band width: 2% of the image diagonal (the paper's choice).
DEFAULT_DILATION_RATIO = 0.02

_KERNEL_3X3 = np.ones((3, 3), dtype=np.uint8)


def _check_mask(mask: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(mask, np.ndarray):
        raise InputError(f"{name} must be a numpy array (HxW bool), got {type(mask).__name__}")
    if mask.ndim != 2:
        raise InputError(f"{name} must be an HxW mask, got shape {mask.shape}; pass one mask at "
                         "a time (masks[k] of a KxHxW stack)")
    if mask.dtype != bool:
        raise InputError(f"{name} must be a bool mask, got {mask.dtype}; threshold it first "
                         "(e.g. mask > 127 for an 8-bit image)")
    if mask.size == 0:
        raise InputError(f"{name} is empty (shape {mask.shape}); masks need at least one pixel")
    return mask


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    _check_mask(pred, "pred")
    _check_mask(gt, "gt")
    if pred.shape != gt.shape:
        raise InputError(f"pred has shape {pred.shape} but gt has {gt.shape}; both masks must be "
                         "at the image's size")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int(np.count_nonzero(a | b))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(a & b)) / union


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two HxW bool masks; 1.0 when both are empty."""
    _check_pair(pred, gt)
    return _iou(pred, gt)


def boundary_radius(shape: tuple, dilation_ratio: float = DEFAULT_DILATION_RATIO) -> int:
    """Band width in pixels for an image of ``shape`` (H, W): max(1, round(ratio * diagonal))."""
    if not np.isfinite(dilation_ratio) or dilation_ratio < 0:
        raise InputError(f"dilation_ratio must be a finite number >= 0, got {dilation_ratio}")
    height, width = shape[:2]
    diagonal = float(np.hypot(height, width))
    return max(1, int(round(dilation_ratio * diagonal)))


def mask_boundary(mask: np.ndarray, dilation_ratio: float = DEFAULT_DILATION_RATIO) -> np.ndarray:
    """HxW bool inner boundary band of an HxW bool mask: the mask minus its erosion.

    The erosion uses a 3x3 square element :func:`boundary_radius` times, with the outside of the
    image treated as background (Cheng et al.'s ``mask_to_boundary``).
    """
    _check_mask(mask, "mask")
    height, width = mask.shape
    radius = boundary_radius(mask.shape, dilation_ratio)
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, _KERNEL_3X3, iterations=radius)[1:height + 1, 1:width + 1]
    return mask & ~eroded.astype(bool)


def boundary_iou(pred: np.ndarray, gt: np.ndarray,
                 dilation_ratio: float = DEFAULT_DILATION_RATIO) -> float:
    """Boundary IoU of two HxW bool masks (Cheng et al. 2021); 1.0 when both are empty."""
    _check_pair(pred, gt)
    return _iou(mask_boundary(pred, dilation_ratio), mask_boundary(gt, dilation_ratio))


def false_positive_area(pred: np.ndarray, gt: Optional[np.ndarray] = None) -> float:
    """Share of the image's pixels predicted defect outside the ground truth.

    ``pred`` and ``gt`` are HxW bool; ``gt=None`` (a defect-free image) makes this the predicted
    area fraction ``pred.mean()``.
    """
    if gt is None:
        _check_mask(pred, "pred")
        wrong = int(np.count_nonzero(pred))
    else:
        _check_pair(pred, gt)
        wrong = int(np.count_nonzero(pred & ~gt))
    return wrong / pred.size
