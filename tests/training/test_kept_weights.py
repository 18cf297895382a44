"""Which validated weights a run keeps (best.safetensors): training.trainer.keep."""

import pytest

from samspt.runtime.errors import ConfigError
from samspt.training.train_config import config_from_dict
from samspt.training.trainer import best_score, keep


def _run(scores, margin):
    """The kept summary after validations at steps 100, 200, ... with these final mIoUs."""
    kept = None
    for index, score in enumerate(scores):
        kept = keep(kept, {"final": {"miou": score}}, 100 * (index + 1), margin) or kept
    return kept


def test_no_margin_keeps_the_best_validation():
    kept = _run([0.60, 0.75, 0.74, 0.70], margin=0.0)
    assert kept["step"] == 200 and best_score(kept) == 0.75


def test_a_margin_keeps_later_weights_within_it_of_the_best():
    kept = _run([0.60, 0.75, 0.74, 0.70], margin=0.02)
    assert kept["step"] == 300                 # 0.74 within 0.02 of 0.75; 0.70 is not
    assert kept["final"]["miou"] == 0.74
    assert kept["top"] == {"step": 200, "miou": 0.75}


def test_the_margin_is_measured_from_the_best_not_from_the_kept():
    # 0.735 then 0.72: each within 0.02 of the one before, but 0.72 is 0.03 below the best
    kept = _run([0.75, 0.735, 0.72], margin=0.02)
    assert kept["step"] == 200 and best_score(kept) == 0.75


def test_a_missing_score_never_replaces_weights_and_old_summaries_are_their_own_best():
    assert keep(None, {"final": {"miou": None}}, 1, 0.02) is None
    old = {"final": {"miou": 0.7}, "step": 5}         # a summary written before "top" existed
    assert best_score(old) == 0.7 and best_score(None) is None
    assert keep(old, {"final": {"miou": 0.67}}, 6, 0.02) is None
    assert keep(old, {"final": {"miou": 0.69}}, 6, 0.02)["top"] == {"step": 5, "miou": 0.7}


@pytest.mark.parametrize("margin", [-0.01, 1.0])
def test_the_margin_is_checked(margin):
    with pytest.raises(ConfigError, match="keep_margin"):
        config_from_dict({"log": {"keep_margin": margin}})
