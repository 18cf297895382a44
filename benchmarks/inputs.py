"""The inputs every backend gets: one bundled sample image and K seeded box prompts."""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

from samspt.runtime.preprocess import as_rgb_uint8
from samspt.runtime.samples import bundled_samples, prompt_boxes

# The largest bundled Magnetic Tile Defect tile (488x354 grey), as RGB.
SAMPLE_NAME = "fray_exp0_num_797"


def sample_image() -> Tuple[str, np.ndarray]:
    """(name, HxWx3 uint8) of the benchmark image."""
    samples = {s.name: s for s in bundled_samples()}
    sample = samples.get(SAMPLE_NAME) or next(iter(samples.values()))
    return sample.name, as_rgb_uint8(sample.image())


def random_boxes(count: int, height: int, width: int, seed: int) -> np.ndarray:
    """``count`` x4 float32 seeded boxes inside an HxW image: the verification images' random
    boxes (:func:`samspt.runtime.samples.prompt_boxes` on a defect-free mask)."""
    return prompt_boxes(np.zeros((height, width), bool), np.random.default_rng(seed), count)


def benchmark_inputs(prompt_counts: Sequence[int],
                     seed: int = 0) -> Tuple[str, np.ndarray, Dict[int, np.ndarray]]:
    """(image name, HxWx3 uint8 image, {K: Kx4 float32 boxes}) for each prompt count K."""
    name, image = sample_image()
    height, width = image.shape[:2]
    return name, image, {k: random_boxes(k, height, width, seed + k) for k in prompt_counts}
