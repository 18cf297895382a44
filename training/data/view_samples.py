"""Training and validation samples on views: one view of an image and its prompt, made through
the runtime's view code (:mod:`samspt.runtime.views`), so training sees what the Inspector sees.

A training sample is one of four kinds, drawn with the probabilities of :class:`ViewSampling`:

* ``tight``: a defect region's box (sides jittered by ``box_jitter`` of its size);
* ``loose``: the region's box grown ``U(1, loose_max)`` times per axis around it, at a random
  offset, as a coarse detector or a scan view gives it;
* ``scan``: a scan-sized window (side jittered) somewhere over the image, prompted with its own
  extent: what the prompt-free scan asks;
* ``negative``: a box on a defect-free area (the only kind besides ``scan`` on defect-free
  images).

A box larger than the views allow (``max_side``) is answered, as the runtime answers it, by one
of the tiles that cover it, prompted with the box clipped to the tile.

The view's context and minimum side are jittered (log-uniform, ``context_jitter``) and its centre
moves within the slack the box leaves, so the model sees boxes at varied places and scales. The
target of a box prompt is the mask inside the box (the model clips its logits to the box), in the
view's input frame.

With ``prompts_per_view`` K > 1 a view also carries K - 1 more prompts, answered from the same
encoder pass (the encoder is most of a training step's cost, a prompt's decoding a small part):
each a box on a defect-free part of the view (``extra_negative`` of them, where such room is
found; empty target) or the defect's tight box jittered anew.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from samspt.runtime.errors import ConfigError
from samspt.runtime.prompts import mask_box
from samspt.runtime.views import View, ViewSettings, box_view
from samspt.training.data.prompts import jitter_boxes, negative_boxes
from samspt.runtime.preprocess import crop_view_mask

KINDS = ("tight", "loose", "scan", "negative")


@dataclass(frozen=True)
class ViewSampling:
    """Shares of sample kinds on defective images (``tight``, ``loose``, ``scan``; the rest
    ``negative``), on defect-free images ``free_scan`` scan windows (the rest negative boxes),
    and the jitter of views."""

    tight: float = 0.45
    loose: float = 0.2
    scan: float = 0.2
    free_scan: float = 0.5
    loose_max: float = 4.0
    context_jitter: float = 0.4
    center_jitter: float = 0.5
    prompts_per_view: int = 1
    extra_negative: float = 0.5
    # Whether a scan window's box prompt (its own extent) trains the masks; False: scan windows
    # train the scan head only (ModelConfig.scan_head), their prompts weigh nothing.
    scan_prompts: bool = True

    def __post_init__(self) -> None:
        shares = (self.tight, self.loose, self.scan)
        if min(shares) < 0 or sum(shares) > 1 + 1e-9 or not 0 <= self.free_scan <= 1:
            raise ConfigError(f"view sampling shares must be >= 0 and tight + loose + scan <= 1 "
                              f"(got {self})")
        if self.loose_max < 1 or self.context_jitter < 0 or not 0 <= self.center_jitter <= 1:
            raise ConfigError(f"loose_max must be >= 1, context_jitter >= 0 and center_jitter "
                              f"in [0, 1] (got {self})")
        if self.prompts_per_view < 1 or not 0 <= self.extra_negative <= 1:
            raise ConfigError(f"prompts_per_view must be >= 1 and extra_negative in [0, 1] "
                              f"(got {self})")

    def draw_kind(self, defect: bool, rng: np.random.Generator) -> str:
        u = rng.random()
        if not defect:
            return "scan" if u < self.free_scan else "negative"
        for kind, share in zip(KINDS, (self.tight, self.loose, self.scan)):
            if u < share:
                return kind
            u -= share
        return "negative"


def box_region(box: np.ndarray, image_hw: Tuple[int, int]) -> np.ndarray:
    """HxW bool: the pixels of a box (x0, y0, x1, y1; corners inclusive) grown by one pixel."""
    height, width = image_hw
    x0, y0, x1, y1 = np.asarray(box, dtype=np.float64).reshape(4)
    region = np.zeros((height, width), dtype=bool)
    region[max(0, int(math.floor(y0)) - 1):min(height, int(math.ceil(y1)) + 2),
           max(0, int(math.floor(x0)) - 1):min(width, int(math.ceil(x1)) + 2)] = True
    return region


def _grow(box: np.ndarray, image_hw: Tuple[int, int], factor_max: float,
          rng: np.random.Generator) -> np.ndarray:
    """The box grown U(1, factor_max) times per axis, the defect at a random place inside."""
    height, width = image_hw
    out = np.asarray(box, dtype=np.float32).copy()
    for lo, hi, length in ((0, 2, width), (1, 3, height)):
        size = out[hi] - out[lo] + 1
        extra = size * (rng.uniform(1.0, factor_max) - 1.0)
        before = extra * rng.random()
        out[lo], out[hi] = out[lo] - before, out[hi] + extra - before
        out[lo], out[hi] = max(0.0, out[lo]), min(length - 1.0, out[hi])
    return out


def _jittered_view(box: np.ndarray, image_hw: Tuple[int, int], input_size: int,
                   views: ViewSettings, sampling: ViewSampling,
                   rng: np.random.Generator) -> View:
    j = sampling.context_jitter
    min_side = max(8, int(round(views.min_side * math.exp(rng.uniform(-j, j)))))
    settings = dataclasses.replace(
        views, context=max(1.1, views.context * math.exp(rng.uniform(-j, j))),
        min_side=min_side, max_side=views.max_side and max(views.max_side, min_side))
    x0, y0, x1, y1 = (float(v) for v in box)
    long_side = max(x1 - x0 + 1, y1 - y0 + 1)
    side = max(settings.min_side, settings.context * long_side)
    slack = sampling.center_jitter / 2
    center = ((x0 + x1 + 1) / 2 + rng.uniform(-slack, slack) * max(0.0, side - (x1 - x0 + 1)),
              (y0 + y1 + 1) / 2 + rng.uniform(-slack, slack) * max(0.0, side - (y1 - y0 + 1)))
    return box_view(box, image_hw, input_size, settings, center=center)


def _tile_of_box(box: np.ndarray, image_hw: Tuple[int, int], input_size: int,
                 views: ViewSettings, rng: np.random.Generator) -> Optional[Tuple[View, np.ndarray]]:
    """For a box larger than ``views.max_side`` allows (what the runtime covers with tiles): one
    random tile of the runtime's tiling and the box clipped to it; None for a smaller box."""
    from samspt.runtime.views import plan_views

    plan = plan_views(image_hw, input_size, views, "auto", boxes=np.asarray(box)[None])
    if len(plan.views) == 1:
        return None
    pick = int(rng.integers(len(plan.views)))
    corners = plan.coords[pick, :2]
    return plan.views[pick], np.concatenate([corners[0], corners[1]]).astype(np.float32)


def _scan_view(mask: np.ndarray, input_size: int, views: ViewSettings,
               sampling: ViewSampling, rng: np.random.Generator) -> View:
    height, width = mask.shape
    j = sampling.context_jitter
    side = max(8, int(round(views.scan_side * math.exp(rng.uniform(-j / 2, j / 2)))))
    if side >= max(height, width):
        return box_view(np.array([0, 0, width - 1, height - 1]), (height, width), input_size,
                        views)
    ys, xs = np.nonzero(mask)
    if len(ys) and rng.random() < 0.8:   # mostly over a defect, somewhere in the window
        pick = rng.integers(len(ys))
        cx = xs[pick] + rng.uniform(-0.45, 0.45) * side
        cy = ys[pick] + rng.uniform(-0.45, 0.45) * side
    else:
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    # One window of this side (the jitter may take it past max_side: no tiling here).
    settings = dataclasses.replace(views, min_side=side, context=1.0, max_side=0)
    return box_view(np.array([cx, cy, cx, cy]), (height, width), input_size, settings,
                    center=(cx, cy))


def view_sample(image: np.ndarray, mask: np.ndarray, input_size: int, views: ViewSettings,
                sampling: Optional[ViewSampling], rng: np.random.Generator,
                box: Optional[np.ndarray] = None,
                box_jitter: float = 0.1) -> Tuple[View, np.ndarray, np.ndarray, str]:
    """One sample: (view, box (4,) float32 in image pixels, target SxS float32 in the view's
    input frame, kind). ``sampling`` None: validation (a tight box of the whole mask, or
    ``box`` when given, in the deterministic view of the runtime's policy)."""
    image_hw = mask.shape
    defect = bool(mask.any())
    if sampling is None:
        if box is None:
            box = mask_box(mask) if defect else negative_boxes(mask, 1, rng)[0]
        view = box_view(box, image_hw, input_size, views)
        return view, np.asarray(box, np.float32), crop_view_mask(view, mask & box_region(box, image_hw)), \
            "tight" if defect else "negative"
    kind = sampling.draw_kind(defect, rng)
    if kind == "scan":
        view = _scan_view(mask, input_size, views, sampling, rng)
        box = view.extent_box
    else:
        if kind == "negative":
            found = negative_boxes(mask, 1, rng)
            if len(found):
                box = found[0]
            else:   # no clean room on this image: a tight box instead
                kind = "tight"
        if kind in ("tight", "loose"):
            box = mask_box(mask)
            if kind == "tight":
                box = jitter_boxes(box[None], box_jitter, image_hw, rng)[0]
            else:
                box = _grow(box, image_hw, sampling.loose_max, rng)
        tile = _tile_of_box(box, image_hw, input_size, views, rng) if views.max_side else None
        if tile is not None:    # a large box: the runtime sees it through tiles
            view, box = tile
        else:
            view = _jittered_view(box, image_hw, input_size, views, sampling, rng)
    if kind == "negative":  # its box holds no defect pixel (the grown edge may touch one)
        target = np.zeros((input_size, input_size), np.float32)
    else:
        target = crop_view_mask(view, mask & box_region(box, image_hw))
    return view, np.asarray(box, np.float32), target, kind


def _negative_in_view(view: View, mask: np.ndarray,
                      rng: np.random.Generator) -> Optional[np.ndarray]:
    """A box (4,) float32, image pixels, inside the view's part of the image and holding no
    defect pixel (grown by one pixel), sides 10-50 % of that part's; None where none fits."""
    ix0, iy0, ix1, iy1 = view.inside
    part = mask[max(0, iy0 - 1):iy1 + 1, max(0, ix0 - 1):ix1 + 1]
    grown = part.copy()  # a box touching a defect's edge would hold some of its pixels
    grown[1:] |= part[:-1]
    grown[:-1] |= part[1:]
    grown[:, 1:] |= grown[:, :-1].copy()
    grown[:, :-1] |= grown[:, 1:].copy()
    oy, ox = iy0 - max(0, iy0 - 1), ix0 - max(0, ix0 - 1)
    found = negative_boxes(grown[oy:oy + iy1 - iy0, ox:ox + ix1 - ix0], 1, rng, (0.1, 0.5))
    if not len(found):
        return None
    return (found[0] + np.array([ix0, iy0, ix0, iy0], np.float32)).astype(np.float32)


def extra_prompts(view: View, mask: np.ndarray, kind: str, first_box: np.ndarray,
                  first_target: np.ndarray, count: int, sampling: ViewSampling,
                  rng: np.random.Generator, box_jitter: float = 0.1) -> Tuple[np.ndarray, np.ndarray]:
    """``count`` more box prompts of a view whose first prompt was of ``kind`` (see the module
    docstring; re-jittered tight boxes only in a view made around the defect, ``tight`` or
    ``loose``; the first prompt, ``first_box`` and ``first_target``, again where the view has
    neither a defect nor defect-free room): (countx4 float32 boxes in image pixels, countxSxS float32 targets in the view's
    input frame)."""
    size = view.input_size
    boxes = np.zeros((count, 4), np.float32)
    targets = np.zeros((count, size, size), np.float32)
    around_defect = kind in ("tight", "loose") and bool(mask.any())
    for k in range(count):
        box = None
        if not around_defect or rng.random() < sampling.extra_negative:
            box = _negative_in_view(view, mask, rng)
        if box is None and around_defect:
            box = jitter_boxes(mask_box(mask)[None], box_jitter, mask.shape, rng)[0]
            targets[k] = crop_view_mask(view, mask & box_region(box, mask.shape))
        elif box is None:  # no defect-free room in the view: the first prompt again
            box = first_box
            targets[k] = first_target
        boxes[k] = box
    return boxes, targets
