"""Prompts in numpy: packed into the decoder's ``point_coords``/``point_labels`` contract, scaled
into an input frame, and the box of a mask (what training and evaluation prompt with)."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from samspt.runtime import tensors
from samspt.runtime.errors import InputError


def scale_coords(coords: np.ndarray, original_hw: Tuple[int, int],
                 resized_hw: Tuple[int, int]) -> np.ndarray:
    """...x2 (x, y) image-pixel coordinates -> the encoder's input frame (float32)."""
    coords = np.asarray(coords, dtype=np.float32).copy()
    coords[..., 0] *= resized_hw[1] / original_hw[1]
    coords[..., 1] *= resized_hw[0] / original_hw[0]
    return coords


def pack_prompts(
    boxes: Optional[np.ndarray] = None,
    points: Optional[np.ndarray] = None,
    point_labels: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Boxes and/or points -> (``point_coords`` BxNx2 float32, ``point_labels`` BxN float32).

    ``boxes``: Bx4 (x0, y0, x1, y1); ``points``: BxPx2 with ``point_labels`` BxP (1 foreground,
    0 background, -1 padding). A box becomes two corner points labelled 2 and 3, appended after
    the points. Without a box, one padding point is appended, as SAM's prompt encoder does.
    Coordinates are passed through unchanged (scale them with :func:`scale_coords`).
    """
    parts, labels = [], []
    batch = None
    if points is not None:
        points = np.asarray(points, dtype=np.float32)
        point_labels = np.asarray(point_labels, dtype=np.float32)
        batch = points.shape[0]
        parts.append(points)
        labels.append(point_labels)
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if batch is not None and boxes.shape[0] != batch:
            raise InputError(f"{boxes.shape[0]} boxes but {batch} point sets; give one of each "
                             "per prompt")
        batch = boxes.shape[0]
        parts.append(boxes.reshape(-1, 2, 2))
        corner = np.array([tensors.LABEL_BOX_TOP_LEFT, tensors.LABEL_BOX_BOTTOM_RIGHT], np.float32)
        labels.append(np.broadcast_to(corner, (batch, 2)))
    else:
        if batch is None:
            raise InputError("no prompt: give boxes, points, or both")
        parts.append(np.zeros((batch, 1, 2), np.float32))
        labels.append(np.full((batch, 1), tensors.LABEL_PADDING, np.float32))
    return (np.ascontiguousarray(np.concatenate(parts, axis=1)),
            np.ascontiguousarray(np.concatenate(labels, axis=1)))


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight (4,) float32 box (x0, y0, x1, y1) of a non-empty HxW mask; corners inclusive, so a
    one-pixel defect at (5, 5) has the box (5, 5, 5, 5), as SAM's boxes are."""
    ys, xs = np.nonzero(np.asarray(mask))
    if ys.size == 0:
        raise InputError("the mask is empty, so it has no box; prompt a defect-free image with a "
                         "box of your choosing instead")
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float32)
