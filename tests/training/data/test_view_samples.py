"""Training and validation samples on views: made by the runtime's view code."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from samspt.runtime.preprocess import as_rgb_uint8, crop_view_mask, view_input
from samspt.runtime.prompts import mask_box
from samspt.runtime.errors import ConfigError
from samspt.runtime.views import ViewSettings, box_view
from samspt.training.modeling.config import get_config
from samspt.training.data.dataset import DefectDataset
from samspt.training.data.records import DEFECT_FREE, Record
from samspt.training.data.view_samples import ViewSampling, box_region, view_sample

from .conftest import write_image, write_mask

CONFIG = get_config("cnn_tiny")


def _mask(hw=(120, 160)):
    mask = np.zeros(hw, bool)
    mask[40:52, 60:75] = True
    mask[90:94, 10:30] = True
    return mask


@pytest.fixture
def records(tmp_path):
    out = []
    for i in range(4):
        image = write_image(tmp_path / f"d{i}.png", hw=(120, 160), seed=i)
        mask = write_mask(tmp_path / f"d{i}_mask.png", _mask())
        out.append(Record(image, mask, "Blowhole", "t"))
    free = write_image(tmp_path / "free.png", hw=(120, 160), seed=9)
    return out + [Record(free, None, DEFECT_FREE, "t")]


def test_validation_items_are_the_runtimes_views(records):
    """What training validates on is what the Inspector runs: same view, pixels and prompt."""
    dataset = DefectDataset(records, CONFIG, train=False)
    settings = CONFIG.view_settings
    for index in range(4):
        item = dataset[index]
        image = as_rgb_uint8(records[index].load_image())
        mask = records[index].load_mask(image.shape[:2])
        box = mask_box(mask)
        view = box_view(box, image.shape[:2], CONFIG.image_size, settings)
        np.testing.assert_array_equal(item["image"].numpy(), view_input(view, image))
        np.testing.assert_array_equal(item["point_coords"].numpy()[0],
                                      view.to_input(box.reshape(2, 2)))
        np.testing.assert_array_equal(item["targets"].numpy()[0],
                                      crop_view_mask(view, mask & box_region(box, mask.shape)))
        assert item["point_labels"].tolist() == [[2.0, 3.0]]
    free = dataset[4]
    assert free["negative"].tolist() == [True] and free["targets"].sum() == 0


def test_training_items_mix_the_kinds_and_targets_follow_the_box(records):
    dataset = DefectDataset(records[:4], CONFIG, train=True, seed=3)
    kinds = collections.Counter()
    for epoch in range(30):
        dataset.set_epoch(epoch)
        for index in range(4):
            item = dataset[index]
            kinds[item["kind"]] += 1
            coords = item["point_coords"].numpy()[0]
            target = item["targets"].numpy()[0]
            assert item["image"].shape == (3, CONFIG.image_size, CONFIG.image_size)
            if target.any():        # the target lies inside the prompt's box (+ a pixel)
                ys, xs = np.nonzero(target)
                scale = CONFIG.image_size / CONFIG.view_min_side
                assert xs.min() >= coords[0, 0] - 2 * scale and xs.max() <= coords[1, 0] + 2 * scale
                assert ys.min() >= coords[0, 1] - 2 * scale and ys.max() <= coords[1, 1] + 2 * scale
            if item["kind"] == "negative":
                assert not target.any()
    assert set(kinds) == {"tight", "loose", "scan", "negative"}
    assert kinds["tight"] > kinds["negative"]
    # Deterministic per (seed, epoch, index).
    dataset.set_epoch(5)
    a, b = dataset[1], dataset[1]
    np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
    np.testing.assert_array_equal(a["point_coords"].numpy(), b["point_coords"].numpy())


def test_scan_samples_prompt_their_own_extent():
    rng = np.random.default_rng(0)
    image = np.zeros((300, 400), np.uint8)
    mask = _mask((300, 400))
    sampling = ViewSampling(tight=0, loose=0, scan=1.0)
    for _ in range(20):
        view, box, target, kind = view_sample(image, mask, 64, CONFIG.view_settings, sampling, rng)
        assert kind == "scan"
        np.testing.assert_array_equal(box, view.extent_box)
        np.testing.assert_array_equal(target, crop_view_mask(view, mask))


def test_sampling_shares_are_checked():
    with pytest.raises(ConfigError):
        ViewSampling(tight=0.8, loose=0.3)
    with pytest.raises(ConfigError):
        ViewSampling(loose_max=0.5)


def test_large_boxes_are_sampled_through_the_runtimes_tiles():
    import dataclasses

    from samspt.runtime.views import plan_views

    views = dataclasses.replace(CONFIG.view_settings, max_side=40)
    rng = np.random.default_rng(0)
    image = np.zeros((120, 160), np.uint8)
    mask = np.zeros((120, 160), bool)
    mask[10:100, 20:140] = True                               # far larger than 40 px views
    tiles = plan_views(mask.shape, 64, views, "auto", boxes=mask_box(mask)[None]).views
    sampling = ViewSampling(tight=1.0, loose=0.0, scan=0.0, context_jitter=0.0)
    for _ in range(10):
        view, box, target, kind = view_sample(image, mask, 64, views, sampling, rng,
                                              box_jitter=0.0)
        assert kind == "tight" and view in tiles and view.side == 40
        ix0, iy0, ix1, iy1 = view.inside
        assert ix0 <= box[0] <= box[2] <= ix1 - 1 and iy0 <= box[1] <= box[3] <= iy1 - 1
        np.testing.assert_array_equal(target, crop_view_mask(view, mask & box_region(box, mask.shape)))


def test_a_view_carries_more_prompts_negatives_hold_no_defect(records):
    """prompts_per_view K: K box prompts on one view, the first the sample's own; the others are
    boxes on defect-free room of the view (empty targets, no defect pixel under them) or the
    defect's tight box again, jittered (its target the mask inside it); validation keeps one."""
    sampling = ViewSampling(tight=1.0, loose=0.0, scan=0.0, free_scan=0.0, prompts_per_view=3,
                            extra_negative=0.5)
    dataset = DefectDataset(records, CONFIG, train=True, sampling=sampling)
    kinds = collections.Counter()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        for index in range(5):
            item = dataset[index]
            assert item["point_coords"].shape == (3, 2, 2)
            assert item["targets"].shape == (3, CONFIG.image_size, CONFIG.image_size)
            coords = item["point_coords"].numpy()
            inside = (coords >= -0.5) & (coords <= CONFIG.image_size + 0.5)
            assert inside.all()                       # every prompt lies in the view's input
            for k in range(1, 3):
                target = item["targets"][k].numpy()
                kinds["negative" if not target.any() else "tight"] += 1
                if index == 4:                        # the defect-free image: negatives only
                    assert not target.any()
    assert kinds["negative"] > 10 and kinds["tight"] > 5
    assert DefectDataset(records, CONFIG, train=False, sampling=sampling)[0][
        "point_coords"].shape == (1, 2, 2)


def test_negatives_in_a_view_avoid_the_defect():
    from samspt.training.data.view_samples import extra_prompts

    rng = np.random.default_rng(0)
    mask = _mask()
    box = mask_box(mask)
    view = box_view(box, mask.shape, CONFIG.image_size, CONFIG.view_settings)
    sampling = ViewSampling(prompts_per_view=9, extra_negative=1.0)
    first = crop_view_mask(view, mask & box_region(box, mask.shape))
    boxes, targets = extra_prompts(view, mask, "tight", box, first, 8, sampling, rng)
    ix0, iy0, ix1, iy1 = view.inside
    for b, target in zip(boxes, targets):
        if target.any():  # no room left: the first prompt again
            np.testing.assert_array_equal(b, box)
            continue
        x0, y0, x1, y1 = b.astype(int)
        assert ix0 <= x0 <= x1 < ix1 and iy0 <= y0 <= y1 < iy1
        assert not mask[y0:y1 + 1, x0:x1 + 1].any()
    with pytest.raises(ConfigError, match="prompts_per_view"):
        ViewSampling(prompts_per_view=0)


def test_jittered_windows_may_pass_view_max_side_without_an_error():
    # scan_side equal to max_side: the jitter takes some windows past it (a real run's settings)
    views = ViewSettings(context=2.0, min_side=64, scan_side=152, max_side=152)
    sampling = ViewSampling(tight=0.4, loose=0.2, scan=0.4, free_scan=1.0)
    rng = np.random.default_rng(0)
    image = np.full((600, 900, 3), 128, np.uint8)
    mask = np.zeros((600, 900), bool)
    mask[300:303, 100:700] = True                      # a long thin crack: tiles
    kinds = set()
    for _ in range(200):
        view, box, target, kind = view_sample(image, mask, 128, views, sampling, rng)
        kinds.add(kind)
        assert target.shape == (128, 128)
    assert {"scan", "tight"} <= kinds


def test_decoded_images_are_cached_within_the_budget_and_items_stay_the_same(tmp_path):
    records = []
    for i in range(3):
        mask = np.zeros((64, 80), bool)
        mask[10:20, 10:30] = True
        records.append(Record(write_image(tmp_path / f"i{i}.png", (64, 80), seed=i),
                              write_mask(tmp_path / f"i{i}_mask.png", mask), "crack", "t"))
    config = get_config("cnn_tiny")
    cached = DefectDataset(records, config, train=True, seed=3)
    fresh = DefectDataset(records, config, train=True, seed=3, cache_mb=0)
    for _ in range(2):                                     # the second round reads the cache
        for i in range(3):
            a, b = cached[i], fresh[i]
            assert np.array_equal(a["image"].numpy(), b["image"].numpy())
            assert np.array_equal(a["targets"].numpy(), b["targets"].numpy())
    assert len(cached._decoded) == 3 and not fresh._decoded
    one = 64 * 80 * 3 + 64 * 80
    small = DefectDataset(records, config, cache_mb=1.5 * one / 2 ** 20)
    for i in range(3):
        small[i]
    assert len(small._decoded) == 1                          # the budget holds one
