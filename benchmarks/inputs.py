"""The inputs every backend gets: one bundled sample image and K seeded box prompts."""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

from samspt.runtime.preprocess import as_rgb_uint8
from samspt.runtime.samples import bundled_samples

# The largest bundled Magnetic Tile Defect tile (488x354 grey), as RGB.
SAMPLE_NAME = "fray_exp0_num_797"


def sample_image() -> Tuple[str, np.ndarray]:
    """(name, HxWx3 uint8) of the benchmark image."""
    samples = {s.name: s for s in bundled_samples()}
    sample = samples.get(SAMPLE_NAME) or next(iter(samples.values()))
    return sample.name, as_rgb_uint8(sample.image())


def random_boxes(count: int, height: int, width: int, seed: int) -> np.ndarray:
    """``count`` x4 float32 boxes (x0, y0, x1, y1) inside an HxW image, 5-50 % of each side."""
    rng = np.random.default_rng(seed)
    size = rng.uniform(0.05, 0.5, (count, 2)) * (width - 1, height - 1)
    start = rng.uniform(0, 1, (count, 2)) * ((width - 1, height - 1) - size)
    return np.concatenate([start, start + size], axis=1).round().astype(np.float32)


def benchmark_inputs(prompt_counts: Sequence[int],
                     seed: int = 0) -> Tuple[str, np.ndarray, Dict[int, np.ndarray]]:
    """(image name, HxWx3 uint8 image, {K: Kx4 float32 boxes}) for each prompt count K."""
    name, image = sample_image()
    height, width = image.shape[:2]
    return name, image, {k: random_boxes(k, height, width, seed + k) for k in prompt_counts}
