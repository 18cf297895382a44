"""Views: the square windows of an image that the model sees, their geometry and planning, in
numpy; the one implementation that training (samples), evaluation, export verification, the
Inspector and benchmarks share. A view's pixels are made by :mod:`samspt.runtime.preprocess`,
its logits brought back by :mod:`samspt.runtime.postprocess`.

A *view* is a square window ``(x0, y0, side)`` in image pixels. Its part inside the image is
resized by ``S / side`` (``S`` = the model's ``image_size``) and placed in an SxS input; the rest
of the input is zero (the normalised mean colour), as SAM pads. The view of a box prompt has the
side ``max(min_side, context * box long side)``, is centred on the box and shifted to stay inside
the image where it fits; where it cannot (the side exceeds the image along an axis) it covers that
whole axis and is padded, keeping the box as central as it can. When the side reaches the
image's long side the view is the *whole image*: window ``(0, 0, max(H, W))``, which is exactly
SAM's resize-longest-side-and-pad preprocessing
(:func:`samspt.runtime.preprocess.preprocess_image`).

Prompts are mapped into the view's input frame with :meth:`View.to_input`; low-res logits come
back as masks in image pixels with :func:`samspt.runtime.postprocess.paste_mask` (or as logits
with :func:`~samspt.runtime.postprocess.paste_max` on a canvas), background outside every view.
A prompt-free *scan* covers the image with overlapping views (:func:`scan_views`), each
prompted with its own extent as a box, and merges their logits by the maximum.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Dict, List, Optional, Tuple

import numpy as np

from samspt.runtime.errors import ConfigError, InputError
from samspt.runtime.prompts import pack_prompts

VIEW_POLICIES = ("auto", "image")
# Test-time flips (ViewSettings.flips; samspt.runtime.flips): answers voted over 1, 2 or 4
# mirror images.
FLIP_COUNTS = (1, 2, 4)


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
    every prompt is answered with its mask). ``flips``: test-time flips, a prompt's mask voted over
    1 (the image itself), 2 (and its mirror image left to right) or 4 (and top to bottom, and
    both) runs (:mod:`samspt.runtime.flips`), at that many times the inference cost.
    """

    context: float = 2.0
    min_side: int = 64
    scan_side: int = 160
    scan_overlap: float = 0.25
    max_side: int = 0
    scan_min_score: Optional[float] = None
    prompt_min_score: Optional[float] = None
    flips: int = 1

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
                   "prompt_min_score must be a finite number or None"),
                  (type(self.flips) is int and self.flips in FLIP_COUNTS,
                   f"flips must be one of {FLIP_COUNTS}")]
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


