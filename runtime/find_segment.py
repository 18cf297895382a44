"""The prompt-free scan of a model with a scan head: find, then segment.

1. Find: the scan's views (:func:`~samspt.runtime.views.scan_views`) are encoded, the scan head
   (:class:`~samspt.runtime.scan_head.NumpyScanHead`) scores every token, and the tokens'
   probabilities, resized into the image, make the anomaly map (HxW, the maximum where views
   overlap). The image's score is the map's maximum; the image is flagged where it reaches the
   gate (``ViewSettings.scan_min_score``; :data:`DEFAULT_GATE` where the folder has none).
2. Segment: each connected region of the map that reaches the gate, drawn to where it reaches
   :data:`REGION_SHARE` of it, becomes a box prompt, answered
   in its own view through the draft and refine decoders, as a person would prompt it; the
   answers merge into the scan's one row. The decoders run only where something was found, so
   a clean part costs its scan views' encoder runs and the head. A flagged image whose boxes the
   decoders all answer empty gets the map's region as its mask (a flag never comes without one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence

import numpy as np

from samspt.runtime.scan_head import anomaly_map, proposals
from samspt.runtime.view_inference import DecodeFn, EncodeFn, encode_views, infer_views
from samspt.runtime.views import View, ViewSettings, plan_views, scan_views

# The gate of a folder with a scan head and no operating point: the head's even odds.
DEFAULT_GATE = 0.5
# A found region extends over the map where it reaches this share of the gate: the gate finds a
# defect by its peak, the lower level draws its extent (hysteresis). Held-out MTD (64 defective
# images, the one command's 30-minute model, scan head refit): scan mask mIoU at gate 0.9 0.189
# with the gate alone drawing regions, 0.228 at level 0.8, 0.212 at 0.5, 0.148 at 0.3; at gate
# 0.99 0.026 alone, 0.098 at 0.8, 0.102 at 0.5.
REGION_SHARE = 0.8


class ScanHeadFn(Protocol):
    """What scores the tokens: the views' embeddings (as ``encode`` returned them, one 1xC'xhxw
    each) -> Vxhxw float32 logits (:class:`~samspt.runtime.scan_head.NumpyScanHead`; the
    PyTorch model's head in :func:`samspt.training.predict.predict`)."""

    def logits(self, embeddings: Sequence[Any]) -> np.ndarray: ...


@dataclass
class HeadScan:
    """One scanned image: its row's ``masks``/``draft_masks`` (1xHxW bool), ``regions``
    (1x4 y0, y1, x0, x1 where the mask may be True), ``score`` (the map's maximum), ``gate``
    (the one it was flagged by),
    ``anomaly_map`` (HxW float32), ``boxes`` (the proposals answered), ``views`` (the scan's)
    and ``timings`` (seconds per stage)."""

    masks: np.ndarray
    draft_masks: np.ndarray
    regions: np.ndarray
    score: float
    gate: float
    anomaly_map: np.ndarray
    boxes: List[np.ndarray]
    views: List[View]
    timings: Dict[str, float]


def head_scan(image: np.ndarray, settings: ViewSettings, input_size: int,
              head: "ScanHeadFn", encode: EncodeFn, decode: DecodeFn,
              pixel_mean: Sequence[float], pixel_std: Sequence[float],
              cache: Optional[Dict[View, Any]] = None, mask_threshold: float = 0.0,
              clock: Optional[Callable[[], float]] = None) -> HeadScan:
    """Find then segment on an HxWx3 uint8 ``image`` (see the module doc)."""
    import time

    clock = clock or time.perf_counter
    timings = {"preprocess": 0.0, "encoder": 0.0, "decoder": 0.0, "postprocess": 0.0}
    cache = {} if cache is None else cache
    height, width = image.shape[:2]
    views = scan_views((height, width), input_size, settings)
    encode_views(image, views, encode, pixel_mean, pixel_std, cache, timings, clock)
    t0 = clock()
    logits = head.logits([cache[view] for view in views])
    prob = anomaly_map(views, logits, (height, width))
    score = float(prob.max()) if prob.size else 0.0
    gate = DEFAULT_GATE if settings.scan_min_score is None else settings.scan_min_score
    masks = np.zeros((1, height, width), bool)
    drafts = np.zeros_like(masks)
    regions = np.zeros((1, 4), np.int64)
    boxes: List[np.ndarray] = []
    timings["postprocess"] += clock() - t0
    if score >= gate:
        t1 = clock()
        cell = max(1, int(math.ceil(views[0].side / logits.shape[-1])))   # a token's pixels
        boxes = proposals(prob, gate, cell, low=REGION_SHARE * gate)
        timings["postprocess"] += clock() - t1
        plan = plan_views((height, width), input_size, settings, "auto",
                          boxes=np.stack(boxes))
        plan.min_score = None       # the head found these: every box is answered
        out = infer_views(image, plan, encode, decode, pixel_mean, pixel_std, cache=cache,
                          clock=clock, mask_threshold=mask_threshold)
        for key, value in out.timings.items():
            timings[key] += value
        t2 = clock()
        masks[0] = out.masks.any(axis=0)
        drafts[0] = out.draft_masks.any(axis=0)
        if not masks[0].any():
            masks[0] = prob >= REGION_SHARE * gate
        regions[0] = (0, height, 0, width)
        timings["postprocess"] += clock() - t2
    return HeadScan(masks, drafts, regions, score, gate, prob, boxes, views, timings)

