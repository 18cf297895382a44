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
    if settings.brightness or settings.contrast or settings.gamma or settings.noise:
        # Before the geometry: the values do not depend on where a pixel is, and the image is
        # still contiguous (a large image's histogram and look-up cost a third then).
        image = _photometric(np.ascontiguousarray(image), draws, settings)
    if draws[0] < settings.hflip:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if draws[1] < settings.vflip:
        image, mask = image[::-1], mask[::-1]
    if settings.rot90:
        k = int(draws[2] * 4)
        image, mask = np.rot90(image, k, axes=(0, 1)), np.rot90(mask, k, axes=(0, 1))
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


MEAN_SUBSAMPLE_PIXELS = 512 * 512


def _photometric(image: np.ndarray, draws: np.ndarray, settings: AugmentSettings) -> np.ndarray:
    """Gamma, then contrast about the image's mean and a brightness shift, then noise; rounded
    and clipped to uint8. Without noise every pixel's new value depends on its old value alone,
    so the curve is computed once for the 256 values and looked up (a 1024 px image in 3 ms
    instead of 33: large images would otherwise spend a training step's time here)."""
    values = np.arange(256, dtype=np.float32)
    if settings.gamma:
        power = float(np.exp((2 * draws[5] - 1) * settings.gamma))
        values = np.power(values / 255.0, power) * 255.0
    shift = (2 * draws[3] - 1) * settings.brightness * 255.0
    factor = 1.0 + (2 * draws[4] - 1) * settings.contrast
    # The mean after gamma, from the values' counts (on every 4th row and column of a large
    # image: the contrast's centre, not a figure anyone reads).
    step = 4 if image.shape[0] * image.shape[1] > MEAN_SUBSAMPLE_PIXELS else 1
    counts = np.bincount(np.ascontiguousarray(image[::step, ::step]).reshape(-1), minlength=256)
    mean = float(counts @ values.astype(np.float64) / max(1, int(counts.sum())))
    values = (values - mean) * factor + mean + shift
    if not settings.noise:
        table = np.clip(values + 0.5, 0, 255).astype(np.uint8)
        if image.ndim == 3 and image.shape[2] == 3:          # PIL's look-up: twice numpy's speed
            from PIL import Image

            return np.asarray(Image.fromarray(image).point(table.tolist() * 3))
        return table[image]
    sigma = draws[6] * settings.noise * 255.0
    noise = np.random.default_rng(int(draws[7] * 2**31)).standard_normal(image.shape[:2],
                                                                          dtype=np.float32)
    pixels = values[image] + sigma * noise[..., None]
    return np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
