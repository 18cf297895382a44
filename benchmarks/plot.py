"""Latency against prompts per image, one line per backend (PNG)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Dict

from samspt.runtime.errors import ConfigError
from samspt.runtime.files import atomic_path


def plot_latency(record: Dict[str, Any], path: Path) -> Path:
    """Draw median end-to-end and decoder latency (p90 shaded) against prompts per backend."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"--plot writes a PNG; give a file name ending in .png, got {path}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    series: Dict[str, list] = defaultdict(list)
    for entry in record.get("results", []):
        series[entry["backend"]].append(entry)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, stage, title in ((axes[0], "end_to_end", "end to end"),
                             (axes[1], "decoder", "decoder (draft + relation + refine)")):
        for name, entries in sorted(series.items()):
            entries = sorted(entries, key=lambda e: e["prompts"])
            prompts = [e["prompts"] for e in entries]
            median = [e["stages"][stage]["median_ms"] for e in entries]
            p90 = [e["stages"][stage]["p90_ms"] for e in entries]
            (line,) = ax.plot(prompts, median, marker="o", label=name)
            ax.fill_between(prompts, median, p90, color=line.get_color(), alpha=0.15)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        counts = sorted({e["prompts"] for entries in series.values() for e in entries})
        ax.set_xticks(counts)
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("prompts per image")
        ax.set_ylabel("ms (median; p90 shaded)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    settings = record.get("settings", {})
    figure.suptitle(f"samspt-bench: {settings.get('model')} on {settings.get('device')}")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)
    return path
