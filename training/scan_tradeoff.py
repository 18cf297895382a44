"""The prompt-free scan's operating points: how many defective and defect-free images it flags
at each gate (``ViewSettings.scan_min_score``), from one evaluation run.

A scan's score is the best model score among the views that answered a defect (0 where none
did; :mod:`samspt.runtime.view_inference`), so an image the scan flagged stays flagged under a
higher gate ``t`` exactly when its score is at least ``t`` (with ``min_defect_area`` 1; a larger
area floor can drop a few more): one run at the model's gate gives every stricter gate's figures,
the way anomalib reports image-level AUROC and thresholds from one pass over the scores.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from samspt.runtime.operating_point import (auroc, false_alarm_at_recall, flagged_share,
                                            image_scores, recall_at_false_alarm)

# Gates the report lists (those at or above the run's own gate).
GATES = tuple(round(0.05 * i, 2) for i in range(0, 20))
# Where a line works: defect-free images flagged at these shares of defective ones flagged, and
# defective ones flagged at these shares of defect-free ones flagged (each at its own best gate).
RECALLS = (0.90, 0.95, 0.99)
FALSE_ALARMS = (0.01, 0.02, 0.05)


def scan_scores(rows: Sequence[Dict[str, float]]) -> List[float]:
    """Each scanned image's score for the ROC: its scan score if the scan flagged it or scores
    every image (``scan_scored``: a scan head's map maximum), else -inf (below every gate)."""
    rows = [r for r in rows if "scan_score" in r]
    return list(image_scores([bool(r["scan_flagged"]) or bool(r.get("scan_scored"))
                              for r in rows], [r["scan_score"] for r in rows]))


def trade_off(defective: Sequence[Dict[str, float]], defect_free: Sequence[Dict[str, float]],
              gate: Optional[float] = None, gates: Sequence[float] = GATES) -> Dict[str, object]:
    """``{"gate", "auroc", "points": [{"min_score", "defective_flagged",
    "defect_free_flagged"}, ...]}`` for the ``gates`` at or above the run's ``gate`` (below it,
    views were already dropped, so those figures cannot be known; None: no gate, all of them)."""
    pos, neg = scan_scores(defective), scan_scores(defect_free)
    floor = -np.inf if gate is None else gate
    points = []
    for threshold in [g for g in gates if g >= floor] or [floor]:
        points.append({"min_score": threshold,
                       "defective_flagged": flagged_share(pos, threshold),
                       "defect_free_flagged": flagged_share(neg, threshold)})
    return {"gate": gate, "auroc": auroc(pos, neg), "points": points,
            "false_alarm_at_recall": {f"{r:g}": false_alarm_at_recall(neg, pos, r)
                                      for r in RECALLS},
            "recall_at_false_alarm": {f"{r:g}": recall_at_false_alarm(neg, pos, r)
                                      for r in FALSE_ALARMS}}


def format_trade_off(block: Dict[str, object]) -> List[str]:
    """Table lines: one per gate, the shares of defective and defect-free images flagged."""
    if not block or not block.get("points"):
        return []
    value = block.get("auroc")
    lines = [f"scan trade-off (gate = samspt-export --scan-min-score / "
             f"Inspector(scan_min_score=...); run at "
             f"{'no gate' if block['gate'] is None else format(block['gate'], 'g')}; image AUROC "
             f"{'-' if value is None else f'{value:.3f}'}):",
             f"{'min score':>10} {'defective flagged':>18} {'defect-free flagged':>20}"]
    for point in block["points"]:
        d, f = point["defective_flagged"], point["defect_free_flagged"]
        lines.append(f"{point['min_score']:>10.2f} {'-' if d is None else f'{d:.3f}':>18} "
                     f"{'-' if f is None else f'{f:.3f}':>20}")
    for key, text, unit in (("false_alarm_at_recall", "defect-free flagged when catching", "of "
                             "defective"), ("recall_at_false_alarm", "defective flagged when "
                                            "allowing", "of defect-free")):
        values = block.get(key) or {}
        if values:
            parts = [f"{100 * float(share):g} % {unit}: "
                     f"{'not reached' if v is None else f'{100 * v:.1f} %'}"
                     for share, v in values.items()]
            lines.append(f"{text} " + "; ".join(parts))
    return lines
