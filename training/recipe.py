"""The recipe of ``samspt-train --data DIR --out RUN``: every default the one command trains
with, in one function. ``--set key=value`` overrides any of it (applied after the recipe and
the settings derived from the data).

It started from the earlier example model's first stage (training/configs/example_cnn.yaml); the
bundled example model is now this recipe's product (its model card). It trains in
float32 (``amp off``: CPUs without bfloat16 support run it fastest) and not bit-deterministic
(deterministic kernels are slower), with a wall-clock budget in place of a step count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

from samspt.training.train_config import TrainConfig

START_KINDS = ("scratch", "sam", "weights")


def default_recipe(data: Union[str, Path], out: Union[str, Path], budget_min: float = 60.0,
                   start: str = "scratch") -> TrainConfig:
    """The one command's configuration for dataset ``data`` and run folder ``out``.

    ``start``: ``scratch`` (the conv family from scratch), ``sam`` (SPT on a SAM checkpoint) or
    ``weights`` (training on from SPT/full weights). The model's type, checkpoint and derived
    view settings are filled in by :mod:`samspt.training.auto_run`; this function holds only
    defaults.
    """
    out = Path(out)
    c = TrainConfig()
    c.name = out.name                     # the run folder is out_dir/name = RUN
    c.out_dir = str(out.parent)

    # Model: the example model's conv family (ResNet-18 trunk, SAM 2-style high-res features,
    # SPT's decoders), trained whole from scratch; its view settings come from the data.
    c.model.type = "cnn_small"
    c.model.mode = "full"
    # The path to pixels (measured on unseen MTD images, 21.6k views each):
    # the encoder's top-down pixel decoder to stride 2, residual convs after the decoders'
    # upscaling, and the box also as a dense prompt: 0.626 against 0.612 without them.
    # The box at mask resolution too (box_high_res): 30 minutes on one core, unseen MTD 0.692
    # against 0.689 without: within noise, off.
    # The reference, a 0.48 M-parameter U-Net given the box as an input channel, trained
    # on tight-box views at 128 px (BCE + Dice, AdamW, 25 minutes on one core, 20k views), reaches
    # 0.648 final mIoU on the same 64 held-out MTD images where this recipe's 30-minute one-core
    # runs reach 0.662 and 0.687 (two seeds): on these images the model is not behind it.
    # The scan head: the prompt-free scan finds defects with it, then answers them as boxes
    # (samspt.runtime.find_segment).
    c.model.config = {"pixel_decoder": True, "upscale_convs": True, "box_dense_prompt": True,
                      "scan_head": True}

    # Data: every reader's layout detected; a fifth of each class kept for validation.
    c.data.root = str(data)
    c.data.layout = "auto"
    c.data.mask_records = "class"         # class-id masks: one record per class of an image
    c.data.val_fraction = 0.2
    c.data.split_seed = 0
    c.data.val_limit = 30                 # validate on at most 30 images per class
    c.data.box_jitter = 0.1
    c.data.augment = True
    # Flips, quarter turns, brightness and contrast; no gamma, no sensor noise, and no stochastic
    # depth in the trunk (model.config encoder_drop_path). All three together (gamma 0.2, noise
    # 0.02, drop path 0.1), 60 minutes, one core each, beside this recipe's runs: held-out MTD
    # 0.740 final mIoU against 0.736 but 93.3 % of defect-free boxes empty against 95.3 % (scan
    # AUROC 0.848 against 0.827); held-out NEU-Seg 0.780 against 0.778 (its validation 0.802
    # against 0.798): within one run's noise, so the simpler recipe stays.
    c.data.defect_free_fraction = 0.25    # defect-free images per defective one in an epoch
    # Copy-paste (data.copy_paste, training/data/copy_paste.py) stays off: 30-minute one-core
    # MTD runs side by side, 0.67 of 0.75 defect-free images per defective one given a pasted
    # defect against the recipe: validation 0.674 / 0.643, unseen 0.680 / 0.665 final mIoU, but
    # four other 30-minute runs of the recipe and its variants spread 0.665-0.694 on the unseen
    # images: within the noise of one run each.
    c.data.copy_paste = 0.0
    # Sample kinds on defective images (the rest: boxes on clean areas), and the share of scan
    # windows on defect-free images (view_samples.py; the rest: boxes on clean areas). Tight
    # boxes only, besides the clean-area boxes: on unseen MTD images 25 minutes of tight boxes
    # reached 0.720 final mIoU where the earlier mix (tight 0.8, scan windows 0.1, defect-free
    # scan windows 0.5, a second box per view) reached 0.649 in 60 minutes: scan windows whose
    # own extent was the prompt taught the masks to mark whole windows. Here scan windows (8 %
    # of the defective images' views, half of the defect-free images') train the scan head only
    # (data.scan_prompts false: their prompts weigh nothing), at the scale the scan sees images.
    c.data.view_tight = 0.8
    c.data.view_loose = 0.0
    c.data.view_scan = 0.08
    c.data.view_free_scan = 0.5
    c.data.scan_prompts = False
    # One box per view: a second box (half of them on clean areas) cost 40 % of the views a
    # second (11.5 against 20 views/s on MTD, two cores).
    c.data.prompts_per_view = 1
    # Loading, augmenting and cropping in the training process: on the 2-core CPU they cost
    # 0.14 CPU-s of a 1.7 CPU-s step of 24 views (8 %), and a DataLoader worker would take that
    # core time from torch's second thread rather than add any (data.workers 1 to try it).
    c.data.workers = 0

    # Optimiser: AdamW, 24 views a step, gradient clipping; float32 on the CPU.
    c.optim.batch_size = 24               # lowered to the images of an epoch on small datasets
    c.optim.grad_accum = 1
    # lr 2e-3 (MTD: validation +0.02, unseen -0.008; NEU-Seg, 30 min, one core each: validation
    # 0.771 against 0.765, unseen 0.741 against 0.738) and weight decay 0.05 (MTD, 30 min:
    # unseen 0.694 against 0.689-0.692): within noise.
    c.optim.lr = 1.0e-3
    c.optim.weight_decay = 0.01
    c.optim.grad_clip = 1.0
    c.optim.amp = "off"
    c.optim.seed = 0
    c.optim.deterministic = False
    c.optim.channels_last = True          # the conv trunk channels-last: 5 % less CPU a step
    c.optim.threads = 0                   # torch's default (one per core); 1 when several runs
    #                                       share the CPU (two threads then wait on each other)
    # A moving average of the weights is what the run validates, keeps and exports (timm's
    # ModelEmaV3, its decay warming up to 0.999): raw against averaged weights of the same
    # runs (30 min, one core, MTD) 0.627/0.638 on validation, 0.680/0.683 on unseen images
    # at lr 1e-3; 0.656/0.659 and 0.669/0.675 at lr 2e-3.
    c.optim.ema = 0.999
    c.optim.epochs = 1000                 # unused on a time budget; max_steps 0: the clock ends
    c.optim.max_steps = 0

    # Losses: draft and final masks alike, BCE + Dice inside the box (plain BCE: class-balanced
    # BCE, defect pixels weighing 0.6, pays a thin crack's pixels ~30x its background's; plain
    # BCE matched it step for step in 25-minute MTD runs), the score head trained on the final mask's IoU. Boxes on clean
    # areas weigh a quarter in the mask terms: at full weight they cost 0.03-0.05 mIoU; the
    # score learns them too, and the finish stage's prompt gate (training/prompt_gate.py)
    # answers the ones it scores low empty.
    c.loss.bce = 1.0
    c.loss.dice = 1.0
    c.loss.draft = 1.0
    c.loss.final = 1.0
    c.loss.score = 1.0
    c.loss.focus_margin = 0.0
    c.loss.outside = 0.0
    c.loss.defect_share = 0.0
    c.loss.empty_mask = 0.25
    c.loss.scan_head = 1.0                # the scan head's token BCE

    # Time: the whole command's budget; 12 % (or the measured estimate, if larger) kept for the
    # finish stage; the learning rate warms up over the first 3 % of the training time and
    # decays (cosine) to 1 % at the training deadline; 6 validations spread over it.
    c.budget.minutes = float(budget_min)
    c.budget.finish_share = 0.12
    c.budget.warmup_share = 0.03
    c.budget.evaluations = 6

    # Logging: a metrics line every 20 steps, checkpoints every 200 steps and at every
    # validation, the last 3 kept.
    c.log.log_every = 20
    c.log.checkpoint_every = 200
    c.log.keep_checkpoints = 3
    # The weights kept and exported: the latest whose validation final mIoU is within 0.02 of
    # the best validation (the validation's noise: 80 defective images). On the 64 held-out MTD
    # images the last weights of three runs (30 and 60 minutes) scored 0.018, 0.034 and 0.035
    # final mIoU above the best validation's earlier weights, whose validation mIoU was only
    # 0.001-0.003 above the last's.
    c.log.keep_margin = 0.02
    c.log.overlay_images = 8

    if start == "sam":
        # SPT on SAM: only LoRA and the relation scales train; SAM's 1024 px input is slow on a
        # CPU, so fewer views a step.
        c.model.mode = "spt"
        c.model.config = {}               # SAM's architecture, as its checkpoint fixes it
        c.optim.batch_size = 4
    elif start == "weights":
        # Training on from weights: a gentler learning rate, as the example's later stages.
        c.model.config = {}               # the weights fix the architecture
        c.optim.lr = 3.0e-4
    return c
