"""Views: the windows the model sees, and the way back to image pixels (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from samspt.runtime.postprocess import BACKGROUND_LOGIT, upscale_logits
from samspt.runtime.preprocess import (PIXEL_MEAN, PIXEL_STD, crop_view_mask, preprocess_image,
                                       view_input)
from samspt.runtime.prompts import pack_prompts, scale_coords
from samspt.runtime.errors import ConfigError, InputError
from samspt.runtime.view_inference import group_views, infer_views
from samspt.runtime.views import (View, ViewPlan, ViewSettings, box_view, plan_views, prompt_views,
                                  scan_views, whole_image_view)

from .view_logits import paste_logits

S = 64
SETTINGS = ViewSettings(context=2.0, min_side=16, scan_side=48, scan_overlap=0.25)


def _blobs(hw, seed=0):
    """An HxW bool mask of a few rectangles and a diagonal, touching the image's edges."""
    rng = np.random.default_rng(seed)
    h, w = hw
    mask = np.zeros(hw, bool)
    for _ in range(4):
        y, x = rng.integers(0, h - 3), rng.integers(0, w - 3)
        mask[y:y + rng.integers(2, 12), x:x + rng.integers(2, 12)] = True
    mask[0:5, 0:3] = True                       # corners and edges
    mask[h - 4:h, w - 6:w] = True
    idx = np.arange(min(h, w))
    mask[idx, idx] = True
    return mask


def _round_trip(view, mask):
    """Mask -> the view's input frame -> low-res logits at full input resolution -> image."""
    crop = crop_view_mask(view, mask)
    low_res = (crop * 2.0 - 1.0)[None, None] * 10
    return paste_logits(view, low_res)[0]


def test_settings_are_checked_and_round_trip():
    assert ViewSettings.from_dict(SETTINGS.to_dict()) == SETTINGS
    for bad in ({"context": 0.5}, {"min_side": 0}, {"scan_overlap": 1.0}):
        with pytest.raises(ConfigError):
            ViewSettings(**bad)
    with pytest.raises(ConfigError, match="unknown view settings"):
        ViewSettings.from_dict({"context": 2.0, "zoom": 3})


@pytest.mark.parametrize("hw", [(64, 64), (50, 90), (90, 50), (37, 200)])
def test_a_mask_comes_back_unchanged_through_a_view_at_scale_one(hw):
    """Views of side S (no resampling), anywhere, at the image's edges and corners too."""
    mask = _blobs(hw)
    h, w = hw
    for box in ([0, 0, 3, 3], [w - 4, h - 4, w - 1, h - 1], [w // 2, 0, w // 2 + 5, 2],
                [0, h // 2, 2, h // 2 + 9], [w // 3, h // 3, w // 3 + 10, h // 3 + 10]):
        view = box_view(np.array(box, np.float32), hw, S,
                        ViewSettings(context=1.0, min_side=S))
        if view.is_whole_image:
            continue
        assert view.side == S
        back = _round_trip(view, mask) > 0
        ix0, iy0, ix1, iy1 = view.inside
        np.testing.assert_array_equal(back[iy0:iy1, ix0:ix1], mask[iy0:iy1, ix0:ix1])
        outside = np.ones(hw, bool)
        outside[iy0:iy1, ix0:ix1] = False
        assert not back[outside].any()


@pytest.mark.parametrize("side", [16, 32, 128, 256])
def test_a_mask_comes_back_through_zoomed_and_shrunk_views(side):
    """Resampled views (zoom x4 .. x0.25): the mask comes back within one pixel of its edges."""
    hw = (300, 280)
    mask = np.zeros(hw, bool)
    mask[100:140, 90:150] = True            # blocks larger than a shrunk view's pixel
    mask[200:232, 20:60] = True
    for x0, y0 in ((80, 90), (0, 0), (280 - side, 300 - side), (10, 190)):
        view = View(x0, y0, side, hw, S)
        back = _round_trip(view, mask) > 0
        ix0, iy0, ix1, iy1 = view.inside
        got, want = back[iy0:iy1, ix0:ix1], mask[iy0:iy1, ix0:ix1]
        disagree = got != want
        if not want.any():
            assert not got.any()
            continue
        # Every disagreeing pixel lies on the true mask's boundary (within the view's pixel).
        tolerance = max(1, int(np.ceil(side / S)))
        grown = _dilate(want, tolerance) & ~_erode(want, tolerance)
        assert not (disagree & ~grown).any()


def _dilate(mask, r):
    out = mask.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def _erode(mask, r):
    return ~_dilate(~mask, r)


def test_the_whole_image_view_is_sams_preprocessing():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)
    view = whole_image_view(image.shape[:2], S)
    tensor, resized = preprocess_image(image, S)
    np.testing.assert_array_equal(view_input(view, image), tensor[0])
    coords = np.array([[[3.0, 4.0], [60.0, 40.0]]], np.float32)
    np.testing.assert_array_equal(view.to_input(coords),
                                  scale_coords(coords, image.shape[:2], resized))
    low_res = rng.normal(size=(2, 1, S // 4, S // 4)).astype(np.float32)
    np.testing.assert_allclose(paste_logits(view, low_res),
                               upscale_logits(low_res, resized, image.shape[:2], S), atol=1e-6)


def test_box_views_are_square_centred_and_kept_inside():
    hw = (200, 300)
    view = box_view(np.array([100, 80, 119, 89], np.float32), hw, S, SETTINGS)
    assert view.side == 40 and (view.x0, view.y0) == (90, 65)      # 2 x long side, centred
    edge = box_view(np.array([0, 0, 9, 4], np.float32), hw, S, SETTINGS)
    assert (edge.x0, edge.y0, edge.side) == (0, 0, 20)              # shifted inside
    tiny = box_view(np.array([50, 50, 50, 50], np.float32), hw, S, SETTINGS)
    assert tiny.side == SETTINGS.min_side
    large = box_view(np.array([10, 10, 190, 120], np.float32), hw, S, SETTINGS)
    assert large.is_whole_image
    # Taller than the image is high, but narrower than wide: covers all rows, padded.
    tall = box_view(np.array([140, 20, 229, 100], np.float32), (120, 600), S, SETTINGS)
    assert tall.side == 180 and tall.y0 < 0 and tall.y0 + tall.side > 120
    assert tall.inside[1] == 0 and tall.inside[3] == 120


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 400), w=st.integers(1, 400), side=st.integers(8, 200),
       overlap=st.floats(0.0, 0.9))
def test_the_scan_covers_every_pixel(h, w, side, overlap):
    views = scan_views((h, w), S, ViewSettings(scan_side=side, scan_overlap=overlap))
    covered = np.zeros((h, w), np.int32)
    for view in views:
        ix0, iy0, ix1, iy1 = view.inside
        assert ix1 > ix0 and iy1 > iy0
        covered[iy0:iy1, ix0:ix1] += 1
        box = view.extent_box
        assert box[0] == ix0 and box[2] == ix1 - 1 and box[1] == iy0 and box[3] == iy1 - 1
    assert covered.min() >= 1
    if side >= max(h, w):
        assert len(views) == 1 and views[0].is_whole_image


def test_prompt_views_follow_the_policy():
    hw = (200, 300)
    boxes = np.array([[100, 80, 119, 89], [0, 0, 299, 199]], np.float32)
    auto = prompt_views(hw, S, SETTINGS, "auto", boxes=boxes)
    assert not auto[0].is_whole_image and auto[1].is_whole_image
    assert all(v.is_whole_image for v in prompt_views(hw, S, SETTINGS, "image", boxes=boxes))
    assert all(v.is_whole_image for v in prompt_views(hw, S, None, "auto", boxes=boxes))
    points = np.array([[[110, 85], [5, 5]]], np.float32)
    view = prompt_views(hw, S, SETTINGS, "auto", points=points,
                        point_labels=np.array([[1, 0]], np.float32))[0]
    assert view == box_view(np.array([110, 85, 110, 85], np.float32), hw, S, SETTINGS)
    with pytest.raises(InputError, match="views must be one of"):
        prompt_views(hw, S, SETTINGS, "zoom", boxes=boxes)


def test_prompts_in_one_view_share_one_encoder_run_and_rows_keep_their_order():
    hw = (120, 160)
    image = np.zeros(hw + (3,), np.uint8)
    boxes = np.array([[10, 10, 19, 19], [100, 60, 109, 69], [10, 10, 19, 19]], np.float32)
    views = prompt_views(hw, S, SETTINGS, "auto", boxes=boxes)
    assert [len(index) for _, index in group_views(views)] == [2, 1]
    coords, labels = pack_prompts(boxes=boxes)
    encoded = []

    def encode(batch):
        encoded.append(len(batch))
        return np.arange(len(batch), dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 2, 2))

    def decode(embedding, view_coords, view_labels):
        # Logits: +1 inside the prompt's box (in the view's frame), -1 elsewhere.
        low = -np.ones((len(view_coords), 1, S, S), np.float32)
        for k, (p0, p1) in enumerate(view_coords[:, :2]):
            low[k, 0, int(p0[1]):int(np.ceil(p1[1])) + 1, int(p0[0]):int(np.ceil(p1[0])) + 1] = 1
        return low, low, np.full(len(view_coords), float(embedding.ravel()[0]), np.float32)

    cache = {}
    plan = plan_views(hw, S, SETTINGS, "auto", boxes=boxes)
    assert plan.views == views and plan.rows == 3
    out = infer_views(image, plan, encode, decode, PIXEL_MEAN, PIXEL_STD, cache=cache)
    assert encoded == [2] and len(cache) == 2
    assert out.scores.tolist() == [0.0, 1.0, 0.0]
    for k, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
        mask = out.logits[k] > 0
        assert mask[y0 + 1:y1, x0 + 1:x1].all()
        assert mask.sum() <= (x1 - x0 + 3) * (y1 - y0 + 3)
    assert out.logits[1][0, 0] == BACKGROUND_LOGIT           # outside the prompt's view
    infer_views(image, plan, encode, decode, PIXEL_MEAN, PIXEL_STD, cache=cache)
    assert encoded == [2]                                     # cached: no second encoder run
    merged = ViewPlan(plan.views, plan.coords, plan.labels, np.zeros(3, np.int64), 1)
    scan = infer_views(image, merged, encode, decode, PIXEL_MEAN, PIXEL_STD)
    assert scan.logits.shape == (1,) + hw and scan.scores.shape == (1,)
    np.testing.assert_array_equal(scan.logits[0], out.logits.max(axis=0))


def test_a_box_larger_than_the_largest_view_is_covered_by_tiles():
    hw = (300, 500)
    settings = ViewSettings(context=2.0, min_side=16, scan_side=48, max_side=100)
    box = np.array([[40, 30, 359, 209]], np.float32)
    plan = plan_views(hw, S, settings, "auto", boxes=box)
    assert plan.rows == 1 and len(plan.views) > 4 and (plan.row_of == 0).all()
    covered = np.zeros(hw, bool)
    for view, coords in zip(plan.views, plan.coords):
        assert view.side == 100
        ix0, iy0, ix1, iy1 = view.inside
        covered[iy0:iy1, ix0:ix1] = True
        (x0, y0), (x1, y1) = coords[:2]          # the box clipped to the tile
        assert ix0 <= x0 <= x1 <= ix1 - 1 and iy0 <= y0 <= y1 <= iy1 - 1
    assert covered[30:210, 40:360].all()
    small = plan_views(hw, S, settings, "auto", boxes=np.array([[10, 10, 30, 30]], np.float32))
    assert len(small.views) == 1 and small.views[0].side == 42
    whole = plan_views(hw, S, settings, "image", boxes=box)
    assert len(whole.views) == 1 and whole.views[0].is_whole_image
    scan = plan_views(hw, S, settings, "auto")
    assert scan.rows == 1 and len(scan.views) == len(scan_views(hw, S, settings))


def test_many_views_are_encoded_in_bounded_batches():
    from samspt.runtime.view_inference import MAX_VIEWS_PER_ENCODE

    hw = (200, 300)
    plan = plan_views(hw, S, ViewSettings(scan_side=40, scan_overlap=0.0), "auto")
    assert len(plan.views) > MAX_VIEWS_PER_ENCODE
    sizes = []

    def encode(batch):
        sizes.append(len(batch))
        return np.zeros((len(batch), 1, 2, 2), np.float32)

    def decode(embedding, coords, labels):
        low = -np.ones((len(coords), 1, S // 4, S // 4), np.float32)
        return low, low, np.zeros(len(coords), np.float32)

    out = infer_views(np.zeros(hw + (3,), np.uint8), plan, encode, decode, PIXEL_MEAN,
                      PIXEL_STD)
    assert max(sizes) == MAX_VIEWS_PER_ENCODE and sum(sizes) == len(plan.views)
    assert out.logits.shape == (1,) + hw and not (out.logits > 0).any()
    assert set(out.timings) == {"preprocess", "encoder", "decoder", "postprocess"}
