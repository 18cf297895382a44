"""Which INT8 nodes to keep float when a quantised graph misses its parity gate.

ONNX Runtime's quantiser has no accuracy-driven mode (Polygraphy's ``debug precision`` bisects
layers for TensorRT engines only), so this is written here. Each candidate node is quantised
alone (every other one float) on a few calibration feeds, and ranked by how far the graph's
output moves from the FP32 graph's (largest first): a trained conv encoder's first convolution
and the convolutions reading a residual stream move it most. The export then keeps float the
fewest of the worst nodes that pass the gate, found by doubling and then bisecting the count
(:func:`smallest_passing`): about ``2 log2(N)`` quantise-and-verify rounds for N nodes.
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
                     candidates: Sequence[str], work: Path,
                     quantize: Callable[..., object]) -> Dict[str, float]:
    """Per candidate: max |output - FP32 output| / RMS(FP32 output) over the probe feeds, with
    only that node INT8. ``quantize``: :func:`samspt.export.int8.quantize_graph`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    probe_feeds = list(feeds[:PROBE_FEEDS])
    reference = ort.InferenceSession(str(fp32_path), options, providers=["CPUExecutionProvider"])
    refs = [reference.run(None, feed)[0] for feed in probe_feeds]
    scale = float(np.sqrt(np.mean([np.mean(np.square(r)) for r in refs]))) or 1.0
    out = {}
    for name in candidates:
        path = work / "sensitivity_probe.onnx"
        quantize(fp32_path, path, probe_feeds,
                 keep_float=[other for other in candidates if other != name])
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        error = max(float(np.abs(session.run(None, feed)[0] - ref).max())
                    for feed, ref in zip(probe_feeds, refs))
        out[name] = error / scale
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
