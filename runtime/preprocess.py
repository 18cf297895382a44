"""Pre- and post-processing in numpy: the one implementation training, export and runtime share.

The model sees an ``SxS`` square (``S`` = the configuration's ``image_size``): the image resized so
its longest side is ``S`` (bilinear, as SAM's ``ResizeLongestSide``), normalised with the pixel
mean/std, and zero-padded at the bottom and right. Prompts are scaled into that frame. Low-res
logits come back as ``Bx1x(S/4)x(S/4)`` and are resized to the original image.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from samspt.runtime import tensors
from samspt.runtime.errors import InputError

# SAM's normalisation (ImageNet statistics in 0..255), recorded in every manifest.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
# Logits above this are defect pixels.
MASK_THRESHOLD = 0.0


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
    from samspt.runtime.views import whole_image_view  # views builds on this module

    rgb = as_rgb_uint8(image)
    view = whole_image_view(rgb.shape[:2], image_size)
    _, _, width, height = view.placement
    return view.input_tensor(rgb, pixel_mean, pixel_std)[None], (height, width)


def scale_coords(coords: np.ndarray, original_hw: Tuple[int, int],
                 resized_hw: Tuple[int, int]) -> np.ndarray:
    """...x2 (x, y) image-pixel coordinates -> the encoder's input frame (float32)."""
    coords = np.asarray(coords, dtype=np.float32).copy()
    coords[..., 0] *= resized_hw[1] / original_hw[1]
    coords[..., 1] *= resized_hw[0] / original_hw[0]
    return coords


def pack_prompts(
    boxes: Optional[np.ndarray] = None,
    points: Optional[np.ndarray] = None,
    point_labels: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Boxes and/or points -> (``point_coords`` BxNx2 float32, ``point_labels`` BxN float32).

    ``boxes``: Bx4 (x0, y0, x1, y1); ``points``: BxPx2 with ``point_labels`` BxP (1 foreground,
    0 background, -1 padding). A box becomes two corner points labelled 2 and 3, appended after
    the points. Without a box, one padding point is appended, as SAM's prompt encoder does.
    Coordinates are passed through unchanged (scale them with :func:`scale_coords`).
    """
    parts, labels = [], []
    batch = None
    if points is not None:
        points = np.asarray(points, dtype=np.float32)
        point_labels = np.asarray(point_labels, dtype=np.float32)
        batch = points.shape[0]
        parts.append(points)
        labels.append(point_labels)
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if batch is not None and boxes.shape[0] != batch:
            raise InputError(f"{boxes.shape[0]} boxes but {batch} point sets; give one of each "
                             "per prompt")
        batch = boxes.shape[0]
        parts.append(boxes.reshape(-1, 2, 2))
        corner = np.array([tensors.LABEL_BOX_TOP_LEFT, tensors.LABEL_BOX_BOTTOM_RIGHT], np.float32)
        labels.append(np.broadcast_to(corner, (batch, 2)))
    else:
        if batch is None:
            raise InputError("no prompt: give boxes, points, or both")
        parts.append(np.zeros((batch, 1, 2), np.float32))
        labels.append(np.full((batch, 1), tensors.LABEL_PADDING, np.float32))
    return (np.ascontiguousarray(np.concatenate(parts, axis=1)),
            np.ascontiguousarray(np.concatenate(labels, axis=1)))


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Tight (4,) float32 box (x0, y0, x1, y1) of a non-empty HxW mask; corners inclusive, so a
    one-pixel defect at (5, 5) has the box (5, 5, 5, 5), as SAM's boxes are."""
    ys, xs = np.nonzero(np.asarray(mask))
    if ys.size == 0:
        raise InputError("the mask is empty, so it has no box; prompt a defect-free image with a "
                         "box of your choosing instead")
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float32)


def linear_weights(out_size: int, in_size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of 1-D linear interpolation, half-pixel centres, clamped edges
    (the convention of ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``)."""
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    src = np.clip(src, 0.0, in_size - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = (src - lo).astype(np.float32)
    return lo, hi, frac


def resize_bilinear(array: np.ndarray, size_hw: Tuple[int, int]) -> np.ndarray:
    """Resize the last two axes of a float array to ``size_hw`` (bilinear, no antialiasing)."""
    lo_y, hi_y, fy = linear_weights(size_hw[0], array.shape[-2])
    lo_x, hi_x, fx = linear_weights(size_hw[1], array.shape[-1])
    rows = array[..., lo_y, :] * (1 - fy)[:, None] + array[..., hi_y, :] * fy[:, None]
    return rows[..., lo_x] * (1 - fx) + rows[..., hi_x] * fx


def upscale_logits(low_res: np.ndarray, resized_hw: Tuple[int, int],
                   original_hw: Tuple[int, int], image_size: int) -> np.ndarray:
    """Bx1x(S/4)x(S/4) low-res logits -> BxHxW float32 logits at the original image size.

    As SAM: upscale to SxS, crop away the padding, resize to the original size.
    """
    logits = resize_bilinear(np.asarray(low_res, dtype=np.float32)[:, 0], (image_size, image_size))
    logits = logits[:, : resized_hw[0], : resized_hw[1]]
    return resize_bilinear(logits, original_hw).astype(np.float32, copy=False)
