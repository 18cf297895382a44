"""How two answers of one model (PyTorch, ONNX Runtime, TensorRT) are compared: mask IoU per image
and pass, all its prompts' pixels pooled. One home for the rule export verification and engine
checks share."""

from __future__ import annotations

import numpy as np


def pooled_mask_iou(mine: np.ndarray, theirs: np.ndarray) -> float:
    """IoU of one image's K masks against K others (KxHxW bool each), all intersections over all
    unions. Per prompt, a mask of a dozen pixels would turn one threshold-close pixel into an IoU
    of 0.92; pooled, the figure weighs pixels, not prompts. 1.0 when all masks are empty."""
    union = np.logical_or(mine, theirs).sum()
    return 1.0 if union == 0 else float(np.logical_and(mine, theirs).sum() / union)
