"""The sample images bundled with samspt (MTD tiles with masks), for demos and parity checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List

import numpy as np
from PIL import Image


SAMPLES_DIR = Path(__file__).resolve().parent / "assets" / "samples"


@dataclass(frozen=True)
class Sample:
    """One bundled image: ``name`` is ``<class>_<stem>``."""

    name: str
    image_path: Path
    mask_path: Path

    @property
    def defect_class(self) -> str:
        return self.name.split("_", 1)[0]

    def image(self) -> np.ndarray:
        """HxW uint8 grey image."""
        with Image.open(self.image_path) as img:
            return np.asarray(img.convert("L"))

    def mask(self) -> np.ndarray:
        """HxW bool ground truth (value > 127)."""
        with Image.open(self.mask_path) as img:
            return np.asarray(img.convert("L")) > 127


def bundled_samples() -> List[Sample]:
    """All bundled samples, sorted by name."""
    return [Sample(p.stem, p, p.with_suffix(".png")) for p in sorted(SAMPLES_DIR.glob("*.jpg"))]
