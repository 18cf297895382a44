"""The scan's operating point from scan scores: the gate each objective picks, the rates it
reports, the refusals, and pred_score's scale (numpy only)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from samspt.runtime.errors import ConfigError, InputError
from samspt.runtime.operating_point import (OperatingPoint, auroc, choose, false_alarm_at_recall,
                                            flagged_share, image_scores, normalized_score,
                                            normals_needed, recall_at_false_alarm)

INF = -math.inf


def _flagged(scores, gate):
    return int(np.sum(np.asarray(scores) >= gate))


def test_a_false_alarm_budget_takes_the_lowest_gate_that_keeps_to_it():
    rng = np.random.default_rng(0)
    normal = np.concatenate([rng.uniform(0.1, 0.6, 95), [INF] * 5])
    defective = np.concatenate([rng.uniform(0.4, 0.9, 40), [INF] * 2])
    point = choose(normal, defective, max_false_alarm=0.02)
    assert point.normal_images == 100 and point.normal_flagged == _flagged(normal, point.min_score)
    assert point.normal_flagged <= 2
    assert point.defective_flagged == _flagged(defective, point.min_score)
    # lowest: a gate just below it (past the next defect-free score) breaks the budget
    kept_out = np.sort(normal[np.isfinite(normal)])[::-1][2]
    assert kept_out < point.min_score
    assert _flagged(normal, kept_out) > 2
    # midway between the last score it keeps out and the next score it lets in
    answered = np.concatenate([normal, defective])
    next_in = answered[answered > kept_out].min()
    assert point.min_score == pytest.approx((kept_out + next_in) / 2)
    assert point.false_alarm_rate == point.normal_flagged / 100
    assert point.auroc == auroc(defective, normal)


def test_a_recall_target_takes_the_highest_gate_that_reaches_it():
    normal = [0.1, 0.2, 0.3, INF, 0.5]
    defective = [0.9, 0.8, 0.7, 0.6, 0.55, 0.4, INF, 0.35, 0.3, 0.05]
    point = choose(normal, defective, min_recall=0.8)
    assert point.defective_flagged == 8 and point.recall == 0.8
    # the 8th highest defective score is 0.3; midway to the next score below it (0.2)
    assert point.min_score == pytest.approx(0.25)
    assert point.normal_flagged == 2              # 0.3 and 0.5
    with pytest.raises(InputError, match="answers 9 of the 10 defective images"):
        choose(normal, defective, min_recall=0.95)
    with pytest.raises(InputError, match="needs defective images"):
        choose(normal, [], min_recall=0.9)


def test_too_few_defect_free_images_are_refused_with_how_many_are_needed():
    assert normals_needed(0.02) == 50 and normals_needed(0.05) == 20
    with pytest.raises(InputError, match="at least 50 defect-free images"):
        choose([0.1] * 49, max_false_alarm=0.02)
    choose([0.1] * 50, max_false_alarm=0.02)
    with pytest.raises(ConfigError, match="exactly one objective"):
        choose([0.1] * 50, [0.5], max_false_alarm=0.02, min_recall=0.9)
    with pytest.raises(ConfigError, match=r"\(0, 1\)"):
        choose([0.1] * 50, max_false_alarm=1.5)


def test_when_the_budget_allows_every_answer_the_gate_lets_every_answer_in():
    normal = [INF] * 60 + [0.3]                  # one answered defect-free image of 61: 1.6 %
    defective = [0.2, 0.8, INF]
    point = choose(normal, defective, max_false_alarm=0.02)
    assert point.min_score < 0.2 and point.defective_flagged == 2 and point.normal_flagged == 1


def test_the_reported_rates_are_what_every_gate_flags():
    normal = image_scores([True, False, True, True], [0.2, 0.9, 0.6, 0.4])
    assert list(normal) == [0.2, INF, 0.6, 0.4]
    assert flagged_share(normal, 0.4) == 0.5 and flagged_share(normal, None) == 0.75
    defective = [0.9, 0.7, 0.5, INF]
    assert false_alarm_at_recall(normal, defective, 0.5) == 0.0       # gate 0.7
    assert false_alarm_at_recall(normal, defective, 0.75) == 0.25     # gate 0.5
    assert false_alarm_at_recall(normal, defective, 1.0) is None      # never answered
    assert recall_at_false_alarm(normal, defective, 0.25) == 0.75     # keep out 0.4
    assert recall_at_false_alarm(normal, defective, 0.0) == 0.5       # keep out 0.6


def test_pred_score_is_one_half_at_the_gate_and_monotone():
    point = choose([0.1, 0.2, 0.3, 0.4] + [INF] * 16, [0.5, 0.8], max_false_alarm=0.05)
    values = np.array([INF, point.low, 0.15, point.min_score, 0.7, point.high, 5.0])
    scaled = point.pred_score(values)
    assert scaled.dtype == np.float32
    assert scaled[0] == 0.0 and scaled[1] == 0.0 and scaled[3] == pytest.approx(0.5)
    assert scaled[5] == pytest.approx(1.0) and scaled[6] == 1.0
    assert np.all(np.diff(scaled) >= 0)
    assert (scaled >= 0.5).tolist() == (values >= point.min_score).tolist()
    # prompts: (0, 0), (gate, 0.5), (1, 1); no gate: the score itself, clipped
    assert normalized_score([0.0, 0.2, 0.6, 1.0], 0.2).tolist() == pytest.approx([0, .5, .75, 1])
    assert normalized_score([-0.1, 0.3, INF], None).tolist() == pytest.approx([0.0, 0.3, 0.0])


def test_an_operating_point_round_trips_and_refuses_bad_records():
    point = choose([0.1] * 30 + [0.2] * 20, [0.5], max_false_alarm=0.05)
    assert OperatingPoint.from_dict(point.to_dict()) == point
    with pytest.raises(ConfigError, match="unknown operating point keys"):
        OperatingPoint.from_dict({**point.to_dict(), "gate": 1})
    with pytest.raises(ConfigError, match="objective"):
        OperatingPoint.from_dict({**point.to_dict(), "objective": "best"})
    with pytest.raises(ConfigError, match="finite"):
        OperatingPoint.from_dict({**point.to_dict(), "min_score": float("nan")})
