"""The quick-start job: the shipped example model on the bundled sample images, with ONNX Runtime
on the CPU (base install: numpy, onnxruntime, pillow; no torch).

    samspt-demo                           # the shipped example model; overlays in inspections/
    samspt-demo --model models/mine       # a folder of your own (samspt-export)

For each sample: the defect's ground-truth box as the prompt (answered in its zoomed view), and
the prompt-free scan of the whole tile. Prints a table (draft and final IoU against the ground
truth, score, the scan's verdict and IoU, milliseconds) and the overlay paths.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

from samspt.runtime.cli import add_verbose_flag, error_exit
from samspt.runtime.errors import SamsptError
from samspt.runtime.manifest import PRECISIONS
from samspt.runtime.logs import configure_cli_logging
from samspt.runtime.views import VIEW_POLICIES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samspt-demo",
        description="Inspect the bundled Magnetic Tile Defect samples with the shipped example "
                    "model (or --model) through samspt.runtime.Inspector on ONNX Runtime: each "
                    "defect's ground-truth box as the prompt, then the prompt-free scan. Writes "
                    "overlay PNGs (each prompt's view enlarged beside the tile) and results.json.")
    parser.add_argument("--model", type=Path, default=None, metavar="MODEL_DIR",
                        help="exported model folder (default: the shipped example model)")
    parser.add_argument("--out", type=Path, default=Path("inspections"),
                        help="overlays and results.json (default: inspections/)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--views", choices=VIEW_POLICIES, default="auto",
                        help="auto (default): each box in its zoomed view; image: the whole "
                             "image (the paper's protocol)")
    add_verbose_flag(parser)
    return parser


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging(args.verbose)
    from samspt.runtime.files import atomic_write_text
    from samspt.runtime.inspector import Inspector
    from samspt.runtime.overlay import render_overlay, save_overlay
    from samspt.runtime.prompts import mask_box
    from samspt.runtime.samples import EXAMPLE_MODEL_DIR, bundled_samples

    model_dir = args.model or EXAMPLE_MODEL_DIR
    rows, records = [], []
    try:
        with Inspector(model_dir, backend="onnxruntime", precision=args.precision,
                       views=args.views) as ins:
            for sample in bundled_samples():
                image, truth = sample.image(), sample.mask()
                record = {"image": sample.name}
                if truth.any():
                    box = mask_box(truth)[None]
                    result = ins.inspect(image, boxes=box)
                    overlay = save_overlay(render_overlay(image, result, box),
                                           args.out / f"{sample.name}_box.png")
                    record.update(box=box[0].tolist(), box_overlay=str(overlay),
                                  iou_final=_iou(result.masks[0], truth),
                                  iou_draft=_iou(result.draft_masks[0], truth),
                                  box_result=result.to_dict())
                scan = ins.inspect(image)
                scan_overlay = save_overlay(render_overlay(image, scan),
                                            args.out / f"{sample.name}_scan.png")
                record.update(scan_flagged=bool(scan.pred_label[0]),
                              scan_iou=_iou(scan.masks[0], truth) if truth.any() else None,
                              scan_overlay=str(scan_overlay), scan_result=scan.to_dict())
                rows.append((sample, record, truth.any()))
                records.append(record)
        atomic_write_text(args.out / "results.json", json.dumps(records, indent=2) + "\n")
    except SamsptError as exc:
        return error_exit(exc)
    print(f"\nmodel {model_dir.name} on {ins.backend}, {ins.precision}, views {args.views}\n")
    header = (f"{'sample':<28} {'draft IoU':>9} {'final IoU':>9} {'score':>6} {'box ms':>7} "
              f"{'scan':>8} {'scan IoU':>8} {'scan ms':>8}")
    print(header)
    print("-" * len(header))
    for sample, record, defect in rows:
        box = record.get("box_result")
        cells = (f"{record['iou_draft']:>9.3f} {record['iou_final']:>9.3f} "
                 f"{box['prompts'][0]['score']:>6.2f} {box['timings_ms']['total']:>7.0f}"
                 if defect else f"{'-':>9} {'-':>9} {'-':>6} {'-':>7}")
        verdict = "defect" if record["scan_flagged"] else "ok"
        scan_iou = f"{record['scan_iou']:>8.3f}" if record["scan_iou"] is not None else f"{'-':>8}"
        print(f"{sample.name:<28} {cells} {verdict:>8} {scan_iou} "
              f"{record['scan_result']['timings_ms']['total']:>8.0f}")
    print(f"\noverlays and results.json in {args.out}/ (<sample>_box.png: the box prompt, "
          "its view enlarged on the right; <sample>_scan.png: the prompt-free scan)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
