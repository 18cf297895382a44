"""What a prompt-free scan costs beside its encoder runs: ``scan_vs_encoder_2k`` in the
benchmark record.

A 2048x2048 tile of a defect-free part with one small defect pasted in (the bundled samples: a
defect-free tile repeated, a blowhole cut from a defective one) is scanned by a model with a
scan head (find, then segment: :mod:`samspt.runtime.find_segment`), and the same scan views are
run through the encoder alone, each timed in turns with the other (interleaved, so a noisy
machine slows both alike). The ratio is the scan's median over the encoder runs' median: 1 would
mean the head, the anomaly map, the proposals' views and the decoders cost nothing.

The figure is for a scan that answers the defect: where the model's own gate
(``views.scan_min_score``) leaves the pasted defect unflagged, the scan is timed at a gate just
under the anomaly map's peak inside the defect's box, so its region goes through the decoders as
it would on a model that finds it; the record says which gate was used (``gate``,
``gate_lowered``) and how the model's own gate answered (``flagged_at_own_gate``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np

log = logging.getLogger(__name__)

SIDE = 2048


def defect_tile(side: int = SIDE) -> Tuple[np.ndarray, Tuple[int, int, int, int]]:
    """HxWx3 uint8: the bundled defect-free sample repeated to ``side``, with the bundled
    blowhole (its mask's box, grown by half) pasted once, off centre; and the blowhole's box
    (x0, y0, x1, y1) in the tile."""
    from samspt.runtime.preprocess import as_rgb_uint8
    from samspt.runtime.prompts import mask_box
    from samspt.runtime.samples import bundled_samples

    samples = bundled_samples()
    free = next(s for s in samples if s.defect_class.lower().startswith("free"))
    hole = next(s for s in samples if s.defect_class.lower().startswith("blowhole"))
    base = as_rgb_uint8(free.image())
    reps = (-(-side // base.shape[0]), -(-side // base.shape[1]), 1)
    tile = np.tile(base, reps)[:side, :side].copy()
    image, mask = as_rgb_uint8(hole.image()), hole.mask()
    x0, y0, x1, y1 = (int(v) for v in mask_box(mask))
    grow_x, grow_y = (x1 - x0) // 2 + 1, (y1 - y0) // 2 + 1
    part = image[max(0, y0 - grow_y):y1 + grow_y, max(0, x0 - grow_x):x1 + grow_x]
    top, left = side // 3, side // 3 + 101
    tile[top:top + part.shape[0], left:left + part.shape[1]] = part
    ox, oy = left - max(0, x0 - grow_x), top - max(0, y0 - grow_y)
    return tile, (x0 + ox, y0 + oy, x1 + ox, y1 + oy)


def measure_scan_cost(model_dir: Path, threads: int = 0, reps: int = 5,
                      warmup: int = 1, side: int = SIDE) -> Dict[str, Any]:
    """``{"scan_vs_encoder_2k": ratio or None, "scan_cost": what it rests on}`` (None, with
    the reason, for a folder without a scan head)."""
    from samspt.runtime import Inspector
    from samspt.runtime.backend import encode_in_chunks
    from samspt.runtime.view_inference import MAX_VIEWS_PER_ENCODE
    from samspt.runtime.views import scan_views
    from samspt.runtime.preprocess import view_input

    tile, (x0, y0, x1, y1) = defect_tile(side)
    with Inspector(model_dir, backend="onnxruntime", threads=threads) as ins:
        if not ins.scan_scores_every_image:
            return {"scan_vs_encoder_2k": None,
                    "scan_cost": {"model_dir": str(Path(model_dir)),
                                  "skipped": "the model has no scan head"}}
        own = ins.inspect(tile)
        own_gate = ins.view_settings.scan_min_score if ins.view_settings else None
        peak = float(own.anomaly_map[y0:y1, x0:x1].max())
    flagged_own = bool(own.pred_label[0])
    gate = own_gate if flagged_own else peak * 0.999
    with Inspector(model_dir, backend="onnxruntime", threads=threads,
                   scan_min_score=gate) as ins:
        views = scan_views(tile.shape[:2], ins.image_size, ins.view_settings)
        inputs = [np.stack([view_input(v, tile, ins.pixel_mean, ins.pixel_std)
                            for v in views[i:i + MAX_VIEWS_PER_ENCODE]])
                  for i in range(0, len(views), MAX_VIEWS_PER_ENCODE)]

        def encoder_only() -> None:
            for batch in inputs:
                encode_in_chunks(ins.graphs, batch)

        scans, encoders = [], []
        result = None
        for rep in range(warmup + reps):
            t0 = time.perf_counter()
            result = ins.inspect(tile)
            t1 = time.perf_counter()
            encoder_only()
            t2 = time.perf_counter()
            if rep >= warmup:
                scans.append(t1 - t0)
                encoders.append(t2 - t1)
    scan_ms, encoder_ms = 1e3 * float(np.median(scans)), 1e3 * float(np.median(encoders))
    found = result.pred_label[0] if result is not None else None
    return {"scan_vs_encoder_2k": scan_ms / encoder_ms,
            "scan_cost": {"model_dir": str(Path(model_dir)), "image_hw": [side, side],
                          "views": len(views), "scan_ms": scan_ms, "encoder_ms": encoder_ms,
                          "reps": reps, "flagged": bool(found),
                          "flagged_at_own_gate": flagged_own, "own_gate": own_gate,
                          "gate": gate, "gate_lowered": not flagged_own,
                          "defect_peak": peak,
                          "stages_ms": {k: round(v, 2) for k, v in result.timings_ms.items()}
                          if result is not None else None,
                          "backend": "onnxruntime fp32"}}
