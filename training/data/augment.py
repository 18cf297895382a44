"""Seeded augmentations of an image and its mask together, before preprocessing.

Geometry (flips, 90-degree rotations) moves image and mask alike; brightness, contrast, gamma
and sensor noise change the image only. Every call draws the same count of random numbers from
the generator, so one generator state gives one result whatever the settings' probabilities are
(the noise comes from a generator seeded by one of those draws).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from samspt.runtime.errors import ConfigError
from samspt.training.data.records import DatasetError


@dataclass(frozen=True)
class AugmentSettings:
    """``hflip``/``vflip``: probabilities; ``rot90``: rotate by k*90 degrees, k uniform in 0..3;
    ``brightness``: shift by up to this fraction of 255; ``contrast``: scale the deviation from
    the image's mean by a factor in ``1 +- contrast``; ``gamma``: raise the [0, 1] intensities
    to a power in ``exp(+- gamma)`` (lighting curves); ``noise``: add Gaussian noise of a
    standard deviation drawn in ``[0, noise]`` of 255 (sensor noise), one value per pixel shared
    by its channels."""

    hflip: float = 0.5
    vflip: float = 0.5
    rot90: bool = True
    brightness: float = 0.1
    contrast: float = 0.1
    gamma: float = 0.0
    noise: float = 0.0

    def __post_init__(self) -> None:
        for name in ("hflip", "vflip"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"augment {name} is a probability in [0, 1], got {value}")
        for name in ("brightness", "contrast", "gamma", "noise"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"augment {name} must be in [0, 1], got {value}")


NO_AUGMENT = AugmentSettings(hflip=0.0, vflip=0.0, rot90=False, brightness=0.0, contrast=0.0,
                             gamma=0.0, noise=0.0)


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
            settings: AugmentSettings = AugmentSettings()) -> Tuple[np.ndarray, np.ndarray]:
    """(HxWx3 uint8, HxW bool) -> augmented (H'xW'x3 uint8, H'xW' bool), contiguous copies;
    H'xW' is WxH after an odd number of quarter turns."""
    if image.shape[:2] != mask.shape[:2]:
        raise DatasetError(f"image {image.shape[:2]} and mask {mask.shape[:2]} differ in size; "
                           "a mask must cover its image pixel for pixel")
    draws = rng.random(8)  # hflip, vflip, rotation, brightness, contrast, gamma, noise, seed
    if draws[0] < settings.hflip:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if draws[1] < settings.vflip:
        image, mask = image[::-1], mask[::-1]
    if settings.rot90:
        k = int(draws[2] * 4)
        image, mask = np.rot90(image, k, axes=(0, 1)), np.rot90(mask, k, axes=(0, 1))
    if settings.brightness or settings.contrast or settings.gamma or settings.noise:
        pixels = image.astype(np.float32)
        if settings.gamma:
            power = float(np.exp((2 * draws[5] - 1) * settings.gamma))
            pixels = np.power(pixels / 255.0, power) * 255.0
        shift = (2 * draws[3] - 1) * settings.brightness * 255.0
        factor = 1.0 + (2 * draws[4] - 1) * settings.contrast
        mean = float(pixels.mean())
        pixels = (pixels - mean) * factor + mean + shift
        if settings.noise:
            sigma = draws[6] * settings.noise * 255.0
            noise = np.random.default_rng(int(draws[7] * 2**31)).standard_normal(
                pixels.shape[:2], dtype=np.float32)
            pixels += sigma * noise[..., None]
        image = np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)
