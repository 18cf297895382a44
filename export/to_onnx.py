"""Export SPT weights to ONNX: merged encoder + draft/refine decoder, FP32 and FP16, verified.

    python export/to_onnx.py                                   # the bundled example model
    python export/to_onnx.py --checkpoint sam_vit_b_01ec64.pth --spt spt.safetensors \\
        --model-type vit_b --out models/spt_vit_b
    python export/to_onnx.py --authors-spt spt_vit_b.pth --checkpoint sam_vit_b_01ec64.pth
    python export/to_onnx.py --weights runs/x/model.safetensors     # full-mode weights
    python export/to_onnx.py --checkpoint mobile_sam.pt --out models/mobile_sam   # MobileSAM
    python export/to_onnx.py --checkpoint sam2.1_hiera_tiny.pt --out models/h_t   # SAM 2.1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from samspt.runtime.cli import add_verbose_flag, error_exit, StagePrinter
from samspt.runtime.errors import SamsptError
from samspt.runtime.logs import configure_cli_logging
from samspt.training.modeling.config import MODEL_CONFIGS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samspt-export",
        description="Export an SPT model to a model folder: LoRA merged into the encoder "
                    "weights, encoder.{fp32,fp16}.onnx, decoder.{fp32,fp16}.onnx (prompt encoder "
                    "+ draft decoder + relation adapter + refine decoder), manifest.json. "
                    "Verified against PyTorch with ONNX Runtime unless --no-verify.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="With no model argument the bundled example model is exported (works offline).")
    source = parser.add_argument_group("model (pick one; default: the bundled example model)")
    source.add_argument("--checkpoint", type=Path, help="SAM checkpoint (sam_vit_b_01ec64.pth); "
                        "alone it exports untrained SPT, which equals SAM")
    source.add_argument("--spt", type=Path, help="SPT weights (.safetensors) on top of "
                        "--checkpoint")
    source.add_argument("--authors-spt", type=Path, help="the paper authors' spt_vit_*.pth, on "
                        "top of --checkpoint")
    source.add_argument("--weights", type=Path, help="full-mode weights (.safetensors), "
                        "standalone")
    source.add_argument("--model-type", default=None,
                        help=f"{', '.join(MODEL_CONFIGS)} (default: from the weights or "
                             "the checkpoint)")
    parser.add_argument("--out", type=Path, default=None, help="model folder (default: "
                        "models/<name>/); replaced only when the export succeeds")
    parser.add_argument("--name", default=None, help="model name in the manifest")
    parser.add_argument("--precision", default="both",
                        help="fp32, fp16, int8, both (fp32+fp16, default), all (fp32+fp16+int8) "
                             "or a comma-separated list such as fp32,int8. INT8: static QDQ "
                             "(signed, symmetric, per-channel weights), calibrated on views of "
                             "real images, parity-gated; a decoder that misses the gate stays "
                             "float (the manifest says so)")
    parser.add_argument("--calib-data", type=Path, default=None,
                        help="dataset folder whose images calibrate INT8 (default: the bundled "
                             "samples)")
    parser.add_argument("--scan-min-score", type=float, default=None, metavar="S",
                        help="the prompt-free scan's operating point, written to the manifest: "
                             "a scan view's mask counts only where the model scores it at least "
                             "S (default: the model's; none: every view counts); pick it from "
                             "samspt-eval's scan trade-off table")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset, 17..20 (default 17)")
    parser.add_argument("--compact", action="store_true",
                        help="store the FP32 graphs' weights as float16 where float16 holds them "
                             "exactly (weights saved in float16: up to half the files, the same "
                             "FP32 results): how the bundled example model ships")
    parser.add_argument("--no-verify", action="store_true", help="skip the parity check against "
                        "PyTorch with ONNX Runtime")
    parser.add_argument("--verify-data", type=Path, default=None,
                        help="dataset folder for the parity check (default: bundled samples)")
    add_verbose_flag(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging(args.verbose)
    from samspt.export.model_source import load_export_model
    from samspt.export.onnx_export import export_model, with_scan_min_score
    from samspt.export.verify import folder_verify_images

    stage = StagePrinter()

    try:
        stage("loading the model")
        model, name, sources = load_export_model(
            checkpoint=args.checkpoint, spt=args.spt, authors_spt=args.authors_spt,
            weights=args.weights, model_type=args.model_type)
        name = args.name or name
        if args.scan_min_score is not None:
            model.config = with_scan_min_score(model.config, args.scan_min_score)
        out = args.out or Path("models") / name
        images = folder_verify_images(args.verify_data) if args.verify_data else None
        calib = folder_verify_images(args.calib_data, limit=16) if args.calib_data else None
        result = export_model(model, out, name, precision=args.precision, opset=args.opset,
                              verify=not args.no_verify, verify_images=images, sources=sources,
                              stage=stage, compact=args.compact, calib_images=calib)
    except SamsptError as exc:
        return error_exit(exc)
    except OSError as exc:
        return error_exit(exc, "cannot write the model folder")
    _print_summary(result)
    return 0


def _print_summary(result) -> None:
    verification = result.manifest.verification or {}
    print(f"\nexported {result.manifest.name} to {result.out_dir}")
    print(f"{'file':<24} {'MB':>8}")
    for name, size in result.files.items():
        print(f"{name:<24} {size / 1e6:>8.2f}")
    if verification:
        print(f"\nparity with PyTorch ({verification['images']} images x "
              f"{verification['prompts_per_image']} box prompts, draft and final masks):")
        print(f"{'precision':<10} {'mean IoU':>9} {'min IoU':>9} {'max logit err':>14} "
              f"{'encoder err':>12}")
        for precision in ("fp32", "fp16", "int8", "int8-cpu"):
            if precision in verification:
                f = verification[precision]
                print(f"{precision:<10} {f['mean_iou']:>9.5f} {f['min_iou']:>9.5f} "
                      f"{f['max_logit_error']:>14.3g} {f['encoder_max_error']:>12.3g}")
    else:
        print("(not verified: --no-verify)")
    decoder_int8 = result.manifest.graphs["decoder"].get("int8")
    if decoder_int8 and not decoder_int8["quantization"]["quantized"]:
        print("INT8: encoder quantised; decoder kept float "
              f"({decoder_int8['quantization']['reason']})")


if __name__ == "__main__":
    sys.exit(main())
