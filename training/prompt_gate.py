"""The prompts' gate (``ViewSettings.prompt_min_score``): a box the model scores below it is
answered empty. The finish stage chooses it on the validation images.

The masks of the one command's recipe learn defects only (``loss.empty_mask`` 0: a mask trained
to vanish on boxes around clean areas learns both tasks worse), and the score head learns what
the answer is worth (its target: the answer's IoU, 0 for a mask drawn where there is nothing),
as SAM 2's object score decides whether a prompt holds an object at all.

**Gate rule**: from one evaluation with no gate (each prompt's score kept,
:class:`~samspt.training.evaluation.ImageResult`), the candidate gates are no gate and, for
every defect-free validation box, the least gate (on a 1e-4 grid) that answers it empty. A gate
may cost the defective boxes at most ``max_miou_cost`` (default 0.02) of final mIoU against no
gate: the task is the defect's outline, and a gate that answers real defects empty to silence
clean boxes trades the wrong way. Among those, the pick is the lowest at which at least
``target_empty`` (default 95 %) of the defect-free boxes are answered empty, or, where none
reaches it, the one answering the most of them empty (the lowest of equals). No gate where there
is nothing to trade: no defect-free or no defective validation image, no scores, every
defect-free box already answered empty, or no gate within the cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from samspt.training.evaluation import ImageResult

DEFAULT_TARGET_EMPTY = 0.95
DEFAULT_MAX_MIOU_COST = 0.02


@dataclass
class GatePoint:
    """Figures of the validation boxes at one prompt gate (None: no gate)."""

    gate: Optional[float]
    final_miou: float
    empty_rate: float


@dataclass
class PromptGatePick:
    """The prompts' gate chosen, why, and its figures beside no gate's."""

    gate: Optional[float]
    rule: str
    target_empty: float
    max_miou_cost: float = DEFAULT_MAX_MIOU_COST
    final_miou: Optional[float] = None
    empty_rate: Optional[float] = None
    final_miou_no_gate: Optional[float] = None
    empty_rate_no_gate: Optional[float] = None
    n_defective: int = 0
    n_defect_free: int = 0
    points: List[GatePoint] = field(default_factory=list)


def gate_above(score: float) -> float:
    """The least gate on a 1e-4 grid that a prompt scored ``score`` falls below."""
    return (math.floor(score * 1e4) + 1) / 1e4


def gate_point(results: Sequence[ImageResult], gate: Optional[float]) -> GatePoint:
    """Final mIoU over the defective results and the share of defect-free ones answered empty,
    at ``gate``."""
    gated = [r.gated(gate) for r in results]
    ious = [r.scores["final_iou"] for r in gated if not r.is_defect_free]
    empty = [r.scores["final_empty"] for r in gated if r.is_defect_free]
    return GatePoint(gate, float(np.mean(ious)) if ious else 0.0,
                     float(np.mean(empty)) if empty else 0.0)


def choose_prompt_gate(results: Sequence[ImageResult],
                       target_empty: float = DEFAULT_TARGET_EMPTY,
                       max_miou_cost: float = DEFAULT_MAX_MIOU_COST) -> PromptGatePick:
    """The prompts' gate from ungated validation results (the rule: module doc)."""
    defective = [r for r in results if not r.is_defect_free]
    free = [r for r in results if r.is_defect_free]
    counts = dict(n_defective=len(defective), n_defect_free=len(free))
    if not defective or not free:
        return PromptGatePick(None, "no defective or no defect-free validation image: nothing "
                                    "to trade, so no gate (every box gets its mask)",
                              target_empty, final_miou=(gate_point(results, None).final_miou
                                                        if defective else None), **counts)
    if any("final_score" not in r.scores for r in results):
        return PromptGatePick(None, "the predictor gave no scores: no gate", target_empty,
                              **counts)
    none = gate_point(results, None)
    figures = dict(final_miou_no_gate=none.final_miou, empty_rate_no_gate=none.empty_rate,
                   **counts)
    if none.empty_rate >= 1.0:
        return PromptGatePick(None, "every defect-free validation box is answered empty "
                                    "already: no gate", target_empty, max_miou_cost,
                              none.final_miou, none.empty_rate, points=[none], **figures)
    candidates = sorted({gate_above(r.scores["final_score"]) for r in free
                         if not r.scores["final_empty"]})
    points = [none] + [gate_point(results, g) for g in candidates]
    affordable = [p for p in points if p.final_miou >= none.final_miou - max_miou_cost - 1e-12]
    reaching = [p for p in affordable if p.empty_rate >= target_empty]
    if reaching:
        pick = reaching[0]
        rule = (f"the lowest gate at which at least {100 * target_empty:g} % of the boxes on "
                f"defect-free validation images are answered empty, at a cost of at most "
                f"{max_miou_cost:g} final mIoU")
    else:
        pick = max(affordable, key=lambda p: p.empty_rate)    # the first (lowest) of equals
        rule = (f"no gate answers {100 * target_empty:g} % of the defect-free validation boxes "
                f"empty at a cost of at most {max_miou_cost:g} final mIoU: "
                + ("the gate within that cost answering the most of them empty"
                   if pick.gate is not None else "none answers more of them empty than no gate"))
    return PromptGatePick(pick.gate, rule, target_empty, max_miou_cost, pick.final_miou,
                          pick.empty_rate, points=points, **figures)


# A flip count above 1 must gain this much validation final mIoU (at its own gate) over none:
# each flip is one more run of every view of a prompt.
FLIP_MIN_GAIN = 0.005


@dataclass
class FlipsPick:
    """Test-time flips chosen (``ViewSettings.flips``), why, and each count's prompt gate pick
    on the validation images (``gates[flips]``: the one shipped)."""

    flips: int
    rule: str
    gates: Dict[int, PromptGatePick] = field(default_factory=dict)

    @property
    def gate(self) -> PromptGatePick:
        return self.gates[self.flips]

    @property
    def final_miou(self) -> Dict[int, Optional[float]]:
        return {n: p.final_miou for n, p in self.gates.items()}

    @property
    def empty_rate(self) -> Dict[int, Optional[float]]:
        return {n: p.empty_rate for n, p in self.gates.items()}


def choose_flips(results: Dict[int, Sequence[ImageResult]],
                 target_empty: float = DEFAULT_TARGET_EMPTY,
                 max_miou_cost: float = DEFAULT_MAX_MIOU_COST,
                 min_gain: float = FLIP_MIN_GAIN) -> FlipsPick:
    """The flip count to ship, and its prompt gate, from ungated validation results per flip
    count (1, no flips, among them).

    No flips get the gate of :func:`choose_prompt_gate`. A count above 1 must answer at least
    as many defect-free boxes empty as that (or ``target_empty`` of them): its gate is
    :func:`choose_prompt_gate`'s where that reaches it, else the lowest gate that does (mirror
    images outvote a clean box's empty answer more often than they add to a defect's, so their
    gate sits higher). The count shipped is the one gaining the most final mIoU over no flips
    at those gates, at least ``min_gain``; else no flips."""
    gates = {1: choose_prompt_gate(results[1], target_empty, max_miou_cost)}
    base = gates[1]
    needed = min(base.empty_rate if base.empty_rate is not None else 0.0, target_empty)
    for count, found in results.items():
        if count == 1:
            continue
        pick = choose_prompt_gate(found, target_empty, max_miou_cost)
        if pick.empty_rate is not None and pick.empty_rate < needed - 1e-12:
            pick = choose_prompt_gate(found, needed, max_miou_cost=1.0)
        gates[count] = pick
    if base.final_miou is None:
        return FlipsPick(1, "no validation figures to compare: no flips", gates)
    good = [(p.final_miou - base.final_miou, n) for n, p in gates.items()
            if n != 1 and p.final_miou is not None
            and p.final_miou - base.final_miou >= min_gain - 1e-12
            and (p.empty_rate or 0.0) >= needed - 1e-12]
    if not good:
        return FlipsPick(1, f"no flip count gains {min_gain:g} final mIoU on the validation "
                            "images at a gate that answers as many defect-free boxes empty: no "
                            "flips", gates)
    gain, flips = max(good)
    return FlipsPick(flips, f"{flips} flips gain {gain:.3f} final mIoU on the validation images "
                            f"over none, each at a gate answering at least "
                            f"{100 * needed:.1f} % of the defect-free boxes empty (at least "
                            f"{min_gain:g} needed), at {flips}x the inference time of a box",
                     gates)
