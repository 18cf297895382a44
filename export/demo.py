"""The quick-start job: export the bundled example model, then inspect the bundled sample images
with ONNX Runtime on the CPU.

    samspt-demo                                  # models/example_small/, inspections/
    samspt-demo --weights runs/x/model.safetensors --model-dir models/x

The export is skipped when the model folder already holds an intact export of the same weights.
Prints a table (prompt box = the ground truth's tight box; IoU of draft and final masks against
the ground truth; score; time) and the overlay paths.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

from samspt.runtime.errors import SamsptError
from samspt.runtime.logs import configure_cli_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samspt-demo",
        description="Export the bundled example model (or --weights) to ONNX, then inspect the "
                    "bundled MTD sample images with samspt.runtime.Inspector on ONNX Runtime, "
                    "prompted with each defect's ground-truth box. Writes overlay PNGs and "
                    "results.json.")
    parser.add_argument("--weights", type=Path, default=None,
                        help="full-mode weights to export (default: the bundled example model)")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="model folder (default: models/<name>)")
    parser.add_argument("--out", type=Path, default=Path("inspections"),
                        help="overlays and results.json (default: inspections/)")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    return parser


# Stand-in when no trained example model is installed (see main).
UNTRAINED_TYPE = "small"
UNTRAINED_NAME = "untrained_small"


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _up_to_date(model_dir: Path, weights: Path) -> bool:
    from samspt.runtime.files import sha256_file
    from samspt.runtime.manifest import read_manifest

    try:
        manifest = read_manifest(model_dir)
    except SamsptError:
        return False
    return manifest.get("sources", {}).get("weights", {}).get("sha256") == sha256_file(weights)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging(args.verbose)
    from samspt.export.model_source import load_export_model
    from samspt.export.onnx_export import export_model
    from samspt.runtime.files import atomic_write_text
    from samspt.runtime.inspector import Inspector
    from samspt.runtime.overlay import render_overlay, save_overlay
    from samspt.runtime.preprocess import mask_box
    from samspt.runtime.samples import bundled_samples
    from samspt.training.example import EXAMPLE_MODEL, EXAMPLE_MODEL_NAME

    weights = args.weights or EXAMPLE_MODEL
    untrained = args.weights is None and not EXAMPLE_MODEL.is_file()
    name = (UNTRAINED_NAME if untrained else EXAMPLE_MODEL_NAME) if args.weights is None \
        else weights.stem
    model_dir = args.model_dir or Path("models") / name
    start = time.perf_counter()
    try:
        if untrained:
            print("note: this installation has no trained example model; the demo exports a "
                  "randomly initialised 'small' model (seed 0). Its masks are meaningless: the "
                  "run shows the export -> Inspector path works. Train one with samspt-train and "
                  "pass --weights.", file=sys.stderr)
        if not untrained and _up_to_date(model_dir, weights):
            print(f"[1/2] {model_dir} already holds this model's export", file=sys.stderr)
        else:
            checked = "not verified: random logits sit on the threshold" if untrained else \
                "verified against PyTorch"
            print(f"[1/2] exporting {name} to {model_dir} (ONNX, FP32 + FP16, {checked})",
                  file=sys.stderr, flush=True)
            if untrained:
                import torch

                from samspt.training.checkpoints import build_model

                torch.manual_seed(0)
                model, sources = build_model(UNTRAINED_TYPE), {"weights": "random, seed 0"}
            else:
                model, _, sources = load_export_model(weights=weights)
            export_model(model, model_dir, name, sources=sources, verify=not untrained)
        print(f"[2/2] inspecting the bundled samples ({time.perf_counter() - start:.0f}s)",
              file=sys.stderr, flush=True)
        rows, records = [], []
        with Inspector(model_dir, backend="onnxruntime", precision=args.precision) as ins:
            for sample in bundled_samples():
                image, truth = sample.image(), sample.mask()
                h, w = truth.shape
                box = mask_box(truth) if truth.any() else \
                    np.array([0, 0, w - 1, h - 1], np.float32)
                result = ins.inspect(image, boxes=box[None])
                overlay = save_overlay(render_overlay(image, result, box[None]),
                                       args.out / f"{sample.name}_overlay.png")
                rows.append((sample, box, result, overlay))
                records.append({"image": sample.name, "box": box.tolist(),
                                "overlay": str(overlay), **result.to_dict(),
                                "iou_final": _iou(result.masks[0], truth),
                                "iou_draft": _iou(result.draft_masks[0], truth)})
        atomic_write_text(args.out / "results.json", json.dumps(records, indent=2) + "\n")
    except SamsptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\nmodel {model_dir} on {ins.backend}, {args.precision}\n")
    header = (f"{'sample':<28} {'box x0,y0,x1,y1':<18} {'defect':>6} {'draft IoU':>9} "
              f"{'final IoU':>9} {'score':>6} {'ms':>6}  overlay")
    print(header)
    print("-" * len(header))
    for (sample, box, result, overlay), record in zip(rows, records):
        print(f"{sample.name:<28} {','.join(str(int(v)) for v in box):<18} "
              f"{'yes' if result.pred_label[0] else 'no':>6} {record['iou_draft']:>9.3f} "
              f"{record['iou_final']:>9.3f} {result.scores[0]:>6.2f} "
              f"{result.timings_ms['total']:>6.0f}  {overlay}")
    print(f"\nresults: {args.out / 'results.json'}  (ground-truth IoU of the defect-free sample "
          "is 1.0 when the model answers 'no defect')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
