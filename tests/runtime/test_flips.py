"""Test-time flips (runtime/flips.py): mirrored prompts land on the mirrored pixels, and the
Inspector's flipped answer is the vote of its own answers on the mirror images."""

from __future__ import annotations

import numpy as np
import pytest

from samspt.runtime import Inspector
from samspt.runtime.errors import ConfigError
from samspt.runtime.flips import FLIPS, mirror_image, mirror_prompts
from samspt.runtime.prompts import mask_box
from samspt.runtime.samples import EXAMPLE_MODEL_DIR, bundled_samples
from samspt.runtime.views import ViewSettings

NO_GATE = -1e9


def test_mirrored_boxes_and_points_cover_the_mirrored_pixels():
    rng = np.random.default_rng(0)
    for _ in range(20):
        height, width = (int(v) for v in rng.integers(5, 40, 2))
        mask = np.zeros((height, width), bool)
        y0, x0 = int(rng.integers(0, height)), int(rng.integers(0, width))
        mask[y0:y0 + int(rng.integers(1, 6)), x0:x0 + int(rng.integers(1, 6))] = True
        box = mask_box(mask)[None]
        point = np.array([[[x0, y0]]], np.float32)
        for flip in range(len(FLIPS)):
            mirrored = mirror_image(mask, flip)
            boxes, points = mirror_prompts(box, point, (height, width), flip)
            assert np.array_equal(boxes[0], mask_box(mirrored))      # top-left corner first
            x, y = points[0, 0].astype(int)
            assert mirrored[y, x]                                   # the same pixel
            back = mirror_prompts(boxes, points, (height, width), flip)
            assert np.array_equal(back[0], box) and np.array_equal(back[1], point)
            assert np.array_equal(mirror_image(mirrored, flip), mask)


def test_flip_counts_are_checked():
    with pytest.raises(ConfigError, match="flips"):
        ViewSettings(flips=3)
    with pytest.raises(ConfigError, match="flips"):
        ViewSettings(flips=True)
    with pytest.raises(ConfigError, match="flips must be one of"):
        Inspector(EXAMPLE_MODEL_DIR, warmup=False, flips=8)


@pytest.fixture(scope="module")
def sample():
    item = bundled_samples()[0]
    image = np.repeat(item.image()[..., None], 3, axis=2)
    mask = item.mask()
    tight = mask_box(mask)
    boxes = np.stack([tight, tight + np.array([-6, -4, 9, 5], np.float32),
                      np.array([2, 3, 40, 30], np.float32)])
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, image.shape[1] - 1)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, image.shape[0] - 1)
    return image, boxes


def _answers(image, boxes, count):
    """The unflipped Inspector's masks and scores on the image and its first count - 1 mirrors,
    mirrored back."""
    masks, drafts, scores = [], [], []
    with Inspector(EXAMPLE_MODEL_DIR, warmup=False, flips=1, prompt_min_score=NO_GATE) as ins:
        for flip in range(count):
            mirrored, _ = mirror_prompts(boxes, None, image.shape[:2], flip)
            result = ins.inspect(mirror_image(image, flip), boxes=mirrored)
            masks.append(mirror_image(result.masks.transpose(1, 2, 0), flip).transpose(2, 0, 1))
            drafts.append(mirror_image(result.draft_masks.transpose(1, 2, 0), flip)
                          .transpose(2, 0, 1))
            scores.append(result.scores)
    return np.array(masks), np.array(drafts), np.array(scores)


@pytest.mark.parametrize("count", [2, 4])
def test_the_flipped_answer_is_the_vote_of_the_mirrors(sample, count):
    image, boxes = sample
    masks, drafts, scores = _answers(image, boxes, count)
    need = count // 2 + 1                   # a strict majority
    with Inspector(EXAMPLE_MODEL_DIR, warmup=False, flips=count,
                   prompt_min_score=NO_GATE) as ins:
        assert ins.flips == count and ins.view_settings.flips == count
        result = ins.inspect(image, boxes=boxes)
    assert np.array_equal(result.masks, masks.sum(0) >= need)
    assert np.array_equal(result.draft_masks, drafts.sum(0) >= need)
    np.testing.assert_allclose(result.scores, scores.mean(0), rtol=1e-5, atol=1e-6)
    assert np.array_equal(result.area_px, result.masks.sum(axis=(1, 2)))
    # The mirrors answer differently (else flips would be worth nothing here).
    assert not all(np.array_equal(m, masks[0]) for m in masks[1:])


def test_the_prompt_gate_acts_on_the_mean_score(sample):
    image, boxes = sample
    _, _, scores = _answers(image, boxes, 2)
    mean = scores.mean(0)
    gate = float(np.sort(mean)[1])          # the lowest-scored box falls below it
    with Inspector(EXAMPLE_MODEL_DIR, warmup=False, flips=2, prompt_min_score=gate) as ins:
        result = ins.inspect(image, boxes=boxes)
    below = mean < gate
    assert below.any() and not result.masks[below].any()
    assert result.masks[~below].any()
    np.testing.assert_allclose(result.scores, mean, rtol=1e-5, atol=1e-6)


def test_a_scan_runs_once_whatever_the_flips(sample):
    image, _ = sample
    with Inspector(EXAMPLE_MODEL_DIR, warmup=False, flips=1) as one, \
            Inspector(EXAMPLE_MODEL_DIR, warmup=False, flips=4) as four:
        a, b = one.inspect(image), four.inspect(image)
    assert np.array_equal(a.masks, b.masks) and np.array_equal(a.scores, b.scores)
