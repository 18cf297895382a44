"""Inference on views, whatever runs the model: the loop the Inspector (ONNX Runtime, TensorRT)
and the PyTorch reference (:func:`samspt.training.predict.predict`) share, in numpy.

Prompts whose views coincide share one encoder run; all distinct views of a call that ``cache``
(View -> 1xCxhxw embedding, kept across calls on one image) lacks go through the encoder as one
batch (``encode``: Vx3xSxS float32 -> V image embeddings, indexable), then each view's
prompts through the decoder (``decode``: one 1xCxhxw embedding, BxNx2 coords and BxN labels in
the view's input frame -> (draft low-res Bx1xLxL, final low-res Bx1xLxL, scores B)). Logits come
back in image pixels, :data:`~samspt.runtime.views.BACKGROUND_LOGIT` outside a prompt's views.
Several view prompts may feed one output row (a scan; a box larger than the views allow): their
logits are merged by the maximum. In a prompt-free scan the row's score is the best score of the
views that answered a defect (0 where none did), and a gate (``ViewPlan.min_score``) drops the
views scored below it, so thresholding one run's scores gives every stricter gate's answer.
A prompt's gate (``ViewSettings.prompt_min_score``) acts on the row: a prompt whose score (the
best of its views) is below it is answered empty, and keeps its score.

With ``mask_threshold`` only the masks come back (what the Inspector answers), each computed
where low-res cells above the threshold reach (:func:`~samspt.runtime.views.paste_mask`): equal
to thresholding the full logits, at a cost that follows the defects, not the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from samspt.runtime.postprocess import (BACKGROUND_LOGIT, MASK_THRESHOLD, paste_mask, paste_max,
                                        view_mask)
from samspt.runtime.preprocess import view_input
from samspt.runtime.views import View, ViewPlan

# Views per encoder call: a scan of a 20-megapixel image has hundreds of views, and one batch of
# them all would hold hundreds of input tensors at once.
MAX_VIEWS_PER_ENCODE = 16

EncodeFn = Callable[[np.ndarray], np.ndarray]
DecodeFn = Callable[[np.ndarray, np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class ViewOutputs:
    """``logits``/``draft_logits`` KxHxW float32 (image pixels, one row per output row),
    ``scores`` K float32 (a merged row: the best of its views), ``low_res``/``draft_low_res``
    Mx1xLxL (each view prompt's, in its view's frame), ``views``: each row's view where every
    row has one, else all M views; ``timings`` seconds per stage. With a mask threshold,
    ``logits``/``draft_logits`` are None and ``masks``/``draft_masks`` KxHxW bool hold the
    masks, True only inside ``regions``/``draft_regions`` (Kx4 int64 y0, y1, x0, x1 image
    pixels, end-exclusive; all 0 for an empty row)."""

    logits: Optional[np.ndarray]
    draft_logits: Optional[np.ndarray]
    scores: np.ndarray
    low_res: np.ndarray
    draft_low_res: np.ndarray
    views: List[View]
    timings: Dict[str, float]
    masks: Optional[np.ndarray] = None
    draft_masks: Optional[np.ndarray] = None
    regions: Optional[np.ndarray] = None
    draft_regions: Optional[np.ndarray] = None


def group_views(views: Sequence[View]) -> List[Tuple[View, List[int]]]:
    """Distinct views in first-seen order, each with the indices of the prompts it serves."""
    groups: Dict[View, List[int]] = {}
    for index, view in enumerate(views):
        groups.setdefault(view, []).append(index)
    return list(groups.items())


def encode_views(image: np.ndarray, views: Sequence[View], encode: EncodeFn,
                 pixel_mean: Sequence[float], pixel_std: Sequence[float],
                 cache: Dict[View, Any], timings: Dict[str, float],
                 clock: Callable[[], float]) -> None:
    """Encode the ``views`` that ``cache`` lacks (in batches of :data:`MAX_VIEWS_PER_ENCODE`)
    into it; their input pixels' time adds to ``timings["preprocess"]``, the encoder's to
    ``timings["encoder"]``."""
    t0 = clock()
    missing = [view for view in views if view not in cache]
    timings["preprocess"] += clock() - t0
    for first in range(0, len(missing), MAX_VIEWS_PER_ENCODE):
        chunk = missing[first:first + MAX_VIEWS_PER_ENCODE]
        t1 = clock()
        batch = np.stack([view_input(view, image, pixel_mean, pixel_std) for view in chunk])
        t2 = clock()
        embeddings = encode(batch)
        t3 = clock()
        for i, view in enumerate(chunk):
            cache[view] = embeddings[i:i + 1]
        timings["preprocess"] += t2 - t1
        timings["encoder"] += t3 - t2


def infer_views(image: np.ndarray, plan: ViewPlan, encode: EncodeFn, decode: DecodeFn,
                pixel_mean: Sequence[float], pixel_std: Sequence[float],
                cache: Optional[Dict[View, Any]] = None,
                clock: Optional[Callable[[], float]] = None,
                mask_threshold: Optional[float] = None) -> ViewOutputs:
    """Run a :class:`~samspt.runtime.views.ViewPlan` on an HxWx3 uint8 RGB ``image``: each view
    prompt in its view, each output row the maximum of the logits of the prompts that feed it
    (``mask_threshold``: their masks, logits above it, only); see the module doc."""
    import time

    clock = clock or time.perf_counter
    timings = {"preprocess": 0.0, "encoder": 0.0, "decoder": 0.0, "postprocess": 0.0}
    groups = group_views(plan.views)
    cache = {} if cache is None else cache
    encode_views(image, [view for view, _ in groups], encode, pixel_mean, pixel_std, cache,
                 timings, clock)

    count = len(plan.views)
    height, width = image.shape[:2]
    canvases = _Canvases(plan.rows, (height, width), mask_threshold)
    gate = plan.min_score
    scores = np.full(plan.rows, -np.inf, np.float32)
    low_res = draft_low = None
    for view, index in groups:
        t2 = clock()
        d_low, f_low, score = decode(cache[view], view.to_input(plan.coords[index]),
                                     plan.labels[index])
        t3 = clock()
        if low_res is None:
            low_res = np.zeros((count,) + f_low.shape[1:], np.float32)
            draft_low = np.zeros_like(low_res)
        low_res[index], draft_low[index] = f_low, d_low
        for row, k in enumerate(index):
            target, value = int(plan.row_of[k]), float(np.ravel(score)[row])
            if plan.scan and gate is not None and value < gate:
                continue
            answered = canvases.paste(target, view, f_low[row:row + 1], d_low[row:row + 1],
                                      check=plan.scan)
            if not plan.scan or answered:
                scores[target] = max(scores[target], value)
        timings["decoder"] += t3 - t2
        timings["postprocess"] += clock() - t3
    if plan.scan:
        scores[np.isneginf(scores)] = 0.0
    elif gate is not None:     # a prompt (all its views) scored below the gate: answered empty
        for row in np.flatnonzero(scores < gate):
            canvases.clear(int(row))
    views_of_rows = ([plan.views[int(np.flatnonzero(plan.row_of == r)[0])]
                      for r in range(plan.rows)] if plan.rows == count else list(plan.views))
    return canvases.outputs(scores, low_res, draft_low, views_of_rows, timings)


class _Canvases:
    """The output rows, final and draft, in image pixels: logits merged by the maximum, or
    (``threshold`` given) masks merged by OR with the regions they were written in."""

    def __init__(self, rows: int, image_hw: Tuple[int, int], threshold: Optional[float]) -> None:
        self.threshold = threshold
        shape = (rows,) + tuple(image_hw)
        if threshold is None:
            self.final = np.full(shape, BACKGROUND_LOGIT, np.float32)
            self.draft = np.full(shape, BACKGROUND_LOGIT, np.float32)
        else:   # np.zeros maps zeroed pages lazily: untouched rows cost nothing
            self.final, self.draft = np.zeros(shape, bool), np.zeros(shape, bool)
        self.regions = np.zeros((2, rows, 4), np.int64)
        self.regions[..., 0::2] = np.iinfo(np.int64).max

    def paste(self, row: int, view: View, final: np.ndarray, draft: np.ndarray,
              check: bool = False) -> bool:
        """Paste one view prompt's logits into ``row``; with ``check``, whether its final mask
        has an image pixel (logits above the threshold; 0 without one)."""
        if self.threshold is None:
            paste_max(self.final[row:row + 1], view, final)
            paste_max(self.draft[row:row + 1], view, draft)
            return check and view_mask(view, final, MASK_THRESHOLD) is not None
        answered = False
        for which, canvas, low in ((0, self.final, final), (1, self.draft, draft)):
            window = paste_mask(canvas[row], view, low, self.threshold)
            if window is not None:
                answered = answered or which == 0
                region = self.regions[which, row]
                region[0::2] = np.minimum(region[0::2], window[0::2])
                region[1::2] = np.maximum(region[1::2], window[1::2])
        return answered

    def clear(self, row: int) -> None:
        """Empty ``row``, final and draft: background logits, no mask, no region."""
        if self.threshold is None:
            self.final[row] = self.draft[row] = BACKGROUND_LOGIT
            return
        self.final[row] = self.draft[row] = False
        self.regions[:, row] = 0
        self.regions[:, row, 0::2] = np.iinfo(np.int64).max

    def outputs(self, scores, low_res, draft_low, views, timings) -> ViewOutputs:
        if self.threshold is None:
            return ViewOutputs(self.final, self.draft, scores, low_res, draft_low, views, timings)
        regions = np.where(self.regions[..., 1:2] > 0, self.regions, 0)
        return ViewOutputs(None, None, scores, low_res, draft_low, views, timings,
                           masks=self.final, draft_masks=self.draft, regions=regions[0],
                           draft_regions=regions[1])
