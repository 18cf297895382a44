"""Masks on the wire: COCO's compressed run-length encoding, as ``pycocotools.mask.encode``
writes it, with ``counts`` as a string so it is JSON: ``{"size": [H, W], "counts": "..."}``."""

from __future__ import annotations

import warnings
from typing import Any, Dict, List, Sequence

import numpy as np

from samspt.runtime.errors import InputError

Rle = Dict[str, Any]


def encode_masks(masks: np.ndarray) -> List[Rle]:
    """KxHxW bool -> K RLE dicts (``size`` [H, W], ``counts`` str)."""
    from pycocotools import mask as coco_mask

    if masks.ndim != 3:
        raise InputError(f"masks must be KxHxW, got shape {masks.shape}")
    if masks.shape[0] == 0:
        return []
    fortran = np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))
    return [{"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
            for rle in coco_mask.encode(fortran)]


def decode_masks(rles: Sequence[Rle], hw: Sequence[int]) -> np.ndarray:
    """K RLE dicts -> KxHxW bool; every RLE must be of size ``hw``."""
    from pycocotools import mask as coco_mask

    height, width = int(hw[0]), int(hw[1])
    if not rles:
        return np.zeros((0, height, width), bool)
    objs = []
    for k, rle in enumerate(rles):
        if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
            raise InputError(f"mask {k} is not an RLE dict with 'size' and 'counts': {rle!r:.80}")
        if [int(v) for v in rle["size"]] != [height, width]:
            raise InputError(f"mask {k} has size {rle['size']}, the image is {[height, width]}")
        counts = rle["counts"]
        objs.append({"size": [height, width],
                     "counts": counts.encode("ascii") if isinstance(counts, str) else counts})
    with warnings.catch_warnings():
        # pycocotools' RLE objects predate numpy 2's __array__(copy=...): a harmless notice
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded = coco_mask.decode(objs)
    return np.ascontiguousarray(decoded.transpose(2, 0, 1).astype(bool))
