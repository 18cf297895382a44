"""The Ray Serve deployment: one :class:`~samspt.runtime.inspector.Inspector` per replica,
its encoder runs batched across requests (:mod:`samspt.serve.view_batching`), behind a FastAPI
app (HTTP API v1, see :mod:`samspt.serve.http_api`, and the review page).
``build_app(settings)`` gives the application that ``serve.run`` starts.

Routes: ``GET /`` (review page), ``GET /healthz``, ``GET /v1/model``, ``GET /v1/samples``
(the bundled sample images) and ``GET /v1/samples/{name}``, ``POST /v1/inspect``.

Concurrency in a replica: the event loop only reads bodies and answers; parsing, inspection and
RLE encoding run in a pool of ``max_ongoing_requests`` threads (ONNX Runtime releases the GIL);
the encoder's views of all of them meet in one ``@serve.batch`` queue and run on one encoder
thread, a batch at a time, while the next batch gathers.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures' types at run
# time (a string annotation `Request` on a Serve ingress method becomes a query parameter).
import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from samspt.runtime.errors import InputError, SamsptError
from samspt.runtime.files import sha256_file
from samspt.runtime.manifest import MANIFEST
from samspt.serve.http_api import (RequestError, answer_json, body_too_large,
                                   check_content_length, model_identity, parse_inspect_request)
from samspt.serve.metrics import ServiceMetrics
from samspt.serve.settings import DEFAULT_BATCH_WAIT_MS, DEFAULT_MAX_BATCH, ServeSettings
from samspt.runtime.backend import encode_in_chunks
from samspt.runtime.inspector import Inspector
from samspt.serve.view_batching import batches_across_requests

log = logging.getLogger(__name__)

PAGE = Path(__file__).resolve().parent / "static" / "review.html"
# A view waits at most this long for the encoder (its batch's wait plus the batches before it).
ENCODE_TIMEOUT_S = 120.0

app = FastAPI(title="samspt-serve", docs_url=None, redoc_url=None, openapi_url=None)
_metrics: Optional[ServiceMetrics] = None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


@app.exception_handler(InputError)
async def _input_error(request: Request, exc: InputError) -> JSONResponse:
    return _error(getattr(exc, "status", 400), str(exc))


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    hint = {404: f"no route {request.url.path}; the API is POST /v1/inspect, GET /v1/model, "
                 "GET /healthz, GET / (review page)",
            405: f"{request.method} is not allowed on {request.url.path}"}
    return _error(exc.status_code, hint.get(exc.status_code, str(exc.detail)))


@app.middleware("http")
async def _count_and_contain(request: Request, call_next):
    """Metrics for every answer, and a 500 with a message (never a dropped connection) for an
    error nobody foresaw."""
    global _metrics
    start = time.perf_counter()
    try:
        response = await call_next(request)
    except Exception as exc:  # noqa: BLE001 - the service stays up whatever one request does
        log.exception("request %s %s failed", request.method, request.url.path)
        kind = "backend error" if isinstance(exc, SamsptError) else "internal error"
        response = _error(500, f"{kind}: {exc}; the request was not answered, the service is "
                               "still up (see the replica's log)")
    if _metrics is None:
        _metrics = ServiceMetrics()
    _metrics.record(request.url.path, response.status_code,
                    (time.perf_counter() - start) * 1e3)
    return response


async def read_body(request: Request, max_body_bytes: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``max_body_bytes``."""
    check_content_length(request.headers.get("content-length"), max_body_bytes)
    chunks: List[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body_bytes:
            raise body_too_large(max_body_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _providers(settings: ServeSettings) -> Optional[List[str]]:
    """ONNX Runtime on CUDA where the replica holds a GPU and onnxruntime-gpu is installed."""
    if settings.gpus_per_replica <= 0:
        return None
    from samspt.runtime.ort_backend import available_providers

    if "CUDAExecutionProvider" in available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    log.warning("this replica holds a GPU but ONNX Runtime has no CUDA provider "
                "(pip install 'samspt[gpu]'); TensorRT engines are used where built, else CPU")
    return None


@serve.deployment
@serve.ingress(app)
class InspectionService:
    """One replica: the model loaded once (checked, warmed up), serving HTTP API v1."""

    def __init__(self, settings: Dict[str, Any]) -> None:
        self.settings = ServeSettings(**settings)
        model_dir = self.settings.resolved_model_dir
        self.inspector = Inspector(
            model_dir, backend=self.settings.backend, precision=self.settings.precision,
            providers=_providers(self.settings), max_prompts=self.settings.max_prompts,
            max_image_pixels=self.settings.max_image_pixels,
            encode=self._encode_from_thread)
        self._batching = batches_across_requests(self.inspector.graphs, self.settings.max_batch)
        manifest = self.inspector.manifest
        self.model = model_identity(manifest.name, sha256_file(model_dir / MANIFEST),
                                    self.inspector.image_size)
        self.model_info = {**self.model, "input": manifest.input.to_dict(),
                           "precision": self.inspector.precision,
                           "backend": self.inspector.backend,
                           "views": manifest.views.to_dict() if manifest.views else None,
                           "mask_threshold": manifest.mask_threshold,
                           "limits": {"max_body_bytes": self.settings.max_body_bytes,
                                      "max_image_pixels": self.settings.max_image_pixels,
                                      "max_prompts": self.inspector.max_prompts},
                           "batching": {"max_batch": self.settings.max_batch,
                                        "batch_wait_ms": self.settings.batch_wait_ms,
                                        "across_requests": self._batching}}
        self.pool = ThreadPoolExecutor(self.settings.max_ongoing_requests,
                                       thread_name_prefix="samspt-inspect")
        self.encode_pool = ThreadPoolExecutor(1, thread_name_prefix="samspt-encode")
        self.page = PAGE.read_text(encoding="utf-8")
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._in_flight = 0          # inspections in this replica now (the event loop counts)
        self._encode_view.set_max_batch_size(self.settings.max_batch)
        self._encode_view.set_batch_wait_timeout_s(self.settings.batch_wait_ms / 1e3)
        log.info("replica ready: %s on %s (%s), pid %d, batching %s", self.model["name"],
                 self.inspector.backend, self.inspector.precision, os.getpid(),
                 f"up to {self.settings.max_batch} views, {self.settings.batch_wait_ms} ms"
                 if self._batching else "off")

    # ------------------------------------------------------------------ batching
    def _encode_from_thread(self, batch: np.ndarray) -> np.ndarray:
        """Vx3xSxS float32 -> VxCxhxw (an inspection thread waits for its views' batch). A
        request alone in the replica does not wait for others that are not there."""
        if not self._batching or self._in_flight <= 1 or self._loop is None:
            return encode_in_chunks(self.inspector.graphs, batch)
        future = asyncio.run_coroutine_threadsafe(self._encode_views(batch), self._loop)
        return future.result(timeout=ENCODE_TIMEOUT_S)

    async def _encode_views(self, batch: np.ndarray) -> np.ndarray:
        rows = await asyncio.gather(*(self._encode_view(view) for view in batch))
        return np.stack(rows)

    # The settings' values replace these when the replica starts (set_max_batch_size above).
    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_MS / 1e3)
    async def _encode_view(self, views: List[np.ndarray]) -> List[np.ndarray]:
        """Views of any requests (each 3xSxS float32) -> their CxHxW embeddings, one encoder
        call for them all."""
        embeddings = await asyncio.get_running_loop().run_in_executor(
            self.encode_pool, encode_in_chunks, self.inspector.graphs, np.stack(views))
        return list(np.asarray(embeddings))

    def _inspect(self, body: bytes, content_type: Optional[str]) -> Dict[str, Any]:
        start = time.perf_counter()
        request = parse_inspect_request(body, content_type, self.inspector.max_prompts,
                                        self.settings.max_image_pixels)
        parsed = time.perf_counter()
        result = self.inspector.inspect(request.image, boxes=request.boxes,
                                        points=request.points,
                                        point_labels=request.point_labels)
        inspected = time.perf_counter()
        answer = answer_json(result, request.image.shape[:2], self.model)
        answer["timings_ms"]["request_decode"] = round((parsed - start) * 1e3, 3)
        answer["timings_ms"]["answer_encode"] = round((time.perf_counter() - inspected) * 1e3, 3)
        return answer

    # --------------------------------------------------------------------- routes
    @app.post("/v1/inspect")
    async def inspect(self, request: Request) -> JSONResponse:
        body = await read_body(request, self.settings.max_body_bytes)
        self._loop = asyncio.get_running_loop()
        self._in_flight += 1
        try:
            answer = await self._loop.run_in_executor(self.pool, self._inspect, body,
                                                      request.headers.get("content-type"))
        finally:
            self._in_flight -= 1
        return JSONResponse(answer)

    @app.get("/v1/model")
    async def model(self) -> Dict[str, Any]:
        return self.model_info

    @app.get("/healthz")
    async def healthz(self) -> Dict[str, Any]:
        context = serve.get_replica_context()
        return {"status": "ok", "model": self.model["name"], "pid": os.getpid(),
                "replica": getattr(context, "replica_tag", None)
                or str(getattr(context, "replica_id", ""))}

    @app.get("/v1/samples")
    async def samples(self) -> List[Dict[str, Any]]:
        from samspt.runtime.samples import bundled_samples

        return [{"name": s.name, "defect_class": s.defect_class,
                 "url": f"v1/samples/{s.name}"} for s in bundled_samples()]

    @app.get("/v1/samples/{name}")
    async def sample(self, name: str) -> Response:
        from samspt.runtime.samples import bundled_samples

        for sample in bundled_samples():
            if sample.name == name:
                return Response(sample.image_path.read_bytes(), media_type="image/jpeg")
        raise RequestError(f"no bundled sample {name!r}; GET v1/samples lists them", status=404)

    @app.get("/")
    async def page(self) -> HTMLResponse:
        return HTMLResponse(self.page)

    def check_health(self) -> None:
        """Ray Serve's periodic check: a replica whose model is gone is replaced."""
        if self.inspector is None:
            raise RuntimeError("inspector not loaded")


def build_app(settings: Optional[ServeSettings] = None):
    """The Ray Serve application of ``settings`` (replicas, CPUs/GPUs each, request limits)."""
    settings = settings or ServeSettings()
    actor_options: Dict[str, Any] = {"num_cpus": settings.cpus_per_replica}
    if settings.gpus_per_replica:
        actor_options["num_gpus"] = settings.gpus_per_replica
    return InspectionService.options(
        num_replicas=settings.replicas, ray_actor_options=actor_options,
        max_ongoing_requests=settings.max_ongoing_requests, health_check_period_s=5.0,
        graceful_shutdown_timeout_s=10.0).bind(settings.to_dict())
