"""The scan head fitted again on the trained encoder: every training image seen as the scan sees it.

The head trained with the model (:class:`samspt.training.modeling.model.ScanHead`) learns from the
scan windows among the training samples, a few views per step beside the box prompts. The finish
stage fits it again with the encoder frozen: every training image is covered by the scan's own
views (:func:`samspt.runtime.views.scan_views`, the views the prompt-free scan will run), each
token inside the image is labelled by the defect's share of its cell, and a new head (same form:
1x1 conv, ReLU, 1x1 conv; its input standardisation folded into the first layer) is fitted on
all of them with defect tokens weighted up. The runtime reads it as it reads any scan head.

Measured on the 64 defective and 149 defect-free held-out MTD images (a model of the one
command trained 30 minutes on one core, its scan views' maximum token probability as the
image's score): image AUROC 0.714 with the head trained with the model, 0.842 with this refit
fitted offline on the tokens of all 849 development images (hidden width 64, tokens only,
defect tokens weighted 10), 0.823 as the finish stage runs it (the 679 training images only).
Offline variants on the same tokens, each within the images' noise (about 0.03): width 256
0.855; defect weight 3 0.846, 30 0.839; a 3x3 neighbourhood mean of the tokens added 0.855, the
stride-4 features too with width 256 0.868. Not kept: the runtime head reads the tokens alone.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from samspt.runtime.preprocess import crop_view, view_input
from samspt.runtime.views import View, scan_views
from samspt.training.data.records import Record

log = logging.getLogger(__name__)

# A token is a defect where the defect covers more than this share of its cell.
DEFECT_SHARE = 0.1
# The refit: hidden width, optimiser steps of BATCH tokens (EPOCHS passes over the tokens,
# between MIN_STEPS and STEPS), defect tokens' weight in the BCE.
HIDDEN = 64
STEPS = 3000
MIN_STEPS = 200
EPOCHS = 8
BATCH = 4096
POS_WEIGHT = 10.0
LR = 1e-3
WEIGHT_DECAY = 1e-2
# The most tokens kept in memory (defect-free ones subsampled beyond it): 1.5 M x 128 float32
# is 0.75 GB.
MAX_TOKENS = 1_500_000
VIEWS_PER_BATCH = 32

Progress = Callable[[int, int], None]
# Seconds per scan view (encoded on one thread, its tokens labelled) and per fitting step,
# measured on the 2-core VM with cnn_small under a training run's load (MTD: 679 images of
# 8.6 scan views each, 1.5 M tokens, 107 s in all; 1024 px images with 64 px scan views: 441
# views an image, 6.6 s).
SECONDS_PER_VIEW = 0.015
SECONDS_PER_STEP = 0.006
# The most of a run's time budget the refit may take: on large images with small scan views it
# would otherwise take longer than the training (96 images of 1024 px: 11 minutes); beyond it
# the refit reads a seeded, class-balanced subset of the training images.
REFIT_SHARE = 0.06


def fit_steps(tokens: int) -> int:
    """Optimiser steps for ``tokens`` tokens: EPOCHS passes, between MIN_STEPS and STEPS."""
    return int(np.clip(np.ceil(EPOCHS * tokens / BATCH), MIN_STEPS, STEPS))


def estimate_s(views: int, tokens_per_view: int) -> float:
    """Seconds the refit is expected to take on ``views`` scan views of ``tokens_per_view``
    tokens each."""
    tokens = min(MAX_TOKENS, views * tokens_per_view)
    return SECONDS_PER_VIEW * views + SECONDS_PER_STEP * fit_steps(tokens)


def image_scan_views(records: Sequence[Record], config) -> List[int]:
    """The prompt-free scan's view count of each record's image (sizes from the files'
    headers) for view model ``config``."""
    from PIL import Image

    counts = []
    for record in records:
        with Image.open(record.image_path) as handle:
            width, height = handle.size
        counts.append(len(scan_views((height, width), config.image_size, config.view_settings)))
    return counts


@dataclass
class RefitPlan:
    """The training records the refit reads (every record of each chosen image), its scan
    views, the training images' views in all, and the expected seconds."""

    records: List[Record]
    images: int
    views: int
    all_images: int
    all_views: int
    seconds: float


def plan_refit(records: Sequence[Record], config, seconds: Optional[float] = None,
               seed: int = 0) -> RefitPlan:
    """The images the refit reads within ``seconds`` (None: all): every training image where
    all fit, else a seeded subset, defect-free and defective images taken in proportion to
    their numbers, as many as the estimate lets in."""
    tokens_per_view = config.embedding_size ** 2
    images = list(_image_masks(records).values())
    views = image_scan_views([first for first, _ in images], config)
    total = estimate_s(sum(views), tokens_per_view)
    order = list(range(len(images)))
    if seconds is not None and total > seconds:
        rng = np.random.default_rng(seed)
        kinds = [[i for i in order if images[i][0].is_defect_free == free]
                 for free in (True, False)]
        rank: Dict[int, float] = {}
        for kind in kinds:
            for place, i in enumerate(rng.permutation(kind)):
                rank[int(i)] = (place + 0.5) / len(kind)     # proportional interleave
        order = sorted(order, key=lambda i: rank[i])
        chosen, used = [], 0
        for i in order:
            if estimate_s(used + views[i], tokens_per_view) > seconds:
                break
            chosen.append(i)
            used += views[i]
        order = sorted(chosen)
    picked = [r for i in order for r in images[i][1]]
    used = sum(views[i] for i in order)
    return RefitPlan(picked, len(order), used, len(images), sum(views),
                     estimate_s(used, tokens_per_view) if order else 0.0)


@dataclass
class RefitFigures:
    """What the refit saw and took: images, tokens, defect tokens, seconds, final loss."""

    images: int
    tokens: int
    defect_tokens: int
    seconds: float
    loss: float
    hidden: int


def _inside_tokens(view: View, grid: int) -> np.ndarray:
    """grid x grid bool: tokens whose cell centre lies in the part of the view's input that
    holds image pixels (padding tokens are left out: the scan's map never reads them)."""
    ox, oy, rw, rh = view.placement
    centres = (np.arange(grid) + 0.5) * (view.input_size / grid)
    rows = (centres >= oy) & (centres < oy + rh)
    cols = (centres >= ox) & (centres < ox + rw)
    return rows[:, None] & cols[None, :]


def _defect_share(view: View, mask: np.ndarray, grid: int) -> np.ndarray:
    """grid x grid float32: the defect's share of each token's cell in the view's input frame."""
    frame = crop_view(view, mask.astype(np.uint8) * 255).astype(np.float32) / 255.0
    cell = view.input_size // grid
    frame = frame[:grid * cell, :grid * cell]
    return frame.reshape(grid, cell, grid, cell).mean(axis=(1, 3))


def _image_masks(records: Sequence[Record]) -> "OrderedDict[str, Tuple[Record, List[Record]]]":
    """Image path -> (a record of it, its records): class-id masks give one record per class or
    component of an image; the scan's truth is their union."""
    images: "OrderedDict[str, Tuple[Record, List[Record]]]" = OrderedDict()
    for record in records:
        key = record.image_path.as_posix()
        images.setdefault(key, (record, []))[1].append(record)
    return images


def scan_tokens(model, records: Sequence[Record], progress: Optional[Progress] = None,
                seed: int = 0) -> Tuple[np.ndarray, np.ndarray, int]:
    """(N x C float32 tokens, N float32 defect shares, images) of every training image's scan
    views, computed by ``model``'s encoder (PyTorch, no gradients)."""
    import torch

    config = model.config
    settings = config.view_settings
    channels = config.prompt_embed_dim
    images = _image_masks(records)
    tokens: List[np.ndarray] = []
    shares: List[np.ndarray] = []
    pending: List[Tuple[View, np.ndarray]] = []
    was_training = model.training
    model.eval()

    def flush() -> None:
        if not pending:
            return
        batch = torch.from_numpy(np.stack([view_input(v, img, config.pixel_mean,
                                                      config.pixel_std) for v, img, _ in pending]))
        with torch.no_grad():
            emb = model.encode(batch)[:, :channels].float().numpy()
        grid = emb.shape[-1]
        for (view, _, mask), e in zip(pending, emb):
            inside = _inside_tokens(view, grid)
            tokens.append(np.ascontiguousarray(e[:, inside].T))
            shares.append(_defect_share(view, mask, grid)[inside] if mask is not None
                          else np.zeros(int(inside.sum()), np.float32))
        pending.clear()

    try:
        for done, (first, group) in enumerate(images.values(), 1):
            image = first.load_image()
            mask = None
            if not first.is_defect_free:
                mask = np.zeros(image.shape[:2], bool)
                for record in group:
                    mask |= record.load_mask(image.shape[:2])
            for view in scan_views(image.shape[:2], config.image_size, settings):
                pending.append((view, image, mask))
                if len(pending) >= VIEWS_PER_BATCH:
                    flush()
            if progress:
                progress(done, len(images))
        flush()
    finally:
        model.train(was_training)
    x = np.concatenate(tokens) if tokens else np.zeros((0, channels), np.float32)
    y = np.concatenate(shares).astype(np.float32) if shares else np.zeros(0, np.float32)
    if len(x) > MAX_TOKENS:             # keep every defect token, subsample the rest
        rng = np.random.default_rng(seed)
        hot = np.flatnonzero(y > DEFECT_SHARE)
        cold = np.flatnonzero(y <= DEFECT_SHARE)
        keep = np.sort(np.concatenate([hot, rng.choice(cold, max(0, MAX_TOKENS - len(hot)),
                                                       replace=False)]))
        x, y = x[keep], y[keep]
    return x, y, len(images)


def fit_head(tokens: np.ndarray, shares: np.ndarray, hidden: int = HIDDEN,
             steps: Optional[int] = None, seed: int = 0) -> Tuple[Dict[str, np.ndarray], float]:
    """A head's arrays (as :meth:`ScanHead.arrays` gives them) fitted on N x C ``tokens`` against
    ``shares > DEFECT_SHARE``, its input standardisation folded into the first layer; and the
    last steps' mean loss."""
    import torch

    if steps is None:
        steps = fit_steps(len(tokens))
    mean = tokens.mean(axis=0)
    std = tokens.std(axis=0) + 1e-6
    x = torch.from_numpy((tokens - mean) / std)
    y = torch.from_numpy((shares > DEFECT_SHARE).astype(np.float32))
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, 1))
    optimizer = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    pos_weight = torch.tensor(POS_WEIGHT)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(BATCH, len(x)),), generator=generator)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            net(x[idx])[:, 0], y[idx], pos_weight=pos_weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    w1 = net[0].weight.detach().numpy().astype(np.float64)
    b1 = net[0].bias.detach().numpy().astype(np.float64)
    arrays = {"hidden_weight": (w1 / std[None, :]).astype(np.float32),
              "hidden_bias": (b1 - w1 @ (mean / std)).astype(np.float32),
              "out_weight": net[2].weight.detach().numpy().astype(np.float32),
              "out_bias": net[2].bias.detach().numpy().astype(np.float32)}
    tail = losses[-max(1, steps // 10):]
    return arrays, float(np.mean(tail))


def can_refit(model) -> bool:
    """Whether ``model`` has a scan head to fit again: a view model with
    ``ModelConfig.scan_head``."""
    return getattr(model, "scan_head", None) is not None and \
        model.config.view_settings is not None


def refit_scan_head(model, records: Sequence[Record], progress: Optional[Progress] = None,
                    hidden: int = HIDDEN, steps: Optional[int] = None,
                    seed: int = 0) -> RefitFigures:
    """Fit ``model``'s scan head again on ``records`` (the training split), in place: the model's
    ``scan_head`` becomes a head of width ``hidden`` and its configuration says so
    (``scan_head_hidden``). Needs a view model with a scan head."""
    import dataclasses

    from samspt.runtime.errors import ConfigError
    from samspt.training.modeling.model import ScanHead

    if not can_refit(model):
        raise ConfigError(f"{model.config.name} has no scan head to refit (a view model with "
                          "ModelConfig.scan_head)")
    start = time.perf_counter()
    tokens, shares, images = scan_tokens(model, records, progress, seed)
    hot = int((shares > DEFECT_SHARE).sum())
    if hot == 0 or hot == len(shares):
        raise ConfigError(f"the scan head's refit needs defect and defect-free tokens; the "
                          f"{images} training images gave {hot} defect tokens of {len(shares)}")
    arrays, loss = fit_head(tokens, shares, hidden, steps, seed)
    head = ScanHead(model.config.prompt_embed_dim, hidden)
    head.load_arrays(arrays)
    model.scan_head = head
    model.config = dataclasses.replace(model.config, scan_head_hidden=hidden)
    figures = RefitFigures(images, len(shares), hot, time.perf_counter() - start, loss, hidden)
    log.info("scan head refit on %d images: %d tokens (%d defect), loss %.4f, %.0f s", images,
             figures.tokens, hot, loss, figures.seconds)
    return figures
