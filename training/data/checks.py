"""Checks of records against their files: every image and mask opened, nothing lost.

:func:`check_records` (what ``read_dataset(check_masks=True)`` runs) refuses unreadable images and
masks, masks of another size than their image, masks whose non-zero values all read as
background (their defect would be lost), and a set of records whose masks are all empty. A
record whose mask is all 0 becomes defect-free, with a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from samspt.training.data.coco import CocoRecord
from samspt.training.data.mask_values import (HOW_TO_SAY, VALUE_LAYOUTS, describe_meaning,
                                              describe_values)
from samspt.training.data.records import DEFECT_FREE, DatasetError, Record, record_key

log = logging.getLogger(__name__)


def _image_hw(path: Path) -> Tuple[int, int]:
    try:
        with Image.open(path) as img:
            width, height = img.size
    except OSError as exc:
        raise DatasetError(f"cannot read image {path}: {exc}; replace or remove the file") from None
    return height, width


class _LastMask:
    """The values of the last mask file read, so that records of one file read it once."""

    def __init__(self) -> None:
        self.key: Optional[Tuple[Path, bool]] = None
        self.arr: Optional[np.ndarray] = None

    def __call__(self, record: Record) -> np.ndarray:
        key = (record.mask_path, record.by_index)
        if key != self.key:
            self.key, self.arr = key, record.mask_array()
        return self.arr


def _refuse_lost(record: Record, arr: Optional[np.ndarray]) -> None:
    """A DatasetError when ``record``'s mask reads empty although it marks something."""
    if record.mask_value is not None or record.mask_region is not None:
        region = "" if record.mask_region is None else f" inside {record.mask_region}"
        raise DatasetError(
            f"record {record.name} of {record.dataset} finds no defect in {record.mask_path} "
            f"({describe_meaning(record)}{region}): the mask changed since the records were "
            "made; read the dataset again (or make a new split)")
    if arr is not None and arr.any():
        values = describe_values(v.item() for v in np.unique(arr) if v != 0)
        raise DatasetError(
            f"mask {record.mask_path} holds the non-zero values {values} but none reads as a "
            f"defect ({describe_meaning(record)}), so its defect would be lost. Fix the mask, or "
            f"{HOW_TO_SAY} (layouts {', '.join(VALUE_LAYOUTS)})")


def check_records(records: Sequence[Record]) -> List[Record]:
    """Open every image and mask. DatasetError: an image or mask cannot be read, a mask's size
    differs from its image's, a mask holds non-zero values none of which reads as a defect, or
    every mask is empty. A record whose mask is all 0 becomes defect-free (class
    :data:`DEFECT_FREE`, no mask), with a warning."""
    out, emptied, masked, empty, last = [], {}, 0, 0, _LastMask()
    for record in records:
        hw = _image_hw(record.image_path)
        if record.mask_path is None:
            out.append(record)
            continue
        masked += 1
        arr = None if isinstance(record, CocoRecord) else last(record)
        mask = record.load_mask(hw) if arr is None else record.mask_from(arr, hw)
        if mask.any():
            out.append(record)
            continue
        _refuse_lost(record, arr)
        empty += 1
        emptied.setdefault(record.image_path, Record(record.image_path, None, DEFECT_FREE,
                                                     record.dataset, record.mask_nonzero))
    if masked and empty == masked:
        raise DatasetError(
            f"every one of the {masked} masks is empty (all values 0), e.g. "
            f"{next(r.mask_path for r in records if r.mask_path is not None)}: nothing marks a "
            "defect. If the images are all defect-free, read them without masks (folder layout: "
            "no masks/ folder and allow_no_masks=True); else the masks were written wrongly")
    if emptied:
        log.warning("%d image(s) of defect classes have an empty mask and are read as "
                    "defect-free: %s", len(emptied), ", ".join(str(p) for p in list(emptied)[:5]))
    return sorted(out + list(emptied.values()), key=record_key)
