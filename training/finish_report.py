"""What the finish stage measured (:class:`FinishReport`), the scan's gate rule
(:func:`choose_gate`) and the goals a caller may set (:data:`GOALS`).

**Gate rule**: from the scan's trade-off on the validation images, measured once with no gate
(:mod:`samspt.training.scan_tradeoff`), the lowest gate (no gate first, then 0.00, 0.05, ...)
at which at most ``false_alarm`` (default 2 %) of the defect-free images are flagged and at
least one defective image still is; when no gate reaches that, the gate with the largest
(defective flagged - defect-free flagged), the lowest of equals. No gate where the false-alarm
rate cannot be measured (no defect-free validation images, as in NEU-Seg), where there is no
defective image to flag, or for a whole-image model (its scan is one view).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from samspt.runtime.errors import ConfigError

DEFAULT_FALSE_ALARM = 0.02
BOX, GRABCUT = "box as mask", "GrabCut"

# Goals a caller may set: key -> (what, comparison, is a share, value of a report).
GOALS: Dict[str, tuple] = {
    "final_miou": ("final mIoU, tight boxes", ">=", False, lambda r: r.model.final_miou),
    "draft_miou": ("draft mIoU, tight boxes", ">=", False, lambda r: r.model.draft_miou),
    "final_biou": ("final boundary IoU", ">=", False, lambda r: r.model.final_biou),
    "class_mean_miou": ("class-mean final mIoU", ">=", False, lambda r: r.model.class_mean_miou),
    "defect_free_empty": ("boxes on defect-free images answered empty", ">=", True,
                          lambda r: r.model.defect_free_empty),
    "scan_defective_flagged": ("scan: defective images flagged, at the gate", ">=", True,
                               lambda r: r.gate.defective_flagged),
    "scan_defect_free_flagged": ("scan: defect-free images flagged, at the gate", "<=", True,
                                 lambda r: r.gate.defect_free_flagged),
    "scan_auroc": ("scan: image AUROC", ">=", False,
                   lambda r: r.scan.auroc if r.scan else None),
}


# ----------------------------------------------------------------------------- report
@dataclass
class Figures:
    """One predictor's box-protocol figures on the validation records (means over images;
    None where no image is behind one). ``per_class``: class -> {"n_images", "final_miou",
    "final_biou", "draft_miou"}."""

    name: str
    n_defective: int
    n_defect_free: int
    final_miou: Optional[float]
    final_biou: Optional[float]
    draft_miou: Optional[float]
    draft_biou: Optional[float]
    class_mean_miou: Optional[float]
    defect_free_empty: Optional[float]
    per_class: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_report(cls, name: str, report: Mapping[str, Any]) -> "Figures":
        per_class = {c: {"n_images": b["n_images"], "final_miou": b["final"]["miou"],
                         "final_biou": b["final"]["biou"], "draft_miou": b["draft"]["miou"]}
                     for c, b in report["per_class"].items()}
        return cls(name, report["n_defective"], report["defect_free"]["n_images"],
                   report["final"]["miou"], report["final"]["biou"], report["draft"]["miou"],
                   report["draft"]["biou"], report["class_mean"]["final"]["miou"],
                   report["defect_free"]["empty_rate"], per_class)


@dataclass
class ScanPoint:
    """Shares of validation images the scan flags at one gate (None: no gate)."""

    gate: Optional[float]
    defective_flagged: Optional[float]
    defect_free_flagged: Optional[float]


@dataclass
class ScanFigures:
    """The prompt-free scan, measured once with no gate: ``points`` (no gate first, then every
    gate of :data:`samspt.training.scan_tradeoff.GATES`), image AUROC, merged-mask mIoU."""

    n_defective: int
    n_defect_free: int
    miou_no_gate: Optional[float]
    auroc: Optional[float]
    points: List[ScanPoint]


@dataclass
class GatePick:
    """The scan's operating point: ``gate`` (None: every scan view counts), why, and the
    expected shares flagged (validation images; ``per_class``: defective classes)."""

    gate: Optional[float]
    rule: str
    false_alarm: float
    defective_flagged: Optional[float] = None
    defect_free_flagged: Optional[float] = None
    n_defective: int = 0
    n_defect_free: int = 0
    per_class: Dict[str, Optional[float]] = field(default_factory=dict)


@dataclass
class GoalLine:
    key: str
    what: str
    comparison: str
    target: float
    reached: Optional[float]
    share: bool

    @property
    def met(self) -> bool:
        if self.reached is None:
            return False
        return self.reached >= self.target if self.comparison == ">=" else \
            self.reached <= self.target


@dataclass
class HeldOutFigures:
    """The exported folder's figures on the run's held-out images (``data.test_fraction``):
    never trained on, validated on, or used to choose the kept weights, gates or flips. Boxes as
    the folder answers them (its prompt gate and flips); the scan scanned once with no gate, its
    rates at the folder's gate (``defective_flagged``, ``defect_free_flagged``) and its
    trade-off (``scan``); ``box``: the box itself as the mask on the same images."""

    model: Figures
    box: Figures
    scan: Optional[ScanFigures]
    gate: Optional[float]
    defective_flagged: Optional[float]
    defect_free_flagged: Optional[float]


@dataclass
class FinishReport:
    """What :func:`finish_run` measured and wrote."""

    run_dir: Path
    model_dir: Path
    card: Path
    report_json: Path
    weights: Path
    weights_step: Optional[int]
    model: Figures
    baselines: Dict[str, Optional[Figures]]      # BOX, GRABCUT; None: skipped (see notes)
    scan: Optional[ScanFigures]                  # None: a whole-image model, or no scan
    gate: GatePick
    goals: List[GoalLine]
    pictures: Dict[str, Path]                    # curves, overlays (those written)
    notes: List[str]
    seconds: Dict[str, float]
    backend: str = ""
    verification: Optional[Dict[str, Any]] = None
    files: Dict[str, int] = field(default_factory=dict)   # model folder: name -> bytes
    prompt_gate: Optional[Any] = None   # prompt_gate.PromptGatePick; None: a whole-image model
    flips: Optional[Any] = None         # prompt_gate.FlipsPick; None: not measured
    held_out: Optional[HeldOutFigures] = None   # None: no images held out

    @property
    def scan_min_score(self) -> Optional[float]:
        return self.gate.gate

    def to_dict(self) -> Dict[str, Any]:
        def plain(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, dict):
                return {str(k): plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            if isinstance(value, float) and not math.isfinite(value):
                return None
            return value

        out = plain(dataclasses.asdict(self))
        out["goals"] = [dict(g, met=line.met) for g, line in zip(out["goals"], self.goals)]
        out["scan_min_score"] = self.scan_min_score
        return out


# ----------------------------------------------------------------------------- gate
def choose_gate(scan: Optional[ScanFigures], false_alarm: float = DEFAULT_FALSE_ALARM,
                whole_image: bool = False) -> GatePick:
    """The scan's gate from its trade-off on the validation images (the rule: module doc)."""
    if whole_image:
        return GatePick(None, "a whole-image model: its scan is one view, nothing to gate",
                        false_alarm)
    if scan is None or not scan.n_defective:
        return GatePick(None, "no defective validation images: the scan's trade-off cannot be "
                              "measured, so no gate is set (every scan view counts)", false_alarm)
    none = scan.points[0]
    counts = dict(n_defective=scan.n_defective, n_defect_free=scan.n_defect_free)
    if not scan.n_defect_free:
        return GatePick(None, "no defect-free validation images: the scan's false-alarm rate "
                              "cannot be measured, so no gate is set (every scan view counts); "
                              "choose one on images of clean parts (samspt-eval --model DIR "
                              "prints the trade-off)", false_alarm,
                        none.defective_flagged, none.defect_free_flagged, **counts)
    reaching = [p for p in scan.points
                if p.defect_free_flagged <= false_alarm + 1e-12 and p.defective_flagged > 0]
    if reaching:
        pick = reaching[0]
        rule = (f"the lowest gate at which at most {_pct(false_alarm)} of the defect-free "
                f"validation images are flagged (target false-alarm rate) and defective ones "
                f"still are")
    else:
        pick = max(scan.points, key=lambda p: p.defective_flagged - p.defect_free_flagged)
        rule = (f"no gate keeps the defect-free validation images flagged at or under "
                f"{_pct(false_alarm)} while flagging defective ones: the gate with the largest "
                f"(defective flagged - defect-free flagged), the lowest of equals")
    return GatePick(pick.gate, rule, false_alarm, pick.defective_flagged,
                    pick.defect_free_flagged, **counts)


def calibrated_point(images: Sequence[Mapping[str, Any]], false_alarm: float):
    """The scan's operating point chosen as ``samspt-calibrate`` chooses it
    (:func:`samspt.runtime.operating_point.choose`, a false-alarm budget) from the validation
    images' scan scores (per-image report rows, scanned with no gate), or None where there are
    too few defect-free images to measure the budget, or no defective image."""
    from samspt.runtime.operating_point import choose, normals_needed
    from samspt.training.scan_tradeoff import scan_scores

    rows = [r for r in images if "scan_flagged" in r]
    free = [r for r in rows if r.get("defect_free")]
    defective = [r for r in rows if not r.get("defect_free")]
    if not defective or len(free) < normals_needed(false_alarm):
        return None
    return choose(scan_scores(free), scan_scores(defective), max_false_alarm=false_alarm)


def gate_of_point(point, false_alarm: float) -> GatePick:
    """The :class:`GatePick` of a calibrated operating point."""
    return GatePick(point.min_score,
                    f"calibrated on the validation images as samspt-calibrate does: the lowest "
                    f"gate at which at most {_pct(false_alarm)} of the defect-free images are "
                    f"flagged ({point.normal_flagged} of {point.normal_images})", false_alarm,
                    point.recall, point.false_alarm_rate, point.defective_images,
                    point.normal_images)


def _pct(value: float) -> str:
    return f"{100 * value:g} %"


def scan_figures(report: Mapping[str, Any]) -> Optional[ScanFigures]:
    """The scan's figures of an evaluation report (:func:`~samspt.training.evaluation.
    evaluate_records`) run with no gate; None where it has no trade-off (no defective image)."""
    scan = report.get("scan") or {}
    trade = scan.get("trade_off")
    if not trade:
        return None
    points = [ScanPoint(None, scan["defective_flagged"], scan["defect_free_flagged"])]
    points += [ScanPoint(p["min_score"], p["defective_flagged"], p["defect_free_flagged"])
               for p in trade["points"]]
    return ScanFigures(report["n_defective"], report["defect_free"]["n_images"], scan["miou"],
                       trade["auroc"], points)


def flagged_at(images: Sequence[Mapping[str, Any]], gate: Optional[float]) -> Optional[float]:
    """Share of ``images`` (per-image report rows) the scan flags at ``gate``."""
    from samspt.runtime.operating_point import flagged_share
    from samspt.training.scan_tradeoff import scan_scores

    return flagged_share(scan_scores(images), gate)


def check_goals(goals: Optional[Mapping[str, float]]) -> Dict[str, float]:
    """``goals`` checked against :data:`GOALS` (ConfigError naming the known keys)."""
    out = {}
    for key, value in (goals or {}).items():
        if key not in GOALS:
            raise ConfigError(f"unknown goal {key!r}; known goals: {', '.join(GOALS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value):
            raise ConfigError(f"goal {key} must be a number, got {value!r}")
        out[key] = float(value)
    return out


def goal_lines(report: "FinishReport", goals: Mapping[str, float]) -> List["GoalLine"]:
    return [GoalLine(key, GOALS[key][0], GOALS[key][1], target, GOALS[key][3](report),
                     GOALS[key][2]) for key, target in goals.items()]
