"""Train SPT weights (or a small model from scratch) on defect images.

    samspt-train --config training/configs/example_cnn.yaml
    samspt-train --config my.yaml --set optim.lr=3e-4 --set data.root=/data/mvtec
    samspt-train --config my.yaml --resume          # continue exactly where it stopped
    torchrun --nproc-per-node 4 training/train.py --config my.yaml   # DDP, one GPU each
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from samspt.runtime.errors import SamsptError
from samspt.runtime.logs import configure_cli_logging, progress_enabled

log = logging.getLogger("samspt.train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samspt-train",
        description="Train SPT weights on a defect dataset (MTD, MVTec AD, VisA, an images/ + "
                    "masks/ folder, or the SPT paper's layout). Writes the resolved config, the "
                    "split, metrics (JSON lines), plots, atomic checkpoints and the final "
                    "weights into <out-dir>/<name>/.",
        epilog="Config keys: see training/configs/*.yaml; unknown keys are errors.")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML configuration (default: built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override one key, e.g. --set optim.lr=3e-4 "
                                                  "(repeatable)")
    parser.add_argument("--name", default=None, help="run name (default: the config's name)")
    parser.add_argument("--out-dir", default=None, help="folder of runs (default: runs)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in <out-dir>/<name> from its newest checkpoint")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved configuration and exit")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging(args.verbose)
    from samspt.training.distributed import init_distributed, shutdown
    from samspt.training.train_config import load_train_config
    from samspt.training.trainer import Trainer

    overrides = list(args.overrides)
    overrides += [f"name={args.name}"] if args.name else []
    overrides += [f"out_dir={args.out_dir}"] if args.out_dir else []
    try:
        config = load_train_config(args.config, overrides)
    except SamsptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    dist = init_distributed(args.device)
    bar = None
    if dist.is_main and progress_enabled():
        from tqdm import tqdm

        bar = tqdm(desc="training", unit="step", dynamic_ncols=True)

    def progress(step: int, total: int, figures: dict) -> None:
        if bar is not None:
            bar.total = total
            bar.n = step
            bar.set_postfix(loss=f"{figures.get('loss', float('nan')):.4f}",
                            img_s=f"{figures.get('images_per_s', 0):.2f}", refresh=False)
            bar.refresh()
        else:
            log.info("step %d/%d  loss %.4f  %.2f images/s", step, total,
                     figures.get("loss", float("nan")), figures.get("images_per_s", 0.0))

    try:
        result = Trainer(config, dist, progress).run(resume=args.resume)
    except SamsptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
        shutdown(dist)
    if dist.is_main:
        print(f"done: {result.step} steps in {result.seconds / 60:.1f} min; weights "
              f"{result.final_weights}")
        if result.best_val:
            print(f"best validation: final mIoU {result.best_val['final']['miou']:.3f}, draft "
                  f"{result.best_val['draft']['miou']:.3f} (step {result.best_val['step']})")
    return 0 if result.ranks_in_sync else 1


if __name__ == "__main__":
    sys.exit(main())
