"""The mmseg (ADE20K / NEU-Seg) layout, class-id masks as records, and the folder refusals."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from samspt.training.data.mask_values import MIXED_CLASS
from samspt.training.data.readers import LAYOUTS, detect_layout, read_dataset
from samspt.training.data.records import DEFECT_FREE, DatasetError
from samspt.training.evaluate import main as eval_main

from .conftest import (INSIDE_U, NEU_HW, NEU_LIKE, box_mask, label_map, write_image,
                       write_neu)
from ...paths import MTD_DIR

NEU_DIR = MTD_DIR.parent / "neu_seg"
HW = NEU_HW


def _counts(records):
    return Counter((r.dataset, r.defect_class) for r in records)


def _names_unique(records):
    names = [(r.dataset, r.name) for r in records]
    return len(names) == len(set(names))


# ----------------------------------------------------------------------------- class records
def test_neu_layout_reads_class_records(neu_root):
    assert detect_layout(neu_root) == "mmseg" and "mmseg" in LAYOUTS
    records = read_dataset(neu_root)
    assert _counts(records) == {
        ("neu/training", "class_1"): 2, ("neu/training", "class_2"): 1,
        ("neu/training", "class_3"): 2,
        ("neu/validation", "class_2"): 1, ("neu/validation", "class_3"): 1}
    assert _names_unique(records)
    first = [r for r in records if r.image_path.stem == "000001" and r.dataset == "neu/training"]
    assert [(r.name, r.mask_value) for r in first] == [("class_1/000001", 1), ("class_3/000001", 3)]
    truth = label_map(NEU_LIKE["training"]["000001"])
    for record in first:
        assert np.array_equal(record.load_mask(HW), truth == record.mask_value)
        assert record.mask_path.parent.name == "training"


def test_class_names_from_classes_txt(neu_root):
    (neu_root / "classes.txt").write_text("background\ninclusion\npatches\nscratches\n")
    records = read_dataset(neu_root)
    assert {r.defect_class for r in records} == {"inclusion", "patches", "scratches"}
    assert next(r for r in records if r.mask_value == 3).name.startswith("scratches/")
    (neu_root / "classes.txt").write_text("background\ninclusion\npatches\n")
    with pytest.raises(DatasetError, match=r"class id 3 but .*classes\.txt names ids 0\.\.2"):
        read_dataset(neu_root)
    (neu_root / "class_names.txt").write_text("bg\na\nb\nc\n")
    with pytest.raises(DatasetError, match="holds both classes.txt and class_names.txt"):
        read_dataset(neu_root)
    (neu_root / "classes.txt").unlink()
    assert {r.defect_class for r in read_dataset(neu_root)} == {"a", "b", "c"}
    (neu_root / "class_names.txt").write_text("bg\na\na\nc\n")
    with pytest.raises(DatasetError, match="names ids 1 and 2 both 'a'"):
        read_dataset(neu_root)
    (neu_root / "class_names.txt").write_text(f"bg\n{DEFECT_FREE}\nb\nc\n")
    with pytest.raises(DatasetError, match="reserved"):
        read_dataset(neu_root)


def test_one_class_binary_masks_take_their_name_from_classes_txt(tmp_path):
    root = write_neu(tmp_path / "one", {"training": {"a": {1: [(1, 1, 5, 5)]},
                                                     "b": {1: [(9, 9, 12, 12)]}}})
    assert {r.defect_class for r in read_dataset(root)} == {"defect"}   # 0/1: binary
    (root / "classes.txt").write_text("background\nscratch\n")
    records = read_dataset(root)
    assert {r.defect_class for r in records} == {"scratch"} and records[0].mask_value == 1


def test_without_split_folders(tmp_path):
    root = write_neu(tmp_path / "flat", {"": NEU_LIKE["training"]}, splits=False)
    records = read_dataset(root)
    assert {r.dataset for r in records} == {"flat"} and len(records) == 5


# ----------------------------------------------------------------------------- other modes
def test_image_records(neu_root):
    records = read_dataset(neu_root, mask_records="image")
    assert len(records) == 5 and _names_unique(records)
    assert _counts(records) == {
        ("neu/training", MIXED_CLASS): 1, ("neu/training", "class_2"): 1,
        ("neu/training", "class_1"): 1, ("neu/training", "class_3"): 1,
        ("neu/validation", MIXED_CLASS): 1}
    mixed = next(r for r in records if r.defect_class == MIXED_CLASS and "training" in r.dataset)
    assert mixed.name == f"{MIXED_CLASS}/000001" and mixed.mask_nonzero
    assert np.array_equal(mixed.load_mask(HW), label_map(NEU_LIKE["training"]["000001"]) > 0)


def test_component_records(neu_root):
    records = read_dataset(neu_root, mask_records="component")
    assert _names_unique(records)
    training = [r for r in records if r.dataset == "neu/training"]
    assert Counter(r.name for r in training) == Counter([
        "class_1/000001_c1", "class_1/000001_c2", "class_3/000001_c1", "class_2/000002_c1",
        "class_1/000003_c1", "class_3/000004_c1"])   # 000003's speck: no record of its own
    u_shape = next(r for r in training if r.name == "class_1/000001_c1")
    assert u_shape.mask_region == (2, 2, 20, 20) and u_shape.mask_value == 1
    mask = u_shape.load_mask(HW)
    assert mask[box_mask(HW, INSIDE_U)].all()     # the other blob inside the box stays defect
    assert not mask[:, 21:].any()                 # class 3 and anything outside the box: not
    truth = label_map(NEU_LIKE["training"]["000001"]) == 1
    assert np.array_equal(mask, truth)
    speck = next(r for r in training if r.image_path.stem == "000004")
    assert speck.mask_region == (40, 0, 40, 0)    # its class's only blob, though small
    assert read_dataset(neu_root, mask_records="component", min_component_area=1) != records


# ----------------------------------------------------------------------------- refusals
def test_mmseg_image_without_label_map(neu_root):
    (neu_root / "annotations" / "training" / "000002.png").unlink()
    with pytest.raises(DatasetError, match=r"1 image\(s\) of .* have no label map, e\.g\. "
                                           r".*000002\.jpg"):
        read_dataset(neu_root)


def test_mmseg_label_map_without_image(neu_root):
    (neu_root / "images" / "training" / "000002.jpg").unlink()
    with pytest.raises(DatasetError, match=r"1 mask\(s\) have no image, e\.g\. .*000002\.png"):
        read_dataset(neu_root)
    (neu_root / "annotations" / "test").mkdir()
    Image.fromarray(np.zeros(HW, np.uint8)).save(neu_root / "annotations" / "test" / "x.png")
    with pytest.raises(DatasetError, match="mask.* have no image"):
        read_dataset(neu_root)


def test_folder_without_masks_is_an_error_unless_allowed(tmp_path):
    root = tmp_path / "plain"
    write_image(root / "images" / "a.png")
    write_image(root / "images" / "b.png", seed=1)
    with pytest.raises(DatasetError, match=r"no mask in .*masks \(no such folder\).*"
                                           r"allow_no_masks=True"):
        read_dataset(root)
    records = read_dataset(root, allow_no_masks=True)
    assert [r.defect_class for r in records] == [DEFECT_FREE, DEFECT_FREE]
    (root / "masks").mkdir()
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(root / "masks" / "c.png")
    with pytest.raises(DatasetError, match=r"1 mask\(s\) have no image, e\.g\. .*c\.png"):
        read_dataset(root)


def test_neu_folder_read_as_folder_layout_is_refused(neu_root):
    # Forced into the folder layout (no masks/), NEU is no longer read as all defect-free.
    with pytest.raises(DatasetError, match="no mask in"):
        read_dataset(neu_root, layout="folder")


# ----------------------------------------------------------------------------- samspt-eval
def test_eval_reads_mask_records(neu_root, capsys):
    for mode, n in (("class", 7), ("image", 5), ("component", 8)):
        assert eval_main(["--baseline", "box", "--data", str(neu_root), "--no-scan", "--json",
                          "--mask-records", mode, "--mask-values", "class_ids"]) == 0
        assert json.loads(capsys.readouterr().out)["n_images"] == n, mode
    assert eval_main(["--baseline", "box", "--data", str(neu_root), "--no-scan",
                      "--mask-values", "threshold"]) == 2   # ids 1..3 under 127: refused
    assert "would be lost" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        eval_main(["--baseline", "box", "--mask-records", "image"])   # no --data


# ----------------------------------------------------------------------------- the real one
@pytest.mark.skipif(not NEU_DIR.is_dir(), reason=f"NEU-Seg is not at {NEU_DIR}")
def test_real_neu_seg():
    records = read_dataset(NEU_DIR)
    # The dataset's README: images holding each class.
    assert Counter(r.defect_class for r in records) == {
        "class_1": 1460, "class_2": 1448, "class_3": 1429}
    assert len({r.image_path for r in records}) == 3630 and _names_unique(records)


def test_a_test_split_is_not_the_spt_layout(tmp_path):
    root = write_neu(tmp_path / "full", {"training": NEU_LIKE["training"],
                                         "test": NEU_LIKE["validation"]})
    assert detect_layout(root) == "mmseg"
    assert {r.dataset for r in read_dataset(root)} == {"full/training", "full/test"}


def test_coco_json_in_annotations_is_still_coco(tmp_path):
    root = tmp_path / "cocoish"
    write_image(root / "images" / "a.png")
    (root / "annotations").mkdir()
    (root / "annotations" / "instances.json").write_text(
        '{"images": [], "annotations": [], "categories": []}')
    assert detect_layout(root) == "coco"
