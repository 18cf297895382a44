"""The JSON record of a benchmark run: where it ran, what it measured, every figure.

Records accumulate under ``benchmarks/results/<UTC time>-<model>-<host>-<device>.json`` (in a
source checkout; else under ``./benchmarks/results/``) and are written atomically.

Top-level keys: ``record_version``, ``created``, ``machine``, ``versions``, ``git``,
``settings``, ``inputs``, ``model``, ``backends``, ``skipped``, ``results`` (one entry per
backend and prompt count: ``stages`` with median/p90/p99 ms, ``throughput``, ``memory``),
``ratios`` (exactly :data:`samspt.benchmarks.ratios.RATIO_KEYS`), ``ratio_details``,
``relation``, ``train_views_per_s`` and ``train_compute_share`` (samspt-train's default recipe,
benchmarks/train_rate.py; null with ``--train-steps 0``) and ``training`` (what they rest on),
``scan_vs_encoder_2k`` and ``scan_cost`` (benchmarks/scan_cost.py; null for a model without a
scan head).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any, Dict, Optional

from samspt.benchmarks.machine import git_commit, machine_info, slug, versions
from samspt.runtime.files import atomic_write_text

RECORD_VERSION = 1
BENCH_DIR = Path(__file__).resolve().parent


def default_results_dir() -> Path:
    """``benchmarks/results`` of the source checkout, else ``./benchmarks/results``."""
    if (BENCH_DIR.parent / "pyproject.toml").is_file():
        return BENCH_DIR / "results"
    return Path.cwd() / "benchmarks" / "results"


def build_record(figures: Dict[str, Any], now: Optional[_dt.datetime] = None) -> Dict[str, Any]:
    """``figures`` (from :func:`samspt.benchmarks.suite.run_benchmark`) with the machine,
    library versions, git commit and time of the run."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return {"record_version": RECORD_VERSION,
            "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": machine_info(), "versions": versions(), "git": git_commit(), **figures}


def device_label(record: Dict[str, Any]) -> str:
    """``cpu``, or the GPU's name as a slug."""
    gpu = record.get("machine", {}).get("gpu")
    if record.get("settings", {}).get("device") == "cuda" and gpu:
        return slug(gpu["name"])
    return "cpu"


def default_record_path(record: Dict[str, Any]) -> Path:
    stamp = record["created"].replace("-", "").replace(":", "")
    host = slug(record.get("machine", {}).get("host") or "host")
    name = f"{stamp}-{record['settings']['model']}-{host}-{device_label(record)}.json"
    return default_results_dir() / name


def _finite(value: Any) -> Any:
    """NaN and infinities become null: JSON has no spelling for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_record(record: Dict[str, Any], path: Optional[Path] = None) -> Path:
    """Write ``record`` as JSON (atomically) to ``path`` or its default path; returns the path."""
    path = Path(path) if path is not None else default_record_path(record)
    atomic_write_text(path, json.dumps(_finite(record), indent=2) + "\n")
    return path
