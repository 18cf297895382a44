"""Views: the square windows of an image that the model sees, in numpy; the one implementation
that training (samples), evaluation, export verification, the Inspector and benchmarks share.

A *view* is a square window ``(x0, y0, side)`` in image pixels. Its part inside the image is
resized by ``S / side`` (``S`` = the model's ``image_size``) and placed in an SxS input; the rest
of the input is zero (the normalised mean colour), as SAM pads. The view of a box prompt has the
side ``max(min_side, context * box long side)``, is centred on the box and shifted to stay inside
the image where it fits; where it cannot (the side exceeds the image along an axis) it covers that
whole axis and is padded, keeping the box as central as it can. When the side reaches the
image's long side the view is the *whole image*: window ``(0, 0, max(H, W))``, which is exactly
SAM's resize-longest-side-and-pad preprocessing (:func:`samspt.runtime.preprocess.preprocess_image`).

Prompts are mapped into the view's input frame with :meth:`View.to_input`; low-res logits come
back in image pixels with :func:`paste_logits`, background (:data:`BACKGROUND_LOGIT`) outside every
view. A prompt-free *scan* covers the image with overlapping views (:func:`scan_views`), each
prompted with its own extent as a box, and merges their logits by the maximum.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from samspt.runtime.errors import ConfigError, InputError
from samspt.runtime.preprocess import PIXEL_MEAN, PIXEL_STD, as_rgb_uint8, linear_weights

# Logit given to pixels outside every view: background, as the box clip's value is.
BACKGROUND_LOGIT = -32.0
VIEW_POLICIES = ("auto", "image")


@dataclass(frozen=True)
class ViewSettings:
    """How views are chosen (recorded in ``manifest.json`` under ``views``).

    ``context``: a box's view side is its long side times this; ``min_side``: the least view
    side, image pixels (small defects get this much surroundings); ``scan_side``: side of the
    prompt-free scan's views, image pixels; ``scan_overlap``: share of a scan view that its
    neighbour overlaps; ``max_side``: the largest view, image pixels (0: none, a large box is
    seen in the whole image): a box whose view would be larger is covered by overlapping views
    of this side, each prompted with the part of the box it holds, their masks merged, so a large
    defect is seen at no coarser a scale than ``max_side / S``. ``scan_min_score``: a scan view's
    mask joins the merged mask only where the model's own score for it (its predicted mask IoU)
    is at least this, as SAM's automatic mask generator keeps masks above ``pred_iou_thresh``:
    the prompt-free scan's operating point, defect-free images flagged against defective ones
    (None: every view counts; ``samspt-eval`` reports the trade-off). ``prompt_min_score``: the
    same gate for prompts: a box or point whose score is below it is answered empty (a box on a
    defect-free area; SAM 2's object score plays this part), its score still reported (None:
    every prompt is answered with its mask).
    """

    context: float = 2.0
    min_side: int = 64
    scan_side: int = 160
    scan_overlap: float = 0.25
    max_side: int = 0
    scan_min_score: Optional[float] = None
    prompt_min_score: Optional[float] = None

    def __post_init__(self) -> None:
        checks = [(self.context >= 1.0, "context must be >= 1"),
                  (self.min_side >= 1, "min_side must be >= 1 pixel"),
                  (self.scan_side >= 1, "scan_side must be >= 1 pixel"),
                  (0.0 <= self.scan_overlap < 1.0, "scan_overlap must be in [0, 1)"),
                  (self.max_side == 0 or self.max_side >= self.min_side,
                   "max_side must be 0 (no limit) or at least min_side"),
                  (self.scan_min_score is None or math.isfinite(self.scan_min_score),
                   "scan_min_score must be a finite number or None"),
                  (self.prompt_min_score is None or math.isfinite(self.prompt_min_score),
                   "prompt_min_score must be a finite number or None")]
        failed = [text for ok, text in checks if not ok]
        if failed:
            raise ConfigError(f"invalid view settings: {'; '.join(failed)} (got {self})")

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, object]) -> "ViewSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown view settings {unknown}; known: {sorted(known)}")
        return cls(**data)  # type: ignore[arg-type]


@dataclass(frozen=True)
class View:
    """A square window: top-left ``(x0, y0)`` and ``side``, image pixels (may reach outside the
    image), of an image of size ``image_hw``, seen at ``input_size`` (S)."""

    x0: int
    y0: int
    side: int
    image_hw: Tuple[int, int]
    input_size: int

    # -------------------------------------------------------------------- geometry
    @property
    def inside(self) -> Tuple[int, int, int, int]:
        """(ix0, iy0, ix1, iy1): the window's part inside the image, end-exclusive."""
        height, width = self.image_hw
        return (max(self.x0, 0), max(self.y0, 0), min(self.x0 + self.side, width),
                min(self.y0 + self.side, height))

    @property
    def placement(self) -> Tuple[int, int, int, int]:
        """(ox, oy, rw, rh): where the resized inside part lies in the SxS input."""
        ix0, iy0, ix1, iy1 = self.inside
        scale = self.input_size / self.side
        ox, oy = int((ix0 - self.x0) * scale + 0.5), int((iy0 - self.y0) * scale + 0.5)
        rw = max(1, min(int((ix1 - ix0) * scale + 0.5), self.input_size - ox))
        rh = max(1, min(int((iy1 - iy0) * scale + 0.5), self.input_size - oy))
        return ox, oy, rw, rh

    @property
    def is_whole_image(self) -> bool:
        return (self.x0, self.y0, self.side) == (0, 0, max(self.image_hw))

    @property
    def extent_box(self) -> np.ndarray:
        """(4,) float32 box (x0, y0, x1, y1), corners inclusive, of the view's part inside the
        image: the prompt a scan gives the view."""
        ix0, iy0, ix1, iy1 = self.inside
        return np.array([ix0, iy0, ix1 - 1, iy1 - 1], dtype=np.float32)

    def to_input(self, coords: np.ndarray) -> np.ndarray:
        """...x2 (x, y) image-pixel coordinates -> the view's input frame (float32)."""
        ix0, iy0, ix1, iy1 = self.inside
        ox, oy, rw, rh = self.placement
        out = np.asarray(coords, dtype=np.float32).copy()
        out[..., 0] = ox + (out[..., 0] - ix0) * (rw / (ix1 - ix0))
        out[..., 1] = oy + (out[..., 1] - iy0) * (rh / (iy1 - iy0))
        return out

    # ------------------------------------------------------------------- pixels
    def _part(self, array: np.ndarray, resample: int) -> np.ndarray:
        """The window's part of an HxW(xC) uint8 array, resized to its place in the input."""
        ix0, iy0, ix1, iy1 = self.inside
        _, _, rw, rh = self.placement
        part = np.ascontiguousarray(array[iy0:iy1, ix0:ix1])
        if part.shape[:2] != (rh, rw):
            part = np.asarray(Image.fromarray(part).resize((rw, rh), resample))
        return part

    def _place_part(self, part: np.ndarray, channels: Tuple[int, ...], dtype) -> np.ndarray:
        ox, oy, rw, rh = self.placement
        out = np.zeros((self.input_size, self.input_size) + channels, dtype=dtype)
        out[oy:oy + rh, ox:ox + rw] = part
        return out

    def crop(self, image: np.ndarray, resample: int = Image.BILINEAR) -> np.ndarray:
        """HxWx3 (or HxW) uint8 -> the view's SxSx3 (or SxS) uint8 pixels, zero outside the
        image (the model input is these, normalised, padding set to the mean)."""
        return self._place_part(self._part(image, resample), image.shape[2:], image.dtype)

    def input_tensor(self, image: np.ndarray, pixel_mean: Sequence[float] = PIXEL_MEAN,
                     pixel_std: Sequence[float] = PIXEL_STD) -> np.ndarray:
        """HxWx3 uint8 RGB -> 3xSxS float32 model input: the view normalised, zero padding.
        For the whole-image view this equals :func:`~samspt.runtime.preprocess.preprocess_image`."""
        part = self._part(as_rgb_uint8(image), Image.BILINEAR)
        mean = np.asarray(pixel_mean, dtype=np.float32)
        std = np.asarray(pixel_std, dtype=np.float32)
        normalised = (part.astype(np.float32) - mean) / std
        return self._place_part(normalised, (3,), np.float32).transpose(2, 0, 1).copy()

    def crop_mask(self, mask: np.ndarray) -> np.ndarray:
        """HxW bool -> SxS float32 0/1 in the view's input frame (bilinear, thresholded at
        half); a non-empty part never vanishes: if no resized pixel reaches half, the strongest
        ones are kept."""
        soft = self._part(np.asarray(mask, dtype=bool).astype(np.uint8) * 255, Image.BILINEAR)
        small = soft > 127
        if not small.any() and soft.max() > 0:
            small = soft == soft.max()
        return self._place_part(small, (), np.float32)

    def logits_in_image(self, low_res: np.ndarray,
                        window: Optional[Tuple[int, int, int, int]] = None
                        ) -> Tuple[np.ndarray, Tuple[slice, slice]]:
        """Bx1xLxL low-res logits -> (Bxihxiw float32 logits of the view's part inside the
        image, the (rows, cols) slices of the image they cover). As SAM: upscale to SxS, crop
        away the padding, resize to image pixels (bilinear, as
        :func:`~samspt.runtime.preprocess.resize_bilinear`).

        ``window`` (r0, r1, c0, c1), end-exclusive, in the inside part's pixels: compute only
        those pixels, each exactly (bit for bit) as the whole part computes it, reading only the
        rows and columns of the intermediate SxS upscale that they need."""
        ix0, iy0, ix1, iy1 = self.inside
        ox, oy = self.placement[:2]
        r0, r1, c0, c1 = window if window is not None else (0, iy1 - iy0, 0, ix1 - ix0)
        low = np.asarray(low_res, dtype=np.float32)[:, 0]
        (y1, x1), (y2, x2) = _upscale_steps(self, low.shape[-1])
        (ly, hy, fy), (lx, hx, fx) = (a[r0:r1] for a in y2), (a[c0:c1] for a in x2)
        a0, a1, b0, b1 = int(ly[0]), int(hy[-1]) + 1, int(lx[0]), int(hx[-1]) + 1
        # Stage 1 (LxL -> SxS), only the S-frame rows/columns stage 2 reads; then stage 2.
        upscaled = _bilinear(low, tuple(a[oy + a0:oy + a1] for a in y1),
                             tuple(a[ox + b0:ox + b1] for a in x1))
        logits = _bilinear(upscaled, (ly - a0, hy - a0, fy), (lx - b0, hx - b0, fx))
        return (logits.astype(np.float32, copy=False),
                (slice(iy0 + r0, iy0 + r1), slice(ix0 + c0, ix0 + c1)))

    def window_of_cells(self, cells: Tuple[int, int, int, int],
                        low_size: int) -> Optional[Tuple[int, int, int, int]]:
        """The window (r0, r1, c0, c1) of the inside part's pixels that low-res cells rows
        ``cy0..cy1``, columns ``cx0..cx1`` (inclusive; ``cells`` = (cy0, cy1, cx0, cx1)) of an
        ``low_size`` grid reach through :meth:`logits_in_image`'s two bilinear steps; None when
        they reach none. A pixel outside it is a convex combination of cells outside them only."""
        cy0, cy1, cx0, cx1 = cells
        (first_y, last_y), (first_x, last_x) = _cell_reach(self, low_size)
        r0 = int(np.searchsorted(last_y, cy0, "left"))
        r1 = int(np.searchsorted(first_y, cy1, "right"))
        c0 = int(np.searchsorted(last_x, cx0, "left"))
        c1 = int(np.searchsorted(first_x, cx1, "right"))
        return (r0, r1, c0, c1) if r1 > r0 and c1 > c0 else None


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


# ------------------------------------------------------------------------ choosing views
def whole_image_view(image_hw: Tuple[int, int], input_size: int) -> View:
    """The view that is the whole image (SAM's preprocessing)."""
    return View(0, 0, int(max(image_hw)), (int(image_hw[0]), int(image_hw[1])), input_size)


def _place(center: float, side: int, length: int) -> int:
    """Start of a window of ``side`` around ``center`` on an axis of ``length``: inside the
    axis where it fits, else covering the whole axis (padding split to keep the centre)."""
    lo, hi = min(0, length - side), max(0, length - side)
    return int(min(max(int(math.floor(center - side / 2 + 0.5)), lo), hi))


def box_view(box: np.ndarray, image_hw: Tuple[int, int], input_size: int,
             settings: ViewSettings, center: Optional[Tuple[float, float]] = None) -> View:
    """The view of one box (x0, y0, x1, y1; corners inclusive, image pixels). ``center``
    overrides the window's centre (training jitters it); the window still keeps inside the image.
    A view whose side reaches the image's long side is the whole image."""
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    long_side = max(x1 - x0 + 1, y1 - y0 + 1)
    side = int(math.ceil(max(settings.min_side, settings.context * long_side)))
    height, width = int(image_hw[0]), int(image_hw[1])
    if side >= max(height, width):
        return whole_image_view((height, width), input_size)
    cx, cy = center if center is not None else ((x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2)
    return View(_place(cx, side, width), _place(cy, side, height), side, (height, width),
                input_size)


def prompt_views(image_hw: Tuple[int, int], input_size: int, settings: Optional[ViewSettings],
                 policy: str, boxes: Optional[np.ndarray] = None,
                 points: Optional[np.ndarray] = None,
                 point_labels: Optional[np.ndarray] = None) -> List[View]:
    """One view per prompt: the box's view (a point prompt: the box around its foreground
    points, else all of its points), or the whole image when ``policy`` is ``"image"`` or the
    model has no view settings."""
    if policy not in VIEW_POLICIES:
        raise InputError(f"views must be one of {VIEW_POLICIES}, got {policy!r}")
    count = len(boxes) if boxes is not None else len(points)
    whole = whole_image_view(image_hw, input_size)
    if policy == "image" or settings is None:
        return [whole] * count
    out = []
    for k in range(count):
        if boxes is not None:
            box = np.asarray(boxes[k], dtype=np.float32)
        else:
            pts = np.asarray(points[k], dtype=np.float32)
            labels = np.asarray(point_labels[k])
            chosen = pts[labels == 1] if (labels == 1).any() else pts[labels >= 0]
            if not len(chosen):
                out.append(whole)
                continue
            box = np.concatenate([chosen.min(axis=0), chosen.max(axis=0)])
        out.append(box_view(box, image_hw, input_size, settings))
    return out


def _tiles(image_hw: Tuple[int, int], input_size: int, side: int, overlap: float,
           region: Tuple[int, int, int, int]) -> List[View]:
    """Overlapping views of ``side`` covering ``region`` (x0, y0, x1, y1 end-exclusive) of the
    image, each kept inside the image where it fits, in row-major order."""
    height, width = int(image_hw[0]), int(image_hw[1])
    stride = max(1, int(side * (1.0 - overlap)))

    def starts(lo: int, hi: int, length: int) -> List[int]:
        if side >= length:
            return [_place(length / 2, side, length)]
        lo, hi = max(0, min(lo, length - side)), max(0, min(hi - side, length - side))
        if hi <= lo:
            return [lo]
        return list(range(lo, hi, stride)) + [hi]

    x0, y0, x1, y1 = region
    return [View(x, y, side, (height, width), input_size)
            for y in starts(y0, y1, height) for x in starts(x0, x1, width)]


def scan_views(image_hw: Tuple[int, int], input_size: int, settings: ViewSettings) -> List[View]:
    """Overlapping views of side ``settings.scan_side`` that together cover every pixel of the
    image (the whole image when it is no larger than one view), in row-major order."""
    height, width = int(image_hw[0]), int(image_hw[1])
    if settings.scan_side >= max(height, width):
        return [whole_image_view((height, width), input_size)]
    return _tiles((height, width), input_size, int(settings.scan_side), settings.scan_overlap,
                  (0, 0, width, height))


@dataclass
class ViewPlan:
    """What a call runs: M view prompts (``views``; ``coords`` Mx N x2 image pixels and ``labels``
    MxN, packed as :func:`~samspt.runtime.preprocess.pack_prompts` packs them) answering
    ``rows`` output rows; ``row_of`` (M) says which row each feeds (merged by the maximum).
    ``scan``: a prompt-free scan (its row's score is the best score of the views that answered a
    defect); ``min_score``: its gate (:attr:`ViewSettings.scan_min_score`: a scan view scored
    below it adds nothing to the row; or :attr:`ViewSettings.prompt_min_score`: a prompt row
    whose best view scores below it is answered empty); None: every view counts."""

    views: List[View]
    coords: np.ndarray
    labels: np.ndarray
    row_of: np.ndarray
    rows: int
    scan: bool = False
    min_score: Optional[float] = None


def plan_views(image_hw: Tuple[int, int], input_size: int, settings: Optional[ViewSettings],
               policy: str, boxes: Optional[np.ndarray] = None,
               points: Optional[np.ndarray] = None,
               point_labels: Optional[np.ndarray] = None) -> ViewPlan:
    """The views of K prompts (one row each), or of the prompt-free scan (no prompt: one row).
    A box prompt larger than ``settings.max_side`` allows is covered by several views, each
    prompted with the box clipped to it."""
    from samspt.runtime.preprocess import pack_prompts

    if boxes is None and points is None:
        views = (scan_views(image_hw, input_size, settings)
                 if settings is not None and policy == "auto"
                 else [whole_image_view(image_hw, input_size)])
        coords, labels = pack_prompts(boxes=np.stack([view.extent_box for view in views]))
        gate = settings.scan_min_score if settings is not None else None
        return ViewPlan(views, coords, labels, np.zeros(len(views), np.int64), 1, scan=True,
                        min_score=gate)
    single = prompt_views(image_hw, input_size, settings, policy, boxes, points, point_labels)
    coords, labels = pack_prompts(boxes, points, point_labels)
    gate = settings.prompt_min_score if settings is not None else None
    limit = settings.max_side if settings is not None and policy == "auto" else 0
    if not limit or points is not None or not any(v.side > limit for v in single):
        return ViewPlan(single, coords, labels, np.arange(len(single)), len(single),
                        min_score=gate)
    views, sub_boxes, row_of = [], [], []
    for k, view in enumerate(single):
        box = np.asarray(boxes[k], np.float32)
        if view.side <= limit:
            views.append(view), sub_boxes.append(box), row_of.append(k)
            continue
        region = (int(box[0]), int(box[1]), int(np.ceil(box[2])) + 1, int(np.ceil(box[3])) + 1)
        for tile in _tiles(image_hw, input_size, limit, settings.scan_overlap, region):
            ix0, iy0, ix1, iy1 = tile.inside
            part = np.array([max(box[0], ix0), max(box[1], iy0), min(box[2], ix1 - 1),
                             min(box[3], iy1 - 1)], np.float32)
            if part[2] >= part[0] and part[3] >= part[1]:
                views.append(tile), sub_boxes.append(part), row_of.append(k)
    coords, labels = pack_prompts(boxes=np.stack(sub_boxes))
    return ViewPlan(views, coords, labels, np.asarray(row_of, np.int64), len(single),
                    min_score=gate)


def paste_max(canvas: np.ndarray, view: View, low_res: np.ndarray) -> np.ndarray:
    """Paste each of a view's Bx1xLxL low-res logits into BxHxW ``canvas`` (image pixels) by the
    elementwise maximum with what is there; returns ``canvas``."""
    logits, (rows, cols) = view.logits_in_image(low_res)
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
    (:meth:`View.window_of_cells`): every other pixel's logit is a convex combination of logits
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
    window = None if cells is None else view.window_of_cells(cells, low.shape[-1])
    if window is None:
        return None
    logits, (rows, cols) = view.logits_in_image(low, window)
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


def paste_logits(view: View, low_res: np.ndarray) -> np.ndarray:
    """Bx1xLxL low-res logits of one view -> BxHxW float32 logits in image pixels,
    :data:`BACKGROUND_LOGIT` outside the view."""
    canvas = np.full((low_res.shape[0],) + tuple(view.image_hw), BACKGROUND_LOGIT, np.float32)
    return paste_max(canvas, view, low_res)
