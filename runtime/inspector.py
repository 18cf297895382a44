"""``Inspector``: what production-line software embeds. numpy and a backend; never torch.

    from samspt.runtime import Inspector

    with Inspector("models/example_small") as inspector:          # ONNX Runtime on the CPU
        result = inspector.inspect(image, boxes=[[120, 200, 140, 240]])
        result.masks, result.pred_label, result.timings_ms

    inspector.set_image(image)                 # one encoder run ...
    first = inspector.predict(boxes=...)       # ... many prompt rounds
    second = inspector.predict(points=..., point_labels=...)

Thread safety: ``inspect`` may be called from many threads at once (ONNX Runtime sessions are
thread-safe; the TensorRT backend serialises its GPU work with a lock). ``set_image``/``predict``
keep the current image per thread, so threads never see each other's image.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np

from samspt.runtime import preprocess as pp
from samspt.runtime.errors import BackendError, ConfigError, InputError, ModelFolderError
from samspt.runtime.manifest import graph_entry, read_manifest
from samspt.runtime.result import InspectionResult, summarize_masks
from samspt.runtime.validation import DEFAULT_MAX_PIXELS, check_image, check_prompts

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "tensorrt")
DEFAULT_MAX_PROMPTS = 64


class _ImageState:
    """One image's embedding and sizes (the state ``set_image`` keeps for ``predict``)."""

    def __init__(self, embedding: Any, original: tuple, resized: tuple, ms: Dict[str, float]):
        self.embedding, self.original, self.resized, self.ms = embedding, original, resized, ms


class Inspector:
    """Defect segmentation with an exported samspt model folder.

    ``backend``: ``auto`` (TensorRT when engines for this GPU and TensorRT version exist, else
    ONNX Runtime), ``onnxruntime`` or ``tensorrt``. ``precision``: ``fp32`` or ``fp16`` graphs;
    default: FP16 engines on TensorRT (what ``samspt-build`` builds), FP32 on ONNX Runtime.
    ``providers``: ONNX Runtime execution providers (default: CPU; e.g.
    ``["CUDAExecutionProvider", "CPUExecutionProvider"]``). Loading, checking (sha256 of every
    file) and a warm-up run happen here, so the first ``inspect`` is as fast as the others.
    """

    def __init__(self, model_dir: Union[str, Path], backend: str = "auto",
                 precision: Optional[str] = None, providers: Optional[Sequence[str]] = None,
                 threads: int = 0, max_prompts: int = DEFAULT_MAX_PROMPTS,
                 max_image_pixels: int = DEFAULT_MAX_PIXELS, min_defect_area: int = 1,
                 warmup: bool = True) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if precision not in (None, "fp32", "fp16"):
            raise ConfigError(f"precision must be fp32 or fp16, got {precision!r}")
        self.model_dir = Path(model_dir)
        self.manifest = read_manifest(self.model_dir)
        self.precision = precision
        self.image_size = int(self.manifest["input"]["image_size"])
        self.pixel_mean = tuple(self.manifest["input"]["pixel_mean"])
        self.pixel_std = tuple(self.manifest["input"]["pixel_std"])
        self.threshold = float(self.manifest["mask_threshold"])
        self.max_prompts = int(max_prompts)
        self.max_image_pixels = int(max_image_pixels)
        self.min_defect_area = int(min_defect_area)
        self._graphs, self.backend = self._open_backend(backend, providers, threads)
        # One GPU stream: TensorRT work is serialised; ONNX Runtime sessions run concurrently.
        self._lock = getattr(self._graphs, "lock", None)
        self.max_prompts = min(self.max_prompts,
                               int(getattr(self._graphs, "max_prompts", self.max_prompts)))
        self._local = threading.local()
        log.info("Inspector: %s (%s, %s), input %dpx", self.model_dir.name, self.backend,
                 self.precision, self.image_size)
        if warmup:
            self.inspect(np.zeros((self.image_size, self.image_size, 3), np.uint8))

    def _open_backend(self, backend: str, providers, threads):
        if backend in ("auto", "tensorrt"):
            try:
                from samspt.runtime.trt_backend import open_engines

                graphs = open_engines(self.model_dir, self.manifest, self.precision)
                self.precision = graphs.precision
                return graphs, "tensorrt"
            except (ImportError, BackendError, ModelFolderError) as exc:
                if backend == "tensorrt":
                    raise BackendError(f"TensorRT backend unavailable: {exc}") from None
                log.info("TensorRT not used (%s); taking ONNX Runtime", exc)
        from samspt.runtime.ort_backend import OrtGraphs

        self.precision = self.precision or "fp32"
        encoder = graph_entry(self.manifest, "encoder", self.precision)["file"]
        decoder = graph_entry(self.manifest, "decoder", self.precision)["file"]
        graphs = OrtGraphs(self.model_dir / encoder, self.model_dir / decoder,
                           providers=providers, threads=threads)
        return graphs, f"onnxruntime ({', '.join(graphs.providers)})"

    # --------------------------------------------------------------------------- API
    def inspect(self, image: np.ndarray, boxes: Optional[object] = None,
                points: Optional[object] = None,
                point_labels: Optional[object] = None) -> InspectionResult:
        """Segment the defect each prompt points at. With no prompt the whole image is the box.

        ``image``: HxWx3 RGB or HxW uint8; ``boxes``: Kx4 (x0, y0, x1, y1) image pixels;
        ``points``: KxPx2 with ``point_labels`` KxP (1 foreground, 0 background, -1 padding).
        """
        with self._lock or contextlib.nullcontext():
            state = self._embed(image)
            return self._decode(state, boxes, points, point_labels, dict(state.ms))

    def set_image(self, image: np.ndarray) -> None:
        """Run the encoder once; ``predict`` then answers prompts on this image (per thread)."""
        with self._lock or contextlib.nullcontext():
            state = self._embed(image)
            download = getattr(self._graphs, "download", None)
            if download is not None:  # a TensorRT handle lives only until the next embed
                state.embedding = download(state.embedding)
        self._local.state = state

    def predict(self, boxes: Optional[object] = None, points: Optional[object] = None,
                point_labels: Optional[object] = None) -> InspectionResult:
        """Prompts on the image of the last ``set_image`` of this thread."""
        state = getattr(self._local, "state", None)
        if state is None:
            raise InputError("predict needs an image: call set_image(image) first")
        return self._decode(state, boxes, points, point_labels,
                            {"preprocess": 0.0, "encoder": 0.0})

    def close(self) -> None:
        close = getattr(self._graphs, "close", None)
        if close:
            close()

    def __enter__(self) -> "Inspector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------- internals
    def _embed(self, image: np.ndarray) -> _ImageState:
        start = time.perf_counter()
        rgb = check_image(image, self.max_image_pixels)
        tensor, resized = pp.preprocess_image(rgb, self.image_size, self.pixel_mean,
                                              self.pixel_std)
        mid = time.perf_counter()
        embedding = self._graphs.embed(tensor)
        end = time.perf_counter()
        return _ImageState(embedding, rgb.shape[:2], resized,
                           {"preprocess": (mid - start) * 1e3, "encoder": (end - mid) * 1e3})

    def _decode(self, state: _ImageState, boxes, points, point_labels,
                timings: Dict[str, float]) -> InspectionResult:
        start = time.perf_counter()
        boxes, points, labels = check_prompts(boxes, points, point_labels, state.original,
                                              self.max_prompts)
        coords, packed = pp.pack_prompts(boxes, points, labels)
        coords = pp.scale_coords(coords, state.original, state.resized)
        prep = time.perf_counter()
        draft, logits, scores = self._graphs.decode(state.embedding, coords, packed)
        decoded = time.perf_counter()
        masks = pp.upscale_logits(logits, state.resized, state.original,
                                  self.image_size) > self.threshold
        draft_masks = pp.upscale_logits(draft, state.resized, state.original,
                                        self.image_size) > self.threshold
        end = time.perf_counter()
        timings["preprocess"] += (prep - start) * 1e3
        timings["decoder"] = (decoded - prep) * 1e3
        timings["postprocess"] = (end - decoded) * 1e3
        timings["total"] = sum(timings.values())
        return InspectionResult(masks=masks, draft_masks=draft_masks,
                                scores=np.asarray(scores, np.float32).reshape(-1),
                                timings_ms=timings,
                                **summarize_masks(masks, self.min_defect_area))
