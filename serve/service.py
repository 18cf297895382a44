"""Starting and stopping the service on Ray: a local Ray (the embedded default) or an existing
cluster, Serve's ingress on ``host:port`` (HAProxy or the Python proxy, see
:mod:`samspt.serve.ingress`), the application under ``route_prefix``.

    service = start_service(ServeSettings(), port=8000)     # blocks until it answers
    service.url, service.metrics_url
    stop_service(service)

Used by ``samspt-serve``, the tests and the serving benchmark alike.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Optional, Tuple

from samspt.runtime.errors import BackendError, ConfigError
from samspt.serve.ingress import (DEFAULT_INGRESS, check_ingress, ingress_environment,
                                  resolve_ingress)
from samspt.serve.settings import ServeSettings

log = logging.getLogger(__name__)

APP_NAME = "samspt"
READY_TIMEOUT_S = 300.0


@dataclass
class RunningService:
    """Where a started application answers: ``url`` (with its route prefix, no trailing
    slash), ``metrics_url`` (Prometheus, this node's Ray metrics agent); ``owns_ray``: this
    process started a local Ray (stopping the service stops it), ``connected``: this process
    joined Ray for the service (stopping it disconnects); ``ingress``: ``haproxy`` or ``proxy``
    on a local Ray this process started, None where the cluster's own setting applies."""

    url: str
    metrics_url: Optional[str]
    name: str
    owns_ray: bool
    connected: bool
    ingress: Optional[str] = None


def start_ray(address: Optional[str] = None, num_cpus: Optional[float] = None,
              metrics_port: Optional[int] = None,
              ingress: str = DEFAULT_INGRESS) -> Tuple[bool, bool, Optional[str]]:
    """Connect to the Ray cluster at ``address``, or start a local one (``num_cpus`` logical
    CPUs, default the machine's) whose Serve takes HTTP through ``ingress``. Returns (started a
    local Ray, called ``ray.init``, the ingress of that local Ray or None); nothing happens
    where this process is already connected."""
    import ray

    check_ingress(ingress)
    if ray.is_initialized():
        return False, False, None
    if address:
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise BackendError(f"cannot join the Ray cluster at {address}: {exc}; start it with "
                               "`ray start --head` or leave out --address for a local Ray") from None
        if ingress != DEFAULT_INGRESS:
            log.warning("--ingress %s is not applied to the cluster at %s: its nodes use the "
                        "ingress they were started with (RAY_SERVE_ENABLE_HA_PROXY=1 ray start "
                        "... for HAProxy)", ingress, address)
        return False, True, None
    mode = resolve_ingress(ingress)
    kwargs = {}
    if metrics_port:
        kwargs["_metrics_export_port"] = int(metrics_port)
    try:
        with ingress_environment(mode):
            # "local": always a new Ray of our own, never a cluster that `ray start` left
            # (or left behind) on this machine; --address joins one
            ray.init(address="local", num_cpus=int(num_cpus) if num_cpus else os.cpu_count(),
                     include_dashboard=False, log_to_driver=False, **kwargs)
    except Exception as exc:  # noqa: BLE001 - Ray raises bare Exception when its node is slow
        raise BackendError(f"a local Ray could not start: {exc}; on a machine busy with other "
                           "work try again, or start Ray yourself (`ray start --head`) and pass "
                           "--address auto") from None
    log.info("local Ray started; Serve's ingress: %s", mode)
    return True, True, mode


def metrics_url(host: str = "127.0.0.1") -> Optional[str]:
    """The Prometheus endpoint of this node's Ray metrics agent, or None if Ray has none."""
    import ray

    for node in ray.nodes():
        if node.get("Alive") and node.get("MetricsExportPort"):
            return f"http://{host}:{node['MetricsExportPort']}/metrics"
    return None


def start_service(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000,
                  route_prefix: str = "/", name: str = APP_NAME, address: Optional[str] = None,
                  num_cpus: Optional[float] = None, metrics_port: Optional[int] = None,
                  request_timeout_s: float = 60.0,
                  ingress: str = DEFAULT_INGRESS) -> RunningService:
    """Start (or update) the application and wait until its ``/healthz`` answers. ``ingress``
    (:data:`~samspt.serve.ingress.INGRESS_MODES`) applies where a local Ray is started."""
    import ray
    from ray import serve

    from samspt.serve.deployment import build_app

    if not route_prefix.startswith("/"):
        raise ConfigError(f"route_prefix must start with '/', got {route_prefix!r}")
    if not address and not ray.is_initialized():
        check_port_free(host, port)     # before Ray starts: a taken port fails in a second
    owns_ray, connected, mode = start_ray(address, num_cpus, metrics_port, ingress)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}{route_prefix.rstrip('/')}"
    try:
        serve.start(http_options={"host": host, "port": int(port),
                                  "request_timeout_s": float(request_timeout_s)})
        serve.run(build_app(settings), name=name, route_prefix=route_prefix, blocking=False)
        wait_until_healthy(url, READY_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - Ray raises its own task errors; none may leak Ray
        # undo the half-made start: the application, and the Ray this call started or joined
        try:
            stop_service(RunningService(url=url, metrics_url=None, name=name,
                                        owns_ray=owns_ray, connected=connected))
        except Exception as cleanup:  # noqa: BLE001 - the first error is the one to show
            log.debug("cleaning up after a failed start: %s", cleanup)
        if isinstance(exc, (ConfigError, BackendError)):
            raise
        last_line = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise BackendError(f"samspt-serve could not start on {host}:{port}: {last_line}; see "
                           "the Ray logs under /tmp/ray/session_latest/logs") from None
    return RunningService(url=url, metrics_url=metrics_url(shown), name=name, owns_ray=owns_ray,
                          connected=connected, ingress=mode)


def check_port_free(host: str, port: int) -> None:
    """:class:`ConfigError` where something already listens on ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}): another "
                              "program holds the port; stop it or pick another with --port")


def wait_until_healthy(url: str, timeout_s: float) -> dict:
    """Poll ``url/healthz`` until it answers 200; :class:`BackendError` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as answer:
                if answer.status == 200:
                    return json.loads(answer.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = str(exc)
        time.sleep(0.25)
    raise BackendError(f"samspt-serve at {url} did not become healthy within {timeout_s:.0f} s "
                       f"(last: {last}); see the Ray logs under /tmp/ray/session_latest/logs")


def stop_service(service: RunningService) -> None:
    """Delete the application; shut Serve and Ray down if this process started that Ray (an
    application on a cluster is deleted, the cluster and its other applications stay)."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        return
    try:
        if service.owns_ray:
            serve.shutdown()
        else:
            serve.delete(service.name)
    finally:
        if service.connected:
            ray.shutdown()
