"""Augmentations move image and mask together, are seeded, and leave masks' values alone."""

from __future__ import annotations

import numpy as np
import pytest

from samspt.runtime.errors import ConfigError
from samspt.training.data.augment import NO_AUGMENT, AugmentSettings, augment
from samspt.training.data.records import DatasetError

GEOMETRY = AugmentSettings(brightness=0.0, contrast=0.0)


def _marked(hw=(12, 20)):
    """An image whose only bright pixels are the mask's (an L shape, so every orientation of
    it differs)."""
    mask = np.zeros(hw, bool)
    mask[2:7, 3] = True
    mask[6, 3:6] = True
    image = np.zeros((*hw, 3), np.uint8)
    image[mask] = (200, 100, 50)
    return image, mask


def test_geometry_moves_image_and_mask_together():
    image, mask = _marked()
    seen = set()
    for seed in range(64):
        out_img, out_mask = augment(image, mask, np.random.default_rng(seed), GEOMETRY)
        assert out_img.flags.c_contiguous and out_mask.flags.c_contiguous
        assert out_img.dtype == np.uint8 and out_mask.dtype == bool
        assert np.array_equal(out_img[..., 0] == 200, out_mask)
        assert out_mask.sum() == mask.sum()
        seen.add(out_mask.tobytes() + bytes(out_mask.shape))
    assert len(seen) == 8  # flips x quarter turns: the 8 orientations of the dihedral group


def test_seeded():
    image, mask = _marked()
    a = augment(image, mask, np.random.default_rng(11))
    b = augment(image, mask, np.random.default_rng(11))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_brightness_contrast_touch_the_image_only():
    rng = np.random.default_rng(0)
    image = rng.integers(40, 200, size=(16, 16, 3), dtype=np.uint8)
    mask = np.zeros((16, 16), bool)
    mask[3:5, 3:5] = True
    photometric = AugmentSettings(hflip=0, vflip=0, rot90=False, brightness=0.3, contrast=0.3)
    changed = 0
    for seed in range(10):
        out_img, out_mask = augment(image, mask, np.random.default_rng(seed), photometric)
        assert np.array_equal(out_mask, mask)
        changed += not np.array_equal(out_img, image)
        # Brightness and contrast keep the order of pixel values.
        flat, out_flat = image[..., 0].ravel().astype(int), out_img[..., 0].ravel().astype(int)
        order = np.argsort(flat, kind="stable")
        assert np.all(np.diff(out_flat[order]) >= 0)
    assert changed >= 9


def test_gamma_keeps_order_and_noise_varies_pixels_alike_across_channels():
    rng = np.random.default_rng(1)
    image = rng.integers(40, 200, size=(16, 16, 3), dtype=np.uint8)
    image[..., 1] = image[..., 2] = image[..., 0]          # grey, as MTD and NEU-Seg are
    mask = np.zeros((16, 16), bool)
    gamma = AugmentSettings(hflip=0, vflip=0, rot90=False, brightness=0, contrast=0, gamma=0.5)
    outs = [augment(image, mask, np.random.default_rng(seed), gamma)[0] for seed in range(6)]
    flat = image[..., 0].ravel().astype(int)
    order = np.argsort(flat, kind="stable")
    for out in outs:
        assert np.all(np.diff(out[..., 0].ravel().astype(int)[order]) >= 0)
    assert len({out.tobytes() for out in outs}) == 6       # a different curve per draw
    noisy = AugmentSettings(hflip=0, vflip=0, rot90=False, brightness=0, contrast=0, noise=0.2)
    out, out_mask = augment(image, mask, np.random.default_rng(3), noisy)
    assert np.array_equal(out_mask, mask)
    assert np.abs(out.astype(int) - image).mean() > 1      # the pixels moved ...
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    again, _ = augment(image, mask, np.random.default_rng(3), noisy)
    assert np.array_equal(out, again)                      # ... reproducibly
    with pytest.raises(ConfigError, match="noise"):
        AugmentSettings(noise=1.5)


def test_no_augment_is_identity():
    image, mask = _marked()
    out_img, out_mask = augment(image, mask, np.random.default_rng(0), NO_AUGMENT)
    assert np.array_equal(out_img, image) and np.array_equal(out_mask, mask)


def test_errors():
    with pytest.raises(ConfigError, match="probability"):
        AugmentSettings(hflip=1.5)
    with pytest.raises(DatasetError, match="differ in size"):
        augment(np.zeros((4, 5, 3), np.uint8), np.zeros((5, 4), bool), np.random.default_rng(0))


def test_the_value_curve_is_the_per_pixel_formula():
    """Without noise the photometric change is looked up per value; it equals the formula
    computed on every pixel (gamma, contrast about the image's mean, shift, rounded)."""
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    mask = np.zeros(image.shape[:2], bool)
    settings = AugmentSettings(hflip=0.0, vflip=0.0, rot90=False, brightness=0.2, contrast=0.3,
                               gamma=0.25)
    for seed in range(8):
        draws = np.random.default_rng(seed).random(8)
        pixels = (image / 255.0) ** np.exp((2 * draws[5] - 1) * 0.25) * 255.0
        mean = pixels.mean()
        expected = (pixels - mean) * (1.0 + (2 * draws[4] - 1) * 0.3) + mean \
            + (2 * draws[3] - 1) * 0.2 * 255.0
        expected = np.clip(np.floor(expected + 0.5), 0, 255)
        out, _ = augment(image, mask, np.random.default_rng(seed), settings)
        off = np.abs(out.astype(int) - expected.astype(int))
        assert off.max() <= 1 and (off > 0).mean() < 1e-3     # float32 rounding at .5 only
