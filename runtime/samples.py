"""The sample images bundled with samspt (MTD tiles with masks), for demos and parity checks, and
where the shipped example model folder lives.

Parity checks (the ONNX graphs against PyTorch, TensorRT engines against ONNX Runtime) take
:data:`VerifyImage` triples: :func:`bundled_verify_images` gives the bundled samples with box
prompts from :func:`prompt_boxes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import numpy as np
from PIL import Image

from samspt.runtime.preprocess import as_rgb_uint8
from samspt.runtime.prompts import mask_box

SAMPLES_DIR = Path(__file__).resolve().parent / "assets" / "samples"
#: The exported example model (graphs + manifest) shipped with the base install: the embedded
#: default of samspt-demo and samspt-inspect. Its weights and model card are in training/assets.
EXAMPLE_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "example_model"
PROMPTS_PER_IMAGE = 4
VerifyImage = Tuple[str, np.ndarray, np.ndarray]  # name, HxWx3 uint8, Kx4 float32 boxes


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


def prompt_boxes(mask: np.ndarray, rng: np.random.Generator,
                 count: int = PROMPTS_PER_IMAGE) -> np.ndarray:
    """``count`` boxes for one image: the tight box of the defect (if any), a jittered and a
    loosened copy of it, and random boxes; Kx4 float32 inclusive pixel corners."""
    h, w = mask.shape
    boxes = []
    if mask.any():
        tight = mask_box(mask)
        size = np.array([tight[2] - tight[0] + 1, tight[3] - tight[1] + 1] * 2, np.float32)
        boxes += [tight, tight + rng.uniform(-0.1, 0.1, 4).astype(np.float32) * size,
                  tight + np.array([-0.5, -0.5, 0.5, 0.5], np.float32) * size]
    while len(boxes) < count:
        side = rng.uniform(0.1, 0.6, 2) * (w, h)
        x0, y0 = rng.uniform(0, 1, 2) * ((w - side[0]), (h - side[1]))
        boxes.append(np.array([x0, y0, x0 + side[0], y0 + side[1]], np.float32))
    out = np.stack(boxes[:count]).astype(np.float32)
    out[:, 0::2] = out[:, 0::2].clip(0, w - 1)
    out[:, 1::2] = out[:, 1::2].clip(0, h - 1)
    return out


def bundled_verify_images(seed: int = 0) -> List[VerifyImage]:
    """The bundled samples as (name, HxWx3 uint8, Kx4 float32 boxes), boxes seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    return [(s.name, as_rgb_uint8(s.image()), prompt_boxes(s.mask(), rng))
            for s in bundled_samples()]
