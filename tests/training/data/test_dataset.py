"""The training/validation Dataset: item format, alignment of prompts, targets and pixels,
determinism per (seed, epoch, index)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samspt.runtime.errors import ConfigError
from samspt.runtime.preprocess import PIXEL_MEAN, PIXEL_STD
from samspt.training.modeling.config import get_config
from samspt.training.data.augment import AugmentSettings
from samspt.training.data.dataset import DefectDataset
from samspt.training.data.prompt_settings import PromptSettings
from samspt.runtime.prompts import mask_box
from samspt.training.data.readers import read_dataset
from samspt.training.data.records import DatasetError, Record

from .conftest import box_mask
from ...paths import MTD_DIR

TINY = get_config("tiny")
S = TINY.image_size
EXACT = PromptSettings(box_jitter=0.0, negative_prob=0.0)


def _painted(tmp_path: Path, name: str, mask: np.ndarray) -> Record:
    """A PNG image that is white exactly where ``mask`` is, black elsewhere, and its mask."""
    image = tmp_path / f"{name}.png"
    mask_path = tmp_path / f"{name}_gt.png"
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(image)
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(mask_path)
    return Record(image, mask_path, "defect", "painted")


def _free(tmp_path: Path, hw=(24, 32)) -> Record:
    path = tmp_path / "free.png"
    Image.fromarray(np.full(hw, 90, np.uint8)).save(path)
    return Record(path, None, "defect_free", "painted")


def _boxes(item):
    """Kx4 boxes of the box prompts in the input frame (corners labelled 2 and 3)."""
    coords, labels = item["point_coords"].numpy(), item["point_labels"].numpy()
    out = []
    for c, lab in zip(coords, labels):
        out.append(np.concatenate([c[lab == 2][0], c[lab == 3][0]]))
    return np.stack(out)


def _target_box(target: torch.Tensor) -> np.ndarray:
    return mask_box(target.numpy() > 0.5)


def test_item_format(tmp_path):
    records = [_painted(tmp_path, "a", box_mask()), _free(tmp_path)]
    for train in (True, False):
        ds = DefectDataset(records, TINY, PromptSettings(prompts_per_image=3), train=train)
        item = ds[0]
        assert item["image"].shape == (3, S, S) and item["image"].dtype == torch.float32
        assert item["point_coords"].shape == (3, 2, 2)
        assert item["point_coords"].dtype == torch.float32
        assert item["point_labels"].shape == (3, 2)
        assert item["point_labels"].dtype == torch.float32
        assert item["targets"].shape == (3, S, S) and item["targets"].dtype == torch.float32
        assert set(torch.unique(item["targets"]).tolist()) <= {0.0, 1.0}
        assert item["valid"].shape == (S, S) and item["valid"].dtype == torch.bool
        assert item["negative"].shape == (3,) and item["repeat"].shape == (3,)
        assert item["name"] == "painted/defect/a" and item["defect_class"] == "defect"
        h, w = item["resized_hw"].tolist()
        assert sorted(item["original_hw"].tolist()) == [24, 32] and max(h, w) == S
        assert item["valid"].sum() == h * w and item["valid"][:h, :w].all()
        assert not item["targets"][:, ~item["valid"]].any()
        assert (item["image"][:, ~item["valid"]] == 0).all()  # zero padding
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, S, S) and batch["targets"].shape == (2, 3, S, S)
    assert batch["name"] == ["painted/defect/a", "painted/defect_free/free"]


def test_validation_prompt_is_the_tight_box(tmp_path):
    mask = box_mask((24, 32), (4, 5, 10, 12))
    item = DefectDataset([_painted(tmp_path, "a", mask)], TINY, EXACT, train=False)[0]
    scale = S / 32
    expected = np.array([4, 5, 10, 12], np.float32) * scale
    assert np.allclose(_boxes(item), expected)
    assert item["repeat"].tolist() == [False, True, True, True]
    for target in item["targets"]:
        assert np.abs(_target_box(target) - expected).max() <= scale


@pytest.mark.parametrize("hw,box", [((24, 32), (4, 5, 10, 12)), ((70, 40), (30, 2, 39, 9)),
                                    ((50, 90), (0, 40, 3, 49))])
def test_targets_and_pixels_align_through_augmentation(tmp_path, hw, box):
    """The white pixels of the preprocessed image, the target and the prompt box agree after
    random flips/rotations, for up- and downscaled images."""
    record = _painted(tmp_path, "a", box_mask(hw, box))
    geometry = AugmentSettings(brightness=0.0, contrast=0.0)
    ds = DefectDataset([record], TINY, PromptSettings(box_jitter=0.0, negative_prob=0.0,
                                                      prompts_per_image=2, augment=geometry),
                       train=True)
    white = (255 - PIXEL_MEAN[0]) / PIXEL_STD[0]
    black = (0 - PIXEL_MEAN[0]) / PIXEL_STD[0]
    shapes = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        item = ds[0]
        scale = S / max(hw)
        bright = item["image"][0].numpy() > (white + black) / 2
        target = item["targets"][0].numpy() > 0.5
        assert np.array_equal(bright, target)
        assert np.abs(_target_box(item["targets"][0]) - _boxes(item)[0]).max() <= max(scale, 1)
        shapes.add(tuple(item["original_hw"].tolist()))
    assert shapes == {hw, hw[::-1]}  # quarter turns happened


def test_region_prompts(tmp_path):
    mask = box_mask((40, 60), (2, 2, 9, 9)) | box_mask((40, 60), (30, 20, 55, 35))
    mask[38, 0] = True  # below min_region_area: no prompt of its own
    record = _painted(tmp_path, "r", mask)
    settings = PromptSettings(box_mode="region", box_jitter=0.0, negative_prob=0.0,
                              prompts_per_image=3, min_region_area=4)
    item = DefectDataset([record], TINY, settings, train=False)[0]
    h, w = item["resized_hw"].tolist()
    assert (h, w) == (43, 64)
    scale = np.array([w / 60, h / 40, w / 60, h / 40])
    assert np.allclose(_boxes(item), np.array([[30, 20, 55, 35], [2, 2, 9, 9], [30, 20, 55, 35]])
                       * scale)
    assert item["repeat"].tolist() == [False, False, True]
    targets = item["targets"]
    assert torch.equal(targets[0], targets[2]) and not (targets[0] * targets[1]).any()
    for target, box in zip(targets, _boxes(item)):
        assert np.abs(_target_box(target) - box).max() <= 1
    whole = DefectDataset([record], TINY, EXACT, train=False)[0]
    assert whole["targets"][0].sum() > targets[0].sum() + targets[1].sum()  # speck included
    assert np.allclose(_boxes(whole)[0], np.array([0, 2, 55, 38]) * scale)
    assert np.abs(_target_box(whole["targets"][0]) - _boxes(whole)[0]).max() <= 1


def test_negative_prompts(tmp_path):
    mask = box_mask((24, 32), (10, 6, 20, 16))
    record = _painted(tmp_path, "a", mask)
    free = _free(tmp_path)
    for train in (True, False):
        item = DefectDataset([free], TINY, PromptSettings(), train=train)[0]
        assert item["negative"].all() and not item["targets"].any()
        assert (item["point_labels"] == torch.tensor([2.0, 3.0])).all()
    settings = PromptSettings(negative_prob=1.0, augment=False, prompts_per_image=6)
    item = DefectDataset([record], TINY, settings, train=True)[0]
    assert item["negative"].all() and not item["targets"].any()
    for x0, y0, x1, y1 in np.round(_boxes(item) / (S / 32)).astype(int):
        assert not mask[y0:y1 + 1, x0:x1 + 1].any()
    # Validation gives a defective image no negative prompt.
    assert not DefectDataset([record], TINY, settings, train=False)[0]["negative"].any()


def test_point_prompts(tmp_path):
    mask = box_mask((24, 32), (10, 6, 20, 16))
    settings = PromptSettings(point_prob=1.0, fg_points=2, bg_points=1, negative_prob=0.0)
    ds = DefectDataset([_painted(tmp_path, "a", mask)], TINY, settings, train=True)
    for epoch in range(3):
        ds.set_epoch(epoch)
        item = ds[0]
        assert item["point_coords"].shape == (4, 4, 2)
        assert item["point_labels"].tolist() == [[1, 1, 0, -1]] * 4
        for coords, target in zip(item["point_coords"].numpy(), item["targets"].numpy()):
            xs, ys = coords[:3, 0].astype(int), coords[:3, 1].astype(int)
            assert target[ys[:2], xs[:2]].all() and not target[ys[2], xs[2]]
    assert PromptSettings(point_prob=0.5, fg_points=3, bg_points=2).points_per_prompt_slots == 6


def test_determinism(tmp_path):
    records = [_painted(tmp_path, "a", box_mask()),
               _painted(tmp_path, "b", box_mask(box=(1, 1, 5, 20)))]
    settings = PromptSettings(negative_prob=0.3, point_prob=0.3)

    def same(x, y):
        return all(torch.equal(x[k], y[k]) if torch.is_tensor(x[k]) else x[k] == y[k] for k in x)

    a = DefectDataset(records, TINY, settings, train=True, seed=3)
    b = DefectDataset(records, TINY, settings, train=True, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert same(a[1], b[1]) and same(a[1], a[1])
    differ = []
    for epoch in range(3, 8):
        b.set_epoch(epoch)
        differ.append(not same(a[1], b[1]))
    assert all(differ)
    other_seed = DefectDataset(records, TINY, settings, train=True, seed=4)
    other_seed.set_epoch(2)
    assert not same(a[1], other_seed[1])
    val = DefectDataset(records, TINY, settings, train=False)
    first = val[0]
    val.set_epoch(5)
    assert same(first, val[0])


def test_same_items_whatever_the_worker_count(tmp_path):
    records = [_painted(tmp_path, f"m{i}", box_mask(box=(i, 2, 10 + i, 9))) for i in range(4)]
    ds = DefectDataset(records, TINY, PromptSettings(negative_prob=0.5), train=True, seed=1)
    ds.set_epoch(3)
    runs = []
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=workers)
        runs.append([batch["point_coords"] for batch in loader])
    assert all(torch.equal(x, y) for x, y in zip(*runs))


def test_settings_and_input_errors(tmp_path):
    with pytest.raises(ConfigError, match="box_mode"):
        PromptSettings(box_mode="boxes")
    with pytest.raises(ConfigError, match="fg_points"):
        PromptSettings(point_prob=0.5, fg_points=0)
    with pytest.raises(DatasetError, match="no records"):
        DefectDataset([], TINY)
    ds = DefectDataset([_free(tmp_path)], TINY)
    with pytest.raises(IndexError):
        ds[1]


@pytest.mark.skipif(not MTD_DIR.is_dir(), reason=f"the MTD dataset is not at {MTD_DIR} (set SAMSPT_MTD_DIR)")
def test_real_mtd_images():
    records = read_dataset(MTD_DIR)
    picked = {}
    for record in records:
        picked.setdefault(record.defect_class, record)
    assert len(picked) == 6
    settings = PromptSettings(box_mode="region", prompts_per_image=2, negative_prob=0.0)
    for train in (True, False):
        ds = DefectDataset(list(picked.values()), TINY, settings, train=train)
        for i, record in enumerate(ds.records):
            item = ds[i]
            assert item["image"].shape == (3, S, S)
            if record.is_defect_free:
                assert item["negative"].all() and not item["targets"].any()
            else:
                assert not item["negative"].any()
                assert all(t.any() for t in item["targets"])
                if not train:
                    for target, box in zip(item["targets"], _boxes(item)):
                        scale = S / max(item["original_hw"].tolist())
                        assert np.abs(_target_box(target) - box).max() <= max(scale, 1) + 0.5
