"""One image of a defect dataset and its mask: the unit every reader yields.

``Record`` is plain data (paths and labels); pixels are loaded on demand, so a dataset of
thousands of images costs nothing until it is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

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

    How the mask file's values become the HxW bool mask (:meth:`load_mask`):

    - default: defect where the value is above half the range (> 127 for 8 bits);
    - ``mask_nonzero``: the mask is binary or a label map (VisA's raw masks, class-id masks read
      one record per image): every non-zero value is a defect; palette images by index;
    - ``mask_value``: the mask is a class-id map and this record is one class: defect where the
      value equals ``mask_value`` (palette images by index);
    - ``mask_region`` ``(x0, y0, x1, y1)``, inclusive corners: only pixels inside this box can be
      defect (a record of one connected component: the box is the component's, and other blobs
      of the same class inside it stay defect); ``component`` numbers such records (from 1) of
      one image and class, to keep their names unique.
    """

    image_path: Path
    mask_path: Optional[Path]
    defect_class: str
    dataset: str
    mask_nonzero: bool = False
    mask_value: Optional[int] = None
    mask_region: Optional[Tuple[int, int, int, int]] = None
    component: Optional[int] = None

    @property
    def name(self) -> str:
        """A name unique within the dataset: ``<class>/<stem>`` (``<class>/<stem>_c<k>`` for
        component ``k``)."""
        suffix = "" if self.component is None else f"_c{self.component}"
        return f"{self.defect_class}/{self.image_path.stem}{suffix}"

    @property
    def by_index(self) -> bool:
        """Whether palette masks are read by index (label maps) rather than by colour."""
        return self.mask_nonzero or self.mask_value is not None

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

    def mask_array(self, by_index: Optional[bool] = None) -> np.ndarray:
        """HxW array of the mask file's values, as :meth:`load_mask` reads them (colour
        channels reduced by max, alpha dropped; palette images by index when ``by_index``,
        default :attr:`by_index`, else by colour). A DatasetError when the file cannot be read."""
        if self.mask_path is None:
            raise DatasetError(f"record {self.name} of {self.dataset} has no mask file")
        index = self.by_index if by_index is None else by_index
        try:
            with Image.open(self.mask_path) as img:
                return _mask_array(img, keep_palette_indices=index)
        except OSError as exc:
            raise DatasetError(f"cannot read mask {self.mask_path}: {exc}") from None

    def load_mask(self, shape: Optional[tuple] = None) -> np.ndarray:
        """HxW bool: defect where the mask's value > 127 (any bit depth, any channel count), or
        as ``mask_nonzero`` / ``mask_value`` / ``mask_region`` say (see the class).

        A missing mask means defect-free: all False of ``shape`` (the image's HxW). When
        ``shape`` is given and the mask file has another size, a DatasetError says so.
        """
        if self.mask_path is None or not self.mask_path.exists():
            if shape is None:
                shape = self.load_image().shape[:2]
            return np.zeros(shape[:2], dtype=bool)
        return self.mask_from(self.mask_array(), shape)

    def mask_from(self, arr: np.ndarray, shape: Optional[tuple] = None) -> np.ndarray:
        """HxW bool of this record from its mask file's values ``arr`` (:meth:`mask_array`); a
        DatasetError when ``shape`` (the image's HxW) is given and differs from ``arr``'s."""
        if shape is not None and arr.shape[:2] != tuple(shape[:2]):
            raise DatasetError(
                f"mask {self.mask_path} is {arr.shape[1]}x{arr.shape[0]} (WxH) but its image "
                f"{self.image_path} is {shape[1]}x{shape[0]}; a mask must cover its image pixel "
                "for pixel: fix or remove the pair")
        if self.mask_value is not None:
            mask = arr == self.mask_value
        elif self.mask_nonzero:
            mask = arr != 0
        else:
            mask = binarize_mask(arr)
        if self.mask_region is not None:
            mask = _inside(mask, self.mask_region)
        return mask


def record_key(record: Record) -> Tuple[str, str, str, int, int]:
    """The order of records: dataset, class, image path, component, class id."""
    return (record.dataset, record.defect_class, record.image_path.as_posix(),
            record.component or 0, -1 if record.mask_value is None else record.mask_value)


def _inside(mask: np.ndarray, region: Tuple[int, int, int, int]) -> np.ndarray:
    """``mask`` with every pixel outside the inclusive box ``region`` (x0, y0, x1, y1) False."""
    x0, y0, x1, y1 = (int(v) for v in region)
    out = np.zeros_like(mask)
    out[y0:y1 + 1, x0:x1 + 1] = mask[y0:y1 + 1, x0:x1 + 1]
    return out


def _mask_array(img: Image.Image, keep_palette_indices: bool) -> np.ndarray:
    """HxW array of a mask image: colour channels reduced by max, alpha dropped, palette images
    as their colours (or their indices, for label maps), 32-bit ``I`` images holding 16-bit
    values (older Pillow reads 16-bit PNGs so) as uint16."""
    if img.mode in ("P", "PA") and not keep_palette_indices:
        img = img.convert("RGBA")
    if img.mode == "1":
        img = img.convert("L")  # 0/255, so a 1-bit mask reads as an 8-bit binary one
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
