"""Serving benchmark: throughput and latency of samspt-serve at 1, 8 and 32 concurrent clients,
beside the in-process Inspector doing the same work, with a JSON record.

    python -m samspt.benchmarks.serve                    # starts a local service: ~2 minutes
    samspt-bench-serve --url http://gpu-box:8000 --concurrency 1,8,32,64
    samspt-bench-serve --max-batch 1                     # no batching across requests

Workload: the bundled sample tiles, each with its defect's box (``--prompts`` boxes per
request), sent as the JPEG file they are. Served calls go through ``samspt.serve.Client``
(base64, HTTP, Ray Serve, RLE masks decoded back); in-process calls through
``Inspector.inspect`` from as many threads. Levels are interleaved (in-process, served, then the
other order at the next level) so a slow spell of the machine hits both.
``serve_vs_inprocess_c8`` = served / in-process throughput at 8 clients.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from samspt.runtime.cli import add_verbose_flag, error_exit
from samspt.benchmarks.settings import parse_int_list
from samspt.runtime.errors import SamsptError
from samspt.runtime.logs import configure_cli_logging
from samspt.serve.ingress import DEFAULT_INGRESS, INGRESS_MODES
from samspt.serve.settings import DEFAULT_BATCH_WAIT_MS, DEFAULT_MAX_BATCH


def _levels(text: str) -> List[int]:
    try:
        return parse_int_list(text, "--concurrency")
    except SamsptError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samspt-bench-serve",
        description="Throughput and p50/p99 latency of samspt-serve at several numbers of "
                    "concurrent clients, beside the in-process Inspector on the same work; "
                    "writes a JSON record (serve_vs_inprocess_c8) and prints a table.")
    parser.add_argument("--url", default=None,
                        help="a running service (default: start one on a local Ray, stopped at "
                             "the end)")
    parser.add_argument("--model", type=Path, default=None, metavar="MODEL_DIR",
                        help="model folder for the in-process side and a started service "
                             "(default: the shipped example model; must be what --url serves)")
    parser.add_argument("--concurrency", type=_levels, default=[1, 8, 32],
                        help="concurrent clients per level (default 1,8,32)")
    parser.add_argument("--requests", type=int, default=96,
                        help="requests per level and side (default 96)")
    parser.add_argument("--warmup", type=int, default=8, help="warm-up requests per side")
    parser.add_argument("--prompts", type=int, default=1, help="boxes per request (default 1)")
    parser.add_argument("--replicas", type=int, default=1, help="replicas of a started service")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                        help="views per encoder run across requests (started service)")
    parser.add_argument("--batch-wait-ms", type=float, default=DEFAULT_BATCH_WAIT_MS,
                        help="batch wait, ms (started service)")
    parser.add_argument("--ingress", choices=INGRESS_MODES, default=DEFAULT_INGRESS,
                        help="ingress of a started service: haproxy, proxy (Ray Serve's Python "
                             "proxy) or auto (default: haproxy where its binary is found)")
    parser.add_argument("--out", type=Path, default=None,
                        help="record path (default: a new file in benchmarks/results/)")
    add_verbose_flag(parser)
    return parser


def _cases(prompts: int):
    """(JPEG bytes, HxW uint8 image, Kx4 boxes) per bundled sample."""
    import numpy as np

    from samspt.runtime.prompts import mask_box
    from samspt.runtime.samples import bundled_samples, prompt_boxes

    rng = np.random.default_rng(0)
    out = []
    for sample in bundled_samples():
        mask = sample.mask()
        boxes = prompt_boxes(mask, rng, count=max(prompts, 1))
        if mask.any():
            boxes[0] = mask_box(mask)
        out.append((sample.image_path.read_bytes(), sample.image(), boxes[:prompts]))
    return out


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging(args.verbose)
    from samspt.benchmarks.machine import machine_info, slug
    from samspt.benchmarks.record import build_record, default_results_dir, write_record
    from samspt.runtime import Inspector
    from samspt.runtime.samples import EXAMPLE_MODEL_DIR
    from samspt.serve.client import Client
    from samspt.serve.load import run_load
    from samspt.serve.service import start_service, stop_service
    from samspt.serve.settings import ServeSettings

    model_dir = args.model or EXAMPLE_MODEL_DIR
    service = None
    try:
        settings = ServeSettings(model_dir=str(args.model) if args.model else None,
                                 replicas=args.replicas, max_batch=args.max_batch,
                                 batch_wait_ms=args.batch_wait_ms)
        if args.url is None:
            import socket

            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            print(f"starting a local service (port {port}) ...", file=sys.stderr)
            service = start_service(settings, port=port, num_cpus=os.cpu_count(),
                                    ingress=args.ingress)
        url = args.url or service.url
        client = Client(url, timeout_s=120)
        served_model = client.model()
        cases = _cases(args.prompts)
        with Inspector(model_dir) as inspector:
            calls = {"inprocess": lambda c: inspector.inspect(c[1], boxes=c[2]),
                     "served": lambda c: client.inspect(c[0], boxes=c[2])}
            for side, call in calls.items():
                run_load(call, cases, clients=min(4, args.warmup), requests=args.warmup)
            results: Dict[str, Dict[str, Any]] = {"inprocess": {}, "served": {}}
            for level, clients in enumerate(args.concurrency):
                order = list(calls) if level % 2 == 0 else list(reversed(list(calls)))
                for side in order:
                    print(f"{side}: {clients} clients x {args.requests} requests",
                          file=sys.stderr)
                    figures = run_load(calls[side], cases, clients, args.requests)
                    results[side][f"c{clients}"] = figures.summary()
            local_backend = inspector.backend
    except SamsptError as exc:
        return error_exit(exc)
    finally:
        if service is not None:
            stop_service(service)

    ratios = {}
    for clients in args.concurrency:
        served = results["served"][f"c{clients}"]["throughput_rps"]
        local = results["inprocess"][f"c{clients}"]["throughput_rps"]
        ratios[f"serve_vs_inprocess_c{clients}"] = served / local if local else None
    ratios.setdefault("serve_vs_inprocess_c8", None)
    record = build_record({
        "benchmark": "serve",
        "settings": {"model": served_model["name"], "url": args.url or "started locally",
                     "concurrency": args.concurrency, "requests_per_level": args.requests,
                     "warmup": args.warmup, "prompts_per_request": args.prompts,
                     "service": served_model.get("batching"),
                     "started_service": ({**settings.to_dict(), "ingress": service.ingress}
                                         if service is not None else None)},
        "model": {"served": {k: served_model.get(k) for k in ("name", "sha256", "backend",
                                                               "precision")},
                  "inprocess_backend": local_backend},
        "results": results, "ratios": ratios})
    if args.out:
        path = write_record(record, args.out)
    else:
        stamp = record["created"].replace("-", "").replace(":", "")
        host = slug(machine_info().get("host") or "host")
        path = write_record(record, default_results_dir() /
                            f"{stamp}-serve-{slug(served_model['name'])}-{host}.json")
    print("| side | clients | requests | errors | throughput req/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for clients in args.concurrency:
        for side in ("inprocess", "served"):
            row = results[side][f"c{clients}"]
            print(f"| {side} | {clients} | {row['requests']} | {row['errors']} | "
                  f"{row['throughput_rps']:.1f} | {row.get('p50_ms', float('nan')):.1f} | "
                  f"{row.get('p99_ms', float('nan')):.1f} |")
    print("\n" + json.dumps({k: (round(v, 3) if v is not None else None)
                             for k, v in ratios.items()}))
    print(f"record: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
