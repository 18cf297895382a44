"""Boxes, regions, jitter, points and negative boxes made from masks."""

from __future__ import annotations

import numpy as np

from samspt.runtime.errors import InputError
import pytest

from samspt.runtime.prompts import mask_box
from samspt.training.data.prompts import (jitter_boxes, negative_boxes, random_boxes,
                                          region_boxes, sample_points)
from samspt.training.data.records import DatasetError

from .conftest import box_mask


def test_tight_box_is_inclusive():
    mask = np.zeros((20, 30), bool)
    mask[5, 5] = True
    box = mask_box(mask)
    assert box.dtype == np.float32 and box.tolist() == [5, 5, 5, 5]
    mask[12, 21] = True
    assert mask_box(mask).tolist() == [5, 5, 21, 12]
    with pytest.raises(InputError, match="empty"):
        mask_box(np.zeros((4, 4), bool))


def test_region_boxes():
    mask = box_mask((40, 50), (2, 3, 9, 7)) | box_mask((40, 50), (20, 10, 40, 30))
    mask[35, 45] = True  # a one-pixel speck below min_area
    mask[38, 1] = mask[39, 2] = True  # diagonal neighbours: one region with 8-connectivity
    boxes, labels = region_boxes(mask, min_area=2)
    assert boxes.dtype == np.float32 and labels.dtype == np.int32
    # Largest first; the speck is dropped; the diagonal pair is one region.
    assert boxes.tolist() == [[20, 10, 40, 30], [2, 3, 9, 7], [1, 38, 2, 39]]
    for k, box in enumerate(boxes):
        assert mask_box(labels == k + 1).tolist() == box.tolist()
    assert labels[35, 45] == 0 and set(np.unique(labels)) == {0, 1, 2, 3}
    four, _ = region_boxes(mask, min_area=1, connectivity=4)
    assert len(four) == 5
    empty_boxes, empty_labels = region_boxes(np.zeros((5, 5), bool))
    assert empty_boxes.shape == (0, 4) and not empty_labels.any()


def test_jitter_bounds():
    rng = np.random.default_rng(0)
    boxes = np.array([[10, 20, 29, 29], [0, 0, 0, 0], [5, 5, 5, 5], [0, 0, 63, 47]], np.float32)
    size = np.array([[20, 10, 20, 10], [1, 1, 1, 1], [1, 1, 1, 1], [64, 48, 64, 48]])
    moved_any = False
    for _ in range(200):
        out = jitter_boxes(boxes, 0.2, (48, 64), rng)
        assert out.dtype == np.float32 and out.shape == (4, 4)
        assert np.all(np.abs(out - boxes) <= 0.2 * size + 1e-5)
        assert np.all(out[:, 2] >= out[:, 0]) and np.all(out[:, 3] >= out[:, 1])
        assert np.all(out >= 0) and np.all(out[:, 0::2] <= 63) and np.all(out[:, 1::2] <= 47)
        moved_any |= bool(np.any(out[0] != boxes[0]))
    assert moved_any
    # Large fractions on a one-pixel box: sides cross and meet, never invert.
    tiny = jitter_boxes(np.array([[5, 5, 5, 5]] * 100, np.float32), 0.49, (48, 64), rng)
    assert np.all(tiny[:, 2] >= tiny[:, 0]) and np.all(tiny[:, 3] >= tiny[:, 1])
    assert np.array_equal(jitter_boxes(boxes, 0.0, (48, 64), rng), boxes)


def test_jitter_is_seeded():
    boxes = np.array([[10, 10, 30, 30]], np.float32)
    a = jitter_boxes(boxes, 0.1, (64, 64), np.random.default_rng(5))
    b = jitter_boxes(boxes, 0.1, (64, 64), np.random.default_rng(5))
    c = jitter_boxes(boxes, 0.1, (64, 64), np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_points_inside_the_mask():
    rng = np.random.default_rng(0)
    mask = box_mask((30, 40), (3, 4, 12, 9))
    pts = sample_points(mask, 25, rng)
    assert pts.shape == (25, 2) and pts.dtype == np.float32
    xs, ys = pts[:, 0].astype(int), pts[:, 1].astype(int)
    assert mask[ys, xs].all()
    assert len({tuple(p) for p in pts.tolist()}) == 25  # no repeats while pixels suffice
    bg = sample_points(~mask, 10, rng)
    assert not mask[bg[:, 1].astype(int), bg[:, 0].astype(int)].any()
    one = np.zeros((5, 5), bool)
    one[2, 3] = True
    assert sample_points(one, 3, rng).tolist() == [[3, 2]] * 3  # fewer pixels: repeats
    with pytest.raises(DatasetError, match="empty region"):
        sample_points(np.zeros((5, 5), bool), 1, rng)


def test_random_boxes_inside_image_and_sized():
    boxes = random_boxes((50, 80), 500, np.random.default_rng(0), (0.1, 0.3))
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= 79) and np.all(boxes[:, 3] <= 49)
    assert w.min() >= 8 and w.max() <= 24 and h.min() >= 5 and h.max() <= 15
    with pytest.raises(DatasetError, match="size_range"):
        random_boxes((50, 80), 1, np.random.default_rng(0), (0.5, 0.1))


def test_negative_boxes_avoid_the_mask():
    rng = np.random.default_rng(0)
    mask = box_mask((60, 80), (30, 20, 49, 39))
    mask[5, 70] = True
    boxes = negative_boxes(mask, 200, rng)
    assert boxes.shape == (200, 4)
    for x0, y0, x1, y1 in boxes.astype(int):
        assert 0 <= x0 <= x1 <= 79 and 0 <= y0 <= y1 <= 59
        assert not mask[y0:y1 + 1, x0:x1 + 1].any()


def test_negative_boxes_on_defect_free_and_full_masks():
    rng = np.random.default_rng(0)
    free = negative_boxes(np.zeros((30, 30), bool), 7, rng)
    assert free.shape == (7, 4)
    full = negative_boxes(np.ones((30, 30), bool), 7, rng)
    assert full.shape == (0, 4)
    a = negative_boxes(box_mask((30, 30), (10, 10, 20, 20)), 5, np.random.default_rng(3))
    b = negative_boxes(box_mask((30, 30), (10, 10, 20, 20)), 5, np.random.default_rng(3))
    assert np.array_equal(a, b)
