"""Pre-processing in numpy: a view's pixels as the model's input, the one implementation
training, export and runtime share.

The model sees an ``SxS`` square (``S`` = the configuration's ``image_size``): a view's part of
the image resized by ``S / side`` (bilinear), normalised with the pixel mean/std, and placed in
the input with zero padding around it (:func:`view_input`). The whole-image view is SAM's
preprocessing (resize longest side, pad bottom and right: :func:`preprocess_image`). Prompts
are packed and scaled by :mod:`samspt.runtime.prompts`; logits come back through
:mod:`samspt.runtime.postprocess`.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from PIL import Image

from samspt.runtime.errors import InputError
from samspt.runtime.views import View, whole_image_view

# SAM's normalisation (ImageNet statistics in 0..255), recorded in every manifest.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Return ``image`` (HxW or HxWx3 or HxWx1 uint8) as a contiguous HxWx3 uint8 array."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"image must be a numpy array, got {type(image).__name__}; "
                         "load it with PIL or cv2 and pass np.asarray(img)")
    if image.dtype != np.uint8:
        raise InputError(f"image must be uint8 (0..255), got {image.dtype}; "
                         "convert with np.clip(img, 0, 255).astype(np.uint8)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be HxW (grey) or HxWx3 (RGB), got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"image is empty (shape {image.shape})")
    return np.ascontiguousarray(image)


def preprocess_image(
    image: np.ndarray,
    image_size: int,
    pixel_mean: Sequence[float] = PIXEL_MEAN,
    pixel_std: Sequence[float] = PIXEL_STD,
) -> Tuple[np.ndarray, Tuple[int, int]]:
    """HxWx3 uint8 RGB -> (1x3xSxS float32 model input, (h', w') resized size before padding):
    the whole-image view (:func:`samspt.runtime.views.whole_image_view`), SAM's preprocessing."""
    rgb = as_rgb_uint8(image)
    view = whole_image_view(rgb.shape[:2], image_size)
    _, _, width, height = view.placement
    return view_input(view, rgb, pixel_mean, pixel_std)[None], (height, width)


def _view_part(view: View, array: np.ndarray, resample: int) -> np.ndarray:
    """The window's part of an HxW(xC) uint8 array, resized to its place in the input."""
    ix0, iy0, ix1, iy1 = view.inside
    _, _, rw, rh = view.placement
    part = np.ascontiguousarray(array[iy0:iy1, ix0:ix1])
    if part.shape[:2] != (rh, rw):
        part = np.asarray(Image.fromarray(part).resize((rw, rh), resample))
    return part


def _place_in_input(view: View, part: np.ndarray, channels: Tuple[int, ...], dtype) -> np.ndarray:
    ox, oy, rw, rh = view.placement
    out = np.zeros((view.input_size, view.input_size) + channels, dtype=dtype)
    out[oy:oy + rh, ox:ox + rw] = part
    return out


def crop_view(view: View, image: np.ndarray, resample: int = Image.BILINEAR) -> np.ndarray:
    """HxWx3 (or HxW) uint8 -> the view's SxSx3 (or SxS) uint8 pixels, zero outside the
    image (the model input is these, normalised, padding set to the mean)."""
    return _place_in_input(view, _view_part(view, image, resample), image.shape[2:], image.dtype)


def view_input(view: View, image: np.ndarray, pixel_mean: Sequence[float] = PIXEL_MEAN,
                 pixel_std: Sequence[float] = PIXEL_STD) -> np.ndarray:
    """HxWx3 uint8 RGB -> 3xSxS float32 model input: the view normalised, zero padding.
    For the whole-image view this equals :func:`~samspt.runtime.preprocess.preprocess_image`."""
    part = _view_part(view, as_rgb_uint8(image), Image.BILINEAR)
    mean = np.asarray(pixel_mean, dtype=np.float32)
    std = np.asarray(pixel_std, dtype=np.float32)
    normalised = (part.astype(np.float32) - mean) / std
    return _place_in_input(view, normalised, (3,), np.float32).transpose(2, 0, 1).copy()


def crop_view_mask(view: View, mask: np.ndarray) -> np.ndarray:
    """HxW bool -> SxS float32 0/1 in the view's input frame (bilinear, thresholded at
    half); a non-empty part never vanishes: if no resized pixel reaches half, the strongest
    ones are kept."""
    soft = _view_part(view, np.asarray(mask, dtype=bool).astype(np.uint8) * 255, Image.BILINEAR)
    small = soft > 127
    if not small.any() and soft.max() > 0:
        small = soft == soft.max()
    return _place_in_input(view, small, (), np.float32)
