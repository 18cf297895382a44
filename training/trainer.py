"""The training loop: AdamW, warm-up + decay, gradient accumulation, mixed precision, DDP,
atomic checkpoints, exact resume, validation with the evaluation protocol."""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from samspt.runtime.errors import ConfigError
from samspt.runtime.files import atomic_write_text
from samspt.training.checkpoints import build_model, load_spt_model, save_spt_weights
from samspt.training.config import LoraConfig, get_config
from samspt.training.evaluation import TorchPredictor, evaluate_records, fmt_figure
from samspt.training.distributed import (DistInfo, all_gather_objects, all_reduce_mean, barrier,
                                         parameters_digest)
from samspt.training.losses import LossWeights, focus_masks, spt_loss
from samspt.training.model import SptSam
from samspt.training.run_files import RunFiles
from samspt.training.schedule import build_scheduler
from samspt.training.train_config import TrainConfig

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, Dict[str, float]], None]


@dataclass
class TrainResult:
    step: int
    final_weights: str
    best_val: Optional[Dict[str, Any]]
    seconds: float
    ranks_in_sync: bool


class _TrainStep(nn.Module):
    """Loss of a batch of images, each with its own K prompts (the module DDP wraps)."""

    def __init__(self, model: SptSam, weights: LossWeights) -> None:
        super().__init__()
        self.model = model
        self.weights = weights

    def forward(self, images: torch.Tensor, coords: List[torch.Tensor],
                labels: List[torch.Tensor], targets: List[torch.Tensor]) -> Dict[str, torch.Tensor]:
        embeddings = self.model.encode(images)
        if all(c.shape == coords[0].shape for c in coords) and coords[0].shape[0] == 1:
            # One prompt per image (views): all images' prompts in one decoder call, each with
            # its own image's embedding and relation.
            return self._terms(embeddings, torch.cat(coords), torch.cat(labels),
                               torch.cat(targets))
        totals: Dict[str, torch.Tensor] = {}
        for i in range(len(coords)):
            terms = self._terms(embeddings[i:i + 1], coords[i], labels[i], targets[i])
            for key, value in terms.items():
                totals[key] = totals.get(key, 0) + value / len(coords)
        return totals

    def _terms(self, embeddings: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor,
               targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = self.model.decode(embeddings, coords, labels)
        focus = focus_masks(coords, labels, targets.shape[-1], self.weights.focus_margin)
        return spt_loss(out.draft_logits, out.logits, out.scores, targets, self.weights, focus)


def build_training_model(config: TrainConfig) -> SptSam:
    """The model a configuration starts from (SAM weights, SPT/full weights, or scratch)."""
    section = config.model
    if section.init_weights:
        return load_spt_model(section.init_weights, section.sam_checkpoint)
    lora = LoraConfig(section.lora_rank, section.lora_alpha)
    if section.mode == "spt" and not section.sam_checkpoint:
        raise ConfigError("model.mode spt tunes a pretrained SAM: set model.sam_checkpoint (or "
                          "model.init_weights); to train a small model from scratch use "
                          "model.mode full")
    return build_model(get_config(section.type), section.sam_checkpoint, lora)


def _amp(config: TrainConfig, device: torch.device) -> Optional[torch.dtype]:
    choice = config.optim.amp
    if choice == "off" or (choice == "auto" and device.type != "cuda"):
        return None
    if choice == "fp16":
        return torch.float16
    if choice == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


class Trainer:
    """Trains one run. ``progress(step, total, figures)`` is called after each optimizer step."""

    def __init__(self, config: TrainConfig, dist: DistInfo = DistInfo(),
                 progress: Optional[ProgressFn] = None) -> None:
        self.config = config
        self.dist = dist
        self.progress = progress
        self.files = RunFiles(config.run_dir)

    # ----------------------------------------------------------------------- set-up
    def _records(self, resume: bool):
        from samspt.training.data.readers import read_dataset
        from samspt.training.data.split import read_split, split_records, write_split

        data = self.config.data
        if resume and self.files.split.exists():
            return read_split(self.files.split, data.root)
        records = read_dataset(data.root, layout=data.layout)
        train, val = split_records(records, val_fraction=data.val_fraction, seed=data.split_seed)
        if self.dist.is_main:
            write_split(self.files.split, train, val, data.root, seed=data.split_seed,
                        val_fraction=data.val_fraction)
        return train, val

    def _dataset(self, records, train: bool):
        from samspt.training.data.dataset import DefectDataset, PromptSettings
        from samspt.training.data.view_samples import ViewSampling

        data = self.config.data
        settings = PromptSettings(prompts_per_image=data.prompts_per_image,
                                  box_mode=data.box_mode, box_jitter=data.box_jitter,
                                  point_prob=data.point_prob, negative_prob=data.negative_prob,
                                  augment=data.augment)
        sampling = ViewSampling(tight=data.view_tight, loose=data.view_loose,
                                scan=data.view_scan, free_scan=data.view_free_scan)
        return DefectDataset(records, self.model.config, settings, train=train,
                             seed=self.config.optim.seed, sampling=sampling)

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

    # ------------------------------------------------------------------------ run
    def run(self, resume: bool = False) -> TrainResult:
        cfg, dist, files = self.config, self.dist, self.files
        start_time = time.perf_counter()
        if not resume and files.latest() is not None:
            raise ConfigError(f"{files.root} already holds a run; pass --resume to continue it "
                              "or choose another --name")
        torch.manual_seed(cfg.optim.seed)
        if cfg.optim.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.train_records, self.val_records = self._records(resume)
        self.model = build_training_model(cfg).to(dist.device)
        trainable = self.model.set_train_mode(cfg.model.mode)
        log.info("%s, mode %s: %s trainable parameters; %d train / %d validation images",
                 self.model.config.name, cfg.model.mode, f"{trainable:,}",
                 len(self.train_records), len(self.val_records))
        if dist.is_main:
            files.root.mkdir(parents=True, exist_ok=True)
            atomic_write_text(files.config, cfg.to_yaml())

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
        total = cfg.optim.max_steps or cfg.optim.epochs * steps_per_epoch
        scheduler = build_scheduler(optimizer, total, cfg.optim.warmup_steps, cfg.optim.schedule,
                                    cfg.optim.milestones, cfg.optim.gamma)
        amp_dtype = _amp(cfg, dist.device)
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

        step, best = 0, None
        if resume:
            state = files.load_checkpoint(self.model, map_location="cpu")
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            step, best = int(state["step"]), state.get("best")
            if dist.is_main:
                files.truncate_metrics(step)

        step_module: nn.Module = _TrainStep(self.model, LossWeights(**vars(cfg.loss)))
        if dist.distributed:
            step_module = nn.parallel.DistributedDataParallel(
                step_module, device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
                find_unused_parameters=True)
        self.model.train()
        window: Dict[str, float] = {}
        window_images, window_start = 0, time.perf_counter()
        while step < total:
            epoch = step // steps_per_epoch
            batches = self._epoch_batches(epoch)
            skip = (step - epoch * steps_per_epoch) * cfg.optim.grad_accum
            dataset.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(
                dataset, batch_sampler=batches[skip:steps_per_epoch * cfg.optim.grad_accum],
                collate_fn=list, num_workers=cfg.data.workers)
            micro = 0
            for batch in loader:
                last_micro = (micro + 1) % cfg.optim.grad_accum == 0
                sync = contextlib.nullcontext() if last_micro or not dist.distributed \
                    else step_module.no_sync()
                with sync:
                    losses = self._forward(step_module, batch, amp_dtype)
                    scaler.scale(losses["loss"] / cfg.optim.grad_accum).backward()
                for key, value in losses.items():
                    window[key] = window.get(key, 0.0) + float(value.detach()) / cfg.optim.grad_accum
                window_images += len(batch)
                micro += 1
                if not last_micro:
                    continue
                if cfg.optim.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                step += 1
                window["_steps"] = window.get("_steps", 0) + 1
                if step % cfg.log.log_every == 0 or step == total:
                    window_images, window_start = self._log(step, epoch, window, window_images,
                                                            window_start, scheduler, total)
                    window = {}
                val_due = (cfg.log.val_every and step % cfg.log.val_every == 0) or \
                    (not cfg.log.val_every and step % steps_per_epoch == 0) or step == total
                if val_due:
                    best = self._validate(step, best)
                if step % cfg.log.checkpoint_every == 0 or step == total:
                    self._checkpoint(step, optimizer, scheduler, scaler, best)
                if step >= total:
                    break

        digests = all_gather_objects(dist, parameters_digest(self.model))
        in_sync = len(set(digests)) == 1
        if dist.is_main:
            save_spt_weights(self.model, files.final, mode=cfg.model.mode,
                             extra={"step": str(step)})
            files.append_metrics({"step": step, "ranks": dist.world_size,
                                  "ranks_in_sync": in_sync, "digests": digests})
            self._plots()
        barrier(dist)
        if not in_sync:
            log.error("model replicas differ after training: %s", digests)
        return TrainResult(step, str(files.final), best, time.perf_counter() - start_time,
                           in_sync)

    # --------------------------------------------------------------------- helpers
    def _forward(self, step_module: nn.Module, batch: Sequence[Dict[str, Any]],
                 amp_dtype: Optional[torch.dtype]) -> Dict[str, torch.Tensor]:
        device = self.dist.device
        images = torch.stack([item["image"] for item in batch]).to(device)
        coords = [item["point_coords"].to(device) for item in batch]
        labels = [item["point_labels"].to(device) for item in batch]
        targets = [item["targets"].to(device) for item in batch]
        autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else \
            contextlib.nullcontext()
        with autocast:
            return step_module(images, coords, labels, targets)

    def _log(self, step: int, epoch: int, window: Dict[str, float], images: int,
             start: float, scheduler: Any, total: int):
        steps = max(1, window.pop("_steps", 1))
        elapsed = max(1e-9, time.perf_counter() - start)
        record = {"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0],
                  "images_per_s": all_reduce_mean(self.dist, images / elapsed) * self.dist.world_size}
        for key, value in window.items():
            name = "loss" if key == "loss" else f"loss_{key}"
            record[name] = all_reduce_mean(self.dist, value / steps)
        if self.dist.is_main:
            self.files.append_metrics(record)
            log.debug("step %d/%d loss %.4f", step, total, record.get("loss", float("nan")))
            if self.progress:
                self.progress(step, total, record)
        return 0, time.perf_counter()

    def _validate(self, step: int, best: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
        if self.dist.is_main:
            records = self._val_subset()
            self.model.eval()
            report = evaluate_records(TorchPredictor(self.model), records, prompt="box", seed=0)
            self.model.train()
            summary = {k: report[k] for k in ("final", "draft", "defect_free", "n_images")}
            self.files.append_metrics({"step": step, "val": summary})
            log.info("step %d validation: final mIoU %s, draft mIoU %s, empty rate %s", step,
                     *(fmt_figure(v) for v in (summary["final"]["miou"], summary["draft"]["miou"],
                                         summary["defect_free"]["empty_rate"])))
            score = summary["final"]["miou"]
            if score is not None and (best is None or score > best["final"]["miou"]):
                best = dict(summary, step=step)
                save_spt_weights(self.model, self.files.best, mode=self.config.model.mode,
                                 extra={"step": str(step)})
            self._overlays(step)
        best = all_gather_objects(self.dist, best)[0]
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
        from samspt.runtime.preprocess import mask_box
        from samspt.training.plots import overlay_grid
        from samspt.training.predict import predict

        # Round-robin over classes, so every defect type shows up in the grid.
        by_class: Dict[str, list] = {}
        for record in self.val_records:
            if not record.is_defect_free:
                by_class.setdefault(record.defect_class, []).append(record)
        chosen = [r for group in itertools.zip_longest(*by_class.values()) for r in group if r]
        rows = []
        self.model.eval()
        for record in chosen[:self.config.log.overlay_images]:
            image = record.load_image()
            truth = record.load_mask(image.shape[:2])
            box = mask_box(truth)
            result = predict(self.model, image, boxes=box[None])
            rows.append((record.name, image, truth, result.draft_masks[0], result.masks[0], box,
                         result.views[0]))
        self.model.train()
        if rows:
            overlay_grid(rows, self.files.plots / "val_overlays.png",
                         title=f"validation at step {step} (box prompts)")

    def _checkpoint(self, step: int, optimizer, scheduler, scaler, best) -> None:
        if self.dist.is_main:
            state = {"step": step, "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                     "best": best}
            self.files.save_checkpoint(step, self.model, self.config.model.mode, state,
                                       keep=self.config.log.keep_checkpoints)
        barrier(self.dist)

    def _plots(self) -> None:
        from samspt.training.plots import plot_curves

        plot_curves(self.files.read_metrics(), self.files.plots / "curves.png")
