"""Learning-rate schedules: linear warm-up, then cosine or step decay, over optimizer steps or
over the elapsed share of a wall-clock budget (:class:`TimeBudget`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Sequence

import torch

from samspt.runtime.errors import ConfigError

SCHEDULES = ("cosine", "step", "constant")


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str,
              milestones: Sequence[int] = (), gamma: float = 0.1, min_factor: float = 0.01) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return gamma ** sum(step >= m for m in milestones)
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                    schedule: str, milestones: Sequence[int] = (),
                    gamma: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    lr_factor(0, total_steps, warmup_steps, schedule, milestones, gamma)  # validates `schedule`
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, schedule, milestones,
                                          gamma))


# --------------------------------------------------------------------------- time budget
def progress_lr_factor(progress: float, warmup_share: float, min_factor: float = 0.01) -> float:
    """Multiplier of the base learning rate at ``progress`` in [0, 1] of a time budget's
    training window: a linear warm-up from ``min_factor`` to 1 over the first ``warmup_share``,
    then a cosine from 1 down to ``min_factor``, reached at progress 1 (the training deadline).
    Progress outside [0, 1] is clamped."""
    progress = min(1.0, max(0.0, float(progress)))
    if warmup_share > 0 and progress < warmup_share:
        return min_factor + (1 - min_factor) * progress / warmup_share
    span = max(1e-12, 1.0 - warmup_share)
    done = min(1.0, (progress - warmup_share) / span)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * done))


# Time kept for the finish stage beyond evaluating the validation images: exporting the graphs
# and checking them (seconds). A measured estimate replaces the share when it is larger.
FINISH_EXPORT_S = 20.0
# Evaluation passes the finish stage makes over the validation images (PyTorch, exported graphs).
FINISH_EVAL_PASSES = 2
# Seconds per scan view when the finish stage evaluates the exported graphs' scan with no gate
# (every view through the encoder and the decoders; ONNX Runtime, 128 px views, 2-core VM:
# 24 images of 1024 px, 441 views each, in 80 s).
FINISH_SCAN_VIEW_S = 0.0075
# The least training a budget must leave room for: this many steps and one validation.
MIN_STEPS = 10


def finish_estimate_s(eval_image_s: float, n_val: int, refit_s: float = 0.0,
                      scan_views: int = 0, n_test: int = 0, test_scan_views: int = 0) -> float:
    """Seconds the finish stage is expected to take: every validation image evaluated
    FINISH_EVAL_PASSES times at ``eval_image_s`` each, their ``scan_views`` scan views once at
    FINISH_SCAN_VIEW_S, the ``n_test`` held-out images once with their ``test_scan_views``,
    plus FINISH_EXPORT_S for the export, plus ``refit_s`` for the scan head's refit
    (:func:`samspt.training.scan_refit.plan_refit`; 0: none)."""
    return (FINISH_EVAL_PASSES * eval_image_s * n_val + eval_image_s * n_test
            + FINISH_SCAN_VIEW_S * (scan_views + test_scan_views) + FINISH_EXPORT_S + refit_s)


@dataclass
class TimeBudget:
    """Where a run of ``total_s`` seconds (the whole command, finish stage included) spends its
    time, on the command's clock (seconds since it started, carried over by a resume):

    ``[0, train_start_s)``  set-up: reading data, building the model, measuring steps;
    ``[train_start_s, train_end_s)``  training and its validations: the learning rate is
        :func:`progress_lr_factor` of ``progress = (t - train_start_s) / (train_end_s -
        train_start_s)``; validation ``k`` of ``evaluations`` is due at progress
        ``k / evaluations`` (the last one when the steps stop, just before ``train_end_s``);
    ``[train_end_s, total_s]``  the finish stage: ``reserve_s = max(finish_share * total_s,
        finish estimate)`` (:func:`finish_estimate_s`).
    """

    total_s: float
    train_start_s: float
    train_end_s: float
    warmup_share: float
    evaluations: int

    @property
    def reserve_s(self) -> float:
        return self.total_s - self.train_end_s

    def progress(self, now_s: float) -> float:
        span = max(1e-9, self.train_end_s - self.train_start_s)
        return min(1.0, max(0.0, (now_s - self.train_start_s) / span))

    def lr_factor(self, now_s: float) -> float:
        return progress_lr_factor(self.progress(now_s), self.warmup_share)

    def validations_due(self, now_s: float) -> int:
        """How many of the evaluations before the last are due at ``now_s`` (0..evaluations-1)."""
        return min(self.evaluations - 1, int(self.progress(now_s) * self.evaluations + 1e-9))

    def should_stop(self, now_s: float, step_s: float, val_s: float) -> bool:
        """Whether another step (``step_s``) and the last validation (``val_s``) would pass the
        training deadline."""
        return now_s + step_s + val_s >= self.train_end_s

    def to_dict(self) -> Dict[str, float]:
        return dict(vars(self))

    @classmethod
    def plan(cls, total_s: float, now_s: float, finish_share: float, finish_s: float,
             step_s: float, val_s: float, warmup_share: float, evaluations: int) -> "TimeBudget":
        """The budget of a run starting training at ``now_s``; a ConfigError, giving the least
        budget that works, when it leaves no room for MIN_STEPS steps and one validation."""
        reserve = max(finish_share * total_s, finish_s)
        need = MIN_STEPS * step_s + val_s
        if total_s - reserve - now_s < need:
            least = max((now_s + need) / (1 - finish_share), now_s + need + finish_s)
            least_min = math.ceil(least / 6.0) / 10.0
            raise ConfigError(
                f"a budget of {total_s / 60:g} min is too short: after {now_s:.0f} s of "
                f"set-up, {MIN_STEPS} training steps ({step_s:.2f} s each, measured) and one "
                f"validation ({val_s:.1f} s, estimated) need {need:.0f} s, and the finish stage "
                f"keeps {reserve:.0f} s; give at least --budget-min {least_min:g} "
                f"(budget.minutes)")
        return cls(float(total_s), float(now_s), float(total_s - reserve), float(warmup_share),
                   int(evaluations))
