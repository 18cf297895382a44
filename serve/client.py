"""``Client``: the service from Python, answering the same
:class:`~samspt.runtime.result.InspectionResult` as the in-process Inspector.

    from samspt.serve import Client

    client = Client("http://127.0.0.1:8000")
    result = client.inspect(image, boxes=[[120, 200, 140, 240]])   # HxWx3 / HxW uint8
    result.masks, result.draft_masks, result.scores, result.pred_label, result.views

Images go as lossless PNG (a numpy array) or as the file's own bytes (``bytes`` or a path), so
the service sees exactly the pixels the caller has. Safe to use from many threads (one HTTP
session per thread). Needs requests and pycocotools, not Ray.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

from samspt.runtime.errors import BackendError, InputError
from samspt.runtime.result import InspectionResult
from samspt.runtime.views import View
from samspt.serve.http_api import decode_anomaly_map
from samspt.serve.rle import decode_masks

log = logging.getLogger(__name__)

ImageLike = Union[np.ndarray, bytes, str, Path]


class ServiceError(BackendError):
    """The service could not be reached, or answered an error that is not the request's fault
    (5xx). ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.status = status


class ServiceInputError(InputError):
    """The service refused the request (4xx); the message is the service's own."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def encode_image(image: ImageLike) -> bytes:
    """The file bytes the service gets: a numpy array (HxWx3 RGB or HxW grey uint8) as PNG;
    ``bytes`` as they are; a path's file as it is."""
    if isinstance(image, np.ndarray):
        from PIL import Image

        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (
                image.ndim == 3 and image.shape[2] not in (1, 3)):
            raise InputError(f"image must be HxWx3 or HxW uint8, got {image.dtype} of shape "
                             f"{image.shape}")
        buffer = io.BytesIO()
        Image.fromarray(image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1
                        else image).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise InputError(f"image file {path} does not exist")
        return path.read_bytes()
    raise InputError(f"image must be a numpy array, file bytes or a path, got "
                     f"{type(image).__name__}")


def _as_list(value: Any, name: str) -> Any:
    """A prompt array as nested lists for JSON (the service checks shapes and geometry)."""
    try:
        return np.asarray(value, dtype=np.float64).tolist()
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a rectangular array of numbers") from None


def result_from_answer(answer: Dict[str, Any]) -> InspectionResult:
    """The JSON answer of ``POST /v1/inspect`` -> :class:`InspectionResult` (masks decoded;
    ``views`` rebuilt as :class:`~samspt.runtime.views.View`)."""
    height, width = (int(v) for v in answer["image_size"])
    prompts = answer["prompts"]
    input_size = int(answer["model"]["input_size"])
    bbox = np.array([p["bbox"] if p["bbox"] is not None else [-1, -1, -1, -1] for p in prompts],
                    dtype=np.int64).reshape(-1, 4)
    return InspectionResult(
        masks=decode_masks([p["mask"] for p in prompts], (height, width)),
        draft_masks=decode_masks([p["draft_mask"] for p in prompts], (height, width)),
        scores=np.array([p["score"] for p in prompts], dtype=np.float32),
        area_px=np.array([p["area_px"] for p in prompts], dtype=np.int64),
        bbox=bbox,
        pred_label=np.array([p["pred_label"] for p in prompts], dtype=bool),
        pred_score=(np.array([p["pred_score"] for p in prompts], dtype=np.float32)
                    if all("pred_score" in p for p in prompts) and prompts
                    else np.zeros(0, np.float32)),
        timings_ms={k: float(v) for k, v in answer.get("timings_ms", {}).items()},
        views=[View(int(x0), int(y0), int(side), (height, width), input_size)
               for x0, y0, side in answer.get("views", [])],
        anomaly_map=(decode_anomaly_map(answer["anomaly_map"]) if "anomaly_map" in answer
                     else None))


class Client:
    """HTTP client of a samspt-serve service at ``url`` (``http://host:port``, with the route
    prefix if the application has one). ``timeout_s`` bounds each request. ``retries``: how
    often a request whose connection failed or was closed before an answer is sent again
    (default 1): a replica that dies under a request drops its connection (Ray Serve's HAProxy
    ingress), and another replica answers the retry. Inspections are pure, so a retry is safe;
    a request that timed out is not retried (it may still be running)."""

    def __init__(self, url: str, timeout_s: float = 60.0, retries: int = 1,
                 retry_wait_s: float = 0.2) -> None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InputError(f"retries must be an int >= 0, got {retries!r}")
        self.url = url.rstrip("/")
        self.timeout_s = float(timeout_s)
        self.retries = retries
        self.retry_wait_s = float(retry_wait_s)
        self._local = threading.local()

    def _session(self):
        import requests

        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import requests

        for attempt in range(self.retries + 1):
            try:
                answer = self._session().request(method, f"{self.url}{path}",
                                                 timeout=self.timeout_s, **kwargs)
                break
            except requests.RequestException as exc:
                retry = (attempt < self.retries and isinstance(exc, requests.ConnectionError)
                         and not isinstance(exc, requests.Timeout))
                if not retry:
                    raise ServiceError(f"samspt-serve at {self.url} did not answer {method} "
                                       f"{path}: {exc}; is it running (samspt-serve) and is "
                                       "the URL right?") from None
                log.info("%s %s: connection lost (%s); sending it again", method, path, exc)
                time.sleep(self.retry_wait_s)
        try:
            data = answer.json()
        except ValueError:
            data = {"error": answer.text[:200]}
        if answer.status_code >= 400:
            message = data.get("error") if isinstance(data, dict) else None
            message = message or f"HTTP {answer.status_code}: {answer.text[:200]}"
            if answer.status_code < 500:
                raise ServiceInputError(message, answer.status_code)
            raise ServiceError(f"samspt-serve failed on {method} {path} "
                               f"({answer.status_code}): {message}", answer.status_code)
        return data

    def inspect(self, image: ImageLike, boxes: Optional[object] = None,
                points: Optional[object] = None,
                point_labels: Optional[object] = None) -> InspectionResult:
        """What :meth:`samspt.runtime.Inspector.inspect` answers, from the service: ``boxes``
        Kx4 (x0, y0, x1, y1) image pixels, ``points`` KxPx2 with ``point_labels`` KxP; no
        prompt: the prompt-free scan. A refused request raises :class:`ServiceInputError` (an
        :class:`InputError`) with the service's message."""
        body: Dict[str, Any] = {"image": base64.b64encode(encode_image(image)).decode("ascii")}
        for name, value in (("boxes", boxes), ("points", points),
                            ("point_labels", point_labels)):
            if value is not None:
                body[name] = _as_list(value, name)
        # json.dumps, not requests' json=: a NaN goes as NaN and the service says what is wrong
        return result_from_answer(self._call("POST", "/v1/inspect", data=json.dumps(body),
                                             headers={"Content-Type": "application/json"}))

    def model(self) -> Dict[str, Any]:
        """``GET /v1/model``: name, sha256, input, precision, backend, limits, batching."""
        return self._call("GET", "/v1/model")

    def health(self) -> Dict[str, Any]:
        """``GET /healthz``."""
        return self._call("GET", "/healthz")
