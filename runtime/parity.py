"""How two answers of one model (PyTorch, ONNX Runtime, TensorRT) are compared: mask IoU per image
and pass, all its prompts' pixels pooled, and the gates they must reach. One home for the rule
and the gates export verification and engine checks share."""

from __future__ import annotations

from typing import Any, Dict, Mapping

import numpy as np


def pooled_mask_iou(mine: np.ndarray, theirs: np.ndarray) -> float:
    """IoU of one image's K masks against K others (KxHxW bool each), all intersections over all
    unions. Per prompt, a mask of a dozen pixels would turn one threshold-close pixel into an IoU
    of 0.92; pooled, the figure weighs pixels, not prompts. 1.0 when all masks are empty."""
    union = np.logical_or(mine, theirs).sum()
    return 1.0 if union == 0 else float(np.logical_and(mine, theirs).sum() / union)


# The mask IoU (pooled per image, :func:`pooled_mask_iou`) a compiled form must reach against
# its reference, mean over the check's images and minimum over them, by what is compared:
# ``export``: the exported ONNX graphs against the PyTorch model they came from (FP32 must be
# PyTorch itself; its minimum is open because a random or barely trained model's masks can
# consist of threshold-close pixels only); ``engines``: TensorRT engines against ONNX Runtime's
# graphs of the same precision (FP32 engines run TF32 tensor-core math where the GPU has it).
# INT8 against FP32 in both.
PARITY_GATES: Dict[str, Dict[str, Dict[str, float]]] = {
    "export": {"fp32": {"mean_iou": 0.999, "min_iou": 0.0},
               "fp16": {"mean_iou": 0.99, "min_iou": 0.97},
               "int8": {"mean_iou": 0.97, "min_iou": 0.85}},
    "engines": {"fp32": {"mean_iou": 0.995, "min_iou": 0.97},
                "fp16": {"mean_iou": 0.99, "min_iou": 0.97},
                "int8": {"mean_iou": 0.97, "min_iou": 0.85}},
}


def meets_gate(figures: Mapping[str, Any], gate: Mapping[str, float], prefix: str = "") -> bool:
    """Whether parity ``figures`` (``mean_iou``, ``min_iou``, each under ``prefix``) reach
    ``gate`` (one entry of :data:`PARITY_GATES`)."""
    return (figures[prefix + "mean_iou"] >= gate["mean_iou"]
            and figures[prefix + "min_iou"] >= gate["min_iou"])
