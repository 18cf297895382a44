"""Post-processing in numpy: the decoder's low-res logits back to image pixels (SAM's two
bilinear steps: to the input frame, then the view's part to image pixels), masks pasted from
views into image canvases, computed only where a cell above the threshold reaches.

The one implementation the Inspector, training's predictions, export verification and the
benchmarks share; it builds on :mod:`samspt.runtime.views` (the geometry) and nothing else of
the runtime's inference path.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional, Tuple

import numpy as np

from samspt.runtime.errors import ConfigError
from samspt.runtime.views import View

# Logits above this are defect pixels.
MASK_THRESHOLD = 0.0
# Logit given to pixels outside every view: background, as the box clip's value is.
BACKGROUND_LOGIT = -32.0


def linear_weights(out_size: int, in_size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of 1-D linear interpolation, half-pixel centres, clamped edges
    (the convention of ``torch.nn.functional.interpolate(mode="bilinear",
    align_corners=False)``)."""
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


Steps = Tuple[np.ndarray, np.ndarray, np.ndarray]


@lru_cache(maxsize=256)
def _upscale_steps(view: View, low_size: int) -> Tuple[Tuple[Steps, Steps], Tuple[Steps, Steps]]:
    """((rows, cols) of LxL -> SxS, (rows, cols) of the cropped part -> image pixels): the
    source indices and weights of :meth:`View.logits_in_image`'s two bilinear steps (read-only,
    cached: a view serves many prompts)."""
    ix0, iy0, ix1, iy1 = view.inside
    _, _, rw, rh = view.placement
    size = view.input_size
    first = linear_weights(size, low_size)
    return (first, first), (linear_weights(iy1 - iy0, rh), linear_weights(ix1 - ix0, rw))


@lru_cache(maxsize=256)
def _cell_reach(view: View, low_size: int) -> Tuple[Tuple[np.ndarray, np.ndarray], ...]:
    """Per image row (then per column) of the view's inside part: the first and last low-res
    cell its bilinear steps read (both non-decreasing along the axis)."""
    (y1, x1), (y2, x2) = _upscale_steps(view, low_size)
    ox, oy = view.placement[:2]
    return ((y1[0][oy + y2[0]], y1[1][oy + y2[1]]), (x1[0][ox + x2[0]], x1[1][ox + x2[1]]))


def _bilinear(array: np.ndarray, rows: Steps, cols: Steps) -> np.ndarray:
    """...xHxW float32 -> the rows, then the columns, of given source indices and weights (the
    operations of :func:`~samspt.runtime.preprocess.resize_bilinear`, in its order)."""
    lo_y, hi_y, fy = rows
    lo_x, hi_x, fx = cols
    out = array[..., lo_y, :] * (1 - fy)[:, None] + array[..., hi_y, :] * fy[:, None]
    return out[..., lo_x] * (1 - fx) + out[..., hi_x] * fx


def logits_in_image(view: View, low_res: np.ndarray,
                    window: Optional[Tuple[int, int, int, int]] = None
                    ) -> Tuple[np.ndarray, Tuple[slice, slice]]:
    """Bx1xLxL low-res logits -> (Bxihxiw float32 logits of the view's part inside the
    image, the (rows, cols) slices of the image they cover). As SAM: upscale to SxS, crop
    away the padding, resize to image pixels (bilinear, as
    :func:`~samspt.runtime.preprocess.resize_bilinear`).

    ``window`` (r0, r1, c0, c1), end-exclusive, in the inside part's pixels: compute only
    those pixels, each exactly (bit for bit) as the whole part computes it, reading only the
    rows and columns of the intermediate SxS upscale that they need."""
    ix0, iy0, ix1, iy1 = view.inside
    ox, oy = view.placement[:2]
    r0, r1, c0, c1 = window if window is not None else (0, iy1 - iy0, 0, ix1 - ix0)
    low = np.asarray(low_res, dtype=np.float32)[:, 0]
    (y1, x1), (y2, x2) = _upscale_steps(view, low.shape[-1])
    (ly, hy, fy), (lx, hx, fx) = (a[r0:r1] for a in y2), (a[c0:c1] for a in x2)
    a0, a1, b0, b1 = int(ly[0]), int(hy[-1]) + 1, int(lx[0]), int(hx[-1]) + 1
    # Stage 1 (LxL -> SxS), only the S-frame rows/columns stage 2 reads; then stage 2.
    upscaled = _bilinear(low, tuple(a[oy + a0:oy + a1] for a in y1),
                         tuple(a[ox + b0:ox + b1] for a in x1))
    logits = _bilinear(upscaled, (ly - a0, hy - a0, fy), (lx - b0, hx - b0, fx))
    return (logits.astype(np.float32, copy=False),
            (slice(iy0 + r0, iy0 + r1), slice(ix0 + c0, ix0 + c1)))


def window_of_cells(view: View, cells: Tuple[int, int, int, int],
                    low_size: int) -> Optional[Tuple[int, int, int, int]]:
    """The window (r0, r1, c0, c1) of the inside part's pixels that low-res cells rows
    ``cy0..cy1``, columns ``cx0..cx1`` (inclusive; ``cells`` = (cy0, cy1, cx0, cx1)) of an
    ``low_size`` grid reach through :meth:`logits_in_image`'s two bilinear steps; None when
    they reach none. A pixel outside it is a convex combination of cells outside them only."""
    cy0, cy1, cx0, cx1 = cells
    (first_y, last_y), (first_x, last_x) = _cell_reach(view, low_size)
    r0 = int(np.searchsorted(last_y, cy0, "left"))
    r1 = int(np.searchsorted(first_y, cy1, "right"))
    c0 = int(np.searchsorted(last_x, cx0, "left"))
    c1 = int(np.searchsorted(first_x, cx1, "right"))
    return (r0, r1, c0, c1) if r1 > r0 and c1 > c0 else None


def paste_max(canvas: np.ndarray, view: View, low_res: np.ndarray) -> np.ndarray:
    """Paste each of a view's Bx1xLxL low-res logits into BxHxW ``canvas`` (image pixels) by the
    elementwise maximum with what is there; returns ``canvas``."""
    logits, (rows, cols) = logits_in_image(view, low_res)
    np.maximum(canvas[:, rows, cols], logits, out=canvas[:, rows, cols])
    return canvas


def positive_cells(low_res: np.ndarray, threshold: float) -> Optional[Tuple[int, int, int, int]]:
    """(cy0, cy1, cx0, cx1), inclusive: the bounding box of an LxL low-res grid's cells that
    can make a pixel exceed ``threshold`` (above it, less a rounding allowance); None if none.
    Under a box clip every cell outside the clip region holds a fixed negative logit, so this
    box lies inside the clip region: it follows the defect, not the image."""
    tolerance = 1e-4 * (1.0 + abs(threshold))
    hot = np.asarray(low_res) > threshold - tolerance
    rows, cols = np.flatnonzero(hot.any(axis=1)), np.flatnonzero(hot.any(axis=0))
    if not rows.size:
        return None
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def view_mask(view: View, low_res: np.ndarray, threshold: float
              ) -> Optional[Tuple[np.ndarray, slice, slice]]:
    """The mask (logits above ``threshold``) of one view prompt's 1x1xLxL low-res logits in
    image pixels, computed only where low-res cells above the threshold reach
    (:func:`window_of_cells`): every other pixel's logit is a convex combination of logits
    at or below it, so its mask is False, as the whole resize gives. Returns (bool mask of the
    window, its rows, its cols), or None where no image pixel is above the threshold (a positive
    cell may lie in a view's padding). ``threshold`` must be above :data:`BACKGROUND_LOGIT`
    (pixels outside every view)."""
    if threshold < BACKGROUND_LOGIT:
        raise ConfigError(f"mask threshold {threshold} is below the background logit "
                          f"{BACKGROUND_LOGIT}: every pixel would be a defect; use a threshold "
                          "of at least that (the manifests' is 0.0)")
    low = np.asarray(low_res, np.float32).reshape((1, 1) + np.shape(low_res)[-2:])
    cells = positive_cells(low[0, 0], threshold)
    window = None if cells is None else window_of_cells(view, cells, low.shape[-1])
    if window is None:
        return None
    logits, (rows, cols) = logits_in_image(view, low, window)
    hit = logits[0] > threshold
    return (hit, rows, cols) if hit.any() else None


def paste_mask(canvas: np.ndarray, view: View, low_res: np.ndarray,
               threshold: float) -> Optional[Tuple[int, int, int, int]]:
    """OR :func:`view_mask` into HxW bool ``canvas`` (image pixels). Returns the window
    written, (y0, y1, x0, x1) image pixels end-exclusive, or None (no pixel above the
    threshold)."""
    found = view_mask(view, low_res, threshold)
    if found is None:
        return None
    hit, rows, cols = found
    canvas[rows, cols] |= hit
    return rows.start, rows.stop, cols.start, cols.stop
