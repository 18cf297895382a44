"""The seam between the Inspector and what runs a model's two graphs.

A backend is anything with the :class:`Backend` interface: ONNX Runtime's sessions
(:class:`samspt.runtime.ort_backend.OrtGraphs`) and TensorRT's engines
(:class:`samspt.runtime.trt_backend.TrtGraphs`) implement it. The Inspector asks nothing else of
them: it encodes a batch of views, decodes prompts against one view's embedding, reads the
limits and the files, and closes. Views, prompts, the scan and post-processing are the
Inspector's, the same for every backend.

Encoding goes through an :data:`Encode` function, the backend's own ``encode`` unless the
Inspector is given another to compose with: the service passes one that gathers the views of
concurrent requests into one encoder call (:mod:`samspt.serve.deployment`), and calls the
backend's ``encode`` on the gathered batch.

Each backend keeps its own device work safe across threads (TensorRT holds a lock around each
call's GPU work, nothing else; ONNX Runtime's sessions are thread-safe), so callers hold no lock.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np

from samspt.runtime.errors import BackendError, ConfigError, ModelFolderError
from samspt.runtime.manifest import Manifest

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "tensorrt")

# Vx3xSxS float32 preprocessed views -> VxC'xhxw float32 embeddings (host arrays).
Encode = Callable[[np.ndarray], np.ndarray]
Decoded = Tuple[np.ndarray, np.ndarray, np.ndarray]


@runtime_checkable
class Backend(Protocol):
    """What the Inspector needs from a backend.

    ``name``: what it is, for logs and answers (``"onnxruntime (CPUExecutionProvider)"``,
    ``"tensorrt"``); ``precision``: the precision of the graphs it runs; ``files``: the graph or
    engine files it opened; ``max_prompts``: the most prompts one ``decode`` takes (None: no
    limit of its own); ``max_views``: the most views one ``encode`` call runs at once (None:
    any number; larger batches are split by :func:`encode_in_chunks`).
    """

    name: str
    precision: str
    files: Tuple[str, ...]
    max_prompts: Optional[int]
    max_views: Optional[int]

    def encode(self, views: np.ndarray) -> np.ndarray:
        """Vx3xSxS float32 preprocessed views -> VxC'xhxw float32 embeddings."""

    def decode(self, embedding: np.ndarray, coords: np.ndarray,
               labels: np.ndarray) -> Decoded:
        """One view's 1xC'xhxw embedding and B prompts (``point_coords`` BxNx2, ``point_labels``
        BxN, float32) -> (draft logits Bx1xLxL, logits Bx1xLxL, scores Bx1), float32."""

    def close(self) -> None:
        """Free what the backend holds (idempotent)."""


def encode_in_chunks(backend: Backend, views: np.ndarray) -> np.ndarray:
    """``backend.encode`` over ``views`` in batches of at most ``backend.max_views``."""
    limit = backend.max_views
    if not limit or len(views) <= limit:
        return backend.encode(views)
    return np.concatenate([backend.encode(views[i:i + limit])
                           for i in range(0, len(views), limit)])


def open_backend(model_dir: Path, manifest: Manifest, backend: str = "auto",
                 precision: Optional[str] = None, providers: Optional[Sequence[str]] = None,
                 threads: int = 0, spin: bool = False) -> Backend:
    """The backend that runs ``model_dir``'s graphs.

    ``auto``: TensorRT when this GPU and TensorRT version have engines in the folder, else ONNX
    Runtime; ``tensorrt``: TensorRT or a :class:`BackendError` saying why not; ``onnxruntime``:
    ONNX Runtime on ``providers`` (default: CPU) with ``threads`` and ``spin``. ``precision``:
    default FP16 engines on TensorRT (what ``samspt-build`` builds), FP32 graphs on ONNX Runtime.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend in ("auto", "tensorrt"):
        try:
            from samspt.runtime.trt_backend import open_engines

            return open_engines(model_dir, manifest, precision)
        except (ImportError, BackendError, ModelFolderError) as exc:
            if backend == "tensorrt":
                raise BackendError(f"TensorRT backend unavailable: {exc}") from None
            log.info("TensorRT not used (%s); taking ONNX Runtime", exc)
    from samspt.runtime.ort_backend import OrtGraphs

    return OrtGraphs.for_precision(model_dir, manifest, precision or "fp32",
                                   providers=providers, threads=threads, spin=spin)

