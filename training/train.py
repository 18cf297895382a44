"""Train SPT weights (or a small model from scratch) on defect images.

One command, no YAML (the recipe in training/recipe.py, view settings derived from the data):

    samspt-train --data ../shared/datasets/mtd --out runs/mtd                 # 60 min in all
    samspt-train --data DIR --out runs/mine --budget-min 240 --init sam_vit_b_01ec64.pth
    samspt-train --data DIR --out runs/mine                 # again: continues / says it is done

A YAML configuration:

    samspt-train --config training/configs/example_cnn.yaml
    samspt-train --config my.yaml --set optim.lr=3e-4 --set data.root=/data/mvtec
    samspt-train --config my.yaml --resume          # continue exactly where it stopped
    torchrun --nproc-per-node 4 training/train.py --config my.yaml   # DDP, one GPU each
"""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
import time
from pathlib import Path
from typing import List, Optional

from samspt.runtime.cli import add_verbose_flag, error_exit
from samspt.runtime.errors import SamsptError
from samspt.runtime.logs import configure_cli_logging, progress_enabled

log = logging.getLogger("samspt.train")

_EPILOG = textwrap.dedent("""\
    One command (--data, --out):
      samspt-train --data ../shared/datasets/mtd --out runs/mtd
      samspt-train --data /data/tiles --out runs/tiles --budget-min 120
      samspt-train --data /data/tiles --out runs/tiles_sam --init sam_vit_b_01ec64.pth
      samspt-train --data /data/tiles --out runs/more --init runs/tiles/model.safetensors
      samspt-train --data /data/tiles --out runs/tiles --set optim.lr=5e-4 --print-config

    It reads the dataset in any layout the readers know (MTD, MVTec AD, VisA, images/ + masks/,
    images/<split>/ + annotations/<split>/, the SPT paper's, COCO JSON), splits it into train
    and validation (stratified by class, RUN/split.json), derives the view settings from the
    training masks (printed with their reasons), measures a few steps, fits the learning-rate
    schedule to the budget, trains with validations spread over it (the latest weights
    within log.keep_margin of the best validation mIoU kept in RUN/best.safetensors), and
    ends with the finish stage (export to RUN/model, evaluation, RUN/MODEL_CARD.md) within
    --budget-min minutes in all. Without --init a light conv model is trained from scratch;
    --init a SAM checkpoint (.pth) trains SPT on it; --init samspt weights (.safetensors)
    trains on from them. Run the same command again to continue an interrupted run (same
    split and settings, the time already spent counted). The validation images choose the
    kept weights and the gates, so their figures lean optimistic: --set
    data.test_fraction=0.2 holds a fifth of each class out of everything, and the card
    adds the exported model's figures on those images.

    A YAML configuration (--config; --name, --out-dir, --resume): keys as in
    training/configs/*.yaml; unknown keys are errors. --set KEY=VALUE overrides any key in
    either way (e.g. --set model.config.image_size=256, --set data.val_limit=0).
    Exit status: 0 done (or the run was already finished), 2 refused (what and why printed).""")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samspt-train",
        description=textwrap.fill(
            "Train a defect segmentation model. One command: --data DIR --out RUN (a conv "
            "model from scratch, or SPT on --init, within --budget-min, ending with an "
            "exported, evaluated model). Or a YAML configuration: --config.", 92),
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    one = parser.add_argument_group("one command")
    one.add_argument("--data", type=Path, default=None, metavar="DIR",
                     help="dataset folder (layout detected)")
    one.add_argument("--out", type=Path, default=None, metavar="RUN",
                     help="run folder: created; an unfinished run in it is continued")
    one.add_argument("--budget-min", type=float, default=None, metavar="MIN",
                     help="minutes for the whole command, finish stage included (default 60)")
    one.add_argument("--init", type=Path, default=None, metavar="CHECKPOINT",
                     help="start from a SAM checkpoint (.pth) or samspt weights (.safetensors)")
    yaml_group = parser.add_argument_group("YAML configuration")
    yaml_group.add_argument("--config", type=Path, default=None,
                            help="YAML configuration (default: built-in defaults)")
    yaml_group.add_argument("--name", default=None, help="run name (default: the config's name)")
    yaml_group.add_argument("--out-dir", default=None, help="folder of runs (default: runs)")
    yaml_group.add_argument("--resume", action="store_true",
                            help="continue the run in <out-dir>/<name> from its newest checkpoint")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override one key, e.g. --set optim.lr=3e-4 "
                                                  "(repeatable)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved configuration and exit")
    parser.add_argument("--finish-only", type=Path, default=None, metavar="RUN",
                        help="run the finish stage again on a trained run (export, evaluation, "
                             "model card); see samspt-train --finish-only RUN --help")
    add_verbose_flag(parser)
    return parser


def _check_flags(args: argparse.Namespace) -> Optional[str]:
    """A message when flags of the two ways are mixed, else None."""
    one = args.data is not None or args.out is not None
    if not one:
        extra = [f for f, v in (("--budget-min", args.budget_min), ("--init", args.init))
                 if v is not None]
        return f"{' and '.join(extra)} belong(s) to the one command: add --data DIR --out RUN" \
            if extra else None
    if args.data is None or args.out is None:
        return "the one command takes both --data DIR and --out RUN"
    mixed = [f for f, v in (("--config", args.config), ("--name", args.name),
                            ("--out-dir", args.out_dir), ("--resume", args.resume)) if v]
    if mixed:
        return (f"{', '.join(mixed)} belong(s) to the YAML way; with --data/--out the recipe is "
                "built in (change it with --set KEY=VALUE) and running the command again "
                "continues the run")
    return None


class _Progress:
    """The terminal's view of training: a tqdm bar (only on a terminal), else log lines. On a
    time budget the bar counts the seconds to the training deadline and shows the time left."""

    def __init__(self, enabled: bool, timed: bool) -> None:
        self.enabled = enabled
        self.timed = timed
        self.bar = None

    def _bar(self, total: float):
        if self.bar is None and self.enabled:
            from tqdm import tqdm

            if self.timed:
                self.bar = tqdm(desc="training", unit="s", dynamic_ncols=True, total=total,
                                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f}"
                                           " s{postfix}")
            else:
                self.bar = tqdm(desc="training", unit="step", dynamic_ncols=True, total=total)
        return self.bar

    def __call__(self, step: int, total: int, figures: dict) -> None:
        loss = figures.get("loss", float("nan"))
        rate = figures.get("views_per_s", 0.0)
        val, best = figures.get("val_miou"), figures.get("best_miou")
        val_text = "-" if val is None else f"{val:.3f}"
        best_text = "-" if best is None else f"{best:.3f}"
        if "deadline_s" in figures:
            elapsed, deadline = figures.get("elapsed_s", 0.0), figures["deadline_s"]
            bar = self._bar(round(deadline))
            if bar is not None:
                bar.total = round(deadline)
                bar.n = min(round(elapsed), round(deadline))
                left = bar.format_interval(max(0.0, deadline - elapsed))
                bar.set_postfix_str(f"{left} left, step {step}, {rate:.1f} views/s, loss "
                                    f"{loss:.4f}, val {val_text} (best {best_text})",
                                    refresh=False)
                bar.refresh()
            elif figures.get("logged", True):
                log.info("step %d  %.1f/%.1f min  %.1f views/s  loss %.4f  val mIoU %s (best %s)",
                         step, elapsed / 60, deadline / 60, rate, loss, val_text, best_text)
            return
        bar = self._bar(total)
        if bar is not None:
            bar.total = total
            bar.n = step
            bar.set_postfix(loss=f"{loss:.4f}", views_s=f"{rate:.2f}", refresh=False)
            bar.refresh()
        else:
            log.info("step %d/%d  loss %.4f  %.2f views/s", step, total, loss, rate)

    def close(self) -> None:
        self.enabled = False
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _overridden(plan) -> List[str]:
    """The derived view settings that ``--set`` replaced: ``"name VALUE (derived D)"``."""
    used = plan.config.model.config or {}
    return [f"{name} {used[name]:g} (derived {value:g})"
            for name, value in plan.derived.model_overrides().items()
            if name in used and used[name] != value]


def _print_derived(plan) -> None:
    if plan.derived is not None:
        print("view settings derived from the training masks: " + plan.derived.describe())
        changed = _overridden(plan)
        if changed:
            print(f"  - replaced by --set: {', '.join(changed)}")
        held = f" / {len(plan.test)} held out" if plan.test else ""
        print(f"split: {len(plan.train)} train / {len(plan.val)} validation images{held}; "
              f"start: {plan.start}; budget {plan.config.budget.minutes:g} min")


def _one_command(args: argparse.Namespace, argv: List[str], started: float) -> int:
    from samspt.training.auto_run import execute, plan_run
    from samspt.training.distributed import init_distributed, shutdown

    plan = plan_run(args.data, args.out, args.budget_min, args.init, args.overrides)
    if args.print_config:
        if plan.derived is not None:
            print("# view settings derived from the training masks:")
            print("\n".join(f"#   {line}" for line in plan.derived.describe().splitlines()))
            changed = _overridden(plan)
            if changed:
                print(f"#     - replaced by --set: {', '.join(changed)}")
        print(plan.config.to_yaml(), end="")
        return 0
    if plan.state == "finished":
        print(f"{args.out} holds a finished run (status {plan.status.get('state')}, step "
              f"{plan.status.get('step')}, {plan.status.get('elapsed_s', 0) / 60:.1f} min); "
              f"nothing to do. To train anew, pass another --out (or delete {args.out}).")
        return 0
    dist = init_distributed(args.device)
    if dist.is_main:
        _print_derived(plan)
        if plan.state == "resume":
            print(f"continuing the run in {args.out}")
        elif plan.state == "finish":
            print(f"{args.out} holds trained weights; running its finish stage")
    progress = _Progress(dist.is_main and progress_enabled(), timed=True)

    def finish_progress(text: str) -> None:
        progress.close()
        print(f"finish: {text}", file=sys.stderr, flush=True)

    try:
        result = execute(plan, dist, progress, started, command=["samspt-train"] + argv,
                         finish_progress=finish_progress)
    finally:
        progress.close()
        shutdown(dist)
    if not dist.is_main:
        return 0
    trained = result.train
    if trained is not None:
        print(f"done: {trained.step} steps, {trained.elapsed_s / 60:.1f} of "
              f"{plan.config.budget.minutes:g} min; weights {trained.final_weights}")
        if trained.best_val:
            print(_kept_line(trained.best_val,
                             Path(trained.final_weights).with_name('best.safetensors')))
    if result.finish is not None:
        print(f"finished: model folder {getattr(result.finish, 'model_dir', '?')}, model card "
              f"{getattr(result.finish, 'card', '?')}")
    return 0 if trained is None or trained.ranks_in_sync else 1


def _kept_line(kept: dict, path: Optional[Path] = None) -> str:
    """The closing line on the kept weights: their validation, and the best one where that
    was another step's (log.keep_margin)."""
    line = (f"kept weights: validation final mIoU {kept['final']['miou']:.3f}, draft "
            f"{kept['draft']['miou']:.3f} (step {kept['step']})")
    top = kept.get("top")
    if top and top["step"] != kept["step"]:
        line += f"; best validation {top['miou']:.3f} at step {top['step']}"
    return line + (f" in {path}" if path else "")


def _yaml_way(args: argparse.Namespace) -> int:
    from samspt.training.distributed import init_distributed, shutdown
    from samspt.training.train_config import load_train_config
    from samspt.training.trainer import Trainer

    overrides = list(args.overrides)
    overrides += [f"name={args.name}"] if args.name else []
    overrides += [f"out_dir={args.out_dir}"] if args.out_dir else []
    config = load_train_config(args.config, overrides)
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    dist = init_distributed(args.device)
    progress = _Progress(dist.is_main and progress_enabled(), timed=config.budget.minutes > 0)
    try:
        result = Trainer(config, dist, progress).run(resume=args.resume)
    finally:
        progress.close()
        shutdown(dist)
    if dist.is_main:
        print(f"done: {result.step} steps in {result.seconds / 60:.1f} min; weights "
              f"{result.final_weights}")
        if result.best_val:
            print(_kept_line(result.best_val))
    return 0 if result.ranks_in_sync else 1


def _finish_only(argv: List[str]) -> int:
    from samspt.training.finish import main_finish

    return main_finish([a for a in argv if a != "--finish-only"])


def main(argv: Optional[List[str]] = None) -> int:
    started = time.perf_counter()
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--finish-only" in argv:
        return _finish_only(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_cli_logging(args.verbose)
    problem = _check_flags(args)
    if problem:
        return error_exit(problem)
    try:
        if args.data is not None:
            return _one_command(args, argv, started)
        return _yaml_way(args)
    except SamsptError as exc:
        return error_exit(exc)


if __name__ == "__main__":
    sys.exit(main())
