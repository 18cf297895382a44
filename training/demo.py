"""Quick-start demo: run SPT (draft + refine) on the bundled sample images with box prompts.

    samspt-demo                      # the example configuration
    samspt-demo --weights W.safetensors [--checkpoint sam_vit_b_01ec64.pth]

Prints a table (sample, box, draft/final IoU against the ground truth, score, time) and checks
that merging LoRA into the weights leaves every mask unchanged.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

from samspt.runtime.errors import SamsptError
from samspt.runtime.logs import configure_cli_logging

log = logging.getLogger("samspt.demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samspt-demo",
        description="Run SPT's draft and refine passes on the bundled MTD sample images, with the "
                    "tight ground-truth box as the prompt, and print what each pass found.")
    parser.add_argument("--weights", type=Path, default=None,
                        help="SPT weights (.safetensors, spt or full mode); default: the bundled "
                             "example model if present, else a randomly initialised one")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="SAM checkpoint the SPT weights build on (needed for spt-mode weights)")
    parser.add_argument("--model-type", default="small",
                        help="configuration when no weights are given (default: small)")
    parser.add_argument("--seed", type=int, default=0, help="seed of a random initialisation")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    return parser


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging(args.verbose)
    import torch

    from samspt.runtime.samples import bundled_samples, mask_box
    from samspt.training.checkpoints import build_model, load_spt_model
    from samspt.training.predict import predict

    try:
        if args.weights is not None:
            model = load_spt_model(args.weights, args.checkpoint)
            source = str(args.weights)
        else:
            torch.manual_seed(args.seed)
            model = build_model(args.model_type, args.checkpoint)
            source = f"{args.model_type}, " + (str(args.checkpoint) if args.checkpoint else
                                               f"random initialisation (seed {args.seed})")
            if args.checkpoint is None:
                print("note: no trained weights given and no bundled example model yet; the "
                      "masks of a random model are meaningless, the run shows the path works.")
    except SamsptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    merged = model.merged().eval()
    print(f"model: {source}; input {model.config.image_size}px, "
          f"{model.config.num_tokens} image tokens")
    header = f"{'sample':<30} {'box (x0,y0,x1,y1)':<22} {'draft IoU':>9} {'final IoU':>9} " \
             f"{'score':>6} {'ms':>6}  merged=unmerged"
    print(header)
    print("-" * len(header))
    all_equal = True
    for sample in bundled_samples():
        image, truth = sample.image(), sample.mask()
        h, w = truth.shape
        box = mask_box(truth) if truth.any() else np.array([0, 0, w - 1, h - 1], np.float32)
        start = time.perf_counter()
        result = predict(model, image, boxes=box[None])
        elapsed = (time.perf_counter() - start) * 1000
        check = predict(merged, image, boxes=box[None])
        same = _iou(result.masks[0], check.masks[0]) >= 0.999
        all_equal &= same
        box_text = ",".join(str(int(v)) for v in box)
        print(f"{sample.name:<30} {box_text:<22} {_iou(result.draft_masks[0], truth):>9.3f} "
              f"{_iou(result.masks[0], truth):>9.3f} {result.scores[0]:>6.2f} {elapsed:>6.0f}  "
              f"{'yes' if same else 'NO'}")
    if not all_equal:
        print("error: the merged model's masks differ from the unmerged model's", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
