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
