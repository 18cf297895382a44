"""InspectionResult: the defect / no-defect branches, min_defect_area, and to_dict()."""

from __future__ import annotations

import json

import numpy as np

from samspt.runtime.result import InspectionResult, summarize_masks
from samspt.runtime.views import View


def _result(min_area):
    masks = np.zeros((3, 20, 30), bool)
    masks[0, 2:5, 3:9] = True             # 18 px
    masks[1, 10, 20] = True               # 1 px
    draft = masks.copy()
    draft[2, 0, 0] = True
    views = [View(0, 0, 30, (20, 30), 64)] * 3
    return InspectionResult(masks=masks, draft_masks=draft,
                            scores=np.array([0.9, 0.2, 0.5], np.float32),
                            timings_ms={"total": 1.23456}, views=views,
                            **summarize_masks(masks, min_area))


def test_defect_and_no_defect_rows_and_the_minimum_area():
    result = _result(min_area=1)
    assert result.area_px.tolist() == [18, 1, 0]
    assert result.bbox.tolist() == [[3, 2, 8, 4], [20, 10, 20, 10], [-1, -1, -1, -1]]
    assert result.pred_label.tolist() == [True, True, False]
    strict = _result(min_area=5)
    assert strict.pred_label.tolist() == [True, False, False]   # 1 px is below the minimum
    assert strict.area_px.tolist() == [18, 1, 0]                # areas are reported regardless


def test_to_dict_is_json_ready_and_complete():
    data = _result(min_area=1).to_dict()
    json.dumps(data)
    assert data["prompts"][0] == {"defect": True, "score": np.float32(0.9).item(), "area_px": 18,
                                  "bbox": [3, 2, 8, 4], "draft_area_px": 18}
    assert data["prompts"][2]["defect"] is False and data["prompts"][2]["draft_area_px"] == 1
    assert data["views"] == [[0, 0, 30]] * 3
    assert data["timings_ms"] == {"total": 1.235}
