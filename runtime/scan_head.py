"""The scan head in numpy: per-token defect logits from image embeddings (``scan_head.npz`` of a
model folder), and the prompt-free scan's anomaly map and proposals built from them.

The head (``training.model.ScanHead``) is two 1x1 convolutions with a ReLU between, on the first
C channels of a view's embedding (the high-res features packed after them are not read): a few
thousand multiply-adds per token, so it runs here, in numpy, whatever backend ran the encoder,
and needs no graph or engine of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from samspt.runtime.errors import ModelFolderError
from samspt.runtime.views import View

SCAN_HEAD_FILE = "scan_head.npz"
ARRAYS = ("hidden_weight", "hidden_bias", "out_weight", "out_bias")
# Views whose tokens go through one pair of matrix products: large enough that BLAS runs
# efficiently (a product per view is many small calls), small enough that the temporaries stay
# a few MB (a whole 2048 px scan's in one product, ~100 MB of fresh pages, took 0.47 s on the
# 2-core VM, against 0.02 s this way).
VIEWS_PER_PRODUCT = 32


class NumpyScanHead:
    """Per-token defect logits: ``logits(Vx C' xhxw embeddings) -> Vxhxw``."""

    def __init__(self, arrays: Dict[str, np.ndarray], channels: int) -> None:
        missing = [k for k in ARRAYS if k not in arrays]
        if missing:
            raise ModelFolderError(f"the scan head lacks {', '.join(missing)}; export the model "
                                   "again")
        self.hidden_weight = np.asarray(arrays["hidden_weight"], np.float32)
        self.hidden_bias = np.asarray(arrays["hidden_bias"], np.float32)
        self.out_weight = np.asarray(arrays["out_weight"], np.float32).reshape(-1)
        self.out_bias = float(np.asarray(arrays["out_bias"], np.float32).reshape(-1)[0])
        hidden = self.hidden_weight.shape[0]
        if self.hidden_weight.shape != (hidden, channels) or \
                self.hidden_bias.shape != (hidden,) or self.out_weight.shape != (hidden,):
            raise ModelFolderError(f"the scan head's arrays do not fit {channels} embedding "
                                   "channels; export the model again")
        self.channels = channels

    @classmethod
    def load(cls, path: Path, channels: int) -> "NumpyScanHead":
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise ModelFolderError(f"cannot read the scan head {path} ({exc}); export the model "
                                   "again") from None
        return cls(arrays, channels)

    def logits(self, embeddings) -> np.ndarray:
        """Vx C' xhxw embeddings (or a list of 1x C' xhxw) -> Vxhxw logits. Only each view's
        first C channels are read (no copy of the packed high-res features)."""
        blocks = embeddings if isinstance(embeddings, (list, tuple)) else [embeddings]
        views = [view for block in blocks for view in np.asarray(block, np.float32)]
        if not views:
            return np.zeros((0,) + tuple(np.shape(blocks[0])[2:]), np.float32)
        return np.concatenate([self._chunk_logits(views[i:i + VIEWS_PER_PRODUCT])
                               for i in range(0, len(views), VIEWS_PER_PRODUCT)])

    def _chunk_logits(self, views: Sequence[np.ndarray]) -> np.ndarray:
        """A few views' C' xhxw embeddings -> Vxhxw logits, by two matrix products over all of
        their tokens (channels first: the one copy made is the C channels read)."""
        height, width = views[0].shape[1:]
        x = np.empty((self.channels, len(views), height, width), np.float32)
        for i, view in enumerate(views):
            x[:, i] = view[:self.channels]
        hidden = self.hidden_weight @ x.reshape(self.channels, -1)         # K x (V h w)
        hidden += self.hidden_bias[:, None]
        np.maximum(hidden, 0.0, out=hidden)
        return (self.out_weight @ hidden + self.out_bias).reshape(len(views), height, width)


def head_record(channels: int, hidden: int) -> Dict[str, Any]:
    """The manifest's ``scan_head`` entry."""
    return {"file": SCAN_HEAD_FILE, "channels": int(channels), "hidden": int(hidden),
            "output": "per-token logit of a defect in the token's cell"}


def sigmoid_(x: np.ndarray) -> np.ndarray:
    """The logistic of a float32 array, computed in its place (a scan's map is 16 MB at
    2048 px: each temporary of the plain expression is another 16 MB of fresh pages)."""
    np.clip(x, -60.0, 60.0, out=x)
    np.negative(x, out=x)
    np.exp(x, out=x)
    x += 1.0
    return np.reciprocal(x, out=x)


def anomaly_map(views: Sequence[View], token_logits: np.ndarray,
                image_hw: Tuple[int, int]) -> np.ndarray:
    """HxW float32 defect probability: each scan view's token logits resized (bilinear) to its
    input frame, its part inside the image resized to that part's pixels, merged by the
    maximum; 0 where no view reaches. Bilinear never exceeds its inputs, so the map's maximum
    is the highest token probability inside the image."""
    from PIL import Image

    logits = np.full(tuple(image_hw), -np.inf, np.float32)
    for view, grid in zip(views, token_logits):
        size = view.input_size
        frame = np.asarray(Image.fromarray(np.asarray(grid, np.float32), mode="F")
                           .resize((size, size), Image.BILINEAR))
        ox, oy, rw, rh = view.placement
        ix0, iy0, ix1, iy1 = view.inside
        part = np.asarray(Image.fromarray(np.ascontiguousarray(frame[oy:oy + rh, ox:ox + rw]),
                                          mode="F").resize((ix1 - ix0, iy1 - iy0),
                                                           Image.BILINEAR))
        window = logits[iy0:iy1, ix0:ix1]
        np.maximum(window, part, out=window)
    return sigmoid_(logits)


def proposals(prob: np.ndarray, threshold: float, cell: int,
              pad: int = 0, low: Optional[float] = None) -> List[np.ndarray]:
    """Boxes (x0, y0, x1, y1, inclusive image pixels) of the connected regions where ``prob``
    reaches ``low`` (default ``threshold``) that reach ``threshold`` somewhere (hysteresis, as
    an edge detector's two thresholds: a region is found by its peak and drawn to its extent),
    found on a grid of ``cell``-pixel cells (a token's size in the image, so the search costs
    the grid, not the pixels), each grown by ``pad`` pixels."""
    height, width = prob.shape
    cell = max(1, int(cell))
    low = threshold if low is None else min(float(low), threshold)
    gh, gw = -(-height // cell), -(-width // cell)
    padded = np.zeros((gh * cell, gw * cell), bool)
    padded[:height, :width] = prob >= low
    hot = padded.reshape(gh, cell, gw, cell).any(axis=(1, 3))
    peaks = np.zeros_like(padded)
    peaks[:height, :width] = prob >= threshold
    seeds = peaks.reshape(gh, cell, gw, cell).any(axis=(1, 3))
    seen = np.zeros_like(hot)
    boxes = []
    for start in zip(*np.nonzero(seeds)):
        if seen[start]:
            continue
        seen[start] = True
        stack, cells = [start], []
        while stack:
            y, x = stack.pop()
            cells.append((y, x))
            for ny in range(max(0, y - 1), min(gh, y + 2)):
                for nx in range(max(0, x - 1), min(gw, x + 2)):
                    if hot[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
        ys, xs = np.array(cells).T
        window = padded[ys.min() * cell:(ys.max() + 1) * cell, xs.min() * cell:(xs.max() + 1) * cell]
        rows, cols = np.flatnonzero(window.any(axis=1)), np.flatnonzero(window.any(axis=0))
        x0, y0 = xs.min() * cell + cols[0], ys.min() * cell + rows[0]
        x1, y1 = xs.min() * cell + cols[-1], ys.min() * cell + rows[-1]
        boxes.append(np.array([max(0, x0 - pad), max(0, y0 - pad), min(width - 1, x1 + pad),
                               min(height - 1, y1 + pad)], np.float32))
    return boxes
