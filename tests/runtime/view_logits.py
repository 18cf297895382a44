"""The reference the mask-pasting tests compare with: a view's low-res logits pasted whole into
the image (every pixel resized, not only where the mask can be), background outside the view."""

from __future__ import annotations

import numpy as np

from samspt.runtime.postprocess import BACKGROUND_LOGIT, paste_max
from samspt.runtime.views import View


def paste_logits(view: View, low_res: np.ndarray) -> np.ndarray:
    """Bx1xLxL low-res logits of one view -> BxHxW float32 logits in image pixels."""
    canvas = np.full((low_res.shape[0],) + tuple(view.image_hw), BACKGROUND_LOGIT, np.float32)
    return paste_max(canvas, view, low_res)
