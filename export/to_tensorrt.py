"""Build TensorRT engines for this machine's GPU from an exported model folder.

    python export/to_tensorrt.py models/example_cnn                 # FP16, default profile
    python export/to_tensorrt.py MODEL_DIR --precision fp32 --prompts 1,8,32 --points 1,2,8
    python export/to_tensorrt.py MODEL_DIR --print-trtexec             # no Python builder here
    python export/to_tensorrt.py MODEL_DIR --adopt                     # record trtexec's engines
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import List, Optional

from samspt.runtime.cli import add_verbose_flag, error_exit, StagePrinter
from samspt.runtime.errors import SamsptError
from samspt.runtime.logs import configure_cli_logging

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samspt-build",
        description="Build strongly typed TensorRT engines (encoder and decoder) from a model "
                    "folder's ONNX graphs into MODEL_DIR/engines/<gpu>-trt<version>/, with an "
                    "optimization profile for the number of prompts and points, a persistent "
                    "timing cache, and build.json. The engines are checked against ONNX Runtime "
                    "on the bundled samples before they are recorded.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Engines run only on the GPU model and TensorRT version that built them: build "
               "on (a machine like) the target. Without TensorRT's Python builder, "
               "--print-trtexec prints the same build as trtexec command lines; run them, then "
               "--adopt.")
    parser.add_argument("model_dir", type=Path, help="exported model folder (manifest.json)")
    parser.add_argument("--precision", choices=("fp16", "fp32", "int8"), default="fp16",
                        help="which ONNX graphs to build from (default fp16; precision comes from "
                             "the graphs' types, the engines are strongly typed; int8: the QDQ "
                             "graphs, explicit quantization, no calibrator)")
    parser.add_argument("--prompts", default=None, metavar="MIN,OPT,MAX",
                        help="prompts per decoder call, B (default 1,16,64); one value fixes it")
    parser.add_argument("--points", default=None, metavar="MIN,OPT,MAX",
                        help="points per prompt, N; a box is 2 points (default 1,2,16)")
    parser.add_argument("--views", default=None, metavar="MIN,OPT,MAX",
                        help="views per encoder call, V: a scan's views, or concurrent "
                             "requests' in the service, encode together (default 1,4,8; more "
                             "costs GPU memory, 1 encodes one view per call)")
    parser.add_argument("--workspace-mb", type=int, default=None,
                        help="builder workspace limit in MiB (default 4096)")
    parser.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--print-trtexec", action="store_true",
                      help="print the equivalent trtexec command lines and exit (needs no "
                           "TensorRT here)")
    mode.add_argument("--adopt", action="store_true",
                      help="check and record engines the --print-trtexec lines built")
    parser.add_argument("--gpu-name", default=None,
                        help="with --print-trtexec: the target GPU's name as CUDA reports it "
                             "(default: this machine's, via pycuda)")
    parser.add_argument("--trt-version", default=None,
                        help="with --print-trtexec: the target's TensorRT version (default: the "
                             "tensorrt module's)")
    add_verbose_flag(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.gpu_name or args.trt_version) and not args.print_trtexec:
        parser.error("--gpu-name and --trt-version go with --print-trtexec (a build uses this "
                     "machine's GPU and TensorRT)")
    configure_cli_logging(args.verbose)
    from samspt.export.trt_build import adopt_engines, build_engines
    from samspt.export.trt_options import (DEFAULT_WORKSPACE_MB, BuildOptions, detect_target,
                                           load_sources)
    from samspt.export.trt_support import check_files, kept_version_for, log_check
    from samspt.export.trtexec import format_trtexec
    from samspt.runtime.build_record import DEFAULT_PROFILES, ShapeProfiles
    from samspt.runtime.engines import ENGINES_DIR, engine_dir_name, parse_profile

    stage = StagePrinter()

    try:
        profiles = ShapeProfiles(
            prompts=parse_profile(args.prompts, "--prompts") if args.prompts
            else DEFAULT_PROFILES.prompts,
            points=parse_profile(args.points, "--points") if args.points
            else DEFAULT_PROFILES.points,
            views=parse_profile(args.views, "--views") if args.views
            else DEFAULT_PROFILES.views)
        options = BuildOptions(precision=args.precision, profiles=profiles,
                               workspace_mb=(DEFAULT_WORKSPACE_MB if args.workspace_mb is None
                                             else args.workspace_mb),
                               device=args.device)
        options.validate()
        if args.print_trtexec:
            manifest, sources = load_sources(args.model_dir, options)
            gpu_name, version = detect_target(args.gpu_name, args.trt_version, args.device)
            log_check(check_files([sources[kind] for kind in sorted(sources)],
                                  [kept_version_for(version)]), log)
            engine_dir = args.model_dir / ENGINES_DIR / engine_dir_name(gpu_name, version)
            print(format_trtexec(args.model_dir, engine_dir, options, manifest, gpu_name,
                                 version), end="")
            return 0
        run = adopt_engines if args.adopt else build_engines
        stage(f"{'adopting' if args.adopt else 'building'} {args.precision} engines for "
              f"{args.model_dir}")
        result = run(args.model_dir, options, stage=stage)
    except SamsptError as exc:
        return error_exit(exc)
    except OSError as exc:
        return error_exit(exc, "cannot read or write the model folder")
    _print_summary(result, time.perf_counter() - stage.start)
    return 0


def _print_summary(result, seconds: float) -> None:
    build, entry = result.build, result.entry
    profiles = entry.profiles
    print(f"\n{result.precision} TensorRT engines in {result.engine_dir}")
    print(f"GPU {build.gpu.name}, TensorRT {build.tensorrt_version}, prompts "
          f"{profiles.prompts.text()}, points {profiles.points.text()}, views "
          f"{profiles.views.text()} (min,opt,max)")
    print(f"{'file':<24} {'MB':>8}")
    for name, size in result.files.items():
        print(f"{name:<24} {size / 1e6:>8.2f}")
    figures = entry.verification
    if figures:
        print(f"\nagainst {figures.get('reference', 'ONNX Runtime')} ({figures['images']} images, "
              "draft and final masks):")
        print(f"{'mean IoU':>9} {'min IoU':>9} {'max logit err':>14} {'max score err':>14}")
        print(f"{figures['mean_iou']:>9.5f} {figures['min_iou']:>9.5f} "
              f"{figures['max_logit_error']:>14.3g} {figures['max_score_error']:>14.3g}")
    print(f"done in {seconds:.1f}s")


if __name__ == "__main__":
    sys.exit(main())
