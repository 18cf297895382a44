"""View settings derived from the training masks (what ``samspt-train --data`` trains with).

A model on views (:mod:`samspt.runtime.views`) sees, around each box prompt, a square window of
side ``max(view_min_side, view_context * box long side)`` resized to its ``image_size`` S; its
masks come out on a grid of stride 2 in that input (the low-res logits are S/2 on a side for the
conv family's patch size 8: ``4 * S / patch``). What the model can segment is what survives
that resize, so the settings follow from three figures of each defective training image
(:class:`MaskStats`): the long side L of the box around its mask, the mask's typical stroke
width t (:func:`stroke_width`), and the image's size. The rule, with its constants below:

1. **Context** ``c = CONTEXT`` (2): a defect's box fills half of its view, the other half is
   the surroundings the model compares it with.
2. **Input size** ``S``: the smallest of ``SIZES`` (128, 256; on a CPU ``CPU_SIZES``, 128) at which at least ``COVERAGE``
   (80 %) of the training defects are at least ``MIN_GRID_WIDTH`` (2) cells wide on the mask
   grid in their own view: ``t * S / (GRID_STRIDE * V) >= 2`` with ``V = min(max(m, c * L),
   image long side)`` and ``m`` as in 3; else the largest. A model started from weights (or
   SAM) keeps the input size its weights were made for.
3. **Least view side** ``m = S / MAX_ZOOM``: a small defect is enlarged at most ``MAX_ZOOM`` (2)
   times (more only blurs its pixels) and gets the rest of its view as context; never above the
   median image's long side.
4. **Largest view side** (``view_max_side``): 0 (none) when ``S`` reaches ``COVERAGE``: the
   input size, not tiling, keeps defects wide enough. Only when even the largest size leaves
   more than ``1 - COVERAGE`` of the defects too thin, the side at which ``COVERAGE`` of them
   are 2 cells wide (the ``1 - COVERAGE`` quantile of ``t * S / (GRID_STRIDE *
   MIN_GRID_WIDTH)``), at least ``m``: larger boxes are then seen through overlapping tiles of
   that side, as the Inspector answers them (tiles cost inference time and cut large defects
   into parts without their surroundings, hence the last resort).
5. **Scan window** (``scan_side``): the view of a median defect, ``c * median L``, within
   ``[m, the side at which the thinnest quarter of the defects stay 2 cells wide]``, at most
   the median image's long side and ``view_max_side`` when set.

Sides are rounded to multiples of ``ROUND`` (8) pixels. :func:`derive_views` returns the
settings with the figures and the reasons, which ``samspt-train`` prints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from samspt.training.data.records import DatasetError, Record

log = logging.getLogger(__name__)

# A context of 1.5 (the defect 1.33x larger in its view) against 2, the recipe otherwise alike,
# 30 minutes on one core each, two seeds, the 64 held-out MTD defective images (final mIoU):
# 0.679 and 0.653 against 0.662 and 0.687 (validation 0.749 / 0.756 against 0.745 / 0.763):
# no effect beyond the seeds' own spread.
CONTEXT = 2.0
SIZES = (128, 256)
# On a CPU only 128 px: the recipe's model trains 11.5 views a second at 128 px and 1.8 at
# 256 px on the 2-core CPU (compute-bound, 0.91 of a step), too few views in an hour to learn
# from (thin defects are then seen through view_max_side tiles instead, rule 4). NEU-Seg's
# 200 px images at 192 px (whole-image views, no tiles; 8 views a second), 60 minutes on one
# core: 0.767 final mIoU on 863 held-out records against 0.778 at 128 px with 160 px tiles
# (19 views a second). Tiles forced where rule 4 sets none (MTD, view_max_side 256, 60 minutes,
# one core): 0.719 on the 64 held-out defective images and 87 % of defect-free boxes empty,
# against 0.736 and 95 % without (large defects lose their surroundings).
CPU_SIZES = (128,)
GRID_STRIDE = 2
MIN_GRID_WIDTH = 2.0
COVERAGE = 0.8
MAX_ZOOM = 2.0
ROUND = 8
# Defective images whose masks are measured (a seeded sample of larger datasets).
STATS_LIMIT = 600


@dataclass(frozen=True)
class MaskStats:
    """One defect mask: its box's long side and its typical stroke width (pixels), and the
    image's (height, width)."""

    long_side: float
    thickness: float
    image_hw: Tuple[int, int]


def stroke_width(mask: np.ndarray) -> float:
    """Typical width in pixels of the strokes of an HxW bool mask: ``2 * median(d) - 1`` over
    the mask's ridge pixels (the local maxima of the Euclidean distance d to the background,
    an approximate medial axis). A band of odd width w gives w, a disc about its diameter, a crack
    its width along its length (ridges are weighted by their length). 0 for an empty mask."""
    import cv2

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return 0.0
    padded = np.pad(mask, 1).astype(np.uint8)  # the image border is background too
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    ridge = (dist >= cv2.dilate(dist, np.ones((3, 3), np.uint8)) - 1e-6) & (padded > 0)
    return max(1.0, 2.0 * float(np.median(dist[ridge])) - 1.0)


def mask_stats(mask: np.ndarray) -> Optional[MaskStats]:
    """The :class:`MaskStats` of an HxW bool mask, None if it is empty."""
    mask = np.asarray(mask, dtype=bool)
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return None
    long_side = float(max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1))
    return MaskStats(long_side, stroke_width(mask), (int(mask.shape[0]), int(mask.shape[1])))


def collect_stats(records: Sequence[Record], limit: int = STATS_LIMIT,
                  seed: int = 0) -> List[MaskStats]:
    """:class:`MaskStats` of the defective records (at most ``limit``, a seeded sample of the
    rest). A DatasetError when no record holds a defect."""
    defective = [r for r in records if not r.is_defect_free]
    if not defective:
        raise DatasetError("the training split holds no defective image (every mask is empty or "
                           "missing): a segmentation model needs defect masks to learn from; "
                           "check that the masks are where the layout expects them")
    if len(defective) > limit:
        pick = np.random.default_rng(seed).choice(len(defective), limit, replace=False)
        defective = [defective[i] for i in sorted(pick)]
    out = []
    for record in defective:
        found = mask_stats(record.load_mask())
        if found is not None:
            out.append(found)
    if not out:
        raise DatasetError("every defect mask of the training split is empty; check the masks")
    return out


@dataclass(frozen=True)
class DerivedViews:
    """Derived view settings (ModelConfig field names via :meth:`model_overrides`), the
    figures they came from and one reason per setting."""

    image_size: int
    view_context: float
    view_min_side: int
    scan_side: int
    view_max_side: int
    figures: Dict[str, Any] = field(default_factory=dict)
    reasons: Tuple[str, ...] = ()

    def model_overrides(self, with_size: bool = True) -> Dict[str, Any]:
        out: Dict[str, Any] = {"view_context": self.view_context,
                               "view_min_side": self.view_min_side,
                               "scan_side": self.scan_side, "view_max_side": self.view_max_side}
        if with_size:
            out["image_size"] = self.image_size
        return out

    def describe(self) -> str:
        head = (f"image_size {self.image_size}, view_context {self.view_context:g}, "
                f"view_min_side {self.view_min_side}, scan_side {self.scan_side}, "
                f"view_max_side {self.view_max_side}")
        return "\n".join([head] + [f"  - {r}" for r in self.reasons])


def _round(value: float) -> int:
    return max(ROUND, int(round(value / ROUND)) * ROUND)


def _grid_width(stats: Dict[str, np.ndarray], size: int, min_side: float) -> np.ndarray:
    """Width in mask-grid cells of each defect in its own view (no tiling) at input ``size``."""
    view = np.minimum(np.maximum(min_side, CONTEXT * stats["long"]), stats["image_long"])
    return stats["thick"] * size / (GRID_STRIDE * view)


def derive_views(stats: Sequence[MaskStats], sizes: Sequence[int] = SIZES,
                 patch_size: int = 8, fixed_by: str = "the model") -> DerivedViews:
    """The view settings of the module docstring's rule for defects ``stats``; ``sizes`` the
    input sizes to choose from (one: the size is fixed, by what ``fixed_by`` says), each a
    multiple of ``patch_size``."""
    if not stats:
        raise DatasetError("no defect masks to derive view settings from")
    bad = [s for s in sizes if s % patch_size or s <= 0]
    if bad:
        raise DatasetError(f"input sizes {bad} are not positive multiples of the patch size "
                           f"{patch_size}")
    arr = {"long": np.array([s.long_side for s in stats], np.float64),
           "thick": np.array([s.thickness for s in stats], np.float64),
           "image_long": np.array([max(s.image_hw) for s in stats], np.float64)}
    median_image = float(np.median(arr["image_long"]))
    reasons: List[str] = []

    def least_side(size: int) -> int:
        return int(min(_round(size / MAX_ZOOM), max(ROUND, median_image)))

    shares = {s: float(np.mean(_grid_width(arr, s, least_side(s)) >= MIN_GRID_WIDTH))
              for s in sorted(sizes)}
    size = next((s for s in sorted(sizes) if shares[s] >= COVERAGE), max(sizes))
    share_text = ", ".join(f"{shares[s]:.0%} at {s}" for s in sorted(sizes))
    if len(sizes) == 1:
        reasons.append(f"image_size {size}: fixed by {fixed_by} ({shares[size]:.0%} of the "
                       f"defects are >= {MIN_GRID_WIDTH:g} mask cells wide in their own view)")
    else:
        reasons.append(f"image_size {size}: the smallest input at which >= {COVERAGE:.0%} of "
                       f"the training defects are >= {MIN_GRID_WIDTH:g} mask cells (stride "
                       f"{GRID_STRIDE}) wide in their own view ({share_text})")
    min_side = least_side(size)
    reasons.append(f"view_context {CONTEXT:g}: a defect's box fills 1/{CONTEXT:g} of its view")
    reasons.append(f"view_min_side {min_side}: small defects are enlarged at most "
                   f"{MAX_ZOOM:g}x (input {size} / {MAX_ZOOM:g}; median defect box "
                   f"{np.median(arr['long']):.0f} px, median image side {median_image:.0f} px)")

    side_for_2 = arr["thick"] * size / (GRID_STRIDE * MIN_GRID_WIDTH)  # largest view, 2 cells
    max_side = 0
    if shares[size] < COVERAGE:
        max_side = max(min_side, _round(np.quantile(side_for_2, 1 - COVERAGE)))
        reasons.append(f"view_max_side {max_side}: even at input {size} only {shares[size]:.0%} "
                       f"of the defects are >= {MIN_GRID_WIDTH:g} cells wide in their own view; "
                       f"larger boxes are seen through tiles of this side, in which "
                       f"{COVERAGE:.0%} of them are")
    else:
        reasons.append(f"view_max_side 0 (none): {shares[size]:.0%} of the defects are >= "
                       f"{MIN_GRID_WIDTH:g} cells wide in their own view at input {size}")

    thin_limit = float(np.quantile(side_for_2, 0.25))
    scan = min(max(CONTEXT * float(np.median(arr["long"])), min_side), max(thin_limit, min_side))
    scan = min(scan, median_image)
    if max_side:
        scan = min(scan, max_side)
    scan_side = max(min_side, _round(scan))
    reasons.append(f"scan_side {scan_side}: the view of a median defect ({CONTEXT:g} x "
                   f"{np.median(arr['long']):.0f} px), at least view_min_side, at most the side "
                   f"where the thinnest quarter stay {MIN_GRID_WIDTH:g} cells wide "
                   f"({thin_limit:.0f} px) and the median image side ({median_image:.0f} px)")
    figures = {
        "defects": len(stats),
        "box_long_side_px": {q: round(float(np.quantile(arr["long"], q / 100)), 1)
                             for q in (10, 50, 90)},
        "stroke_width_px": {q: round(float(np.quantile(arr["thick"], q / 100)), 1)
                            for q in (10, 50, 90)},
        "image_long_side_px": round(median_image, 1),
        "share_at_least_2_cells": {str(s): round(v, 3) for s, v in shares.items()},
    }
    return DerivedViews(int(size), CONTEXT, int(min_side), int(scan_side), int(max_side),
                        figures, tuple(reasons))
