"""Timing statistics: percentiles of latency samples, ratios, and the interleaved run order.

Latencies are milliseconds (float). Percentiles use linear interpolation between order
statistics (numpy's default, "type 7"), so the p99 of few samples lies between the two largest.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from samspt.runtime.errors import ConfigError

K = TypeVar("K")


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``samples``, linearly interpolated."""
    if len(samples) == 0:
        raise ConfigError("a percentile needs at least one sample; run with --reps >= 1")
    if not 0 <= q <= 100:
        raise ConfigError(f"percentile must be in 0..100, got {q}")
    return float(np.percentile(np.asarray(samples, dtype=np.float64), q))


def summarize(samples: Sequence[float]) -> Dict[str, float]:
    """median, p90, p99, mean, min, max (ms) and n of latency samples (ms)."""
    if len(samples) == 0:
        raise ConfigError("statistics need at least one sample; run with --reps >= 1")
    array = np.asarray(samples, dtype=np.float64)
    return {"median_ms": percentile(array, 50), "p90_ms": percentile(array, 90),
            "p99_ms": percentile(array, 99), "mean_ms": float(array.mean()),
            "min_ms": float(array.min()), "max_ms": float(array.max()), "n": int(array.size)}


def ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    """``numerator / denominator`` when both are finite and positive, else None."""
    if numerator is None or denominator is None:
        return None
    if not (math.isfinite(numerator) and math.isfinite(denominator)):
        return None
    if numerator <= 0 or denominator <= 0:
        return None
    return float(numerator) / float(denominator)


def throughput(median_ms: float, prompts: int) -> Dict[str, float]:
    """images/s and prompts/s of one image with ``prompts`` prompts taking ``median_ms``."""
    images = 1e3 / median_ms if median_ms > 0 else float("nan")
    return {"images_per_s": images, "prompts_per_s": images * prompts}


def schedule(keys: Sequence[K], reps: int, warmup: int) -> Iterator[Tuple[Optional[int], K]]:
    """The interleaved run order: ``warmup`` untimed rounds, then ``reps`` timed rounds, each
    round visiting every key once; every other round goes in reverse so no key always runs
    first (or always right after another). Yields (rep index, or None in warm-up, key)."""
    if reps < 1 or warmup < 0:
        raise ConfigError(f"need reps >= 1 and warmup >= 0, got reps={reps}, warmup={warmup}")
    keys = list(keys)
    for round_index in range(warmup + reps):
        order = keys if round_index % 2 == 0 else keys[::-1]
        rep = round_index - warmup if round_index >= warmup else None
        for key in order:
            yield rep, key


def interleaved(calls: Dict[str, Callable[[], object]], reps: int, warmup: int,
                tick: Optional[Callable[[], None]] = None) -> Dict[str, List[float]]:
    """Milliseconds of ``reps`` timed calls of each callable, run interleaved (see
    :func:`schedule`). A callable that runs on a GPU must synchronise before returning."""
    samples: Dict[str, List[float]] = {name: [] for name in calls}
    for rep, name in schedule(list(calls), reps, warmup):
        start = time.perf_counter()
        calls[name]()
        elapsed = (time.perf_counter() - start) * 1e3
        if rep is not None:
            samples[name].append(elapsed)
        if tick is not None:
            tick()
    return samples
