"""Prometheus metrics of the service, through Ray's metrics (``ray.util.metrics``): every replica
reports to its node's metrics agent, which Prometheus scrapes at
``http://<node>:<metrics export port>/metrics`` beside Ray Serve's own (``ray_serve_*``).

Ours (Ray prefixes ``ray_``): ``ray_samspt_serve_requests_total{route,status}``,
``ray_samspt_serve_errors_total{route,status}`` (4xx and 5xx), and the histogram
``ray_samspt_serve_request_latency_ms{route}``.
"""

from __future__ import annotations

import logging
from typing import Optional

log = logging.getLogger(__name__)

LATENCY_BOUNDARIES_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]
ROUTES = ("/", "/healthz", "/v1/model", "/v1/samples", "/v1/inspect")


def route_label(path: str) -> str:
    """A bounded label for a request path (unknown paths are ``other``; samples share one)."""
    if path.startswith("/v1/samples"):
        return "/v1/samples"
    return path if path in ROUTES else "other"


class ServiceMetrics:
    """Requests, errors and latency per route; a no-op where Ray's metrics are unavailable."""

    def __init__(self) -> None:
        try:
            from ray.util.metrics import Counter, Histogram

            self._requests: Optional[Counter] = Counter(
                "samspt_serve_requests", "HTTP requests answered, by route and status",
                tag_keys=("route", "status"))
            self._errors: Optional[Counter] = Counter(
                "samspt_serve_errors", "HTTP requests answered with a 4xx or 5xx status",
                tag_keys=("route", "status"))
            self._latency: Optional[Histogram] = Histogram(
                "samspt_serve_request_latency_ms", "time from request to answer, milliseconds",
                boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("route",))
        except Exception as exc:  # noqa: BLE001 - metrics must never take the service down
            log.warning("Prometheus metrics off: %s", exc)
            self._requests = self._errors = self._latency = None

    def record(self, path: str, status: int, elapsed_ms: float) -> None:
        if self._requests is None:
            return
        tags = {"route": route_label(path), "status": str(status)}
        try:
            self._requests.inc(1, tags)
            if status >= 400:
                self._errors.inc(1, tags)
            self._latency.observe(elapsed_ms, {"route": tags["route"]})
        except Exception as exc:  # noqa: BLE001
            log.debug("metric not recorded: %s", exc)
