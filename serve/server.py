"""``samspt-serve``: the Inspector as an HTTP service on Ray Serve, with the review page.

    samspt-serve                                  # the shipped example model, local Ray
    samspt-serve models/mine --port 8080 --replicas 2 --gpus-per-replica 1
    samspt-serve models/mine --address auto       # join the Ray cluster of this machine

Runs in the foreground, logs where it listens, stops cleanly on Ctrl-C (SIGINT) or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import List, Optional

from samspt.runtime.cli import add_verbose_flag, error_exit
from samspt.runtime.errors import SamsptError
from samspt.runtime.backend import BACKENDS
from samspt.runtime.manifest import PRECISIONS
from samspt.runtime.logs import configure_cli_logging


def build_parser() -> argparse.ArgumentParser:
    from samspt.serve.ingress import DEFAULT_INGRESS, INGRESS_MODES
    from samspt.serve.settings import (DEFAULT_BATCH_WAIT_MS, DEFAULT_MAX_BATCH,
                                       DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_IMAGE_PIXELS,
                                       DEFAULT_MAX_PROMPTS)

    parser = argparse.ArgumentParser(
        prog="samspt-serve",
        description="Serve an exported samspt model over HTTP on Ray Serve: POST /v1/inspect "
                    "(JSON or multipart), GET /v1/model, GET /healthz, the review page at GET /, "
                    "Prometheus metrics from Ray's metrics agent. Answers are what "
                    "samspt.runtime.Inspector answers in-process.")
    parser.add_argument("model_dir", type=Path, nargs="?", default=None, metavar="MODEL_DIR",
                        help="exported model folder (default: the shipped example model)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument("--replicas", type=int, default=1, help="model replicas (default 1)")
    parser.add_argument("--gpus-per-replica", type=float, default=0.0, metavar="G",
                        help="GPUs each replica holds (default 0: CPU; fractions share one)")
    parser.add_argument("--cpus-per-replica", type=float, default=1.0, metavar="C",
                        help="CPUs Ray reserves for each replica (default 1)")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, metavar="B",
                        help="views per encoder run, gathered across requests (default "
                             f"{DEFAULT_MAX_BATCH}; 1: no batching across requests)")
    parser.add_argument("--batch-wait-ms", type=float, default=DEFAULT_BATCH_WAIT_MS,
                        metavar="W",
                        help="how long a view waits for others to share its encoder run "
                             f"(default {DEFAULT_BATCH_WAIT_MS:g} ms)")
    parser.add_argument("--ingress", choices=INGRESS_MODES, default=DEFAULT_INGRESS,
                        help="how HTTP reaches the replicas on a local Ray: haproxy (Ray Serve's "
                             "HAProxy mode: C proxy, requests go straight to the replicas' own "
                             "HTTP servers; the binary comes with ray[serve] on Linux), proxy "
                             "(Ray Serve's Python HTTP proxy), auto (default: haproxy where "
                             "found). A cluster joined with --address keeps its own")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join (e.g. auto, ray://head:10001); default: "
                             "start a local Ray")
    parser.add_argument("--backend", choices=BACKENDS,
                        default="auto")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="graphs to run (default: FP16 engines on TensorRT, FP32 on ONNX "
                             "Runtime)")
    parser.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY_BYTES / 2**20,
                        help=f"largest request body, MiB (default "
                             f"{DEFAULT_MAX_BODY_BYTES // 2**20})")
    parser.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS,
                        help=f"largest image, pixels (default {DEFAULT_MAX_IMAGE_PIXELS:,})")
    parser.add_argument("--max-prompts", type=int, default=DEFAULT_MAX_PROMPTS,
                        help=f"most prompts in one request (default {DEFAULT_MAX_PROMPTS})")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="port of the Prometheus metrics of a local Ray (default: Ray "
                             "picks one; logged at start)")
    add_verbose_flag(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging(args.verbose)
    import logging

    log = logging.getLogger("samspt.serve.server")
    stop = threading.Event()

    def _stop(signum, frame) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    service = None
    try:
        from samspt.serve.service import start_service, stop_service
        from samspt.serve.settings import ServeSettings

        settings = ServeSettings(
            model_dir=str(args.model_dir) if args.model_dir else None, replicas=args.replicas,
            cpus_per_replica=args.cpus_per_replica, gpus_per_replica=args.gpus_per_replica,
            max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms,
            max_body_bytes=int(args.max_body_mb * 2**20),
            max_image_pixels=args.max_image_pixels, max_prompts=args.max_prompts,
            backend=args.backend, precision=args.precision)
        log.info("starting %s on %s", settings.resolved_model_dir,
                 f"the Ray cluster at {args.address}" if args.address else "a local Ray")
        service = start_service(settings, host=args.host, port=args.port, address=args.address,
                                num_cpus=max(settings.replicas * settings.cpus_per_replica,
                                             _cpu_count()),
                                metrics_port=args.metrics_port, ingress=args.ingress)
        for sig in previous:     # again: ray.init may have put its own handlers in place
            signal.signal(sig, _stop)
        log.info("samspt-serve listening on %s/ (review page), API %s/v1/inspect, "
                 "health %s/healthz; metrics %s; ingress %s; Ctrl-C stops", service.url,
                 service.url, service.url, service.metrics_url or "(none)",
                 service.ingress or "the cluster's")
        while not stop.wait(1.0):
            pass
    except SamsptError as exc:
        return error_exit(exc)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if service is not None:
            stop_service(service)
            log.info("stopped")
    return 0


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
