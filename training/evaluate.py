"""Evaluate SPT weights or a baseline on a defect dataset with the paper's protocol.

    samspt-eval --checkpoint spt.safetensors [--sam-checkpoint sam_vit_b_01ec64.pth] --data DIR
    samspt-eval --baseline box|grabcut --data DIR [--prompt box|point] [--limit N] [--json]
    samspt-eval --model models/example_cnn --data DIR      # an exported folder, via the runtime

One tight ground-truth box per defective image (``--prompt point``: one seeded foreground point),
one seeded random box per defect-free image. Prints mIoU and boundary IoU of the final and draft
masks per class and overall, and how often defect-free images are answered with an empty mask
(see :mod:`samspt.training.evaluation`). Without ``--data`` the bundled sample images are used;
without ``--checkpoint`` or ``--baseline`` the bundled example model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from samspt.runtime.cli import add_verbose_flag, error_exit
from samspt.runtime.errors import ConfigError, SamsptError
from samspt.runtime.manifest import PRECISIONS
from samspt.runtime.views import FLIP_COUNTS, VIEW_POLICIES
from samspt.runtime.logs import configure_cli_logging, progress_enabled
from samspt.training.data.mask_values import MASK_RECORDS, MASK_VALUES

BASELINES = ("box", "grabcut")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samspt-eval",
        description="Evaluate SPT weights or a baseline on a defect dataset: one tight "
                    "ground-truth box (or point) per defective image, one random box per "
                    "defect-free image; mIoU and boundary IoU of the final and draft masks per "
                    "class, and the empty-answer rate on defect-free images; then the "
                    "prompt-free scan of every image (share of defective and of defect-free "
                    "images flagged, mIoU of the merged mask).")
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset folder (MTD, MVTec AD, VisA, SPT paper, images/+masks/ or "
                             "images/+annotations/ layout); default: the bundled sample images")
    parser.add_argument("--layout", default="auto",
                        help="layout of --data: auto (default), mtd, mvtec, visa, spt, mmseg, "
                             "folder, coco")
    parser.add_argument("--mask-records", choices=MASK_RECORDS, default=None,
                        help="records a class-id mask becomes: class (default; one per class in "
                             "an image), image (one per image, every non-zero pixel: the paper's "
                             "protocol) or component (one per connected component of a class)")
    parser.add_argument("--mask-values", choices=MASK_VALUES, default=None,
                        help="what the mask values of --data mean: auto (default; decided from "
                             "the masks), binary (non-zero is defect), threshold (above half the "
                             "range), class_ids (each value a class)")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", type=Path, default=None,
                       help="SPT weights (.safetensors); default: the bundled example model")
    model.add_argument("--model", type=Path, default=None, metavar="EXPORTED_DIR",
                       help="an exported model folder (samspt-export), run through "
                            "samspt.runtime.Inspector: what the line runs")
    model.add_argument("--baseline", choices=BASELINES, default=None,
                       help="evaluate a baseline instead of a model: box (the box is the mask) "
                            "or grabcut (OpenCV GrabCut, 5 iterations)")
    parser.add_argument("--sam-checkpoint", type=Path, default=None,
                        help="SAM checkpoint that spt-mode weights were trained on "
                             "(e.g. sam_vit_b_01ec64.pth)")
    parser.add_argument("--prompt", choices=("box", "point"), default="box",
                        help="prompt protocol (default: box, the paper's)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random prompts (point protocol, defect-free boxes)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="only the first N images of each class (quick runs)")
    parser.add_argument("--split", type=Path, default=None, metavar="FILE",
                        help="split file written by training (its paths are relative to --data): "
                             "evaluate one side of it instead of the whole folder")
    parser.add_argument("--subset", choices=("train", "val", "test"), default=None,
                        help="side of --split to evaluate (default: val; test: the images "
                             "training held out, data.test_fraction)")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="with --model: which graphs (engines) run (default: the "
                             "Inspector's: fp32 on ONNX Runtime, fp16 on TensorRT)")
    parser.add_argument("--views", choices=VIEW_POLICIES, default="auto",
                        help="how a model sees each prompt: auto (default; zoomed to the prompt's "
                             "view, as the Inspector answers) or image (the whole image: the "
                             "paper's protocol)")
    parser.add_argument("--min-defect-area", type=int, default=1, metavar="PX",
                        help="a prompt-free scan flags an image when its merged mask has at "
                             "least this many pixels (the Inspector's min_defect_area; default 1)")
    parser.add_argument("--scan-min-score", type=float, default=None, metavar="S",
                        help="with --model: the scan's gate for this run (a scan view's mask "
                             "counts where the model scores it at least S; default: the "
                             "manifest's). The report lists the shares flagged at every "
                             "stricter gate, to pick one for samspt-export --scan-min-score")
    parser.add_argument("--prompt-min-score", type=float, default=None, metavar="S",
                        help="with --model: the prompts' gate for this run (a prompt the model "
                             "scores below S is answered empty; default: the manifest's)")
    parser.add_argument("--flips", type=int, default=None, choices=FLIP_COUNTS,
                        help="with --model: test-time flips for this run, each box's mask "
                             "voted over the image and 1 or 3 mirror images (default: the "
                             "manifest's views.flips)")
    parser.add_argument("--no-scan", action="store_true",
                        help="skip the prompt-free scan figures (share of defective and "
                             "defect-free images flagged, merged-mask mIoU)")
    parser.add_argument("--device", default="auto",
                        help="torch device for a model: auto (cuda if available, default), cpu, "
                             "cuda, cuda:1, ...")
    parser.add_argument("--json", action="store_true",
                        help="print only the JSON report to stdout")
    parser.add_argument("--per-image", action="store_true",
                        help="also give every image's prompt and scores (JSON: an images list)")
    add_verbose_flag(parser)
    return parser


def _records(args: argparse.Namespace) -> Tuple[list, str]:
    from samspt.training.evaluation import limit_per_class, sample_records

    if args.data is None:
        if args.split is not None:
            raise ConfigError("--split needs --data: the dataset folder the split was made from")
        records, source = sample_records(), "bundled sample images"
    elif args.split is not None:
        from samspt.training.data.split import read_split_dataset

        subset = args.subset or "val"
        records = getattr(read_split_dataset(args.split, args.data), subset)
        if not records:
            raise ConfigError(f"split {args.split} has no {subset} images (a split holds test "
                              "images where training held some out: data.test_fraction)")
        source = f"{args.data} ({subset} side of split {args.split})"
    else:
        from samspt.training.data.readers import read_dataset

        options = {k: v for k, v in (("mask_records", args.mask_records),
                                      ("mask_values", args.mask_values)) if v is not None}
        records, source = read_dataset(args.data, layout=args.layout, **options), str(args.data)
    return limit_per_class(records, args.limit), source


def _predictor(args: argparse.Namespace):
    from samspt.training.baselines import BoxAsMask, GrabCut

    if args.baseline == "box":
        return BoxAsMask(), "baseline: box as mask"
    if args.baseline == "grabcut":
        return GrabCut(), "baseline: OpenCV GrabCut, 5 iterations"
    if args.model is not None:
        from samspt.training.evaluation import RuntimePredictor

        predictor = RuntimePredictor(args.model, views=args.views, precision=args.precision,
                                     min_defect_area=args.min_defect_area,
                                     scan_min_score=args.scan_min_score,
                                     prompt_min_score=args.prompt_min_score, flips=args.flips)
        return predictor, (f"{args.model} on {predictor.inspector.backend}, "
                           f"{predictor.inspector.precision}")
    from samspt.training.evaluation import TorchPredictor
    from samspt.training.example import EXAMPLE_MODEL

    weights = args.checkpoint
    if weights is None:
        if not EXAMPLE_MODEL.is_file():
            raise ConfigError(f"no model to evaluate: the bundled example model ({EXAMPLE_MODEL}) "
                              "is not installed; pass --checkpoint W.safetensors (SPT weights) or "
                              "--baseline box|grabcut")
        weights = EXAMPLE_MODEL
    import torch

    from samspt.training.checkpoints import load_spt_model

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"--device {args.device!r} is not a torch device ({exc}); use cpu, "
                          "cuda or cuda:N") from None
    model = load_spt_model(weights, args.sam_checkpoint).to(device)
    return (TorchPredictor(model, name=Path(weights).name, views=args.views,
                           min_defect_area=args.min_defect_area), f"{weights} on {device}")


def _per_image_lines(images: List[dict]) -> List[str]:
    lines = []
    for image in images:
        if image["defect_free"]:
            scores = (f"empty {image['final_empty']:.0f} (draft {image['draft_empty']:.0f}), "
                      f"area {image['final_fp_area']:.4f}")
        else:
            scores = (f"IoU {image['final_iou']:.3f} bIoU {image['final_biou']:.3f} "
                      f"(draft {image['draft_iou']:.3f} / {image['draft_biou']:.3f})")
        prompt = ", ".join(f"{k} {[round(v, 1) for v in vals]}"
                           for k, vals in image["prompt"].items())
        lines.append(f"{image['name']:<40} {prompt:<34} {scores}")
    return lines


def _progress_bar(total: int) -> Tuple[object, Optional[Callable[[int, int], None]]]:
    """A tqdm bar on stderr and its callback, or (None, None) when stderr is no terminal."""
    if not progress_enabled():
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=total, desc="evaluating", unit="image", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.update(1)
        if done == total:
            bar.close()  # before the summary is logged

    return bar, progress


def _calibration_line(point: dict, report: dict) -> str:
    """The calibrated point's rates beside those measured in this run (at the folder's gate,
    unless --scan-min-score moved it)."""
    scan = report.get("scan") or {}

    def pct(count, total):
        return "-" if not total else f"{100 * count / total:.1f} % of {total}"
    return (f"calibrated operating point (gate {point['min_score']:.4f}, "
            f"{point['backend']} {point['precision']}): defect-free flagged "
            f"{pct(point['normal_flagged'], point['normal_images'])}, defective flagged "
            f"{pct(point['defective_flagged'], point['defective_images'])} at calibration; "
            f"here: defect-free flagged {_share(scan.get('defect_free_flagged'))}, "
            f"defective flagged {_share(scan.get('defective_flagged'))}")


def _share(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.sam_checkpoint is not None and args.baseline is not None:
        parser.error("--sam-checkpoint goes with SPT weights, not with --baseline")
    if args.subset is not None and args.split is None:
        parser.error("--subset needs --split FILE")
    if (args.mask_records or args.mask_values) and (args.data is None or args.split):
        parser.error("--mask-records and --mask-values go with --data DIR (a dataset to read); "
                     "a --split file already lists its records")
    if args.scan_min_score is not None and args.model is None:
        parser.error("--scan-min-score goes with --model MODEL_DIR (an exported model folder)")
    if args.prompt_min_score is not None and args.model is None:
        parser.error("--prompt-min-score goes with --model MODEL_DIR (an exported model folder)")
    if args.flips is not None and args.model is None:
        parser.error("--flips goes with --model MODEL_DIR (an exported model folder)")
    configure_cli_logging(args.verbose)
    from samspt.training.evaluation import evaluate_records, format_table

    bar = None
    try:
        records, data = _records(args)
        predictor, model = _predictor(args)
        bar, progress = _progress_bar(len(records))
        report = evaluate_records(predictor, records, prompt=args.prompt, seed=args.seed,
                                  progress=progress, scan=not args.no_scan)
    except SamsptError as exc:
        return error_exit(exc)
    finally:
        if bar is not None:
            bar.close()
    images = report.pop("images")
    report = {"data": data, "model": model, **report}
    # A calibrated folder's operating point (samspt-calibrate), as its Inspector read it.
    point = getattr(getattr(predictor, "inspector", None), "operating_point", None)
    calibration = point.to_dict() if point is not None else None
    if calibration is not None:
        report["calibration"] = calibration
    if args.per_image:
        report["images"] = images
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"data: {data} ({report['n_images']} images)")
    print(f"model: {model}")
    print(format_table(report))
    if calibration is not None:
        print(_calibration_line(calibration, report))
    if args.per_image:
        print()
        print("\n".join(_per_image_lines(images)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
