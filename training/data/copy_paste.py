"""Copy-paste augmentation: a training defect moved onto a defect-free image.

A line's data has few defects and many good parts; pasting a defect from one training image
onto another image's clean surface shows the model the same defect on new backgrounds, at new
places. Why by hand: the libraries that paste (albumentations' copy-paste recipes, detectron2's)
paste whole objects with hard edges onto RGB scenes; a defect lives in its surface, so here the
pasted pixels are the defect's mask grown by a few pixels, faded in at the edge, and shifted to
the brightness of the surface they land on.

The donor's defect region is cut with a margin, turned by a random one of the eight flips and
quarter turns, and placed where it fits whole; the target mask is the donor's mask there. A
defect larger than the image it would go on is not pasted (the image stays defect-free).
"""

from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

from samspt.training.data.records import DatasetError

# Pixels around the defect carried with it, and the width of the fade at the pasted edge.
MARGIN = 3
FADE_SIGMA = 1.0


def _turn(array: np.ndarray, k: int, flip: bool) -> np.ndarray:
    out = np.rot90(array, k)
    return out[:, ::-1] if flip else out


def paste_defect(image: np.ndarray, mask: np.ndarray, donor_image: np.ndarray,
                 donor_mask: np.ndarray, rng: np.random.Generator
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """(HxWx3 uint8, HxW bool) of a defect-free image and a donor image with its defect mask ->
    (the image with the donor's defect pasted, its mask): new arrays; the inputs unchanged.
    The image and an empty mask come back (copies) when the defect does not fit."""
    if image.shape[:2] != mask.shape or donor_image.shape[:2] != donor_mask.shape:
        raise DatasetError("copy-paste: an image and its mask differ in size")
    if not donor_mask.any():
        raise DatasetError("copy-paste: the donor image has no defect pixels to paste")
    ys, xs = np.nonzero(donor_mask)
    dh, dw = donor_mask.shape
    y0, y1 = max(0, ys.min() - MARGIN), min(dh, ys.max() + 1 + MARGIN)
    x0, x1 = max(0, xs.min() - MARGIN), min(dw, xs.max() + 1 + MARGIN)
    k, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
    patch = _turn(donor_image[y0:y1, x0:x1], k, flip).astype(np.float32)
    defect = _turn(donor_mask[y0:y1, x0:x1], k, flip)
    ph, pw = defect.shape
    height, width = mask.shape
    if ph > height or pw > width:
        return image.copy(), np.zeros_like(mask)
    ty, tx = int(rng.integers(height - ph + 1)), int(rng.integers(width - pw + 1))
    grown = cv2.dilate(defect.astype(np.uint8), np.ones((3, 3), np.uint8),
                       iterations=MARGIN - 1).astype(np.float32)
    alpha = np.clip(cv2.GaussianBlur(grown, (0, 0), FADE_SIGMA) * 1.5, 0.0, 1.0)[..., None]
    alpha = np.maximum(alpha, defect[..., None].astype(np.float32))
    target = image[ty:ty + ph, tx:tx + pw].astype(np.float32)
    # The donor's surface brightness moved to the target's: its pixels outside the defect
    # (the margin) against the target region's, per channel.
    surface = ~defect
    if surface.any():
        patch = patch + (target.mean(axis=(0, 1)) - patch[surface].mean(axis=0))
    out = image.copy()
    out[ty:ty + ph, tx:tx + pw] = np.clip(alpha * patch + (1 - alpha) * target + 0.5,
                                          0, 255).astype(np.uint8)
    out_mask = np.zeros_like(mask)
    out_mask[ty:ty + ph, tx:tx + pw] = defect
    return out, out_mask
