"""Training throughput of the one command's recipe: ``train_views_per_s`` and
``train_compute_share`` in the benchmark record.

What a CPU (or GPU) budget buys is set by how many views a second ``samspt-train``'s default
recipe (training/recipe.py: the conv model, its prompts per view and batch) trains, and by how
much of a step is the model's own compute rather than loading, augmenting and cropping data in
the training process. Both come from the trainer's own metrics lines (``views_per_s``,
``compute_share``: forward, backward and optimiser time over the step's wall time), on a
synthetic dataset of grey tiles with drawn defects at the input size the recipe derives for
Magnetic Tile Defect (128 px; thin defects raise it to 256 px, four times the pixels), after a
warm-up window that is not counted.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

import numpy as np

log = logging.getLogger(__name__)

WINDOW = 4  # steps per metrics line; the first line (warm-up) is not counted


IMAGE_SIZE = 128


def synthetic_tiles(root: Path, count: int = 40, side: int = 320, seed: int = 0) -> Path:
    """``images/`` + ``masks/``: grey textured tiles, each with a dark blob or a thin line."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:side, :side]
    for i in range(count):
        image = rng.normal(150, 12, (side, side))
        cy, cx = rng.integers(40, side - 40, 2)
        if i % 2:
            mask = ((yy - cy) / rng.integers(8, 30)) ** 2 + ((xx - cx) / rng.integers(8, 30)) ** 2 <= 1
        else:
            mask = (np.abs((yy - cy) - (xx - cx) * rng.uniform(-1, 1)) < 2) & \
                   (np.abs(xx - cx) < rng.integers(20, 60))
        image[mask] -= 70
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(root / "images" / f"t{i:02d}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"t{i:02d}.png")
    return root


def measure_train_rate(steps: int = 3 * WINDOW, threads: int = 0,
                       device: str = "cpu") -> Dict[str, Any]:
    """Views a second and compute share of the default recipe's training steps (the mean of
    the metrics windows after the first), with what they were measured on."""
    from samspt.training.auto_run import plan_run
    from samspt.training.distributed import init_distributed
    from samspt.training.trainer import Trainer

    steps = max(2 * WINDOW, steps)
    with tempfile.TemporaryDirectory(prefix="samspt-train-rate-") as tmp:
        data = synthetic_tiles(Path(tmp) / "data")
        sets = ["budget.minutes=0", f"optim.max_steps={steps}", f"log.log_every={WINDOW}",
                f"log.val_every={steps + 1}", "log.overlay_images=0",
                f"log.checkpoint_every={steps + 1}", f"optim.threads={threads}",
                "data.val_fraction=0.2", f"model.config.image_size={IMAGE_SIZE}"]
        plan = plan_run(data, Path(tmp) / "run", None, None, sets)
        start = time.perf_counter()
        Trainer(plan.config, init_distributed(device), records=(plan.train, plan.val)).run()
        seconds = time.perf_counter() - start
        lines = [json.loads(line) for line in
                 (plan.config.run_dir / "metrics.jsonl").read_text().splitlines()]
    windows = [m for m in lines if "views_per_s" in m][1:]
    if not windows:
        raise RuntimeError(f"the training benchmark logged no metrics after its warm-up "
                           f"({steps} steps, a line every {WINDOW})")
    cfg = plan.config
    return {"train_views_per_s": float(np.mean([m["views_per_s"] for m in windows])),
            "train_compute_share": float(np.mean([m["compute_share"] for m in windows])),
            "training": {"recipe": "samspt-train default (training/recipe.py)",
                         "model": cfg.model.type, "image_size": cfg.model.config.get("image_size"),
                         "batch_views": cfg.optim.batch_size * cfg.optim.grad_accum,
                         "prompts_per_view": cfg.data.prompts_per_view,
                         "steps_counted": WINDOW * len(windows), "steps": steps,
                         "seconds": round(seconds, 2), "device": device, "threads": threads,
                         "channels_last": cfg.optim.channels_last, "amp": cfg.optim.amp}}
