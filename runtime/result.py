"""What an inspection returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np


@dataclass
class InspectionResult:
    """K prompts on one HxW image.

    ``masks``/``draft_masks``: KxHxW bool (final and draft pass, at the image's resolution);
    ``scores``: K float32, the model's predicted IoU of each final mask; ``area_px``: K int64
    defect pixels; ``bbox``: Kx4 int64 (x0, y0, x1, y1), inclusive, -1 where no defect;
    ``pred_label``: K bool, True where a defect of at least ``min_defect_area`` pixels was found;
    ``pred_score``: K float32 in [0, 1], the model's score on a scale where 0.5 is the
    operating point (the scan's calibrated gate, a prompt's gate; anomalib's normalisation:
    :mod:`samspt.runtime.operating_point`); empty where the maker of the result had none;
    ``timings_ms``: milliseconds per stage (preprocess, encoder, decoder, postprocess, total);
    ``views``: the view (:class:`samspt.runtime.views.View`) of each prompt, or of a prompt-free
    scan all its views (its one row is their merged mask); ``anomaly_map``: HxW float32 defect
    probability of a prompt-free scan by a model with a scan head
    (:mod:`samspt.runtime.find_segment`), else None.
    """

    masks: np.ndarray
    draft_masks: np.ndarray
    scores: np.ndarray
    area_px: np.ndarray
    bbox: np.ndarray
    pred_label: np.ndarray
    timings_ms: Dict[str, float] = field(default_factory=dict)
    views: List[Any] = field(default_factory=list)
    pred_score: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    anomaly_map: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready summary (no mask pixels)."""
        return {"prompts": [{"defect": bool(self.pred_label[k]), "score": float(self.scores[k]),
                             **({"pred_score": float(self.pred_score[k])}
                                if len(self.pred_score) == len(self) else {}),
                             "area_px": int(self.area_px[k]),
                             "bbox": [int(v) for v in self.bbox[k]],
                             "draft_area_px": int(self.draft_masks[k].sum())}
                            for k in range(len(self))],
                "views": [[v.x0, v.y0, v.side] for v in self.views],
                "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()}}


def summarize_masks(masks: np.ndarray, min_defect_area: int,
                    regions: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """area_px, bbox and pred_label of KxHxW bool masks. ``regions`` (Kx4 y0, y1, x0, x1,
    end-exclusive): where each mask may be True (False elsewhere), so only they are read."""
    count = masks.shape[0]
    if regions is None:
        regions = np.tile(np.array([0, masks.shape[1], 0, masks.shape[2]], np.int64), (count, 1))
    area = np.zeros(count, np.int64)
    bbox = np.full((count, 4), -1, dtype=np.int64)
    for k, (y0, y1, x0, x1) in enumerate(np.asarray(regions, np.int64)):
        part = masks[k, y0:y1, x0:x1]
        area[k] = np.count_nonzero(part)
        if area[k]:
            rows = np.flatnonzero(part.any(axis=1))
            cols = np.flatnonzero(part.any(axis=0))
            bbox[k] = (x0 + cols[0], y0 + rows[0], x0 + cols[-1], y0 + rows[-1])
    return {"area_px": area, "bbox": bbox, "pred_label": area >= max(1, min_defect_area)}
