"""Which INT8 nodes to keep float when a quantised graph misses its parity gate.

ONNX Runtime's quantiser has no accuracy-driven mode (Polygraphy's ``debug precision`` bisects
layers for TensorRT engines only), so this is written here. Each candidate node is quantised
alone (every other one float) on a few calibration feeds, and ranked by what the gate measures:
how far the masks computed through that graph fall from the reference (the caller's
``measure``; the export passes the parity check's mask IoU shortfall). Ranking by how far the
embedding moves instead misleads: in the example model the high-resolution skip convolutions
move the embedding most, yet the masks barely notice them, while its first convolution (which
reads the image: a defect is a few grey levels, about one INT8 step) alone costs 0.13 of mean
mask IoU. The export then keeps float the fewest of the worst nodes that pass the gate, found by
doubling and then bisecting the count (:func:`smallest_passing`): about ``2 log2(N)``
quantise-and-verify rounds for N nodes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

log = logging.getLogger(__name__)

# Calibration feeds the per-node probe quantises on (ranking needs fewer than the export).
PROBE_FEEDS = 8


def node_sensitivity(fp32_path: Path, feeds: Sequence[Dict[str, np.ndarray]],
                     candidates: Sequence[str], work: Path, quantize: Callable[..., object],
                     measure: Callable[[Path], float]) -> Dict[str, float]:
    """Per candidate: ``measure(graph)`` (larger: worse) of the graph with only that node INT8,
    quantised on the first :data:`PROBE_FEEDS` feeds. ``quantize``:
    :func:`samspt.export.int8.quantize_graph`."""
    probe_feeds = list(feeds[:PROBE_FEEDS])
    out = {}
    for name in candidates:
        path = work / "sensitivity_probe.onnx"
        quantize(fp32_path, path, probe_feeds,
                 keep_float=[other for other in candidates if other != name])
        out[name] = float(measure(path))
        log.debug("INT8 sensitivity of %s: %.4f", name, out[name])
    return out


def smallest_passing(count: int, passes: Callable[[int], bool]) -> Tuple[int, List[int]]:
    """The least ``k`` in 1..count with ``passes(k)`` (keeping the worst ``k`` nodes float),
    assuming more float nodes never hurt: doubling until one passes, then bisecting; ``count``
    (everything float) is taken as passing without a call. Returns (k, the k values tried)."""
    tried: List[int] = []

    def check(k: int) -> bool:
        if k >= count:
            return True
        tried.append(k)
        return passes(k)

    low, high = 0, 1                   # low: known to fail (0: the all-INT8 graph that did)
    while not check(high):
        low, high = high, min(2 * high, count)
    while high - low > 1:
        middle = (low + high) // 2
        if check(middle):
            high = middle
        else:
            low = middle
    return high, tried
