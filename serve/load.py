"""A bounded load generator: ``clients`` threads share ``requests`` calls of one function (the
service through :class:`~samspt.serve.client.Client`, or the in-process Inspector for the same
work), and the figures a deployment needs: throughput, latency percentiles, errors.

    figures = run_load(lambda case: client.inspect(*case), cases, clients=8, requests=96)
    figures.throughput_rps, figures.summary()["p99_ms"]
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Sequence

import numpy as np

from samspt.runtime.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class LoadFigures:
    """``latencies_ms``: one per answered call; ``errors``: the messages of failed calls;
    ``seconds``: wall time from the first call to the last answer."""

    clients: int
    latencies_ms: List[float] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def throughput_rps(self) -> float:
        """Answered calls per second over the whole run."""
        return len(self.latencies_ms) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> Dict[str, Any]:
        lat = np.asarray(self.latencies_ms, np.float64)
        stats = ({"p50_ms": float(np.percentile(lat, 50)), "p90_ms": float(np.percentile(lat, 90)),
                  "p99_ms": float(np.percentile(lat, 99)), "mean_ms": float(lat.mean()),
                  "max_ms": float(lat.max())} if lat.size else {})
        return {"clients": self.clients, "requests": len(self.latencies_ms) + len(self.errors),
                "errors": len(self.errors), "seconds": round(self.seconds, 3),
                "throughput_rps": self.throughput_rps, **stats,
                "error_examples": self.errors[:3]}


def run_load(call: Callable[[Any], object], cases: Sequence[Any], clients: int,
             requests: int) -> LoadFigures:
    """``requests`` calls of ``call(case)`` (cases taken in turn) from ``clients`` threads at
    once, each thread sending its next call when its last one answered (closed loop)."""
    if clients < 1 or requests < 1 or not cases:
        raise ConfigError(f"a load needs clients >= 1, requests >= 1 and cases; got {clients}, "
                          f"{requests}, {len(cases)} cases")
    figures = LoadFigures(clients=clients)
    counter = iter(range(requests))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            start = time.perf_counter()
            try:
                call(cases[index % len(cases)])
            except Exception as exc:  # noqa: BLE001 - a failed call is a figure, not a crash
                with lock:
                    figures.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            elapsed = (time.perf_counter() - start) * 1e3
            with lock:
                figures.latencies_ms.append(elapsed)

    threads = [threading.Thread(target=worker, name=f"load-{i}", daemon=True)
               for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    figures.seconds = time.perf_counter() - start
    log.debug("%d clients: %d answered, %d errors in %.2f s", clients,
              len(figures.latencies_ms), len(figures.errors), figures.seconds)
    return figures
