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

# Gates the report lists (those at or above the run's own gate).
GATES = tuple(round(0.05 * i, 2) for i in range(0, 20))


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


def scan_scores(rows: Sequence[Dict[str, float]]) -> List[float]:
    """Each scanned image's score for the ROC: its scan score if the scan flagged it, else -inf
    (below every gate)."""
    return [r["scan_score"] if r["scan_flagged"] else -np.inf for r in rows if "scan_score" in r]


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
                       "defective_flagged": _share(pos, threshold),
                       "defect_free_flagged": _share(neg, threshold)})
    return {"gate": gate, "auroc": auroc(pos, neg), "points": points}


def _share(scores: List[float], threshold: float) -> Optional[float]:
    return float(np.mean([s >= threshold for s in scores])) if scores else None


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
    return lines
