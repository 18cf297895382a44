"""Latency by stage, backend and prompt count, with a JSON record of every run.

    python benchmarks/latency.py                      # small model, CPU: a few minutes
    samspt-bench --model vit_b --device cuda --plot latency.png
    samspt-bench --backends ort,ort-fp16 --prompts 1,16 --reps 20 --out bench.json

Prints a markdown table; writes the record to --out or benchmarks/results/. See
benchmarks/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from samspt.runtime.cli import add_verbose_flag, error_exit
from samspt.runtime.errors import SamsptError
from samspt.runtime.logs import configure_cli_logging, progress_enabled

BACKEND_HELP = ("torch (eager FP32), torch-fp16 and torch-cudagraph (CUDA only), ort and "
                "ort-fp16 (ONNX Runtime; CUDA provider when --device cuda and onnxruntime-gpu), "
                "tensorrt (CUDA, needs the tensorrt package)")


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def _prompt_list(text: str) -> List[int]:
    from samspt.benchmarks.settings import parse_int_list

    try:
        return parse_int_list(text)
    except SamsptError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    from samspt.benchmarks.settings import DEFAULT_MODEL, DEFAULT_PROMPTS, DEVICES, VIT_B_TOKENS
    from samspt.training.modeling.config import MODEL_CONFIGS

    parser = argparse.ArgumentParser(
        prog="samspt-bench",
        description="Time preprocessing, encoder, decoder (draft + relation + refine), "
                    "postprocessing and end to end, per backend and prompts per image, "
                    "interleaved after warm-up (median, p90, p99, throughput, peak memory); "
                    "measure the tracked ratios; write a JSON record and print a markdown table.")
    parser.add_argument("--model", choices=list(MODEL_CONFIGS), default=DEFAULT_MODEL,
                        help=f"model configuration, random weights (default {DEFAULT_MODEL}: "
                             "a few minutes on a 2-core CPU; vit_b|vit_l|vit_h: full size)")
    parser.add_argument("--prompts", type=_prompt_list,
                        default=list(DEFAULT_PROMPTS), metavar="K[,K...]",
                        help="box prompts per image (default 1,4,16,64)")
    parser.add_argument("--reps", type=_count(1), default=5, help="timed repetitions (default 5)")
    parser.add_argument("--warmup", type=_count(0), default=1,
                        help="untimed rounds before timing (default 1)")
    parser.add_argument("--backends", default="auto", metavar="NAME[,NAME...]",
                        help=f"'auto' (default: all available on the device) or a list of: "
                             f"{BACKEND_HELP}")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto (default): cuda when PyTorch sees a GPU, else cpu")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON record (default: benchmarks/results/<time>-<model>-<host>-"
                             "<device>.json)")
    parser.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                        help="draw latency against prompts per backend")
    parser.add_argument("--relation-tokens", type=_count(2), default=VIT_B_TOKENS,
                        help=f"tokens of the relation comparison (default {VIT_B_TOKENS}, vit_b)")
    parser.add_argument("--threads", type=_count(0), default=0,
                        help="CPU threads for PyTorch and ONNX Runtime (default 0: theirs)")
    parser.add_argument("--seed", type=int, default=0, help="weights and prompts seed")
    parser.add_argument("--train-steps", type=_count(0), default=12,
                        help="training steps of samspt-train's default recipe timed for "
                             "train_views_per_s and train_compute_share (default 12; 0: skip)")
    parser.add_argument("--scan-model", default=None, metavar="MODEL_DIR",
                        help="a model folder with a scan head for scan_vs_encoder_2k (a 2048 px "
                             "tile scanned / its encoder runs; default: the shipped example "
                             "model; none without a head)")
    parser.add_argument("--families", default="all", metavar="NAME[,NAME...]",
                        help="encoder families timed against ViT-B's at 1024 px: tinyvit "
                             "(MobileSAM: encoder_tinyvit_vs_vit_b), hiera (SAM 2.1 Hiera-T: "
                             "encoder_hiera_t_vs_vit_b), all (default) or none; each exports "
                             "ViT-B and the family's encoder (minutes on a CPU)")
    add_verbose_flag(parser)
    return parser


class _Bar:
    """A tqdm bar per phase, on stderr, only when stderr is a terminal."""

    def __init__(self) -> None:
        self.bar = None

    def phase(self, text: str, total: int) -> None:
        from tqdm import tqdm

        self.close()
        self.bar = tqdm(total=total, desc=text, file=sys.stderr, leave=False)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging(args.verbose)
    from samspt.benchmarks.plot import plot_latency
    from samspt.benchmarks.record import build_record, write_record
    from samspt.benchmarks.report import format_report
    from samspt.benchmarks.settings import Settings, parse_backends
    from samspt.benchmarks.family_encoders import parse_families
    from samspt.benchmarks.suite import Progress, run_benchmark

    bar = _Bar() if progress_enabled() else None
    try:
        if args.plot is not None and args.plot.suffix.lower() != ".png":
            return error_exit(f"--plot writes a PNG; give a file name ending in .png, got "
                              f"{args.plot}")
        settings = Settings(model=args.model, prompts=args.prompts, reps=args.reps,
                            warmup=args.warmup, backends=parse_backends(args.backends),
                            device=args.device, relation_tokens=args.relation_tokens,
                            threads=args.threads, seed=args.seed,
                            train_steps=args.train_steps,
                            scan_model=args.scan_model,
                            families=parse_families(args.families)).resolved()
        print(f"samspt-bench: {settings.model} on {settings.device}, backends "
              f"{', '.join(settings.backends)}, prompts {settings.prompts}, {settings.reps} reps",
              file=sys.stderr, flush=True)
        record = build_record(run_benchmark(settings, bar or Progress()))
        path = write_record(record, args.out)
        plot = plot_latency(record, args.plot) if args.plot is not None else None
    except SamsptError as exc:
        return error_exit(exc)
    finally:
        if bar is not None:
            bar.close()
    print(format_report(record))
    print(f"\nrecord: {path}")
    if plot is not None:
        print(f"plot: {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
