"""The prompt-free scan's operating point: the gate (``ViewSettings.scan_min_score``) chosen on
images of a station's own parts, the rates it was measured at, and the ``pred_score`` scale.

An image's scan score is the best model score among the views that answered a defect; an image
no view answered has no score (``-inf`` here: below every gate). At gate ``t`` the scan flags an
image exactly when its score is at least ``t`` (:mod:`samspt.runtime.view_inference`), so one
scan of each image with no gate gives the rates at every gate, as anomalib computes its
thresholds from one pass over the validation scores.

Two ways to set it (``samspt-calibrate``): a false-alarm budget (at most a share of the
defect-free images flagged: the lowest gate that keeps to it, so as many defects as possible
are caught; defect-free images alone suffice), or a recall (at least a share of the defective
images flagged: the highest gate that reaches it). The gate is put midway between the last
score it keeps out and the next one it lets in, so a score that moves a little (another
precision, another machine's arithmetic) does not change which side an image falls on.

``pred_score`` (per row of an :class:`~samspt.runtime.result.InspectionResult`, in [0, 1]):
the model's score mapped piecewise-linearly through (``low``, 0), (gate, 0.5), (``high``, 1),
clipped, so 0.5 is the operating point, as anomalib normalises its scores. ``low``/``high``: the
lowest and highest scan scores of the calibration images (for a prompt: 0 and 1, the range of a
predicted IoU).

Numpy only: it runs in the base install.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from samspt.runtime.errors import ConfigError, InputError

FALSE_ALARM = "max_false_alarm"
RECALL = "min_recall"
OBJECTIVES = (FALSE_ALARM, RECALL)
DEFAULT_MAX_FALSE_ALARM = 0.02
# Where no calibration fixed them: a prompt's score (a predicted IoU) lies in [0, 1].
DEFAULT_LOW, DEFAULT_HIGH = 0.0, 1.0
# The gate's distance from a score when no other score lies beyond it (a predicted IoU step).
_EDGE = 1e-3


def image_scores(flagged: Sequence[bool], scores: Sequence[float]) -> np.ndarray:
    """Scan scores for the rates: an image's score where the scan answered it, else -inf."""
    flags = np.asarray(flagged, bool)
    values = np.asarray(scores, np.float64)
    return np.where(flags, values, -np.inf)


def flagged_share(scores: Sequence[float], gate: Optional[float]) -> Optional[float]:
    """Share of images (scores from :func:`image_scores`) the scan flags at ``gate`` (None:
    every answered image); None for no images."""
    values = np.asarray(scores, np.float64)
    if not values.size:
        return None
    floor = -math.inf if gate is None else gate
    return float(np.mean(np.isfinite(values) & (values >= floor)))


def normals_needed(max_false_alarm: float) -> int:
    """The fewest defect-free images on which a false-alarm rate of ``max_false_alarm`` can be
    measured at all: one image flagged must not already exceed it."""
    return int(math.ceil(1.0 / max_false_alarm - 1e-9))


def auroc(positive: Sequence[float], negative: Sequence[float]) -> Optional[float]:
    """Area under the ROC curve of scores, defective (``positive``) against defect-free: the
    chance that a defective image outscores a defect-free one, ties counted half (Mann-Whitney
    U / (n_pos n_neg)); None without images of both kinds."""
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if not pos.size or not neg.size:
        return None
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


def false_alarm_at_recall(normal: Sequence[float], defective: Sequence[float],
                          recall: float) -> Optional[float]:
    """Share of defect-free images flagged at the highest gate that flags ``recall`` of the
    defective ones; None where no gate reaches it (or no images of a kind)."""
    neg, pos = np.asarray(normal, np.float64), np.asarray(defective, np.float64)
    if not neg.size or not pos.size:
        return None
    finite = np.sort(pos[np.isfinite(pos)])[::-1]
    wanted = max(1, int(math.ceil(recall * pos.size - 1e-9)))
    if finite.size < wanted:
        return None
    return float(np.mean(neg >= finite[wanted - 1]))


def recall_at_false_alarm(normal: Sequence[float], defective: Sequence[float],
                          rate: float) -> Optional[float]:
    """Share of defective images flagged at the lowest gate that flags at most ``rate`` of the
    defect-free ones (strictly above the defect-free score it must keep out); None without
    images of both kinds."""
    neg, pos = np.asarray(normal, np.float64), np.asarray(defective, np.float64)
    if not neg.size or not pos.size:
        return None
    finite = np.sort(neg[np.isfinite(neg)])[::-1]
    allowed = int(math.floor(rate * neg.size + 1e-9))
    if finite.size <= allowed:
        return float(np.mean(np.isfinite(pos)))
    return float(np.mean(pos > finite[allowed]))


@dataclass(frozen=True)
class OperatingPoint:
    """A scan gate and what it was measured at (see the module doc). ``graphs``: the graph
    files (name -> sha256) whose scores it was set on; ``precision``/``backend``: how they
    ran."""

    min_score: float
    objective: str
    target: float
    normal_images: int
    normal_flagged: int
    defective_images: int = 0
    defective_flagged: int = 0
    auroc: Optional[float] = None
    low: float = DEFAULT_LOW
    high: float = DEFAULT_HIGH
    precision: str = "fp32"
    backend: str = "onnxruntime"
    graphs: Dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if not all(math.isfinite(v) for v in (self.min_score, self.low, self.high)):
            raise ConfigError("an operating point's gate and score range must be finite numbers")

    @property
    def false_alarm_rate(self) -> Optional[float]:
        return self.normal_flagged / self.normal_images if self.normal_images else None

    @property
    def recall(self) -> Optional[float]:
        return self.defective_flagged / self.defective_images if self.defective_images else None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "OperatingPoint":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown operating point keys {unknown}")
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise ConfigError(f"incomplete operating point: {exc}") from None

    def pred_score(self, scores: Sequence[float]) -> np.ndarray:
        """Scan scores (-inf: no answer) -> [0, 1], 0.5 at the gate."""
        return normalized_score(scores, self.min_score, self.low, self.high)


def normalized_score(scores: Sequence[float], gate: Optional[float], low: float = DEFAULT_LOW,
                     high: float = DEFAULT_HIGH) -> np.ndarray:
    """Scores mapped piecewise-linearly through (low, 0), (gate, 0.5), (high, 1), clipped to
    [0, 1] (-inf: 0). No gate: the score itself, clipped (no operating point to centre on)."""
    values = np.asarray(scores, np.float64)
    if gate is None:
        out = np.clip(np.nan_to_num(values, neginf=0.0, posinf=1.0), 0.0, 1.0)
        return out.astype(np.float32)
    low, high = min(low, gate), max(high, gate)
    below = 0.5 * (values - low) / (gate - low) if gate > low else np.where(values < gate, 0, .5)
    above = 0.5 + 0.5 * (values - gate) / (high - gate) if high > gate else \
        np.where(values > gate, 1.0, 0.5)
    out = np.where(values >= gate, above, below)
    return np.clip(np.nan_to_num(out, neginf=0.0), 0.0, 1.0).astype(np.float32)


def _gap_gate(inside: float, others: np.ndarray, upward: bool) -> float:
    """A gate between score ``inside`` and the nearest of ``others`` beyond it (above it when
    ``upward``): midway, or ``_EDGE`` beyond ``inside`` when nothing lies there."""
    beyond = others[others > inside] if upward else others[others < inside]
    if not beyond.size:
        return inside + _EDGE if upward else inside - _EDGE
    nearest = beyond.min() if upward else beyond.max()
    return float(0.5 * (inside + nearest))


def check_counts(normal_images: int, defective_images: int,
                 max_false_alarm: Optional[float] = None,
                 min_recall: Optional[float] = None) -> None:
    """Whether this many images can support the objective (exactly one of ``max_false_alarm``
    and ``min_recall``): :class:`InputError` saying how many are needed, before any is
    scanned."""
    if (max_false_alarm is None) == (min_recall is None):
        raise ConfigError("choose exactly one objective: max_false_alarm or min_recall")
    if max_false_alarm is not None:
        if not 0.0 < max_false_alarm < 1.0:
            raise ConfigError(f"the false-alarm budget must lie in (0, 1), got {max_false_alarm}")
        needed = normals_needed(max_false_alarm)
        if normal_images < needed:
            raise InputError(f"{normal_images} defect-free image(s) cannot measure a false-alarm "
                             f"rate of {max_false_alarm:g}: one flagged image would already be "
                             f"{1 / max(normal_images, 1):.3g}; give at least {needed} "
                             f"defect-free images (three times as many for a rate you can rely "
                             f"on), or allow a higher rate")
    else:
        if not 0.0 < min_recall <= 1.0:
            raise ConfigError(f"the recall target must lie in (0, 1], got {min_recall}")
        if not defective_images:
            raise InputError("a recall target needs defective images (--defective DIR); with "
                             "defect-free images alone, set a false-alarm budget")


def choose(normal: Sequence[float], defective: Sequence[float] = (),
           max_false_alarm: Optional[float] = None,
           min_recall: Optional[float] = None) -> OperatingPoint:
    """The operating point for one objective (exactly one of ``max_false_alarm`` and
    ``min_recall``) from the scan scores (:func:`image_scores`) of defect-free (``normal``) and
    defective images. Raises :class:`InputError` where the images cannot support it (too few
    defect-free images for the rate; a recall without defective images; a recall the scan does
    not reach at any gate)."""
    neg = np.asarray(normal, np.float64)
    pos = np.asarray(defective, np.float64)
    check_counts(neg.size, pos.size, max_false_alarm, min_recall)
    answered = np.concatenate([neg[np.isfinite(neg)], pos[np.isfinite(pos)]])
    if max_false_alarm is not None:
        allowed = int(math.floor(max_false_alarm * neg.size + 1e-9))
        finite = np.sort(neg[np.isfinite(neg)])[::-1]
        if finite.size <= allowed:   # every answer may count
            gate = float(answered.min()) - _EDGE if answered.size else DEFAULT_HIGH
        else:                        # keep out the (allowed + 1)-th highest defect-free score
            gate = _gap_gate(float(finite[allowed]), answered, upward=True)
        objective, target = FALSE_ALARM, float(max_false_alarm)
    else:
        finite = np.sort(pos[np.isfinite(pos)])[::-1]
        wanted = int(math.ceil(min_recall * pos.size - 1e-9))
        if finite.size < wanted:
            raise InputError(f"the scan answers {finite.size} of the {pos.size} defective "
                             f"images at all (recall {finite.size / pos.size:.3f} at its lowest "
                             f"gate): a recall of {min_recall:g} cannot be reached with this "
                             f"model; lower the target or train on more defects like these")
        gate = _gap_gate(float(finite[wanted - 1]), answered, upward=False)
        objective, target = RECALL, float(min_recall)
    low = float(answered.min()) if answered.size else DEFAULT_LOW
    high = float(answered.max()) if answered.size else DEFAULT_HIGH
    return OperatingPoint(
        min_score=float(gate), objective=objective, target=target,
        normal_images=int(neg.size), normal_flagged=int(np.sum(neg >= gate)),
        defective_images=int(pos.size), defective_flagged=int(np.sum(pos >= gate)),
        auroc=auroc(pos, neg), low=min(low, gate), high=max(high, gate))
