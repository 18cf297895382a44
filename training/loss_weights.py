"""The weights of the training loss's terms, torch-free: the run configuration's ``loss``
section is this dataclass; :mod:`samspt.training.losses` computes the terms."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LossWeights:
    """Weights of the loss terms (the run configuration's ``loss`` section). The draft only
    learns if it is supervised (``draft > 0``)."""

    bce: float = 1.0
    dice: float = 1.0
    draft: float = 1.0
    final: float = 1.0
    score: float = 0.0  # MSE between the predicted score and the final mask's true IoU
    # BCE is averaged separately inside each prompt's box (grown by ``focus_margin`` of its size
    # on every side) and outside it, the outside mean weighted by ``outside``. Averaged over the
    # whole image instead, a defect covering 0.1% of it drowns in background and the model
    # collapses to "no defect anywhere".
    focus_margin: float = 0.25
    outside: float = 0.5
    # Class-balanced BCE when > 0: inside the focus, the mean over defect pixels weighs
    # ``defect_share`` and the mean over background pixels the rest (prompts with no defect
    # pixels: background only). Thin defects fill a small share of their box; unbalanced,
    # "nothing" is the cheap answer. 0.5 balances; more favours recall.
    defect_share: float = 0.0
    # Weight of the mask terms of prompts whose target is empty (a box on a defect-free area):
    # 1 trains the masks to answer them empty; below 1 the masks learn defects and the score
    # (its target: the answer's IoU, 0 for a mask drawn where there is nothing) learns to tell
    # them apart, and the model folder's prompt gate answers them empty (SAM 2's object score).
    empty_mask: float = 1.0
    # Weight of the scan head's loss (models with ModelConfig.scan_head): BCE of each token's
    # defect logit against "the view's defect mask reaches this token's cell".
    scan_head: float = 1.0
