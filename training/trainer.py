"""The training loop: AdamW, warm-up + decay, gradient accumulation, mixed precision, DDP,
atomic checkpoints, exact resume, validation with the evaluation protocol.

Two ways to end a run: a step count (``optim.max_steps`` / ``optim.epochs``, the learning rate
a function of the step), or a wall-clock budget (``budget.minutes > 0``, :class:`TimeBudget`:
the learning rate a function of the elapsed share of the training time, validations at
time-based marks, the steps stop at the training deadline). Elapsed time is counted on the
command's clock from ``started`` (a resumed run carries on from its checkpoint's).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from samspt.runtime.errors import ConfigError
from samspt.runtime.files import atomic_write_text
from samspt.training.checkpoints import build_model, load_spt_model, save_spt_weights
from samspt.training.modeling.config import LoraConfig
from samspt.training.evaluation import TorchPredictor, evaluate_records, fmt_figure
from samspt.training.distributed import (DistInfo, all_gather_objects, all_reduce_mean, barrier,
                                         parameters_digest)
from samspt.training.loss_weights import LossWeights
from samspt.training.losses import focus_masks, scan_head_loss, spt_loss, token_targets
from samspt.training.modeling.model import SptSam
from samspt.training.run_files import RunFiles
from samspt.training.scan_refit import REFIT_SHARE, can_refit, image_scan_views, plan_refit
from samspt.training.schedule import TimeBudget, build_scheduler, finish_estimate_s
from samspt.training.run_setup import VIEW_FIELDS, model_config_for, read_records
from samspt.training.train_config import TrainConfig, model_config_overrides

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, Dict[str, float]], None]

# Steps timed before a budgeted run plans its time (after one untimed warm-up step), and
# validation images timed to estimate a validation.
PROBE_STEPS = 3
PROBE_MAX_S = 30.0  # fewer timed steps when they take longer than this (a large model)
PROBE_VAL_IMAGES = 2
OVERLAY_S = 3.0  # the overlay grid's seconds, assumed until a validation measures them


def _top(kept: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The best validation so far (step, final mIoU) from the kept weights' summary
    (``kept["top"]``; summaries written before it are their own best)."""
    if not kept:
        return None
    return kept.get("top") or {"step": kept.get("step"), "miou": kept["final"]["miou"]}


def best_score(kept: Optional[Dict[str, Any]]) -> Optional[float]:
    """The best validation final mIoU so far (None before the first validation)."""
    top = _top(kept)
    return top["miou"] if top else None


def keep(kept: Optional[Dict[str, Any]], summary: Dict[str, Any], step: int,
         margin: float) -> Optional[Dict[str, Any]]:
    """The new kept summary if the weights validated at ``step`` (``summary``, final mIoU in
    ``summary["final"]["miou"]``) replace the kept ones (``kept``), else None. They do at or
    above the best validation so far, or within ``margin`` (``log.keep_margin``) below it, so
    later weights, further down the decaying learning rate, win over validation noise. The
    best so far rides along as ``top`` (step, final mIoU)."""
    score = summary["final"]["miou"]
    best = _top(kept)
    if score is None or (best is not None and score < best["miou"] - margin):
        return None
    if best is None or score > best["miou"]:
        best = {"step": step, "miou": score}
    return dict(summary, step=step, top=best)


@dataclass
class TrainResult:
    step: int
    final_weights: str
    best_val: Optional[Dict[str, Any]]
    seconds: float
    ranks_in_sync: bool
    elapsed_s: float = 0.0  # on the command's clock (a resumed run's included)
    budget: Optional[TimeBudget] = None
    eval_image_s: Optional[float] = None  # measured seconds to validate one image


class _TrainStep(nn.Module):
    """Loss of a batch of images, each with its own K prompts (the module DDP wraps)."""

    def __init__(self, model: SptSam, weights: LossWeights) -> None:
        super().__init__()
        self.model = model
        self.weights = weights

    def forward(self, images: torch.Tensor, coords: List[torch.Tensor],
                labels: List[torch.Tensor], targets: List[torch.Tensor],
                view_masks: Optional[torch.Tensor] = None,
                prompt_weight: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        embeddings = self.model.encode(images)
        terms = self._prompt_terms(embeddings, coords, labels, targets, prompt_weight)
        if view_masks is not None and self.model.scan_head is not None:
            tokens = self.model.config.embedding_size
            wanted = torch.stack([token_targets(m, tokens) for m in view_masks])
            head = scan_head_loss(self.model.defect_logits(embeddings), wanted)
            terms["scan_head"] = head
            terms["loss"] = terms["loss"] + self.weights.scan_head * head
        return terms

    def _prompt_terms(self, embeddings: torch.Tensor, coords: List[torch.Tensor],
                      labels: List[torch.Tensor], targets: List[torch.Tensor],
                      prompt_weight: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        count = coords[0].shape[0]
        if all(c.shape == coords[0].shape for c in coords) and (
                count == 1 or self.model.config.view_settings is not None):
            # Views (K prompts each, data.prompts_per_view): all prompts in one decoder call,
            # each with its own view's embedding and relation.
            if count > 1:
                embeddings = embeddings.repeat_interleave(count, dim=0)
            return self._terms(embeddings, torch.cat(coords), torch.cat(labels),
                               torch.cat(targets), prompt_weight)
        totals: Dict[str, torch.Tensor] = {}
        for i in range(len(coords)):
            terms = self._terms(embeddings[i:i + 1], coords[i], labels[i], targets[i])
            for key, value in terms.items():
                totals[key] = totals.get(key, 0) + value / len(coords)
        return totals

    def _terms(self, embeddings: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor,
               targets: torch.Tensor, prompt_weight: Optional[torch.Tensor] = None
               ) -> Dict[str, torch.Tensor]:
        if prompt_weight is not None and len(prompt_weight) == len(embeddings) > 1:
            # Prompts that weigh nothing (scan windows training the scan head alone) are not
            # decoded: the loss is the same weighted mean without them, and a step decodes
            # only what trains.
            keep = prompt_weight > 0
            if not bool(keep.any()):
                zero = embeddings.sum() * 0.0
                names = ("draft", "final", "score") if self.weights.score > 0 else \
                    ("draft", "final")
                return {"loss": zero, **{name: zero.detach() for name in names}}
            if not bool(keep.all()):
                embeddings, coords, labels, targets, prompt_weight = (
                    t[keep] for t in (embeddings, coords, labels, targets, prompt_weight))
        out = self.model.decode(embeddings, coords, labels)
        focus = focus_masks(coords, labels, targets.shape[-1], self.weights.focus_margin)
        return spt_loss(out.draft_logits, out.logits, out.scores, targets, self.weights, focus,
                        prompt_weight)


# ------------------------------------------------------------------------------ set-up
def build_training_model(config: TrainConfig) -> SptSam:
    """The model a configuration starts from (SAM weights, SPT/full weights, or scratch), with
    ``model.config``'s overrides applied (to a model loaded from weights: only the view
    settings, which change no module)."""
    section = config.model
    if section.init_weights:
        model = load_spt_model(section.init_weights, section.sam_checkpoint)
        overrides = model_config_overrides(section.config)
        fixed = sorted(k for k, v in overrides.items()
                       if k not in VIEW_FIELDS and getattr(model.config, k) != v)
        if fixed:
            raise ConfigError(f"model.config.{fixed[0]} cannot change a model started from "
                              f"{section.init_weights}: its weights fix "
                              f"{', '.join(fixed)}; only the view settings "
                              f"({', '.join(VIEW_FIELDS)}) may differ")
        if overrides:
            model.config = dataclasses.replace(model.config, **overrides)
        return model
    lora = LoraConfig(section.lora_rank, section.lora_alpha)
    if section.mode == "spt" and not section.sam_checkpoint:
        raise ConfigError("model.mode spt tunes a pretrained SAM: set model.sam_checkpoint (or "
                          "model.init_weights); to train a small model from scratch use "
                          "model.mode full")
    return build_model(model_config_for(section), section.sam_checkpoint, lora)


def _amp(config: TrainConfig, device: torch.device) -> Optional[torch.dtype]:
    choice = config.optim.amp
    if choice == "off" or (choice == "auto" and device.type != "cuda"):
        return None
    if choice == "fp16":
        return torch.float16
    if choice == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


class _EpochItems(torch.utils.data.Dataset):
    """Items addressed by (epoch, index): one DataLoader (and its workers) serves every epoch,
    each item still drawn from the generator of (seed, epoch, index)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Tuple[int, int]) -> Dict[str, Any]:
        epoch, index = key
        self.dataset.set_epoch(epoch)
        return self.dataset[index]


@dataclass
class _Window:
    """Figures of the steps since the last metrics line."""

    sums: Dict[str, float] = dataclasses.field(default_factory=dict)
    steps: int = 0
    items: int = 0
    step_s: float = 0.0  # wall time of the steps: waiting for data + compute + bookkeeping
    compute_s: float = 0.0  # forward, backward and optimizer


class Trainer:
    """Trains one run. ``progress(step, total, figures)`` is called after each metrics line
    (``figures["logged"]`` True) and, on a time budget, after every step (``total`` 0;
    ``figures`` then hold ``elapsed_s`` and ``deadline_s``, the training deadline).

    ``records``: (train, validation[, held-out]) records already read (else read from
    ``data.root``, or from the run's split when resuming; held-out images are only written
    into the split and counted in the finish stage's time); ``started``: ``time.perf_counter()`` when the command
    started (its set-up counts against a budget)."""

    def __init__(self, config: TrainConfig, dist: DistInfo = DistInfo(),
                 progress: Optional[ProgressFn] = None,
                 records: Optional[Sequence[Sequence]] = None,
                 started: Optional[float] = None) -> None:
        self.config = config
        self.dist = dist
        self.progress = progress
        self.files = RunFiles(config.run_dir)
        self._given_records = records
        self.started = time.perf_counter() if started is None else started
        self.elapsed_base = 0.0  # elapsed seconds carried over from a resumed run
        self.eval_image_s: Optional[float] = None
        self.overlay_s = OVERLAY_S  # seconds the overlay grid takes (measured at validations)
        self.last_val: Optional[float] = None
        self.save_s = 0.0  # seconds the last checkpoint took (a budget keeps room for the end)
        self._figures: Dict[str, Any] = {}  # the last metrics line's figures, for progress

    def clock(self) -> float:
        """Seconds on the command's clock (a resumed run's elapsed time included)."""
        return self.elapsed_base + time.perf_counter() - self.started

    # ----------------------------------------------------------------------- set-up
    def _records(self, resume: bool):
        from samspt.training.data.split import read_split_dataset, split_dataset

        data = self.config.data
        if resume and self.files.split.exists():
            return read_split_dataset(self.files.split, data.root)
        if self._given_records is not None:
            given = [list(part) for part in self._given_records]
            return given[0], given[1], given[2] if len(given) > 2 else []
        records = read_records(data)
        return split_dataset(records, val_fraction=data.val_fraction, seed=data.split_seed,
                             test_fraction=data.test_fraction)

    def _write_run_files(self) -> None:
        from samspt.training.data.split import write_split

        data = self.config.data
        if self.dist.is_main:
            self.files.root.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.files.config, self.config.to_yaml())
            write_split(self.files.split, self.train_records, self.val_records, data.root,
                        seed=data.split_seed, val_fraction=data.val_fraction,
                        test=self.test_records, test_fraction=data.test_fraction)
        barrier(self.dist)

    def _dataset(self, records, train: bool):
        from samspt.training.data.augment import AugmentSettings
        from samspt.training.data.dataset import DefectDataset
        from samspt.training.data.prompt_settings import PromptSettings
        from samspt.training.data.view_samples import ViewSampling

        data = self.config.data
        settings = PromptSettings(prompts_per_image=data.prompts_per_image,
                                  box_mode=data.box_mode, box_jitter=data.box_jitter,
                                  point_prob=data.point_prob, negative_prob=data.negative_prob,
                                  augment=data.augment and AugmentSettings(
                                      brightness=data.brightness, contrast=data.contrast,
                                      gamma=data.gamma, noise=data.noise))
        sampling = ViewSampling(tight=data.view_tight, loose=data.view_loose,
                                scan=data.view_scan, free_scan=data.view_free_scan,
                                prompts_per_view=data.prompts_per_view,
                                scan_prompts=data.scan_prompts)
        return DefectDataset(records, self.model.config, settings, train=train,
                             seed=self.config.optim.seed, sampling=sampling,
                             copy_paste=data.copy_paste)

    def _epoch_batches(self, epoch: int) -> List[List[int]]:
        """This process's micro-batches of an epoch: every defective image, a seeded share of
        defect-free ones, shuffled with a generator of (seed, epoch), split across ranks."""
        rng = np.random.default_rng([self.config.optim.seed, epoch])
        defective = [i for i, r in enumerate(self.train_records) if not r.is_defect_free]
        free = [i for i, r in enumerate(self.train_records) if r.is_defect_free]
        n_free = min(len(free), int(round(self.config.data.defect_free_fraction * len(defective))))
        chosen = defective + (rng.choice(free, n_free, replace=False).tolist() if n_free else [])
        order = rng.permutation(np.asarray(chosen, dtype=np.int64)).tolist()
        per_rank = len(order) // self.dist.world_size
        mine = order[self.dist.rank::self.dist.world_size][:per_rank]
        size = self.config.optim.batch_size
        return [mine[i:i + size] for i in range(0, len(mine) - size + 1, size)]

    def _batch_stream(self, step: int, steps_per_epoch: int) -> Iterator[List[Tuple[int, int]]]:
        """Micro-batches of (epoch, index) from optimizer step ``step`` on, epoch after epoch
        (each epoch's batches cut to whole optimizer steps)."""
        accum = self.config.optim.grad_accum
        epoch = step // steps_per_epoch
        skip = (step - epoch * steps_per_epoch) * accum
        while True:
            for batch in self._epoch_batches(epoch)[skip:steps_per_epoch * accum]:
                yield [(epoch, i) for i in batch]
            epoch, skip = epoch + 1, 0

    def _loader(self, dataset, step: int, steps_per_epoch: int) -> Iterator[List[Dict[str, Any]]]:
        workers = self.config.data.workers
        return iter(torch.utils.data.DataLoader(
            _EpochItems(dataset), batch_sampler=self._batch_stream(step, steps_per_epoch),
            collate_fn=list, num_workers=workers, prefetch_factor=2 if workers else None))

    def _prepare_model(self) -> None:
        cfg = self.config
        self.model = build_training_model(cfg).to(self.dist.device)
        if cfg.optim.channels_last and self.model.config.encoder == "conv":
            self.model.image_encoder.to(memory_format=torch.channels_last)
        self.ema = None
        if cfg.optim.ema:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=cfg.optim.ema, use_warmup=True)

    @property
    def kept(self) -> SptSam:
        """The weights a run validates, keeps as best and final, and exports: the moving
        average with ``optim.ema``, else the trained weights themselves."""
        return self.ema.module if self.ema is not None else self.model

    # ------------------------------------------------------------------------ run
    def run(self, resume: bool = False) -> TrainResult:
        cfg, dist, files = self.config, self.dist, self.files
        start_time = time.perf_counter()
        timed = cfg.budget.minutes > 0
        if not resume and files.latest() is not None:
            raise ConfigError(f"{files.root} already holds a run; pass --resume to continue it "
                              "or choose another --name")
        torch.manual_seed(cfg.optim.seed)
        if cfg.optim.threads:
            torch.set_num_threads(cfg.optim.threads)  # the process's CPU threads
        if cfg.optim.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.train_records, self.val_records, self.test_records = self._records(resume)
        self._prepare_model()
        trainable = self.model.set_train_mode(cfg.model.mode)
        log.info("%s, mode %s: %s trainable parameters; %d train / %d validation images",
                 self.model.config.name, cfg.model.mode, f"{trainable:,}",
                 len(self.train_records), len(self.val_records))

        decay, no_decay = [], []
        for param in self.model.parameters():
            if param.requires_grad:
                (decay if param.dim() >= 2 else no_decay).append(param)
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.optim.weight_decay},
                                       {"params": no_decay, "weight_decay": 0.0}],
                                      lr=cfg.optim.lr)
        dataset = self._dataset(self.train_records, train=True)
        steps_per_epoch = len(self._epoch_batches(0)) // cfg.optim.grad_accum
        if steps_per_epoch == 0:
            raise ConfigError("an epoch has no complete optimizer step: lower optim.batch_size or "
                              "optim.grad_accum, or add images")
        if timed:
            total = cfg.optim.max_steps or 0  # 0: the clock alone ends the run
            scheduler = None
        else:
            total = cfg.optim.max_steps or cfg.optim.epochs * steps_per_epoch
            scheduler = build_scheduler(optimizer, total, cfg.optim.warmup_steps,
                                        cfg.optim.schedule, cfg.optim.milestones, cfg.optim.gamma)
        amp_dtype = _amp(cfg, dist.device)
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        step_module: nn.Module = _TrainStep(self.model, cfg.loss)

        step, best, state = 0, None, None
        if resume:
            state = files.load_checkpoint(self.model, map_location="cpu")
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            step, best = int(state["step"]), state.get("best")
            if self.ema is not None:
                if state.get("ema") is None:
                    raise ConfigError(f"{files.root}'s checkpoint has no moving average of the "
                                      "weights; resume it with optim.ema 0, as it was trained")
                self.ema.module.load_state_dict(state["ema"])
            self.elapsed_base = float(state.get("elapsed_s", 0.0))
            self.eval_image_s = state.get("eval_image_s")
            self.overlay_s = float(state.get("overlay_s") or OVERLAY_S)
            if dist.is_main:
                files.truncate_metrics(step)
        budget, val_done, step_s = None, 0, None
        if timed and state is not None and state.get("budget"):
            budget = TimeBudget(**state["budget"])
            val_done, step_s = int(state.get("val_done", 0)), state.get("step_s")
        elif timed:   # rank 0's measurements plan the run of every rank
            step_s = self._probe(step_module, dataset, amp_dtype)
            try:
                planned, problem = self._plan(step_s), None
            except ConfigError as exc:
                planned, problem = None, str(exc)
            budget, problem, step_s, self.eval_image_s = self._agreed(
                (planned, problem, step_s, self.eval_image_s))
            if problem:
                raise ConfigError(problem)
        if state is None:
            self._write_run_files()
        if budget is not None and dist.is_main:
            files.append_metrics({"step": step, "elapsed_s": round(self.clock(), 2),
                                  "budget": budget.to_dict()})
            log.info("time budget %.1f min: training until %.1f min (%.0f s kept for the finish "
                     "stage), %d validations", budget.total_s / 60, budget.train_end_s / 60,
                     budget.reserve_s, budget.evaluations)

        if dist.distributed:
            step_module = nn.parallel.DistributedDataParallel(
                step_module, device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
                find_unused_parameters=True)
        self.model.train()
        window = _Window()
        loader = self._loader(dataset, step, steps_per_epoch)
        micro, validated_at = 0, -1
        val_s = self._val_estimate()
        while total == 0 or step < total:
            if budget is not None:
                # Room for one more step, the last validation, checkpoint and final weights;
                # rank 0's clock decides for every rank.
                now = self.clock()
                now, stop = self._agreed((now, budget.should_stop(
                    now, step_s or 0.0, val_s + 2 * self.save_s + 1.0)))
                if stop:
                    break
                for group in optimizer.param_groups:
                    group["lr"] = cfg.optim.lr * budget.lr_factor(now)
            epoch = step // steps_per_epoch
            step_start = time.perf_counter()
            for _ in range(cfg.optim.grad_accum):
                batch = next(loader)
                compute_start = time.perf_counter()
                last_micro = (micro + 1) % cfg.optim.grad_accum == 0
                sync = contextlib.nullcontext() if last_micro or not dist.distributed \
                    else step_module.no_sync()
                with sync:
                    losses = self._forward(step_module, batch, amp_dtype)
                    scaler.scale(losses["loss"] / cfg.optim.grad_accum).backward()
                for key, value in losses.items():
                    window.sums[key] = window.sums.get(key, 0.0) + \
                        float(value.detach()) / cfg.optim.grad_accum
                window.items += len(batch)
                window.compute_s += time.perf_counter() - compute_start
                micro += 1
            compute_start = time.perf_counter()
            if cfg.optim.grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if scheduler is not None:
                scheduler.step()
            step += 1
            if self.ema is not None:
                self.ema.update(self.model, step=step)
            window.steps += 1
            end = time.perf_counter()
            window.compute_s += end - compute_start
            window.step_s += end - step_start
            took = end - step_start
            step_s = took if step_s is None else 0.8 * step_s + 0.2 * took
            if step % cfg.log.log_every == 0 or step == total:
                self._log(step, epoch, window, optimizer, total, budget, best)
                window = _Window()
            elif budget is not None and self.progress and dist.is_main and self._figures:
                self.progress(step, total, dict(self._figures, step=step, logged=False,
                                                elapsed_s=round(self.clock(), 2)))
            if budget is not None:   # marks passed (several after a slow validation: one)
                marks = self._agreed(budget.validations_due(self.clock()))
                due = marks > val_done
            else:
                due = (cfg.log.val_every and step % cfg.log.val_every == 0) or \
                    (not cfg.log.val_every and step % steps_per_epoch == 0) or step == total
            if due:
                best, val_s = self._validate(step, best), self._val_estimate()
                validated_at = step
                if budget is not None:
                    val_done = max(marks, self._agreed(budget.validations_due(self.clock())))
            if (step % cfg.log.checkpoint_every == 0 or step == total or
                    (due and budget is not None)):
                self._checkpoint(step, optimizer, scheduler, scaler, best, budget, val_done,
                                 step_s)
        del loader  # stops its workers
        if budget is not None:  # the last validation and checkpoint, at the deadline
            if window.steps:
                self._log(step, step // steps_per_epoch, window, optimizer, total, budget, best)
            if validated_at != step:
                best = self._validate(step, best)
            self._checkpoint(step, optimizer, scheduler, scaler, best, budget, val_done, step_s)

        digests = all_gather_objects(dist, parameters_digest(self.model))
        in_sync = len(set(digests)) == 1
        elapsed = self.clock()
        if dist.is_main:
            save_spt_weights(self.kept, files.final, mode=cfg.model.mode,
                             extra={"step": str(step), "elapsed_s": f"{elapsed:.1f}"})
            files.append_metrics({"step": step, "elapsed_s": round(elapsed, 2),
                                  "ranks": dist.world_size, "ranks_in_sync": in_sync,
                                  "digests": digests})
            self._plots()
        barrier(dist)
        if not in_sync:
            log.error("model replicas differ after training: %s", digests)
        return TrainResult(step, str(files.final), best, time.perf_counter() - start_time,
                           in_sync, self.clock(), budget, self.eval_image_s)

    # ------------------------------------------------------------------- time budget
    def _agreed(self, value):
        """Rank 0's ``value`` on every rank (time-based decisions must not split the ranks)."""
        return all_gather_objects(self.dist, value)[0] if self.dist.distributed else value

    def _val_estimate(self) -> float:
        """Seconds one validation is expected to take (validation images + overlays)."""
        overlays = self.overlay_s if self.config.log.overlay_images else 0.0
        return (self.eval_image_s or 0.0) * len(self._val_subset()) + overlays

    def _probe(self, step_module: nn.Module, dataset, amp_dtype) -> float:
        """Seconds per optimizer step: the median of PROBE_STEPS steps after an untimed one
        (fewer past PROBE_MAX_S), whose updates are then undone; and ``eval_image_s``, timed
        on PROBE_VAL_IMAGES validation images. Nothing of the run changes: weights, buffers
        and the random state are restored."""
        cfg = self.config
        saved = copy.deepcopy(self.model.state_dict())
        rng = torch.get_rng_state()
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr)
        batches = self._batch_stream(0, max(1, len(self._epoch_batches(0)) // cfg.optim.grad_accum))
        items = _EpochItems(dataset)
        self.model.train()
        times: List[float] = []
        while len(times) < PROBE_STEPS + 1 and (len(times) < 2 or sum(times[1:]) < PROBE_MAX_S):
            start = time.perf_counter()
            for _ in range(cfg.optim.grad_accum):
                batch = [items[key] for key in next(batches)]
                losses = self._forward(step_module, batch, amp_dtype)
                (losses["loss"] / cfg.optim.grad_accum).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
        self.model.load_state_dict(saved)
        torch.set_rng_state(rng)
        step_s = float(np.median(times[1:]))
        probe = self._val_subset()[:PROBE_VAL_IMAGES]
        start = time.perf_counter()
        evaluate_records(TorchPredictor(self.model), probe, prompt="box", seed=0, scan=False)
        self.eval_image_s = (time.perf_counter() - start) / max(1, len(probe))
        self.model.train()
        log.info("measured %.2f s per step (%d views) and %.2f s per validation image",
                 step_s, cfg.optim.batch_size * cfg.optim.grad_accum, self.eval_image_s)
        return step_s

    def _plan(self, step_s: float) -> TimeBudget:
        b = self.config.budget
        return TimeBudget.plan(
            total_s=b.minutes * 60.0, now_s=self.clock(), finish_share=b.finish_share,
            finish_s=finish_estimate_s(self.eval_image_s or 0.0, len(self.val_records),
                                       self._refit_s(), self._scan_views(self.val_records),
                                       n_test=len(self.test_records),
                                       test_scan_views=self._scan_views(self.test_records)),
            step_s=step_s, val_s=self._val_estimate(), warmup_share=b.warmup_share,
            evaluations=b.evaluations)

    # --------------------------------------------------------------------- helpers
    def _scan_views(self, records: Sequence) -> int:
        """The scan views of ``records``' images (the finish stage scans each validation and
        held-out image once; 0: a model without views, whose scan is one view an image)."""
        if self.model.config.view_settings is None or not records:
            return 0
        unique = {r.image_path: r for r in records}
        return sum(image_scan_views(list(unique.values()), self.model.config))

    def _refit_s(self) -> float:
        """Seconds the finish stage's refit of the scan head is expected to take (0: none):
        the training images' scan views, at most REFIT_SHARE of the budget."""
        if not can_refit(self.model) or not self.train_records:
            return 0.0
        cap = REFIT_SHARE * self.config.budget.minutes * 60.0 if self.config.budget.minutes \
            else None
        return plan_refit(self.train_records, self.model.config, cap).seconds

    def _forward(self, step_module: nn.Module, batch: Sequence[Dict[str, Any]],
                 amp_dtype: Optional[torch.dtype]) -> Dict[str, torch.Tensor]:
        device = self.dist.device
        images = torch.stack([item["image"] for item in batch]).to(device)
        if self.config.optim.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        coords = [item["point_coords"].to(device) for item in batch]
        labels = [item["point_labels"].to(device) for item in batch]
        targets = [item["targets"].to(device) for item in batch]
        view_masks = (torch.stack([item["view_mask"] for item in batch]).to(device)
                      if all("view_mask" in item for item in batch) else None)
        prompt_weight = (torch.cat([item.get("prompt_weight", torch.ones(len(item["targets"])))
                                    for item in batch]).to(device)
                         if any("prompt_weight" in item for item in batch) else None)
        autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else \
            contextlib.nullcontext()
        with autocast:
            return step_module(images, coords, labels, targets, view_masks, prompt_weight)

    def _log(self, step: int, epoch: int, window: _Window, optimizer: Any, total: int,
             budget: Optional[TimeBudget], best: Optional[Dict[str, Any]]) -> None:
        steps = max(1, window.steps)
        wall = max(1e-9, window.step_s)
        rate = all_reduce_mean(self.dist, window.items / wall) * self.dist.world_size
        elapsed = self.clock()
        record = {"step": step, "epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
                  "images_per_s": rate, "views_per_s": rate,
                  "compute_share": all_reduce_mean(self.dist, window.compute_s / wall),
                  "elapsed_s": round(elapsed, 2)}
        for key, value in window.sums.items():
            name = "loss" if key == "loss" else f"loss_{key}"
            record[name] = all_reduce_mean(self.dist, value / steps)
        if self.dist.is_main:
            self.files.append_metrics(record)
            log.debug("step %d/%d loss %.4f", step, total, record.get("loss", float("nan")))
            if self.progress:
                figures = dict(record, logged=True, val_miou=self.last_val,
                               best_miou=best_score(best))
                if budget is not None:
                    figures.update(deadline_s=budget.train_end_s, total_s=budget.total_s)
                self._figures = figures
                self.progress(step, total, figures)

    def _validate(self, step: int, best: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
        if self.dist.is_main:
            start = time.perf_counter()
            records = self._val_subset()
            self.kept.eval()
            report = evaluate_records(TorchPredictor(self.kept), records, prompt="box", seed=0,
                                      scan=False)
            self.eval_image_s = (time.perf_counter() - start) / max(1, len(records))
            self.model.train()
            summary = {k: report[k] for k in ("final", "draft", "defect_free", "n_images")}
            score = summary["final"]["miou"]
            self.last_val = score
            kept = keep(best, summary, step, self.config.log.keep_margin)
            if kept is not None:
                best = kept
                save_spt_weights(self.kept, self.files.best, mode=self.config.model.mode,
                                 extra={"step": str(step), "elapsed_s": f"{self.clock():.1f}"})
            overlays_start = time.perf_counter()
            self._overlays(step)
            self.overlay_s = time.perf_counter() - overlays_start
            seconds = time.perf_counter() - start
            self.files.append_metrics({"step": step, "val": summary,
                                       "elapsed_s": round(self.clock(), 2),
                                       "val_s": round(seconds, 2)})
            log.info("step %d validation: final mIoU %s, draft mIoU %s, empty rate %s (%.0f s)",
                     step, *(fmt_figure(v) for v in (summary["final"]["miou"],
                                                     summary["draft"]["miou"],
                                                     summary["defect_free"]["empty_rate"])),
                     seconds)
        best, self.eval_image_s, self.overlay_s = all_gather_objects(
            self.dist, (best, self.eval_image_s, self.overlay_s))[0]
        barrier(self.dist)
        return best

    def _val_subset(self):
        limit = self.config.data.val_limit
        if not limit:
            return self.val_records
        seen: Dict[str, int] = {}
        out = []
        for record in self.val_records:
            if seen.get(record.defect_class, 0) < limit:
                seen[record.defect_class] = seen.get(record.defect_class, 0) + 1
                out.append(record)
        return out

    def _overlays(self, step: int) -> None:
        from samspt.runtime.prompts import mask_box
        from samspt.training.plots import overlay_grid
        from samspt.training.predict import predict

        # Round-robin over classes, so every defect type shows up in the grid.
        by_class: Dict[str, list] = {}
        for record in self.val_records:
            if not record.is_defect_free:
                by_class.setdefault(record.defect_class, []).append(record)
        chosen = [r for group in itertools.zip_longest(*by_class.values()) for r in group if r]
        rows = []
        self.kept.eval()
        for record in chosen[:self.config.log.overlay_images]:
            image = record.load_image()
            truth = record.load_mask(image.shape[:2])
            box = mask_box(truth)
            result = predict(self.kept, image, boxes=box[None])
            rows.append((record.name, image, truth, result.draft_masks[0], result.masks[0], box,
                         result.views[0]))
        self.model.train()
        if rows:
            overlay_grid(rows, self.files.plots / "val_overlays.png",
                         title=f"validation at step {step} (box prompts)")

    def _checkpoint(self, step: int, optimizer, scheduler, scaler, best,
                    budget: Optional[TimeBudget] = None, val_done: int = 0,
                    step_s: Optional[float] = None) -> None:
        if self.dist.is_main:
            start = time.perf_counter()
            state = {"step": step, "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict() if scheduler is not None else None,
                     "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                     "best": best, "elapsed_s": self.clock(), "eval_image_s": self.eval_image_s,
                     "overlay_s": self.overlay_s,
                     "budget": budget.to_dict() if budget is not None else None,
                     "val_done": val_done, "step_s": step_s,
                     "ema": self.ema.module.state_dict() if self.ema is not None else None}
            self.files.save_checkpoint(step, self.model, self.config.model.mode, state,
                                       keep=self.config.log.keep_checkpoints,
                                       extra={"elapsed_s": f"{self.clock():.1f}"})
            self.save_s = time.perf_counter() - start
        barrier(self.dist)

    def _plots(self) -> None:
        from samspt.training.plots import plot_curves

        plot_curves(self.files.read_metrics(), self.files.plots / "curves.png")
