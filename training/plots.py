"""Pictures of a training run: loss and validation curves, and overlays of validation masks."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from samspt.runtime.files import atomic_path

# (name, HxWx3 uint8 image, HxW bool truth, HxW bool draft, HxW bool final, (4,) box prompt)
# (name, image, truth, draft, final, box[, view]): HxW(x3) uint8, HxW bool masks, (4,) box, and
# optionally the samspt.runtime.views.View the prompt was answered in (shown enlarged).
OverlayRow = Tuple[Any, ...]
VIEW_PANEL_SIDE = 256


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_curves(records: Sequence[Dict[str, Any]], path: Path) -> Path:
    """Training loss (and its draft/final parts) and validation mIoU against the step."""
    plt = _pyplot()
    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val" in r]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        steps = [r["step"] for r in train]
        for key, style in (("loss", "-"), ("loss_draft", ":"), ("loss_final", "--")):
            if key in train[0]:
                ax_loss.plot(steps, [r[key] for r in train], style, label=key)
        ax_loss.set_yscale("log")
    ax_loss.set(title="training loss", xlabel="step")
    ax_loss.legend()
    if val:
        steps = [r["step"] for r in val]
        for part, style in (("final", "-o"), ("draft", "--o")):
            ax_val.plot(steps, [r["val"][part]["miou"] for r in val], style, label=f"{part} mIoU")
            ax_val.plot(steps, [r["val"][part]["biou"] for r in val], style, alpha=0.4,
                        label=f"{part} boundary IoU")
        ax_val.set_ylim(0, 1)
        ax_val.legend()
    ax_val.set(title="validation (box prompts)", xlabel="step")
    ax_val.grid(alpha=0.3)
    ax_loss.grid(alpha=0.3)
    return _save(fig, path)


def _tint(image: np.ndarray, mask: np.ndarray, color: Tuple[int, int, int]) -> np.ndarray:
    out = image.astype(np.float32).copy()
    out[mask] = out[mask] * 0.45 + np.asarray(color, np.float32) * 0.55
    return out.astype(np.uint8)


def overlay_grid(rows: List[OverlayRow], path: Path, title: str = "") -> Path:
    """One row per image: image with the box prompt, ground truth, draft mask, final mask, and
    (rows with a view) the view enlarged with the three outlines."""
    plt = _pyplot()
    n = max(1, len(rows))
    columns = 5 if any(len(r) > 6 for r in rows) else 4
    fig, axes = plt.subplots(n, columns, figsize=(3 * columns, 2.8 * n), squeeze=False)
    for row, (name, image, truth, draft, final, box, *rest) in zip(axes, rows):
        panels = [("image", image), ("ground truth", _tint(image, truth, (0, 200, 0))),
                  ("draft", _tint(image, draft, (230, 160, 0))),
                  ("final", _tint(image, final, (220, 0, 0)))]
        for ax, (label, picture) in zip(row, panels):
            ax.imshow(picture)
            x0, y0, x1, y1 = (float(v) for v in box)
            ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1,
                                       fill=False, edgecolor="cyan", linewidth=0.8))
            ax.set_title(f"{name}: {label}" if label == "image" else label, fontsize=8)
            ax.axis("off")
        if columns == 5:
            from samspt.runtime.overlay import enlarged_view

            row[4].axis("off")
            if rest and rest[0] is not None:
                view = rest[0]
                row[4].imshow(enlarged_view(image, view, VIEW_PANEL_SIDE, [
                    (truth, (0, 200, 0)), (draft, (230, 160, 0)), (final, (220, 0, 0))]))
                row[4].set_title(f"view x{VIEW_PANEL_SIDE / view.side:.1f}: truth / draft / "
                                 "final", fontsize=8)
    # Margins in inches, not shares of the figure: a grid of many rows keeps its title close.
    height = fig.get_figheight()
    fig.subplots_adjust(top=1 - (0.55 if title else 0.3) / height, bottom=0.1 / height)
    if title:
        fig.suptitle(title, y=1 - 0.15 / height)
    return _save(fig, path)
