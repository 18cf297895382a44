"""The device's peak arithmetic rate, per precision: what an encoder's achieved TFLOP/s is a share
of (``encoder_peak_share`` in a record), with the basis it was derived from.

* CPU: cores (the logical cores this process may use: a VM's vCPUs) x clock (``cpu MHz`` of
  ``/proc/cpuinfo``) x operations per cycle per core: FP32 32 FLOP with AVX2 + FMA or AVX-512
  (two 256-bit FMA pipes or one 512-bit; a second 512-bit pipe, as on large Xeons, would double
  it), INT8 four times that with AVX-512 VNNI (``vpdpbusd``: 64 byte products per 512-bit
  instruction), twice with AVX2 only. FP16 graphs compute in FP32 on a CPU. An estimate: the
  record keeps its basis.
* GPU: the vendors' dense FP16 tensor-core figures (INT8: twice that) for the cards named below;
  None (share not stated) for others.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

# Dense FP16 tensor-core TFLOP/s from the vendors' data sheets (Jetsons: a quarter of their
# sparse INT8 TOPS), matched against the device name.
GPU_FP16_TFLOPS = {"H100": 989.0, "A100": 312.0, "L4": 121.0, "T4": 65.0,
                   "AGX Orin": 42.5, "Orin Nano": 10.0}


def _cpu_flags_and_mhz():
    flags, mhz = set(), 0.0
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "flags" and not flags:
                    flags = set(value.split())
                elif key.strip() == "cpu MHz":
                    mhz = max(mhz, float(value))
    except (OSError, ValueError):
        pass
    return flags, mhz


def cpu_peak(precision: str) -> Optional[Dict[str, Any]]:
    """``{"tflops", "basis"}`` of this CPU for ``precision`` (fp32, fp16, int8), or None when
    the clock or the vector units are unknown."""
    flags, mhz = _cpu_flags_and_mhz()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if not mhz or not cores or not ({"avx2", "fma"} <= flags or "avx512f" in flags):
        return None
    per_cycle = 32
    unit = "FP32 FLOP (FMA, 512 bits of FP32 lanes per cycle)"
    if precision == "int8":
        factor = 4 if "avx512_vnni" in flags else 2
        per_cycle *= factor
        unit = (f"INT8 ops ({factor}x FP32: "
                f"{'AVX-512 VNNI' if factor == 4 else 'AVX2 pmaddubsw'})")
    tflops = cores * mhz * 1e6 * per_cycle / 1e12
    return {"tflops": tflops, "basis": f"{cores} cores x {mhz / 1e3:.2f} GHz x {per_cycle} "
                                       f"{unit} per cycle (estimate)"}


def gpu_peak(name: str, precision: str) -> Optional[Dict[str, Any]]:
    """``{"tflops", "basis"}`` of a GPU named ``name`` (as CUDA reports it), or None."""
    for key, fp16 in GPU_FP16_TFLOPS.items():
        if key.lower() in name.lower():
            tflops = fp16 * (2 if precision == "int8" else 0.5 if precision == "fp32" else 1)
            return {"tflops": tflops, "basis": f"{key}: {fp16} dense FP16 TFLOP/s (data sheet)"
                    + ("; FP32 taken as half (TF32 tensor cores)" if precision == "fp32" else "")
                    + ("; INT8 as twice" if precision == "int8" else "")}
    return None


def device_peak(device: str, precision: str, gpu_name: Optional[str] = None
                ) -> Optional[Dict[str, Any]]:
    """The peak a backend on ``device`` (cpu, cuda) running ``precision`` graphs is measured
    against; None when unknown."""
    if device == "cuda":
        return gpu_peak(gpu_name or "", precision)
    return cpu_peak(precision)
