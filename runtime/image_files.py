"""Image files on disk: which files are images, and reading one as RGB (PIL, numpy)."""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

from samspt.runtime.errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def is_image_file(path: Path) -> bool:
    """A visible file with an image extension (any case)."""
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and \
        not path.name.startswith(".")


def image_files(folder: Path) -> List[Path]:
    """The image files under ``folder`` (its subfolders too, hidden ones skipped), sorted;
    :class:`InputError` where the folder does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; give a folder of image files "
                         f"({', '.join(IMAGE_EXTENSIONS)})")
    return sorted(p for p in folder.rglob("*") if is_image_file(p) and not any(
        part.startswith(".") for part in p.relative_to(folder).parts))


def load_image(path: Path) -> np.ndarray:
    """HxWx3 uint8 RGB of an image file; :class:`InputError` where it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None
