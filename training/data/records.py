"""One image of a defect dataset and its mask: the unit every reader yields.

``Record`` is plain data (paths and labels); pixels are loaded on demand, so a dataset of
thousands of images costs nothing until it is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from samspt.runtime.errors import SamsptError
from samspt.runtime.preprocess import as_rgb_uint8

# Class name given to defect-free images whatever the dataset calls them ("good", "Free", ...).
DEFECT_FREE = "defect_free"


class DatasetError(SamsptError, ValueError):
    """A dataset folder is missing, in an unknown layout, or holds unreadable files."""


@dataclass(frozen=True)
class Record:
    """An image, its mask (``None``: defect-free) and its class.

    ``defect_class`` is the dataset's class name (``Blowhole``, ``crack``, ...) or
    :data:`DEFECT_FREE`; ``dataset`` names the source (``mtd``, ``mvtec/bottle``, ...).
    ``mask_nonzero``: the mask is a label map (VisA's raw masks hold small class ids 1, 2, ...),
    so every non-zero value is a defect instead of values above half the range.
    """

    image_path: Path
    mask_path: Optional[Path]
    defect_class: str
    dataset: str
    mask_nonzero: bool = False

    @property
    def name(self) -> str:
        """A name unique within the dataset: ``<class>/<stem>``."""
        return f"{self.defect_class}/{self.image_path.stem}"

    @property
    def is_defect_free(self) -> bool:
        return self.defect_class == DEFECT_FREE

    def load_image(self) -> np.ndarray:
        """HxWx3 uint8 RGB (grey images are repeated to three channels)."""
        try:
            with Image.open(self.image_path) as img:
                img.load()
                if img.mode not in ("L", "RGB"):
                    img = img.convert("RGB")
                return as_rgb_uint8(np.asarray(img))
        except OSError as exc:
            raise DatasetError(f"cannot read image {self.image_path}: {exc}") from None

    def load_mask(self, shape: Optional[tuple] = None) -> np.ndarray:
        """HxW bool, defect where the mask's value > 127 (any bit depth, any channel count;
        any non-zero value when ``mask_nonzero``).

        A missing mask means defect-free: all False of ``shape`` (the image's HxW). When
        ``shape`` is given and the mask file has another size, a DatasetError says so.
        """
        if self.mask_path is None or not self.mask_path.exists():
            if shape is None:
                shape = self.load_image().shape[:2]
            return np.zeros(shape[:2], dtype=bool)
        try:
            with Image.open(self.mask_path) as img:
                arr = _mask_array(img, keep_palette_indices=self.mask_nonzero)
        except OSError as exc:
            raise DatasetError(f"cannot read mask {self.mask_path}: {exc}") from None
        if shape is not None and arr.shape != tuple(shape[:2]):
            raise DatasetError(
                f"mask {self.mask_path} is {arr.shape[1]}x{arr.shape[0]} (WxH) but its image "
                f"{self.image_path} is {shape[1]}x{shape[0]}; a mask must cover its image pixel "
                "for pixel: fix or remove the pair")
        if self.mask_nonzero:
            return arr != 0
        return binarize_mask(arr)


def _mask_array(img: Image.Image, keep_palette_indices: bool) -> np.ndarray:
    """HxW array of a mask image: colour channels reduced by max, alpha dropped, palette images
    as their colours (or their indices, for label maps), 32-bit ``I`` images holding 16-bit
    values (older Pillow reads 16-bit PNGs so) as uint16."""
    if img.mode in ("P", "PA") and not keep_palette_indices:
        img = img.convert("RGBA")
    arr = np.asarray(img)
    if img.mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        arr = arr[..., :-1]
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    if img.mode == "I" and arr.size and arr.min() >= 0 and arr.max() <= 65535:
        arr = arr.astype(np.uint16)
    return arr


def binarize_mask(arr: np.ndarray) -> np.ndarray:
    """Defect where the value is above half of the type's range (> 127 for 8 bits)."""
    if arr.dtype == bool:
        return arr.copy()
    if np.issubdtype(arr.dtype, np.floating):
        return arr > 0.5
    scale = (np.iinfo(arr.dtype).max + 1) / 256.0  # 1 for uint8, 256 for uint16
    return arr > 127 * scale + (scale - 1)
