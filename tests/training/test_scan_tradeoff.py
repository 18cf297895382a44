"""The scan's trade-off figures: AUROC against its definition, shares flagged per gate."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from samspt.runtime.operating_point import auroc
from samspt.training.scan_tradeoff import GATES, format_trade_off, trade_off


def _pairwise(pos, neg):
    wins = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)]
    return sum(wins) / len(wins)


def test_auroc_is_the_share_of_pairs_a_defective_image_wins():
    assert auroc([0.9, 0.5], [0.5, 0.1]) == pytest.approx(0.875)
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 30) / 4, rng.integers(0, 5, 40) / 4   # many ties
    assert auroc(pos, neg) == pytest.approx(_pairwise(pos, neg))
    assert auroc([], [0.3]) is None and auroc([0.3], []) is None


def _rows(scores, flagged):
    return [{"scan_score": s, "scan_flagged": float(f)} for s, f in zip(scores, flagged)]


def test_shares_flagged_at_each_gate_above_the_runs_own():
    defective = _rows([0.8, 0.4, 0.0], [True, True, False])
    clean = _rows([0.3, 0.0, 0.0, 0.0], [True, False, False, False])
    block = trade_off(defective, clean, gate=0.2)
    points = {p["min_score"]: p for p in block["points"]}
    assert min(points) == 0.2 and set(points) <= set(GATES)      # none below the run's gate
    assert points[0.2] == {"min_score": 0.2, "defective_flagged": 2 / 3,
                           "defect_free_flagged": 0.25}
    assert points[0.35]["defect_free_flagged"] == 0.0 and points[0.35]["defective_flagged"] == 2 / 3
    assert points[0.45]["defective_flagged"] == 1 / 3
    # Unflagged images rank below every flagged one, whatever score they carry.
    inf = float("inf")
    assert block["auroc"] == pytest.approx(_pairwise([0.8, 0.4, -inf], [0.3, -inf, -inf, -inf]))
    assert [p["min_score"] for p in trade_off(defective, clean)["points"]] == list(GATES)
    lines = format_trade_off(block)
    assert "run at 0.2" in lines[0] and any(line.split()[0] == "0.45" for line in lines[2:])
    assert format_trade_off(None) == []
    assert "run at no gate" in format_trade_off(trade_off(defective, clean))[0]


def test_the_finish_stage_calibrates_as_samspt_calibrate_does():
    from samspt.runtime.operating_point import choose
    from samspt.training.finish_report import calibrated_point, flagged_at, gate_of_point

    rng = np.random.default_rng(1)
    free = [{"defect_free": True, "scan_flagged": 0.0, "scan_score": float(s), "scan_scored": 1.0}
            for s in rng.uniform(0.0, 0.6, 60)]
    defective = [{"defect_free": False, "scan_flagged": 1.0, "scan_score": float(s),
                  "scan_scored": 1.0} for s in rng.uniform(0.4, 1.0, 20)]
    point = calibrated_point(free + defective, 0.02)
    assert point == choose([r["scan_score"] for r in free], [r["scan_score"] for r in defective],
                           max_false_alarm=0.02)
    pick = gate_of_point(point, 0.02)
    assert pick.gate == point.min_score and pick.n_defect_free == 60
    # scored images count at any gate, flagged at the run's or not
    assert flagged_at(free, pick.gate) == point.normal_flagged / 60 <= 0.02
    assert flagged_at(defective, pick.gate) == point.defective_flagged / 20
    assert calibrated_point(free[:49] + defective, 0.02) is None     # too few to measure 2 %
    assert calibrated_point(free, 0.02) is None                      # no defective image
