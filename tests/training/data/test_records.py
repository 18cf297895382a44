"""Record.load_mask decodes the mask encodings met in the wild."""

from __future__ import annotations

import numpy as np
from PIL import Image

from samspt.training.data.records import Record

from .conftest import box_mask, write_image


def _record(tmp_path, mask_img: Image.Image, nonzero: bool = False) -> Record:
    image = write_image(tmp_path / "img.png")
    mask_img.save(tmp_path / "mask.png")
    return Record(image, tmp_path / "mask.png", "defect", "d", mask_nonzero=nonzero)


def test_rgba_mask_ignores_alpha(tmp_path):
    mask = box_mask()
    arr = np.zeros((24, 32, 4), np.uint8)
    arr[..., :3] = np.where(mask, 255, 0)[..., None]
    arr[..., 3] = 255  # opaque everywhere: alpha is not defect
    loaded = _record(tmp_path, Image.fromarray(arr, "RGBA")).load_mask((24, 32))
    assert np.array_equal(loaded, mask)


def test_palette_mask_by_colour_or_by_index(tmp_path):
    mask = box_mask()
    pal = Image.fromarray(mask.astype(np.uint8), "L").convert("P")
    pal.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    assert np.array_equal(_record(tmp_path, pal).load_mask((24, 32)), mask)  # white = defect
    dark = Image.fromarray(mask.astype(np.uint8), "L").convert("P")
    dark.putpalette([0, 0, 0, 40, 40, 40] + [0] * 762)
    assert not _record(tmp_path, dark).load_mask((24, 32)).any()  # dark grey is below half
    assert np.array_equal(_record(tmp_path, dark, nonzero=True).load_mask((24, 32)), mask)


def test_one_bit_mask(tmp_path):
    mask = box_mask()
    one_bit = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).convert("1")
    assert np.array_equal(_record(tmp_path, one_bit).load_mask((24, 32)), mask)


def test_class_id_record_reads_its_value_inside_its_region(tmp_path):
    ids = np.zeros((24, 32), np.uint8)
    ids[box_mask(box=(1, 1, 4, 4))] = 1
    ids[box_mask(box=(10, 1, 12, 3))] = 1   # a second blob of class 1
    ids[box_mask(box=(20, 10, 25, 20))] = 2
    image = write_image(tmp_path / "img.png")
    Image.fromarray(ids).save(tmp_path / "ids.png")
    one = Record(image, tmp_path / "ids.png", "pit", "d", mask_value=1)
    assert np.array_equal(one.load_mask((24, 32)), ids == 1) and one.name == "pit/img"
    part = Record(image, tmp_path / "ids.png", "pit", "d", mask_value=1,
                  mask_region=(0, 0, 5, 5), component=1)
    assert np.array_equal(part.load_mask((24, 32)), box_mask(box=(1, 1, 4, 4)))
    assert part.name == "pit/img_c1" and part != one
    every = Record(image, tmp_path / "ids.png", "mixed", "d", mask_nonzero=True)
    assert np.array_equal(every.load_mask(), ids > 0)
    assert not Record(image, tmp_path / "ids.png", "x", "d").load_mask().any()  # all <= 127
    assert np.array_equal(one.mask_array(), ids)


def test_class_id_palette_mask_is_read_by_index(tmp_path):
    ids = np.zeros((24, 32), np.uint8)
    ids[box_mask(box=(1, 1, 4, 4))] = 2
    pal = Image.fromarray(ids, "L").convert("P")
    pal.putpalette([0, 0, 0, 0, 0, 0, 0, 200, 0] + [0] * 759)
    record = _record(tmp_path, pal)
    as_class = Record(record.image_path, record.mask_path, "c", "d", mask_value=2)
    assert np.array_equal(as_class.load_mask((24, 32)), ids == 2)
    assert record.load_mask((24, 32)).sum() == 16   # by colour: green 200 > 127
