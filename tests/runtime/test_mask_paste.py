"""Masks resized only where low-res logits can reach above the threshold: equal, pixel for pixel,
to thresholding the full-image logits (random grids, and the shipped example model on the
bundled images)."""

from __future__ import annotations

import numpy as np
import pytest

from samspt.runtime.postprocess import (BACKGROUND_LOGIT, logits_in_image, paste_mask,
                                        positive_cells, resize_bilinear)
from samspt.runtime.preprocess import as_rgb_uint8
from samspt.runtime.errors import ConfigError
from samspt.runtime.manifest import read_manifest
from samspt.runtime.ort_backend import OrtGraphs
from samspt.runtime.result import summarize_masks
from samspt.runtime.samples import EXAMPLE_MODEL_DIR, bundled_samples, prompt_boxes
from samspt.runtime.view_inference import infer_views
from samspt.runtime.views import View, plan_views, whole_image_view

from .view_logits import paste_logits


def _random_views(rng, count):
    views = []
    for _ in range(count):
        hw = (int(rng.integers(20, 400)), int(rng.integers(20, 400)))
        size = int(rng.choice([32, 64, 128]))
        if rng.random() < 0.2:
            views.append(whole_image_view(hw, size))
            continue
        side = int(rng.integers(8, 2 * max(hw)))
        views.append(View(int(rng.integers(-side // 2, hw[1])), int(rng.integers(-side // 2,
                                                                                 hw[0])),
                          side, hw, size))
    return views


def _blob_logits(rng, low):
    """1x1xLxL logits: -16 (a box clip's value) except one random patch of mixed logits."""
    out = np.full((1, 1, low, low), -16.0, np.float32)
    y, x = rng.integers(0, low, size=2)
    h, w = rng.integers(1, low // 2 + 2, size=2)
    out[0, 0, y:y + h, x:x + w] = rng.normal(0.5, 3.0, size=out[0, 0, y:y + h, x:x + w].shape)
    return out


def test_window_logits_are_the_full_logits_bit_for_bit():
    rng = np.random.default_rng(0)
    for view in _random_views(rng, 40):
        low = rng.normal(size=(2, 1, view.input_size // 4, view.input_size // 4)).astype(
            np.float32)
        full, (rows, cols) = logits_in_image(view, low)
        # the previous implementation: two whole resizes
        ix0, iy0, ix1, iy1 = view.inside
        ox, oy, rw, rh = view.placement
        ref = resize_bilinear(low[:, 0], (view.input_size, view.input_size))
        ref = resize_bilinear(ref[:, oy:oy + rh, ox:ox + rw], (iy1 - iy0, ix1 - ix0))
        np.testing.assert_array_equal(full, ref.astype(np.float32))
        r0, c0 = int(rng.integers(0, full.shape[1])), int(rng.integers(0, full.shape[2]))
        r1, c1 = int(rng.integers(r0 + 1, full.shape[1] + 1)), int(rng.integers(c0 + 1,
                                                                               full.shape[2] + 1))
        part, (prow, pcol) = logits_in_image(view, low, (r0, r1, c0, c1))
        np.testing.assert_array_equal(part, full[:, r0:r1, c0:c1])
        assert (prow.start, prow.stop, pcol.start, pcol.stop) == (iy0 + r0, iy0 + r1,
                                                                   ix0 + c0, ix0 + c1)


@pytest.mark.parametrize("threshold", [0.0, 0.7, -3.0])
def test_paste_mask_equals_thresholding_the_pasted_logits(threshold):
    rng = np.random.default_rng(1)
    written = 0
    for view in _random_views(rng, 60):
        low = _blob_logits(rng, view.input_size // 4)
        canvas = np.zeros(view.image_hw, bool)
        window = paste_mask(canvas, view, low, threshold)
        expected = paste_logits(view, low)[0] > threshold
        np.testing.assert_array_equal(canvas, expected)
        if window is None:
            assert not expected.any()
            continue
        y0, y1, x0, x1 = window
        outside = expected.copy()
        outside[y0:y1, x0:x1] = False
        assert not outside.any()
        written += (y1 - y0) * (x1 - x0)
    assert written > 0


def test_the_window_follows_the_defect_not_the_view():
    view = whole_image_view((1000, 1000), 128)
    low = np.full((1, 1, 32, 32), -16.0, np.float32)
    low[0, 0, 10:12, 20:23] = 4.0
    canvas = np.zeros((1000, 1000), bool)
    y0, y1, x0, x1 = paste_mask(canvas, view, low, 0.0)
    assert (y1 - y0) * (x1 - x0) < 0.02 * canvas.size     # 2x3 cells of 31 px, and their reach
    assert canvas[y0:y1, x0:x1].any()
    assert positive_cells(low[0, 0], 0.0) == (10, 11, 20, 22)
    assert positive_cells(np.full((8, 8), -1.0, np.float32), 0.0) is None


def test_a_threshold_below_the_background_is_refused():
    view = whole_image_view((10, 10), 32)
    with pytest.raises(ConfigError, match="background"):
        paste_mask(np.zeros((10, 10), bool), view, np.zeros((1, 1, 8, 8), np.float32),
                   BACKGROUND_LOGIT - 1)


def test_summary_in_regions_equals_the_whole_mask_summary():
    rng = np.random.default_rng(2)
    masks = np.zeros((5, 60, 80), bool)
    regions = np.zeros((5, 4), np.int64)
    for k in range(4):
        y0, x0 = rng.integers(0, 40, size=2)
        masks[k, y0:y0 + 9, x0:x0 + 7] = rng.random((9, 7)) > 0.5
        regions[k] = (y0, y0 + 9, x0, x0 + 7)
    whole, part = summarize_masks(masks, 3), summarize_masks(masks, 3, regions)
    for key in whole:
        np.testing.assert_array_equal(whole[key], part[key])


@pytest.fixture(scope="module")
def example_graphs():
    manifest = read_manifest(EXAMPLE_MODEL_DIR)
    graphs = OrtGraphs(EXAMPLE_MODEL_DIR / manifest.graph("encoder", "fp32")["file"],
                       EXAMPLE_MODEL_DIR / manifest.graph("decoder", "fp32")["file"])
    return manifest, graphs


def test_example_model_masks_equal_the_full_resize_on_the_bundled_images(example_graphs):
    """The shipped model, real images and prompts (boxes as verification draws them, points,
    the prompt-free scan): the masks, and their summaries, are the full logits thresholded."""
    manifest, graphs = example_graphs
    size = int(manifest.input.image_size)
    settings = manifest.views
    threshold = float(manifest.mask_threshold)
    mean, std = manifest.input.pixel_mean, manifest.input.pixel_std
    rng = np.random.default_rng(0)
    defects = 0
    for sample in bundled_samples():
        image = as_rgb_uint8(sample.image())
        hw = image.shape[:2]
        boxes = prompt_boxes(sample.mask(), rng, count=8)
        points = np.stack([np.stack([(b[:2] + b[2:]) / 2, b[:2]]) for b in boxes])
        plans = [plan_views(hw, size, settings, "auto", boxes=boxes),
                 plan_views(hw, size, settings, "image", boxes=boxes[:2]),
                 plan_views(hw, size, settings, "auto", points=points,
                            point_labels=np.tile([1.0, 0.0], (len(points), 1))),
                 plan_views(hw, size, settings, "auto")]
        for plan in plans:
            cache = {}
            full = infer_views(image, plan, graphs.encode, graphs.decode, mean, std, cache=cache)
            fast = infer_views(image, plan, graphs.encode, graphs.decode, mean, std, cache=cache,
                               mask_threshold=threshold)
            assert fast.logits is None
            np.testing.assert_array_equal(fast.masks, full.logits > threshold)
            np.testing.assert_array_equal(fast.draft_masks, full.draft_logits > threshold)
            ref = summarize_masks(full.logits > threshold, 1)
            got = summarize_masks(fast.masks, 1, fast.regions)
            for key in ref:
                np.testing.assert_array_equal(got[key], ref[key])
            defects += int(ref["area_px"].astype(bool).sum())
    assert defects > 0      # the comparison covered masks with defects, not only empty ones
