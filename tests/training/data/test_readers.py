"""Readers of the five layouts, layout detection, mask decoding and the errors users meet."""

from __future__ import annotations

import logging
import shutil
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from samspt.training.data.readers import (LAYOUTS, check_records, detect_layout, read_dataset,
                                          read_mvtec, read_visa)
from samspt.training.data.records import DEFECT_FREE, DatasetError, Record

from .conftest import box_mask, write_image, write_mask
from ...paths import MTD_DIR



def _classes(records):
    return Counter(r.defect_class for r in records)


def _sorted(records):
    return records == sorted(records, key=lambda r: (r.dataset, r.defect_class,
                                                     r.image_path.as_posix()))


def test_mtd_layout(mtd_root, caplog):
    with caplog.at_level(logging.WARNING):
        records = read_dataset(mtd_root)
    assert detect_layout(mtd_root) == "mtd"
    assert _classes(records) == {"Blowhole": 2, "Crack": 1, DEFECT_FREE: 2}
    assert "b3_unlabelled" in caplog.text  # a defect class without a mask is skipped, loudly
    assert all(r.dataset == "mtd" for r in records) and _sorted(records)
    free = [r for r in records if r.is_defect_free]
    assert all(r.mask_path is None for r in free)
    grey = records[0].load_image()
    assert grey.shape == (24, 32, 3) and grey.dtype == np.uint8
    assert np.array_equal(grey[..., 0], grey[..., 2])  # a grey JPEG repeated to 3 channels


def test_masks_binarised_whatever_their_encoding(mtd_root):
    by_stem = {r.image_path.stem: r for r in read_dataset(mtd_root)}
    # 8-bit with a 127 fringe, 16-bit with a 30000 fringe, RGB with a blue fringe.
    for stem, box in (("b1", (4, 5, 10, 12)), ("b2", (20, 2, 25, 6)), ("c1", (0, 0, 3, 3))):
        mask = by_stem[stem].load_mask((24, 32))
        assert mask.dtype == bool
        assert np.array_equal(mask, box_mask(box=box)), stem


def test_mvtec_whole_folder_and_one_category(mvtec_root):
    records = read_dataset(mvtec_root)
    assert detect_layout(mvtec_root) == "mvtec"
    assert Counter((r.dataset, r.defect_class) for r in records) == {
        ("mvtec/bottle", "broken_large"): 2, ("mvtec/bottle", DEFECT_FREE): 1,
        ("mvtec/screw", "scratch"): 2, ("mvtec/screw", DEFECT_FREE): 1}
    assert all(r.mask_path.name.endswith("_mask.png") for r in records if not r.is_defect_free)
    one = read_dataset(mvtec_root / "screw")
    assert {r.dataset for r in one} == {"mvtec/screw"} and len(one) == 3
    with_train = read_mvtec(mvtec_root / "screw", include_train=True)
    assert len(with_train) == 5
    train = [r for r in with_train if r.dataset == "mvtec/screw/train"]
    assert len(train) == 2 and all(r.is_defect_free for r in train)
    assert len(read_dataset(mvtec_root, include_train=True)) == 10


def test_visa_splits_and_label_map_masks(visa_root):
    records = read_dataset(visa_root)
    assert detect_layout(visa_root) == "visa"
    assert _classes(records) == {"anomaly": 2, DEFECT_FREE: 1}  # default: the test split
    assert {r.dataset for r in records} == {"visa/candle"}
    anomaly = next(r for r in records if r.defect_class == "anomaly")
    # VisA's raw masks hold small label values: every non-zero pixel is defect.
    assert np.array_equal(anomaly.load_mask((24, 32)), box_mask())
    both = read_visa(visa_root, splits=("train", "test"))
    assert _classes(both) == {"anomaly": 2, DEFECT_FREE: 3}
    with pytest.raises(DatasetError, match=r"splits \['val'\] not in .*holds \['test', 'train'\]"):
        read_visa(visa_root, splits=("val",))


def test_visa_missing_image_is_an_error(visa_root):
    (visa_root / "candle" / "Data" / "Images" / "Anomaly" / "000.JPG").unlink()
    with pytest.raises(DatasetError, match="lists 1 image.*not found"):
        read_dataset(visa_root)


def test_generic_folder(folder_root):
    records = read_dataset(folder_root)
    assert detect_layout(folder_root) == "folder"
    assert _classes(records) == {"defect": 1, "scratch": 1, DEFECT_FREE: 2}
    assert {r.dataset for r in records} == {"parts"}
    top = next(r for r in records if r.image_path.stem == "top")
    assert top.mask_path.name == "top_mask.png"
    assert np.array_equal(top.load_mask((24, 32)), box_mask())  # an RGB mask
    s1 = next(r for r in records if r.image_path.stem == "s1")
    assert s1.defect_class == "scratch" and s1.load_mask((24, 32)).sum() == 4


def test_generic_folder_ambiguous_mask(folder_root):
    write_mask(folder_root / "masks" / "top.png", box_mask())  # a second mask for top.png
    with pytest.raises(DatasetError, match="2 candidate masks"):
        read_dataset(folder_root)


def test_spt_layout(spt_root):
    records = read_dataset(spt_root)
    assert detect_layout(spt_root) == "spt"
    assert Counter((r.dataset, r.defect_class) for r in records) == {
        ("rails", "rails"): 1, ("tiles", "tiles"): 1, ("tiles", DEFECT_FREE): 1}
    one_pixel = next(r for r in records if r.dataset == "rails")
    assert one_pixel.load_mask().sum() == 1
    assert len(read_dataset(spt_root / "tiles")) == 2  # one dataset folder as the root


def test_reading_is_deterministic(mvtec_root):
    assert read_dataset(mvtec_root) == read_dataset(str(mvtec_root))


def test_missing_folder_and_file_root(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match="is a file"):
        read_dataset(tmp_path / "file.txt")


def test_unknown_layout_lists_the_known_ones(tmp_path):
    write_image(tmp_path / "stuff" / "photo.jpg")
    with pytest.raises(DatasetError, match="cannot tell the layout") as info:
        read_dataset(tmp_path / "stuff")
    for name in LAYOUTS:
        assert f"{name}:" in str(info.value)
    with pytest.raises(DatasetError, match="unknown layout 'yolo'"):
        read_dataset(tmp_path / "stuff", layout="yolo")


def test_known_layout_without_images(tmp_path):
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(DatasetError, match="holds no images in the folder layout"):
        read_dataset(tmp_path / "empty")


def test_bad_reader_option(mtd_root):
    with pytest.raises(DatasetError, match="does not take options \\['splits'\\]"):
        read_dataset(mtd_root, splits=("test",))


def test_mask_of_another_size(spt_root):
    write_mask(spt_root / "tiles" / "test" / "a.png", box_mask(hw=(20, 32)))
    with pytest.raises(DatasetError, match=r"a\.png is 32x20 .* is 32x24"):
        read_dataset(spt_root)
    records = read_dataset(spt_root, check_masks=False)  # found when the mask is loaded
    with pytest.raises(DatasetError, match="must cover its image"):
        next(r for r in records if r.image_path.stem == "a").load_mask((24, 32))


def test_empty_mask_means_defect_free(spt_root, caplog):
    zeros = spt_root / "tiles" / "test" / "a.png"
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(zeros)  # all 0: no defect marked
    write_image(spt_root / "tiles" / "test" / "d.jpg", seed=5)
    write_mask(spt_root / "tiles" / "test" / "d.png", box_mask())
    with caplog.at_level(logging.WARNING):
        records = read_dataset(spt_root / "tiles")
    assert _classes(records) == {"tiles": 1, DEFECT_FREE: 2}
    a = next(r for r in records if r.image_path.stem == "a")
    assert a.is_defect_free and a.mask_path is None
    assert "empty mask" in caplog.text
    unchecked = read_dataset(spt_root / "tiles", check_masks=False)
    assert _classes(unchecked) == {"tiles": 2, DEFECT_FREE: 1}


def test_grey_mask_below_half_is_an_error_not_defect_free(mtd_root):
    write_mask(mtd_root / "MT_Crack" / "Imgs" / "c1.png", np.zeros((24, 32), bool))  # 127s
    with pytest.raises(DatasetError, match=r"c1\.png holds the non-zero values 127 but none "
                                           r"reads as a defect"):
        read_dataset(mtd_root)


def test_dataset_of_empty_masks_is_an_error(spt_root):
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(spt_root / "tiles" / "test" / "a.png")
    # Masks that mark nothing at all: an error, not a defect-free dataset (spt datasets are
    # decided one by one, so rails does not hide it).
    with pytest.raises(DatasetError, match=r"every one of the 1 masks of .*tiles is empty"):
        read_dataset(spt_root)
    with pytest.raises(DatasetError, match=r"every one of the 1 masks is empty"):
        read_dataset(spt_root / "tiles", mask_values="threshold")


def test_check_records_keeps_good_records(mvtec_root):
    records = read_dataset(mvtec_root, check_masks=False)
    assert check_records(records) == records


def test_record_missing_mask_file_is_empty(tmp_path):
    image = write_image(tmp_path / "x.png")
    record = Record(image, tmp_path / "gone.png", "defect", "d")
    assert not record.load_mask().any() and record.load_mask().shape == (24, 32)


@pytest.mark.skipif(not MTD_DIR.is_dir(), reason=f"the MTD dataset is not at {MTD_DIR} (set SAMSPT_MTD_DIR)")
def test_real_mtd_folder(tmp_path):
    records = read_dataset(MTD_DIR)
    counts = _classes(records)
    # Exactly as before class-id masks were known: 745 Free images and 2 Uneven ones whose
    # masks are all 0 are defect-free.
    assert len(records) == 1062
    assert counts == {"Blowhole": 95, "Break": 72, "Crack": 44, "Fray": 28, "Uneven": 76,
                      DEFECT_FREE: 747}
    assert all(r.mask_value is None and r.mask_region is None and not r.mask_nonzero
               for r in records)
    free = [r for r in records if "MT_Free" in r.image_path.parts]
    assert free and all(r.is_defect_free for r in free)
    defective = [r for r in records if not r.is_defect_free]
    assert all(r.mask_path is not None for r in defective)
    # A copy of a few files elsewhere reads the same way.
    for record in [defective[0], free[0]]:
        dst = tmp_path / record.image_path.relative_to(MTD_DIR)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(record.image_path, dst)
        shutil.copy(record.image_path.with_suffix(".png"), dst.with_suffix(".png"))
    assert len(read_dataset(tmp_path)) == 2
