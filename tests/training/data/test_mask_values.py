"""What mask values mean (binary, grey, class ids), decided per dataset, and the refusals."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samspt.training.data.mask_values import (MASK_RECORDS, MASK_VALUES, MaskValues,
                                              component_boxes, infer_mode)
from samspt.training.data.readers import read_dataset
from samspt.training.data.records import DEFECT_FREE, DatasetError

from .conftest import box_mask, write_image

HW = (24, 32)


def _save(path: Path, arr: np.ndarray, mode=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path)
    return path


def _folder(tmp_path: Path, masks: dict) -> Path:
    """images/<stem>.png + masks/<stem>.png for each {stem: HxW array}."""
    root = tmp_path / "parts"
    for i, (stem, arr) in enumerate(masks.items()):
        write_image(root / "images" / f"{stem}.png", hw=arr.shape[:2], seed=i)
        _save(root / "masks" / f"{stem}.png", arr)
    return root


def _values(box, value, dtype=np.uint8, hw=HW) -> np.ndarray:
    return np.where(box_mask(hw, box), value, 0).astype(dtype)


def _found(*value_sets, dtype="uint8"):
    return [MaskValues(dtype, {v: 1 for v in values}) for values in value_sets]


# ----------------------------------------------------------------------------- the rule
@pytest.mark.parametrize("value_sets, named, expected", [
    (({255},), False, "binary"),
    (({1},), False, "binary"),
    (({1}, {1}), True, "class_ids"),       # a names file says 1 is a class id
    (({1, 3}, {2}), False, "class_ids"),
    (({64},), False, "class_ids"),
    (({127, 255},), False, "threshold"),   # MTD-like: no small value
    ((set(range(1, 256, 10)),), False, "threshold"),   # soft edges: many values, small ones too
])
def test_rule(value_sets, named, expected):
    assert infer_mode(_found(*value_sets), named, "d") == expected


@pytest.mark.parametrize("value_sets, dtype, words", [
    (({1, 255},), "uint8", "1, 255: the small values look like class ids"),
    (({1}, {255}), "uint8", "1, 255"),
    (({1, 2, 3},), "uint16", "16-bit masks of small values only"),
    (({100},), "uint8", "none is above half the range"),
    (({70, 65},), "uint8", "none is above half the range"),
    ((set(range(1, 40)),), "uint8", "one mask holds 39 distinct values"),
    (({65},), "uint8", "none is above half"),
])
def test_rule_refuses_ambiguous_values(value_sets, dtype, words):
    with pytest.raises(DatasetError, match="mask_values") as info:
        infer_mode(_found(*value_sets, dtype=dtype), False, "the place")
    assert words in str(info.value) and "the place" in str(info.value)
    for choice in ("'binary'", "'threshold'", "'class_ids'"):
        assert choice in str(info.value)


def test_rule_refuses_empty_masks():
    with pytest.raises(DatasetError, match="every one of the 2 masks of d is empty"):
        infer_mode(_found(set(), set()), False, "d")


def test_16_bit_binary_and_grey():
    assert infer_mode(_found({65535}, dtype="uint16"), False, "d") == "binary"
    assert infer_mode(_found({30000, 65535}, dtype="uint16"), False, "d") == "threshold"


# ----------------------------------------------------------------------------- on folders
def test_binary_masks_of_one_or_255(tmp_path):
    root = _folder(tmp_path, {"a": _values((2, 2, 5, 5), 1), "b": _values((8, 8, 9, 9), 1)})
    records = read_dataset(root)
    assert [r.defect_class for r in records] == ["defect", "defect"]
    assert all(r.mask_nonzero and r.mask_value is None for r in records)
    assert np.array_equal(records[0].load_mask(HW), box_mask(HW, (2, 2, 5, 5)))
    root255 = _folder(tmp_path / "x", {"a": _values((2, 2, 5, 5), 255)})
    assert read_dataset(root255)[0].load_mask(HW).sum() == 16


def test_class_id_masks_in_the_folder_layout(tmp_path):
    both = _values((2, 2, 5, 5), 1) + _values((10, 10, 12, 12), 2)
    root = _folder(tmp_path, {"a": both, "b": _values((0, 0, 3, 3), 2)})
    records = read_dataset(root)
    assert Counter(r.defect_class for r in records) == {"class_1": 1, "class_2": 2}
    a2 = next(r for r in records if r.image_path.stem == "a" and r.mask_value == 2)
    assert a2.name == "class_2/a"
    assert np.array_equal(a2.load_mask(HW), box_mask(HW, (10, 10, 12, 12)))


def test_grey_masks_are_thresholded(tmp_path):
    ramp = np.zeros(HW, np.uint8)
    ramp[4:12, 4:12] = np.linspace(1, 255, 64).reshape(8, 8).astype(np.uint8)  # soft edges
    root = _folder(tmp_path, {"a": ramp, "b": _values((2, 2, 3, 3), 200)})
    records = read_dataset(root)
    assert all(not r.mask_nonzero and r.mask_value is None for r in records)
    a = next(r for r in records if r.image_path.stem == "a")
    assert np.array_equal(a.load_mask(HW), ramp > 127)


def test_palette_label_maps_are_read_by_index(tmp_path):
    ids = (_values((2, 2, 5, 5), 1) + _values((10, 10, 12, 12), 2)).astype(np.uint8)
    pal = Image.fromarray(ids, "L").convert("P")
    pal.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)  # VOC-like colours
    root = tmp_path / "voc"
    write_image(root / "images" / "a.png")
    (root / "masks").mkdir(parents=True)
    pal.save(root / "masks" / "a.png")
    records = read_dataset(root)
    assert sorted(r.mask_value for r in records) == [1, 2]
    assert records[0].load_mask(HW).sum() == 16


def test_ambiguous_dataset_needs_mask_values(tmp_path):
    root = _folder(tmp_path, {"a": _values((2, 2, 5, 5), 1), "b": _values((0, 0, 3, 3), 255)})
    with pytest.raises(DatasetError, match=r"values 1, 255: .*mask_values"):
        read_dataset(root)
    records = read_dataset(root, mask_values="binary")
    assert [r.load_mask(HW).sum() for r in records] == [16, 16]
    with pytest.raises(DatasetError, match=r"holds the non-zero values 1 but none reads as a "
                                           r"defect .*would be lost"):
        read_dataset(root, mask_values="threshold")
    ids = read_dataset(root, mask_values="class_ids")
    assert sorted(r.defect_class for r in ids) == ["class_1", "class_255"]


def test_sixteen_bit_small_values_are_ambiguous(tmp_path):
    root = _folder(tmp_path, {"a": _values((2, 2, 5, 5), 2, np.uint16)})
    with pytest.raises(DatasetError, match="uint16 masks .* hold the non-zero values 2: 16-bit"):
        read_dataset(root)
    assert read_dataset(root, mask_values="class_ids")[0].defect_class == "class_2"


def test_grey_mask_under_the_threshold_is_lost_data_not_defect_free(tmp_path):
    masks = {"a": _values((2, 2, 5, 5), 255), "b": _values((0, 0, 3, 3), 90)}
    root = _folder(tmp_path, masks)
    with pytest.raises(DatasetError, match=r"b\.png holds the non-zero values 90 but none reads "
                                           r"as a defect .*> 127"):
        read_dataset(root, mask_values="threshold")


def test_mask_values_are_decided_per_spt_dataset(spt_root):
    _save(spt_root / "tiles" / "test" / "a.png", _values((2, 2, 5, 5), 3))
    records = read_dataset(spt_root)
    by_dataset = {r.dataset: r for r in records if not r.is_defect_free}
    assert by_dataset["tiles"].mask_value == 3 and by_dataset["tiles"].defect_class == "class_3"
    assert by_dataset["rails"].mask_value is None and by_dataset["rails"].defect_class == "rails"


def test_mask_values_option_only_where_values_decide(mtd_root, tmp_path):
    with pytest.raises(DatasetError, match="mtd layout reads its masks one way"):
        read_dataset(mtd_root, mask_values="class_ids")
    with pytest.raises(DatasetError, match="mask_values 'ids' is not one of auto"):
        read_dataset(mtd_root, mask_values="ids")
    with pytest.raises(DatasetError, match="mask_records 'blob' is not one of class"):
        read_dataset(mtd_root, mask_records="blob")
    with pytest.raises(DatasetError, match="min_component_area must be"):
        read_dataset(mtd_root, min_component_area=0)
    assert set(MASK_VALUES) == {"auto", "binary", "threshold", "class_ids"}
    assert set(MASK_RECORDS) == {"class", "image", "component"}


def test_components_of_a_grey_layout(mtd_root):
    write_image(mtd_root / "MT_Crack" / "Imgs" / "c2.jpg", seed=9)
    two = _values((1, 1, 4, 4), 255) | _values((20, 10, 25, 15), 255)
    _save(mtd_root / "MT_Crack" / "Imgs" / "c2.png", two)
    plain = read_dataset(mtd_root)
    parts = read_dataset(mtd_root, mask_records="component")
    assert Counter(r.defect_class for r in plain) == {"Blowhole": 2, "Crack": 2, DEFECT_FREE: 2}
    assert Counter(r.defect_class for r in parts) == {"Blowhole": 2, "Crack": 3, DEFECT_FREE: 2}
    c2 = sorted((r for r in parts if r.image_path.stem == "c2"), key=lambda r: r.component)
    assert [r.name for r in c2] == ["Crack/c2_c1", "Crack/c2_c2"]
    assert c2[0].mask_region == (20, 10, 25, 15)   # the larger first
    assert np.array_equal(c2[1].load_mask(HW), box_mask(HW, (1, 1, 4, 4)))


def test_component_boxes_keep_the_largest_speck():
    mask = np.zeros(HW, bool)
    mask[3, 3] = mask[10, 10] = mask[10, 11] = True
    assert component_boxes(mask, 4) == ([(10, 10, 11, 10)], 1)
    assert component_boxes(mask, 1) == ([(10, 10, 11, 10), (3, 3, 3, 3)], 0)
    diagonal = np.eye(5, dtype=bool)   # 8-connected: one component
    assert component_boxes(diagonal, 1) == ([(0, 0, 4, 4)], 0)
    assert component_boxes(np.zeros(HW, bool), 4) == ([], 0)


def test_unreadable_image_is_named(tmp_path):
    root = _folder(tmp_path, {"a": _values((2, 2, 5, 5), 255)})
    (root / "images" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"cannot read image .*broken\.png"):
        read_dataset(root)


def test_decision_is_logged(tmp_path, caplog):
    root = _folder(tmp_path, {"a": _values((2, 2, 5, 5), 2)})
    with caplog.at_level(logging.INFO, logger="samspt.training.data.mask_values"):
        read_dataset(root)
    assert "uint8 class_ids" in caplog.text
