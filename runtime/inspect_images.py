"""Inspect images with an exported model: overlay PNGs and results.json.

    samspt-inspect models/example_cnn tile1.jpg tile2.png --box 120,200,140,240 --out out/
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
from samspt.runtime.backend import BACKENDS
from samspt.runtime.manifest import PRECISIONS
from samspt.runtime.views import FLIP_COUNTS, VIEW_POLICIES
from samspt.runtime.image_files import load_image
from samspt.runtime.logs import configure_cli_logging, progress_enabled


def _box(text: str) -> List[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a box is x0,y0,x1,y1 (numbers), got {text!r}")
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"a box is x0,y0,x1,y1 (4 numbers), got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samspt-inspect",
        description="Segment defects in images with an exported samspt model folder. Writes an "
                    "overlay PNG per image (prompt box cyan, draft outline orange, final mask "
                    "red, score) and results.json, and prints a table.")
    parser.add_argument("paths", type=Path, nargs="+", metavar="[MODEL_DIR] IMAGE",
                        help="an exported model folder (samspt-export; default: the shipped "
                             "example model), then image files (any PIL format)")
    parser.add_argument("--box", type=_box, action="append", default=None, metavar="X0,Y0,X1,Y1",
                        help="box prompt in image pixels, applied to every image (repeatable: "
                             "one prompt each); default: none, the prompt-free scan")
    parser.add_argument("--views", choices=VIEW_POLICIES, default="auto",
                        help="auto (default): each prompt in its zoomed view; image: the whole "
                             "image")
    parser.add_argument("--scan-min-score", type=float, default=None, metavar="S",
                        help="the scan's gate: a scan view's mask counts where the model scores "
                             "it at least S (default: the model's, from its manifest); higher "
                             "flags fewer clean images and misses more defects")
    parser.add_argument("--prompt-min-score", type=float, default=None, metavar="S",
                        help="the prompts' gate: a box the model scores below S is answered "
                             "empty (default: the model's, from its manifest)")
    parser.add_argument("--flips", type=int, choices=FLIP_COUNTS, default=None,
                        help="test-time flips: each prompt's mask voted over the image and 1 or "
                             "3 mirror images, at 2 or 4 times the time (default: the model's, "
                             "from its manifest)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="graphs to run (default: FP16 engines on TensorRT, FP32 on ONNX "
                             "Runtime)")
    parser.add_argument("--out", type=Path, default=Path("inspections"),
                        help="output folder (default: inspections/)")
    add_verbose_flag(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging(args.verbose)
    from samspt.runtime.files import atomic_write_text
    from samspt.runtime.inspector import Inspector
    from samspt.runtime.overlay import render_overlay, save_overlay

    from samspt.runtime.manifest import MANIFEST
    from samspt.runtime.samples import EXAMPLE_MODEL_DIR

    first = args.paths[0]
    if first.is_dir() or (first / MANIFEST).exists():
        model_dir, images = first, args.paths[1:]
    else:
        model_dir, images = EXAMPLE_MODEL_DIR, args.paths
    if not images:
        return error_exit(f"no image given after the model folder {model_dir}")
    rows, records = [], []
    try:
        with Inspector(model_dir, backend=args.backend, precision=args.precision,
                       scan_min_score=args.scan_min_score,
                       prompt_min_score=args.prompt_min_score,
                       views=args.views, flips=args.flips) as ins:
            print(f"model {model_dir} on {ins.backend}, {ins.precision}", file=sys.stderr)
            paths = images
            if progress_enabled() and len(paths) > 1:
                from tqdm import tqdm

                paths = tqdm(paths, desc="inspecting", unit="image")
            for path in paths:
                image = load_image(path)
                boxes = np.asarray(args.box, np.float32) if args.box else None
                result = ins.inspect(image, boxes=boxes)
                used = boxes if boxes is not None else np.zeros((0, 4), np.float32)
                overlay = save_overlay(render_overlay(image, result, boxes),
                                       args.out / f"{path.stem}_overlay.png")
                records.append({"image": str(path), "overlay": str(overlay),
                                "size": [int(image.shape[1]), int(image.shape[0])],
                                "boxes": used.tolist(), **result.to_dict()})
                rows.append((path.name, result, overlay))
        atomic_write_text(args.out / "results.json", json.dumps(records, indent=2) + "\n")
    except SamsptError as exc:
        return error_exit(exc)
    print(f"{'image':<32} {'prompt':>6} {'defect':>6} {'area px':>8} {'score':>6} "
          f"{'pred':>5} {'total ms':>9}  overlay")
    for name, result, overlay in rows:
        for k in range(len(result)):
            print(f"{name:<32} {k:>6} {'yes' if result.pred_label[k] else 'no':>6} "
                  f"{int(result.area_px[k]):>8} {result.scores[k]:>6.2f} "
                  f"{result.pred_score[k]:>5.2f} "
                  f"{result.timings_ms['total']:>9.1f}  {overlay}")
    print(f"results: {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
