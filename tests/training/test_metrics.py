"""Mask IoU, boundary IoU (Cheng et al. 2021) and false-positive area on hand-made masks."""

from __future__ import annotations

import numpy as np
import pytest

from samspt.runtime.errors import InputError
from samspt.training.metrics import (boundary_iou, boundary_radius, false_positive_area,
                                     mask_boundary, mask_iou)


def square(shape, y0, x0, side_h, side_w=None):
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y0 + side_h, x0:x0 + (side_w or side_h)] = True
    return mask


def reference_boundary(mask: np.ndarray, radius: int) -> np.ndarray:
    """Independent boundary: mask pixels within Chebyshev distance ``radius`` of a background
    pixel, the outside of the image being background."""
    h, w = mask.shape
    padded = np.zeros((h + 2 * radius, w + 2 * radius), dtype=bool)
    padded[radius:radius + h, radius:radius + w] = mask
    eroded = np.ones_like(mask)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            eroded &= padded[radius + dy:radius + dy + h, radius + dx:radius + dx + w]
    return mask & ~eroded


def test_mask_iou_by_hand():
    gt = square((10, 10), 2, 2, 4)          # 16 pixels
    pred = square((10, 10), 2, 3, 4)        # shifted one column: 12 shared, union 20
    assert mask_iou(pred, gt) == pytest.approx(12 / 20)
    assert mask_iou(gt, gt) == 1.0
    assert mask_iou(np.zeros((4, 4), bool), gt[:4, :4] | True) == 0.0


def test_both_empty_is_perfect_one_empty_is_zero():
    empty = np.zeros((8, 9), dtype=bool)
    some = square((8, 9), 1, 1, 2)
    assert mask_iou(empty, empty) == 1.0
    assert boundary_iou(empty, empty) == 1.0
    assert mask_iou(empty, some) == 0.0 and mask_iou(some, empty) == 0.0
    assert boundary_iou(empty, some) == 0.0 and boundary_iou(some, empty) == 0.0


def test_boundary_radius_follows_the_diagonal():
    assert boundary_radius((10, 10)) == 1            # 0.02 * 14.1 = 0.28 -> at least 1
    assert boundary_radius((100, 100)) == 3          # 0.02 * 141.4 = 2.83 -> 3
    assert boundary_radius((300, 400)) == 10         # 0.02 * 500 = 10
    assert boundary_radius((300, 400), dilation_ratio=0.005) == 2   # 2.5 rounds to even 2
    with pytest.raises(InputError):
        boundary_radius((10, 10), dilation_ratio=-1)


def test_boundary_band_by_hand():
    # radius 1 on a 10x10 image: a 4x4 square's band is its 12-pixel ring
    ring = mask_boundary(square((10, 10), 2, 2, 4))
    assert ring.sum() == 12 and not ring[3:5, 3:5].any()
    # radius 3 on a 100x100 image: a 20x20 square keeps a 14x14 core
    assert mask_boundary(square((100, 100), 40, 40, 20)).sum() == 400 - 14 * 14
    # a line one pixel wide is all boundary
    line = square((10, 10), 5, 1, 1, 8)
    assert (mask_boundary(line) == line).all()


def test_boundary_counts_the_image_border_as_background():
    full = np.ones((5, 5), dtype=bool)
    band = mask_boundary(full)
    assert band.sum() == 16 and not band[1:4, 1:4].any()


def test_boundary_iou_by_hand():
    # two 4x4 squares one column apart, radius 1: rings of 12, sharing 6 (top and bottom rows)
    gt = square((10, 10), 2, 2, 4)
    pred = square((10, 10), 2, 3, 4)
    assert boundary_iou(pred, gt) == pytest.approx(6 / 18)
    assert boundary_iou(gt, gt) == 1.0


def test_boundary_iou_ignores_interior_agreement():
    # a big square vs the same square with a hole: mask IoU is high, boundary IoU is lower
    gt = square((100, 100), 20, 20, 60)
    pred = gt.copy()
    pred[45:55, 45:55] = False
    assert mask_iou(pred, gt) == pytest.approx((3600 - 100) / 3600)
    # radius 3: the hole adds a 3-pixel ring around it (16x16 - 10x10) to pred's band, inside
    # gt's core, so apart from gt's band (60x60 - 54x54)
    gt_band = 3600 - 54 * 54
    assert boundary_iou(pred, gt) == pytest.approx(gt_band / (gt_band + 16 * 16 - 100))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_boundary_matches_an_independent_implementation(seed):
    rng = np.random.default_rng(seed)
    shape = (37, 83)
    mask = rng.random(shape) < 0.6
    mask[5:30, 10:70] = True
    radius = boundary_radius(shape, 0.05)
    assert (mask_boundary(mask, 0.05) == reference_boundary(mask, radius)).all()
    other = np.roll(mask, 3, axis=1)
    a, b = reference_boundary(other, radius), reference_boundary(mask, radius)
    assert boundary_iou(other, mask, 0.05) == pytest.approx((a & b).sum() / (a | b).sum())


def test_false_positive_area():
    pred = np.zeros((10, 10), dtype=bool)
    pred[0, :5] = True
    assert false_positive_area(pred) == pytest.approx(0.05)
    gt = np.zeros_like(pred)
    gt[0, :3] = True
    assert false_positive_area(pred, gt) == pytest.approx(0.02)
    assert false_positive_area(np.zeros((3, 3), bool)) == 0.0


@pytest.mark.parametrize("pred, gt, words", [
    (np.zeros((4, 4), np.uint8), np.zeros((4, 4), bool), "bool"),
    (np.zeros((4, 4), bool), np.zeros((4, 5), bool), "shape"),
    (np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4), bool), "HxW"),
    (np.zeros((0, 4), bool), np.zeros((0, 4), bool), "empty"),
])
def test_bad_masks_are_input_errors(pred, gt, words):
    for fn in (mask_iou, boundary_iou, false_positive_area):
        with pytest.raises(InputError, match=words):
            fn(pred, gt)
