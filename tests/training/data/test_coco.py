"""COCO instance-segmentation reader: polygons, uncompressed and compressed RLE decoded pixel for
pixel, classes, defect-free images, auto-detection, errors, and the Dataset on its records."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from samspt.training.modeling.config import get_config
from samspt.training.data.coco import CocoRecord, read_coco
from samspt.training.data.dataset import DefectDataset, target_in_input_frame
from samspt.training.data.prompt_settings import PromptSettings
from samspt.training.data.readers import detect_layout, read_dataset
from samspt.training.data.records import DEFECT_FREE, DatasetError, Record
from samspt.training.data.split import split_records

from .conftest import write_image

# pycocotools' decode warns under numpy 2 (its __array__ lacks the copy keyword).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")

HW = (24, 32)
H, W = HW


def rect(x0, y0, x1, y1):
    """A rectangle polygon with corners on pixel edges: covers mask[y0:y1, x0:x1]."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def drawn(*boxes, hw=HW):
    """HxW bool drawn with numpy slicing, True on each (x0, y0, x1, y1) half-open box."""
    mask = np.zeros(hw, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


def uncompressed_rle(mask):
    """COCO's uncompressed RLE, computed here (column-major runs, starting with zeros)."""
    flat = mask.flatten(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], edges])).tolist()
    return {"size": list(mask.shape), "counts": counts}


def compressed_rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


# Each image: file name, the annotations (category id, segmentation, area) and its expected mask.
L_SHAPE = [0, 0, 10, 0, 10, 4, 4, 4, 4, 12, 0, 12]  # non-convex: two rectangles
RLE_MASK = drawn((20, 3, 28, 9), (25, 15, 31, 22))
CROWD_MASK = drawn((1, 1, 3, 23))


def write_coco(folder: Path, json_path: Path, images_sub: str = "") -> Path:
    """A COCO export of five images (PNG and JPEG) under ``folder/images_sub``."""
    img_dir = folder / images_sub if images_sub else folder
    files = ["poly.png", "rle.jpg", "compressed.png", "multi.png", "free.jpg"]
    for i, name in enumerate(files):
        write_image(img_dir / name, hw=HW, rgb=name.endswith(".jpg"), seed=i)
    images = [{"id": i + 1, "file_name": name, "height": H, "width": W}
              for i, name in enumerate(files)]
    anns = [
        (1, 1, [rect(3, 4, 9, 10)], 36.0, 0),
        (2, 2, uncompressed_rle(RLE_MASK), float(RLE_MASK.sum()), 0),
        (2, 2, uncompressed_rle(CROWD_MASK), float(CROWD_MASK.sum()), 1),
        (3, 1, compressed_rle(RLE_MASK), float(RLE_MASK.sum()), 0),
        # multi: a small scratch (polygons, one an L shape) and a larger dent (compressed RLE)
        (4, 1, [L_SHAPE, rect(20, 20, 22, 22)], 76.0, 0),
        (4, 2, compressed_rle(drawn((8, 8, 20, 20))), 144.0, 0),
    ]
    doc = {
        "info": {"description": "test"}, "licenses": [],
        "categories": [{"id": 1, "name": "scratch", "supercategory": ""},
                       {"id": 2, "name": "dent", "supercategory": ""}],
        "images": images,
        "annotations": [{"id": k + 1, "image_id": im, "category_id": cat, "segmentation": seg,
                         "area": area, "bbox": [0, 0, 1, 1], "iscrowd": crowd}
                        for k, (im, cat, seg, area, crowd) in enumerate(anns)],
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc))
    return json_path


EXPECTED = {
    "poly": ("scratch", drawn((3, 4, 9, 10))),
    "rle": ("dent", RLE_MASK | CROWD_MASK),
    "compressed": ("scratch", RLE_MASK),
    "multi": ("dent", drawn((0, 0, 10, 4), (0, 4, 4, 12), (20, 20, 22, 22), (8, 8, 20, 20))),
}


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    root = tmp_path / "parts"
    write_coco(root, root / "annotations.json")
    return root


def _by_stem(records):
    return {r.image_path.stem: r for r in records}


def test_masks_classes_and_defect_free(coco_root):
    records = read_dataset(coco_root)
    assert records == sorted(records, key=lambda r: (r.dataset, r.defect_class,
                                                     r.image_path.as_posix()))
    found = _by_stem(records)
    assert set(found) == set(EXPECTED) | {"free"}
    for stem, (defect_class, mask) in EXPECTED.items():
        record = found[stem]
        assert isinstance(record, CocoRecord) and record.defect_class == defect_class
        assert record.dataset == "parts" and record.mask_path == coco_root / "annotations.json"
        assert record.image_path in (coco_root / f"{stem}.png", coco_root / f"{stem}.jpg")
        assert np.array_equal(record.load_mask(), mask), stem
        assert np.array_equal(record.load_mask(record.load_image().shape[:2]), mask)
    free = found["free"]
    assert type(free) is Record and free.mask_path is None
    assert free.defect_class == DEFECT_FREE and free.is_defect_free
    assert not free.load_mask(HW).any()


def test_reading_decodes_nothing_until_asked(coco_root, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("decoded while reading")

    monkeypatch.setattr(mask_utils, "decode", refuse)
    monkeypatch.setattr(mask_utils, "frPyObjects", refuse)
    records = read_dataset(coco_root, check_masks=False)
    assert len(records) == 5
    with pytest.raises(AssertionError, match="decoded while reading"):
        _by_stem(records)["poly"].load_mask()


def test_records_pickle_hash_and_split(coco_root):
    records = read_dataset(coco_root)
    again = pickle.loads(pickle.dumps(records))
    assert again == records and len(set(records)) == 5
    assert np.array_equal(_by_stem(again)["multi"].load_mask(), EXPECTED["multi"][1])
    train, val = split_records(records + records, val_fraction=0.5)
    assert sorted(r.image_path.stem for r in train + val) == sorted([*EXPECTED, "free"])


def test_detection(tmp_path, coco_root):
    assert detect_layout(coco_root) == "coco"
    assert detect_layout(coco_root / "annotations.json") == "coco"
    assert read_dataset(coco_root / "annotations.json") == read_dataset(coco_root, layout="coco")
    # CVAT: annotations/instances_default.json with images/ beside (also the folder layout's
    # images/: COCO wins), the dataset named after the export folder.
    cvat = tmp_path / "cvat_export"
    write_coco(cvat, cvat / "annotations" / "instances_default.json", images_sub="images")
    assert detect_layout(cvat) == "coco"
    records = read_dataset(cvat)
    assert {r.dataset for r in records} == {"cvat_export"}
    assert all(r.image_path.parent == cvat / "images" for r in records)
    assert np.array_equal(_by_stem(records)["multi"].load_mask(), EXPECTED["multi"][1])
    # Label Studio: result.json beside images/
    studio = tmp_path / "studio"
    write_coco(studio, studio / "result.json", images_sub="images")
    assert detect_layout(studio) == "coco" and len(read_dataset(studio)) == 5
    # A JSON that is not COCO does not make a folder COCO.
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.json").write_text('{"train": [{"image": "a.png"}]}')
    write_image(tmp_path / "plain" / "images" / "a.png")
    assert detect_layout(tmp_path / "plain") == "folder"


def test_several_json_files_ask_for_one(tmp_path):
    root = tmp_path / "coco"
    write_coco(root, root / "annotations" / "instances_train.json", images_sub="images")
    write_coco(root, root / "annotations" / "instances_val.json", images_sub="images")
    with pytest.raises(DatasetError, match="2 COCO JSON files.*instances_train.json.*"
                                           "instances_val.json.*pass the one JSON file"):
        read_dataset(root)
    assert len(read_dataset(root / "annotations" / "instances_val.json")) == 5


def test_missing_image_names_the_places_looked(coco_root):
    (coco_root / "rle.jpg").unlink()
    with pytest.raises(DatasetError) as info:
        read_dataset(coco_root)
    text = str(info.value)
    assert "1 image(s)" in text and "'rle.jpg'" in text and "images_dir" in text
    assert str(coco_root) in text and str(coco_root / "images") in text


def test_images_dir_option(tmp_path):
    root = tmp_path / "labels"
    write_coco(tmp_path / "pictures", root / "coco.json")
    with pytest.raises(DatasetError, match="not found"):
        read_dataset(root)
    records = read_dataset(root, images_dir=tmp_path / "pictures")
    assert len(records) == 5 and records[0].image_path.parent == tmp_path / "pictures"


def test_malformed_files(tmp_path, coco_root):
    path = coco_root / "annotations.json"
    good = json.loads(path.read_text())
    path.write_text(path.read_text()[:-20])  # truncated
    with pytest.raises(DatasetError, match="not readable JSON.*re-export"):
        read_dataset(path)
    path.write_text(json.dumps({"images": good["images"], "annotations": []}))
    with pytest.raises(DatasetError, match="not a COCO instance-segmentation file.*categories"):
        read_dataset(coco_root, layout="coco")
    bad = dict(good, annotations=good["annotations"] + [dict(good["annotations"][0],
                                                             category_id=9)])
    path.write_text(json.dumps(bad))
    with pytest.raises(DatasetError, match="category_id 9, not in categories"):
        read_dataset(path)
    bad = dict(good, annotations=[dict(good["annotations"][1],
                                       segmentation={"size": [H + 1, W], "counts": [5]})])
    path.write_text(json.dumps(bad))
    with pytest.raises(DatasetError, match="RLE size \\[25, 32\\] differs"):
        read_dataset(path)
    with pytest.raises(DatasetError, match="is a file; the folder layout reads a folder"):
        read_dataset(path, layout="folder")


def test_size_in_json_must_match_the_image(coco_root):
    path = coco_root / "annotations.json"
    doc = json.loads(path.read_text())
    doc["images"][0]["width"] = W + 8
    doc["annotations"][0]["segmentation"] = [rect(1, 1, 4, 4)]
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="size 40x24 \\(WxH\\) but the file is 32x24"):
        read_dataset(coco_root)


def test_boxes_only(coco_root, caplog):
    path = coco_root / "annotations.json"
    doc = json.loads(path.read_text())
    doc["annotations"][0]["segmentation"] = []  # poly.png: a box without a mask -> skipped
    path.write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING):
        records = read_dataset(coco_root)
    assert "poly" not in _by_stem(records) and len(records) == 4
    assert "without a segmentation" in caplog.text
    for ann in doc["annotations"]:
        del ann["segmentation"]
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="none with a segmentation.*boxes only"):
        read_coco(coco_root)


def test_dataset_item_from_coco_records(coco_root):
    tiny = get_config("tiny")
    records = read_dataset(coco_root)
    settings = PromptSettings(prompts_per_image=2, box_jitter=0.0, negative_prob=0.0)
    ds = DefectDataset(records, tiny, settings, train=False)
    size = tiny.image_size
    for index, record in enumerate(records):
        item = ds[index]
        assert item["name"] == f"parts/{record.defect_class}/{record.image_path.stem}"
        assert item["image"].shape == (3, size, size)
        assert item["targets"].shape[-2:] == (size, size)
        if record.is_defect_free:
            assert item["negative"].all() and not item["targets"].any()
        elif ds.views is None:
            expected = target_in_input_frame(EXPECTED[record.image_path.stem][1], size)
            assert np.array_equal(item["targets"][0].numpy(), expected)
        else:
            assert item["targets"].any()
    train = DefectDataset(records, tiny, settings, train=True)
    assert train[0]["image"].shape == (3, size, size)


def test_a_written_split_reads_coco_masks_back(tmp_path):
    """A split of a COCO dataset (as training writes and --resume / samspt-eval --split read it)
    gives back records whose masks are the annotations', not the JSON file read as an image."""
    from samspt.training.data.readers import read_dataset
    from samspt.training.data.split import read_split, split_records, write_split

    root = tmp_path / "coco"
    root.mkdir()
    images = []
    for i in range(6):
        name = f"img{i}.png"
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(root / name)
        images.append({"id": i, "file_name": name, "width": 30, "height": 20})
    annotations = [{"id": i, "image_id": i, "category_id": 1, "iscrowd": 0, "area": 12.0,
                    "segmentation": [[2, 3, 6, 3, 6, 6, 2, 6]], "bbox": [2, 3, 4, 3]}
                   for i in range(4)]
    (root / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": annotations,
         "categories": [{"id": 1, "name": "scratch"}]}))
    records = read_dataset(root)
    train, val = split_records(records, val_fraction=0.34, seed=0)
    write_split(tmp_path / "split.json", train, val, root)
    train2, val2 = read_split(tmp_path / "split.json", root)
    for before, after in zip(train + val, train2 + val2):
        assert after.image_path == before.image_path
        np.testing.assert_array_equal(after.load_mask((20, 30)), before.load_mask((20, 30)))
