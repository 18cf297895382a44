"""Memory measurement: peak resident memory of a process, and the child processes that take it.

Peak host memory is the process's resident-set high-water mark (``VmHWM`` in
``/proc/self/status``), reset before each measured call by writing ``5`` to
``/proc/self/clear_refs`` (Linux >= 4.0). Where that is not possible the high-water mark since
the process started (``ru_maxrss``) is used, which still bounds the peak from above.

Each measurement runs in a fresh child process (:func:`run_probe`), so a backend is measured
alone: an ONNX Runtime child never imports torch, exactly like a deployed inspector.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
from typing import Any, Dict, Optional

log = logging.getLogger(__name__)

MB = 2**20
_CHILD = "import sys; from samspt.benchmarks.probes import child_main; sys.exit(child_main())"
# glibc: serve every block >= 64 KiB with its own mapping and unmap it on free, so the resident
# set follows what is allocated (used only where a probe measures a difference of two states).
EXACT_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def _status_mb(field: str) -> Optional[float]:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024 / MB
    except (OSError, ValueError):
        pass
    return None


def current_rss_mb() -> float:
    """Resident memory of this process now (MiB)."""
    value = _status_mb("VmRSS")
    if value is not None:
        return value
    import psutil

    return psutil.Process().memory_info().rss / MB


def reset_peak_rss() -> bool:
    """Reset the resident-set high-water mark; False where the OS does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Resident-set high-water mark (MiB) since the last :func:`reset_peak_rss`, or since the
    process started where resetting is not possible."""
    value = _status_mb("VmHWM")
    if value is not None:
        return value
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak * 1024 / MB


def process_device_mb() -> Optional[float]:
    """GPU memory this process holds (MiB) according to ``nvidia-smi``, or None (no driver tool,
    or process ids not visible, as inside some containers)."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                               "--format=csv,noheader,nounits"], capture_output=True, text=True,
                              timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in done.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(os.getpid()):
            try:
                return float(parts[1])
            except ValueError:
                return None
    return None


def run_probe(spec: Dict[str, Any], exact_malloc: bool = False,
              timeout_s: float = 1800) -> Dict[str, Any]:
    """Run one probe of :mod:`samspt.benchmarks.probes` in a fresh Python process and return
    its JSON answer; ``{"error": ...}`` (and a warning in the log) if the child fails."""
    env = dict(os.environ, **(EXACT_MALLOC_ENV if exact_malloc else {}))
    env.setdefault("PYTHONWARNINGS", "ignore")
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD], input=json.dumps(spec),
                              capture_output=True, text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("memory probe %s timed out after %.0f s", spec.get("probe"), timeout_s)
        return {"error": f"timed out after {timeout_s:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        log.warning("memory probe %s failed: %s", spec.get("probe"), tail)
        return {"error": tail}
    return json.loads(lines[-1])
