"""What a benchmark record says about where it ran: machine, library versions, git commit."""

from __future__ import annotations

import logging
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

import samspt

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux), else what the platform says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_info() -> Optional[Dict[str, Any]]:
    """Name, memory and compute capability of CUDA device 0 as PyTorch sees it, or None."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1),
            "compute_capability": f"{props.major}.{props.minor}",
            "count": torch.cuda.device_count(), "cuda": torch.version.cuda}


def machine_info() -> Dict[str, Any]:
    """CPU model, logical and physical cores, RAM, OS, host name and GPU (if any)."""
    info: Dict[str, Any] = {"host": platform.node(), "os": platform.platform(),
                            "arch": platform.machine(), "cpu": cpu_model(),
                            "logical_cores": os.cpu_count()}
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        log.info("psutil is not installed (pip install 'samspt[bench]'); no core/RAM figures")
    if hasattr(os, "getloadavg"):  # other work on the machine skews every figure
        info["load_average_1min_at_start"] = round(os.getloadavg()[0], 2)
    info["gpu"] = gpu_info()
    return info


def _dist_version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions() -> Dict[str, Optional[str]]:
    """Versions of python, torch, onnxruntime, numpy, samspt (and tensorrt when installed)."""
    import onnxruntime

    out: Dict[str, Optional[str]] = {"python": platform.python_version(),
                                     "samspt": samspt.__version__, "numpy": np.__version__,
                                     "onnxruntime": onnxruntime.__version__}
    try:
        import torch

        out["torch"] = torch.__version__
    except ImportError:
        out["torch"] = None
    out["tensorrt"] = _dist_version("tensorrt")
    return out


def git_commit(root: Path = REPO_ROOT) -> Optional[Dict[str, Any]]:
    """``{"commit": sha, "dirty": bool}`` of the checkout samspt runs from, or None outside git."""
    def git(*args: str) -> Optional[str]:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def slug(text: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3`` (for file names)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"
