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
from samspt.training.data.split import read_split, split_records, write_split


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
