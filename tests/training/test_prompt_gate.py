"""The prompts' gate rule (training/prompt_gate.py) on per-image results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from samspt.training.data.records import DEFECT_FREE, Record
from samspt.training.evaluation import ImageResult
from samspt.training.prompt_gate import choose_flips, choose_prompt_gate, gate_above, gate_point


def _defective(name: str, score: float, iou: float) -> ImageResult:
    record = Record(Path(f"{name}.png"), Path(f"{name}_mask.png"), "Crack", "t")
    scores = {"final_score": score, "final_iou": iou, "final_biou": iou, "draft_iou": iou,
              "draft_biou": iou, "final_area": 0.1, "draft_area": 0.1}
    return ImageResult(record, "box", np.zeros(4, np.float32), None, None, None, scores)


def _clean(name: str, score: float, empty: bool = False) -> ImageResult:
    record = Record(Path(f"{name}.png"), None, DEFECT_FREE, "t")
    scores = {"final_score": score, "final_empty": float(empty), "draft_empty": float(empty),
              "final_fp_area": 0.0 if empty else 0.05, "draft_fp_area": 0.05,
              "final_area": 0.0, "draft_area": 0.0}
    return ImageResult(record, "box", np.zeros(4, np.float32), None, None, None, scores)


def test_a_score_that_separates_clean_boxes_gets_the_lowest_gate_reaching_the_target():
    results = ([_defective(f"d{i}", 0.7 + 0.01 * i, 0.8) for i in range(10)]
               + [_clean(f"c{i}", 0.1 + 0.02 * i) for i in range(20)])
    pick = choose_prompt_gate(results, target_empty=0.95)
    assert pick.gate == gate_above(0.1 + 0.02 * 18)        # 19 of 20 below it
    assert pick.empty_rate == 0.95 and pick.final_miou == pick.final_miou_no_gate == 0.8
    assert pick.empty_rate_no_gate == 0.0


def test_a_gate_never_costs_the_defects_more_than_the_allowed_mIoU():
    # Clean boxes score like the defects: silencing them would answer real defects empty.
    results = ([_defective(f"d{i}", 0.5 + 0.05 * i, 0.8) for i in range(10)]
               + [_clean(f"c{i}", 0.5 + 0.05 * i) for i in range(10)])
    pick = choose_prompt_gate(results, target_empty=0.95, max_miou_cost=0.02)
    assert pick.final_miou >= pick.final_miou_no_gate - 0.02
    assert pick.gate is None or pick.empty_rate < 0.95
    assert gate_point(results, pick.gate).final_miou == pick.final_miou


def test_no_gate_where_there_is_nothing_to_trade():
    defects = [_defective("d", 0.9, 0.8)]
    assert choose_prompt_gate(defects).gate is None                     # no clean box
    assert choose_prompt_gate(defects + [_clean("c", 0.2, empty=True)]).gate is None
    assert choose_prompt_gate([_clean("c", 0.2)]).gate is None           # no defect


def _set(scale, gain=0.0, clean_scores=None):
    """Validation results: 10 defective boxes (IoU 0.7 + gain), 20 clean ones scored as given."""
    clean_scores = clean_scores if clean_scores is not None else [0.1 + 0.02 * i
                                                                  for i in range(20)]
    return ([_defective(f"d{i}", 0.7 + 0.01 * i, 0.7 + gain) for i in range(10)]
            + [_clean(f"c{i}", scale * s) for i, s in enumerate(clean_scores)])


def test_flips_ship_only_for_a_real_gain_at_a_gate_that_keeps_clean_boxes_empty():
    base = _set(1.0)
    pick = choose_flips({1: base, 4: _set(1.0, gain=0.03)})
    assert pick.flips == 4 and pick.gate is pick.gates[4]
    assert pick.final_miou[4] == pytest.approx(0.73) and pick.empty_rate[4] >= 0.95
    assert choose_flips({1: base, 4: _set(1.0, gain=0.003)}).flips == 1       # too small
    # Mirrors that score clean boxes higher get a higher gate, reaching the same empty share.
    pick = choose_flips({1: base, 4: _set(1.3, gain=0.03)})
    assert pick.flips == 4 and pick.gates[4].gate > pick.gates[1].gate
    assert pick.empty_rate[4] >= pick.empty_rate[1]
    # Where no gate keeps clean boxes empty without silencing the defects, no flips.
    crowded = _set(1.0, gain=0.05, clean_scores=[0.95] * 20)
    assert choose_flips({1: base, 4: crowded}).flips == 1


def test_flips_are_measured_on_datasets_without_defect_free_images():
    only_defects = [r for r in _set(1.0) if not r.is_defect_free]
    better = [r for r in _set(1.0, gain=0.02) if not r.is_defect_free]
    pick = choose_flips({1: only_defects, 4: better})
    assert pick.flips == 4 and pick.gate.gate is None
    assert pick.final_miou == {1: pytest.approx(0.7), 4: pytest.approx(0.72)}
    assert choose_flips({1: better, 4: only_defects}).flips == 1
