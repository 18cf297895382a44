"""Seeded, stratified, order-independent splits and their JSON files."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from samspt.training.data.readers import read_dataset
from samspt.training.data.records import DEFECT_FREE, DatasetError, Record
from samspt.training.data.split import (read_split, read_split_dataset, split_dataset,
                                        split_records, write_split)


def _records(counts, dataset="d", root=Path("/data")):
    return [Record(root / cls / f"{i:03d}.png", root / cls / f"{i:03d}_m.png", cls, dataset)
            for cls, n in counts.items() for i in range(n)]


COUNTS = {"crack": 20, "dent": 7, "hole": 2, "solo": 1, DEFECT_FREE: 50}


def test_split_is_stratified():
    records = _records(COUNTS)
    train, val = split_records(records, val_fraction=0.2, seed=0)
    assert sorted(train + val, key=str) == sorted(records, key=str)
    assert not set(train) & set(val)
    n_val = Counter(r.defect_class for r in val)
    assert n_val == {"crack": 4, "dent": 1, "hole": 1, DEFECT_FREE: 10}  # solo: train only
    assert Counter(r.defect_class for r in train)["solo"] == 1


def test_at_least_one_of_each_side():
    train, val = split_records(_records({"a": 2, "b": 3}), val_fraction=0.9, seed=0)
    assert Counter(r.defect_class for r in train) == {"a": 1, "b": 1}
    assert Counter(r.defect_class for r in val) == {"a": 1, "b": 2}


def test_split_is_reproducible_and_order_independent():
    records = _records(COUNTS)
    first = split_records(records, seed=3)
    shuffled = [records[i] for i in np.random.default_rng(1).permutation(len(records))]
    assert split_records(shuffled, seed=3) == first
    assert split_records(list(reversed(records)), seed=3) == first
    assert split_records(records, seed=4)[1] != first[1]


def test_strata_are_independent_of_each_other():
    base = split_records(_records({"crack": 20}), seed=0)[1]
    more = split_records(_records({"crack": 20, "dent": 9}), seed=0)[1]
    assert [r for r in more if r.defect_class == "crack"] == base


def test_same_class_in_two_datasets_is_two_strata():
    records = _records({"crack": 3}, dataset="a") + _records({"crack": 3}, dataset="b",
                                                            root=Path("/other"))
    _, val = split_records(records, val_fraction=0.2, seed=0)
    assert Counter(r.dataset for r in val) == {"a": 1, "b": 1}


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_bad_fraction(fraction):
    with pytest.raises(DatasetError, match="val_fraction"):
        split_records(_records({"a": 4}), val_fraction=fraction)


def test_held_out_images_leave_validation_as_it_was_and_train_on_neither_side():
    records = _records(COUNTS)
    train, val = split_records(records, val_fraction=0.2, seed=0)
    split = split_dataset(records, val_fraction=0.2, seed=0, test_fraction=0.2)
    assert split.val == val                          # validation unmoved by holding out
    assert sorted(split.train + split.test, key=str) == sorted(train, key=str)
    assert not set(split.test) & (set(split.train) | set(split.val))
    n_test = Counter(r.defect_class for r in split.test)
    # round(n * 0.2), at least one, leaving one image to train; a stratum of two holds none.
    assert n_test == {"crack": 4, "dent": 1, DEFECT_FREE: 10}
    assert Counter(r.defect_class for r in split.train) == {"crack": 12, "dent": 5, "hole": 1,
                                                             "solo": 1, DEFECT_FREE: 30}
    nothing = split_dataset(records, val_fraction=0.2, seed=0)
    assert (nothing.train, nothing.val, nothing.test) == (train, val, [])
    assert split_dataset(records, 0.2, 0, 0.2) != split_dataset(records, 0.2, 1, 0.2)


@pytest.mark.parametrize("test_fraction", [-0.1, 0.8, 1.0])
def test_bad_test_fraction(test_fraction):
    with pytest.raises(DatasetError, match="test_fraction must be in"):
        split_dataset(_records({"a": 10}), val_fraction=0.2, test_fraction=test_fraction)


def test_held_out_images_round_trip(tmp_path):
    from PIL import Image

    root = tmp_path / "tiles"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(10):
        Image.fromarray(np.full((8, 8), 200, np.uint8)).save(root / "images" / f"t{i}.png")
        if i < 6:
            mask = np.zeros((8, 8), np.uint8)
            mask[2:5, 2:5] = 255
            Image.fromarray(mask).save(root / "masks" / f"t{i}.png")
    split = split_dataset(read_dataset(root), val_fraction=0.2, seed=0, test_fraction=0.3)
    assert len(split.test) == 3                      # round(0.3 x 6) + round(0.3 x 4)
    path = tmp_path / "s.json"
    write_split(path, split.train, split.val, root, seed=0, val_fraction=0.2,
                test=split.test, test_fraction=0.3)
    doc = json.loads(path.read_text())
    assert doc["test_fraction"] == 0.3 and len(doc["test"]) == len(split.test)
    assert read_split_dataset(path, root) == split
    assert read_split(path, root) == (split.train, split.val)
    # A split without held-out images has no test list, and reads back with an empty one.
    write_split(path, split.train, split.val, root)
    assert "test" not in json.loads(path.read_text())
    assert read_split_dataset(path, root).test == []


def test_write_and_read_back(mvtec_root, tmp_path):
    records = read_dataset(mvtec_root, include_train=True)
    train, val = split_records(records, val_fraction=0.3, seed=7)
    path = tmp_path / "run" / "split.json"
    write_split(path, train, val, mvtec_root, seed=7, val_fraction=0.3)
    doc = json.loads(path.read_text())
    assert doc["seed"] == 7 and doc["val_fraction"] == 0.3
    entry = doc["train"][0]
    assert set(entry) >= {"image", "mask", "class", "dataset"}
    assert not Path(entry["image"]).is_absolute()
    assert entry["image"].startswith(("bottle/", "screw/"))
    assert [p.name for p in path.parent.iterdir()] == ["split.json"]  # no temporary file left
    assert read_split(path, mvtec_root) == (train, val)

    moved = tmp_path / "moved"
    shutil.copytree(mvtec_root, moved)
    train2, val2 = read_split(path, moved)
    assert [r.image_path.relative_to(moved) for r in train2] == \
        [r.image_path.relative_to(mvtec_root) for r in train]
    assert [r.defect_class for r in val2] == [r.defect_class for r in val]


def test_label_map_flag_survives(visa_root, tmp_path):
    records = read_dataset(visa_root)
    train, val = split_records(records, seed=0)
    write_split(tmp_path / "s.json", train, val, visa_root)
    train2, val2 = read_split(tmp_path / "s.json", visa_root)
    assert all(r.mask_nonzero for r in train2 + val2)
    assert (train2, val2) == (train, val)


def test_read_split_errors(mtd_root, tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        read_split(tmp_path / "none.json", mtd_root)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not readable JSON"):
        read_split(tmp_path / "bad.json", mtd_root)
    (tmp_path / "other.json").write_text('{"train": []}')
    with pytest.raises(DatasetError, match="not a samspt split file"):
        read_split(tmp_path / "other.json", mtd_root)
    train, val = split_records(read_dataset(mtd_root), seed=0)
    write_split(tmp_path / "s.json", train, val, mtd_root)
    with pytest.raises(DatasetError, match="not under .*pass the root the split was written"):
        read_split(tmp_path / "s.json", tmp_path)


def test_write_split_refuses_records_outside_root(mtd_root, tmp_path):
    records = read_dataset(mtd_root)
    with pytest.raises(DatasetError, match="not inside the dataset root"):
        write_split(tmp_path / "s.json", records, [], tmp_path / "elsewhere")


# ----------------------------------------------------------------------------- class records
def _split_v1(records, val_fraction, seed):
    """The version-1 algorithm (one record per image), to check it is kept for such data."""
    import math
    import zlib

    key = lambda r: (r.dataset, r.defect_class, r.image_path.as_posix())  # noqa: E731
    strata = {}
    for record in sorted(set(records), key=key):
        strata.setdefault((record.dataset, record.defect_class), []).append(record)
    val = []
    for (dataset, defect_class), members in strata.items():
        n = len(members)
        n_val = 0 if n < 2 else min(n - 1, max(1, int(math.floor(n * val_fraction + 0.5))))
        rng = np.random.default_rng([seed, zlib.crc32(f"{dataset}\0{defect_class}".encode())])
        val += [members[i] for i in rng.permutation(n)[:n_val]]
    return sorted(val, key=key)


def test_one_record_per_image_splits_as_before():
    records = _records(COUNTS)
    for seed in (0, 3):
        assert split_records(records, 0.2, seed)[1] == _split_v1(records, 0.2, seed)


def _multi_class(n_images=60, root=Path("/neu")):
    """Records of images holding one or two classes (every third image: a and a rare class)."""
    records = []
    for i in range(n_images):
        image, mask = root / f"{i:03d}.jpg", root / f"{i:03d}.png"
        classes = ["a", "rare"] if i % 3 == 0 else ["b"] if i % 3 == 1 else ["a"]
        records += [Record(image, mask, c, "neu", mask_value=v + 1) for v, c in enumerate(classes)]
    return records


def test_no_image_on_both_sides():
    records = _multi_class()
    train, val = split_records(records, val_fraction=0.25, seed=0)
    assert sorted(train + val, key=str) == sorted(records, key=str)
    train_images = {r.image_path for r in train}
    val_images = {r.image_path for r in val}
    assert not train_images & val_images
    # Images holding a and rare are stratified by rare: a quarter of them go to validation.
    assert Counter(r.defect_class for r in val) == {"rare": 5, "a": 5 + 5, "b": 5}
    assert split_records(list(reversed(records)), val_fraction=0.25, seed=0) == (train, val)


def test_components_of_an_image_stay_together(neu_root):
    records = read_dataset(neu_root, mask_records="component")
    for seed in range(5):
        train, val = split_records(records, val_fraction=0.5, seed=seed)
        assert not {r.image_path for r in train} & {r.image_path for r in val}


def test_class_and_component_records_round_trip(neu_root, tmp_path):
    for mode in ("class", "image", "component"):
        records = read_dataset(neu_root, mask_records=mode)
        train, val = split_records(records, val_fraction=0.3, seed=1)
        path = tmp_path / f"{mode}.json"
        write_split(path, train, val, neu_root, seed=1, val_fraction=0.3)
        doc = json.loads(path.read_text())
        assert doc["version"] == 2
        assert read_split(path, neu_root) == (train, val), mode
        back = read_split(path, neu_root)
        for before, after in zip(train + val, back[0] + back[1]):
            assert np.array_equal(before.load_mask(), after.load_mask())
    entries = doc["train"] + doc["val"]
    assert all(isinstance(e["mask_region"], list) and e["component"] >= 1 and e["mask_value"]
               for e in entries)


def test_reads_version_1_files(mvtec_root, tmp_path):
    records = read_dataset(mvtec_root)
    train, val = split_records(records, seed=0)
    path = tmp_path / "s.json"
    write_split(path, train, val, mvtec_root)
    doc = json.loads(path.read_text())
    doc["version"] = 1
    path.write_text(json.dumps(doc))
    assert read_split(path, mvtec_root) == (train, val)
    doc["version"] = 3
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="version 3; this samspt reads versions 1, 2"):
        read_split(path, mvtec_root)


@pytest.mark.parametrize("key, value, words", [
    ("mask_region", [1, 2, 3], "mask_region must be"),
    ("mask_region", [1, 2, 3, "4"], "mask_region must be"),
    ("mask_value", 1.5, "mask_value must be a whole number"),
    ("component", True, "component must be a whole number"),
])
def test_bad_new_fields(neu_root, tmp_path, key, value, words):
    train, val = split_records(read_dataset(neu_root, mask_records="component"), seed=0)
    path = tmp_path / "s.json"
    write_split(path, train, val, neu_root)
    doc = json.loads(path.read_text())
    doc["train"][0][key] = value
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=words):
        read_split(path, neu_root)
