"""Copy-paste: a training defect moved onto a defect-free image, and the dataset that does it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from samspt.runtime.errors import ConfigError
from samspt.training.modeling.config import get_config
from samspt.training.data.copy_paste import MARGIN, paste_defect
from samspt.training.data.dataset import DefectDataset
from samspt.training.data.records import DatasetError, Record

from .conftest import box_mask


def _surface(hw, level):
    return np.full((*hw, 3), level, np.uint8)


def _donor():
    """A grey 60 surface with a dark 10 L-shaped defect."""
    mask = box_mask((40, 40), (10, 12, 14, 30)) | box_mask((40, 40), (10, 26, 22, 30))
    image = _surface((40, 40), 60)
    image[mask] = 10
    return image, mask


def test_the_pasted_mask_is_the_donors_defect_turned_and_its_pixels_follow_it():
    image, mask = _surface((64, 80), 160), np.zeros((64, 80), bool)
    donor_image, donor_mask = _donor()
    for seed in range(8):
        out, out_mask = paste_defect(image, mask, donor_image, donor_mask,
                                     np.random.default_rng(seed))
        assert out_mask.sum() == donor_mask.sum()               # every defect pixel, no more
        # the defect keeps its contrast to the surface (60 -> 10 becomes 160 -> 110) ...
        assert np.all(np.abs(out[out_mask].astype(int) - 110) <= 1)
        # ... and pixels away from it are the target's own
        far = np.ones_like(out_mask)
        ys, xs = np.nonzero(out_mask)
        far[max(0, ys.min() - MARGIN - 3):ys.max() + MARGIN + 4,
            max(0, xs.min() - MARGIN - 3):xs.max() + MARGIN + 4] = False
        assert np.array_equal(out[far], image[far])
    assert not mask.any() and image.max() == 160                # the inputs are unchanged


def test_a_defect_larger_than_the_image_is_not_pasted():
    donor_image, donor_mask = _donor()
    image, mask = _surface((12, 12), 100), np.zeros((12, 12), bool)
    out, out_mask = paste_defect(image, mask, donor_image, donor_mask, np.random.default_rng(0))
    assert not out_mask.any() and np.array_equal(out, image)


def test_a_donor_without_defect_pixels_is_an_error():
    image = _surface((12, 12), 100)
    with pytest.raises(DatasetError, match="no defect pixels"):
        paste_defect(image, np.zeros((12, 12), bool), image, np.zeros((12, 12), bool),
                     np.random.default_rng(0))


def test_the_dataset_pastes_defects_onto_defect_free_training_images_only(tmp_path):
    donor_image, donor_mask = _donor()
    Image.fromarray(donor_image).save(tmp_path / "d.png")
    Image.fromarray(np.where(donor_mask, 255, 0).astype(np.uint8)).save(tmp_path / "d_gt.png")
    Image.fromarray(_surface((48, 48), 120)).save(tmp_path / "free.png")
    records = [Record(tmp_path / "d.png", tmp_path / "d_gt.png", "defect", "t"),
               Record(tmp_path / "free.png", None, "defect_free", "t")]
    config = get_config("tiny")
    pasted = DefectDataset(records, config, copy_paste=1.0)
    assert pasted[1]["targets"].sum() > 0                    # the free image now holds a defect
    plain = DefectDataset(records, config)
    assert plain[1]["targets"].sum() == 0
    validation = DefectDataset(records, config, train=False, copy_paste=1.0)
    assert validation[1]["targets"].sum() == 0               # never in validation
    with pytest.raises(ConfigError, match="copy_paste"):
        DefectDataset(records, config, copy_paste=1.5)
