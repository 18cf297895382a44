"""The parity rule shared by export verification and engine checks."""

import numpy as np
import pytest

from samspt.runtime.parity import pooled_mask_iou


def test_pooled_iou_weighs_pixels_not_prompts():
    big = np.zeros((2, 20, 20), bool)
    big[0, :10, :10] = True          # 100 px
    big[1, 0, :12] = True            # a 12 px mask
    other = big.copy()
    other[1, 0, 11] = False          # one threshold-close pixel flips
    assert pooled_mask_iou(big, other) == pytest.approx(111 / 112)
    # Per prompt the tiny mask alone would score 11 / 12.
    assert pooled_mask_iou(big[1:], other[1:]) == pytest.approx(11 / 12)


def test_pooled_iou_of_empty_masks_is_one_and_of_disjoint_ones_zero():
    empty = np.zeros((3, 4, 4), bool)
    assert pooled_mask_iou(empty, empty) == 1.0
    a = empty.copy()
    a[0, 0, 0] = True
    b = empty.copy()
    b[1, 1, 1] = True
    assert pooled_mask_iou(a, b) == 0.0
