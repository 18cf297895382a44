"""``Inspector``: what production-line software embeds. numpy and a backend; never torch.

    from samspt.runtime import Inspector

    with Inspector("models/example_cnn") as inspector:            # ONNX Runtime on the CPU
        result = inspector.inspect(image, boxes=[[120, 200, 140, 240]])   # zoomed to the box
        result.masks, result.pred_label, result.timings_ms
        scan = inspector.inspect(image)                                    # no prompt: scan

    inspector.set_image(image)                 # views encoded once each ...
    first = inspector.predict(boxes=...)       # ... many prompt rounds
    second = inspector.predict(points=..., point_labels=...)

Thread safety: ``inspect`` may be called from many threads at once (each backend keeps its own
device work safe: ONNX Runtime sessions are thread-safe, TensorRT serialises each call's GPU
work, nothing else). ``set_image``/``predict`` keep the current image per thread, so threads
never see each other's image.

The backend (:mod:`samspt.runtime.backend`) is reached only through its written interface;
``encode`` composes another encoder around it (the service's cross-request batching).
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
import threading
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np

from samspt.runtime.backend import Backend, Encode, encode_in_chunks, open_backend
from samspt.runtime.errors import ConfigError, InputError
from samspt.runtime.find_segment import head_scan
from samspt.runtime.manifest import PRECISIONS, read_manifest
from samspt.runtime.operating_point import (DEFAULT_HIGH, DEFAULT_LOW, image_scores,
                                            normalized_score)
from samspt.runtime.result import InspectionResult, summarize_masks
from samspt.runtime.scan_head import NumpyScanHead
from samspt.runtime.validation import DEFAULT_MAX_PIXELS, check_image, check_prompts
from samspt.runtime.flips import infer_flipped
from samspt.runtime.view_inference import infer_views
from samspt.runtime.views import FLIP_COUNTS, VIEW_POLICIES, View, plan_views

log = logging.getLogger(__name__)

DEFAULT_MAX_PROMPTS = 64


class _ImageState:
    """One image and the embeddings of its views (what ``set_image`` keeps for ``predict``)."""

    def __init__(self, rgb: np.ndarray, check_ms: float) -> None:
        self.rgb, self.check_ms = rgb, check_ms
        self.embeddings: Dict[View, Any] = {}
        self.mirrors: Dict[int, Dict[Any, Any]] = {0: self.embeddings}   # test-time flips'


class Inspector:
    """Defect segmentation with an exported samspt model folder.

    ``backend``: ``auto`` (TensorRT when engines for this GPU and TensorRT version exist, else
    ONNX Runtime), ``onnxruntime`` or ``tensorrt``. ``precision``: ``fp32``, ``fp16`` or ``int8``
    graphs (int8: static QDQ, ``samspt-export --precision int8``; on ONNX Runtime's CPU provider
    its CPU variant, unsigned activations, when the folder has one); default: FP16 engines on
    TensorRT (what ``samspt-build`` builds), FP32 on ONNX Runtime.
    ``providers``: ONNX Runtime execution providers (default: CPU; e.g.
    ``["CUDAExecutionProvider", "CPUExecutionProvider"]``). ``scan_min_score``: the prompt-free
    scan's gate (a view's mask counts where the model scores it at least this; default: the
    manifest's ``views.scan_min_score``, the operating point chosen at export; none there: every
    view counts). ``prompt_min_score``: the prompts' gate (a prompt the model scores below it
    is answered empty; default: the manifest's ``views.prompt_min_score``, chosen at export;
    none there: every prompt gets its mask). ``flips``: test-time flips, each prompt's mask
    voted over 1, 2 or 4 runs on the image and its mirror images (:mod:`samspt.runtime.flips`;
    default: the manifest's ``views.flips``, chosen at training's finish; 1 where it has none).
    ``spin``: let ONNX Runtime's threads spin-wait between ops instead of sleeping (default False: faster wherever the cores are shared, see
    :class:`samspt.runtime.ort_backend.OrtGraphs`). ``encode``: a function that encodes a
    batch of views (``Vx3xSxS float32 -> VxC'xhxw``) in place of the backend's own, for
    inspections (warm-up uses the backend's); it may call :attr:`graphs` ``.encode`` itself, as
    the service's cross-request batcher does. Loading,
    checking (sha256 of every file) and a warm-up run happen here, so the first ``inspect`` is as
    fast as the others.
    """

    def __init__(self, model_dir: Union[str, Path], backend: str = "auto",
                 precision: Optional[str] = None, providers: Optional[Sequence[str]] = None,
                 threads: int = 0, max_prompts: int = DEFAULT_MAX_PROMPTS,
                 max_image_pixels: int = DEFAULT_MAX_PIXELS, min_defect_area: int = 1,
                 views: str = "auto", warmup: bool = True,
                 scan_min_score: Optional[float] = None, spin: bool = False,
                 prompt_min_score: Optional[float] = None,
                 encode: Optional[Encode] = None, flips: Optional[int] = None) -> None:
        if precision not in (None,) + PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                              f"{precision!r}")
        if views not in VIEW_POLICIES:
            raise ConfigError(f"views must be one of {VIEW_POLICIES}, got {views!r}")
        self.views = views
        self.model_dir = Path(model_dir)
        self.manifest = read_manifest(self.model_dir)
        self.image_size = self.manifest.input.image_size
        self.pixel_mean = self.manifest.input.pixel_mean
        self.pixel_std = self.manifest.input.pixel_std
        self.threshold = self.manifest.mask_threshold
        self.view_settings = self.manifest.views
        self.operating_point = self.manifest.calibration
        head = self.manifest.scan_head
        self._scan_head = (NumpyScanHead.load(self.model_dir / head["file"], int(head["channels"]))
                           if head and self.view_settings is not None else None)
        for key, value, what in (("scan_min_score", scan_min_score, "a scan view's mask"),
                                 ("prompt_min_score", prompt_min_score, "a prompt's mask")):
            if value is None or self.view_settings is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ConfigError(f"{key} must be a number (the least score {what} needs), "
                                  f"got {value!r}")
            self.view_settings = dataclasses.replace(self.view_settings, **{key: float(value)})
        if flips is not None and (type(flips) is not int or flips not in FLIP_COUNTS):
            raise ConfigError(f"flips must be one of {FLIP_COUNTS} (test-time mirror images), "
                              f"got {flips!r}")
        if flips is not None and self.view_settings is not None:
            self.view_settings = dataclasses.replace(self.view_settings, flips=flips)
        self.flips = self.view_settings.flips if self.view_settings else (flips or 1)
        self.max_prompts = int(max_prompts)
        self.max_image_pixels = int(max_image_pixels)
        self.min_defect_area = int(min_defect_area)
        self.graphs: Backend = open_backend(self.model_dir, self.manifest, backend, precision,
                                            providers, threads, spin)
        self.backend, self.precision = self.graphs.name, self.graphs.precision
        if self.graphs.max_prompts:
            self.max_prompts = min(self.max_prompts, int(self.graphs.max_prompts))
        self._encode: Encode = self._encode_directly
        self._local = threading.local()
        point = self.operating_point
        if point is not None and (point.precision != self.precision or
                                  not self.backend.startswith(point.backend)):
            log.warning("%s was calibrated on %s %s graphs and runs %s %s: scores shift between "
                        "precisions, so its false-alarm rate may differ from the calibrated "
                        "%s; calibrate it for these graphs (samspt-calibrate --backend/"
                        "--precision)", self.model_dir.name, point.backend, point.precision,
                        self.backend, self.precision, point.false_alarm_rate)
        log.info("Inspector: %s (%s, %s), input %dpx, views %s", self.model_dir.name,
                 self.backend, self.precision, self.image_size,
                 self.views if self.view_settings else "image (a whole-image model)")
        if warmup:
            self.inspect(np.zeros((self.image_size, self.image_size, 3), np.uint8))
        if encode is not None:
            self._encode = encode

    # --------------------------------------------------------------------------- API
    def inspect(self, image: np.ndarray, boxes: Optional[object] = None,
                points: Optional[object] = None,
                point_labels: Optional[object] = None) -> InspectionResult:
        """Segment the defect each prompt points at; with no prompt, scan the whole image.

        ``image``: HxWx3 RGB or HxW uint8; ``boxes``: Kx4 (x0, y0, x1, y1) image pixels;
        ``points``: KxPx2 with ``point_labels`` KxP (1 foreground, 0 background, -1 padding).
        Each prompt is answered in its view (``views="auto"``: zoomed to the prompt; ``"image"``:
        the whole image). No prompt: the prompt-free scan covers the image with overlapping
        views and answers one row, their merged mask (``pred_label``: the image holds a defect).
        """
        state = self._state(image)
        return self._run(state, boxes, points, point_labels)

    def set_image(self, image: np.ndarray) -> None:
        """Keep ``image`` for ``predict`` (per thread); its views are encoded on first use and
        kept, so many prompt rounds on one image run the encoder once per view."""
        self._local.state = self._state(image)

    def predict(self, boxes: Optional[object] = None, points: Optional[object] = None,
                point_labels: Optional[object] = None) -> InspectionResult:
        """Prompts on the image of the last ``set_image`` of this thread."""
        state = getattr(self._local, "state", None)
        if state is None:
            raise InputError("predict needs an image: call set_image(image) first")
        return self._run(state, boxes, points, point_labels)

    def close(self) -> None:
        self.graphs.close()

    def __enter__(self) -> "Inspector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------- internals
    def _state(self, image: np.ndarray) -> _ImageState:
        start = time.perf_counter()
        rgb = check_image(image, self.max_image_pixels)
        return _ImageState(rgb, (time.perf_counter() - start) * 1e3)

    def _encode_directly(self, views: np.ndarray) -> np.ndarray:
        """The backend's own encoder, in batches it takes."""
        return encode_in_chunks(self.graphs, views)

    @property
    def scan_scores_every_image(self) -> bool:
        """Whether a scan's score is known for every image, flagged or not (a scan head's map
        maximum), rather than only for images some view answered (the view scan)."""
        return self._scan_head is not None

    def _run(self, state: _ImageState, boxes, points, point_labels) -> InspectionResult:
        start = time.perf_counter()
        hw = state.rgb.shape[:2]
        boxes, points, labels = check_prompts(boxes, points, point_labels, hw, self.max_prompts)
        if boxes is None and points is None and self._scan_head is not None and \
                self.views == "auto":
            return self._find_then_segment(state, start)
        scan = boxes is None and points is None

        def plan(b, p, l):
            return plan_views(hw, self.image_size, self.view_settings, self.views, b, p, l)

        flipped = self.flips > 1 and not scan  # each mirror image planned in infer_flipped
        planned = None if flipped else plan(boxes, points, labels)
        prep = time.perf_counter()
        if planned is None:
            out = infer_flipped(state.rgb, boxes, points, labels, self.flips, plan,
                                self._infer, state.mirrors)
        else:
            out = self._infer(state.rgb, planned, state.embeddings)
        inferred = time.perf_counter()
        summary = summarize_masks(out.masks, self.min_defect_area, out.regions)
        pred_score = self._pred_score(scan, out.scores, summary["pred_label"])
        end = time.perf_counter()
        timings = {key: value * 1e3 for key, value in out.timings.items()}
        timings["preprocess"] += (prep - start) * 1e3 + state.check_ms
        state.check_ms = 0.0
        timings["postprocess"] += (end - inferred) * 1e3
        timings["total"] = sum(timings.values())
        return InspectionResult(masks=out.masks, draft_masks=out.draft_masks,
                                scores=np.asarray(out.scores, np.float32).reshape(-1),
                                timings_ms=timings, views=out.views, pred_score=pred_score,
                                **summary)

    def _infer(self, rgb: np.ndarray, plan, cache: Dict[Any, Any]):
        return infer_views(rgb, plan, self._encode, self.graphs.decode, self.pixel_mean,
                           self.pixel_std, cache=cache, mask_threshold=self.threshold)

    def _find_then_segment(self, state: _ImageState, start: float) -> InspectionResult:
        prep = time.perf_counter()
        scan = head_scan(state.rgb, self.view_settings, self.image_size, self._scan_head,
                         self._encode, self.graphs.decode, self.pixel_mean, self.pixel_std,
                         cache=state.embeddings, mask_threshold=self.threshold)
        inferred = time.perf_counter()
        summary = summarize_masks(scan.masks, self.min_defect_area, scan.regions)
        pred_score = normalized_score([scan.score], scan.gate, *self._scan_score_range())
        timings = {key: value * 1e3 for key, value in scan.timings.items()}
        timings["preprocess"] += (prep - start) * 1e3 + state.check_ms
        state.check_ms = 0.0
        timings["postprocess"] += (time.perf_counter() - inferred) * 1e3
        timings["total"] = sum(timings.values())
        return InspectionResult(masks=scan.masks, draft_masks=scan.draft_masks,
                                scores=np.array([scan.score], np.float32), timings_ms=timings,
                                views=scan.views, pred_score=pred_score,
                                anomaly_map=scan.anomaly_map, **summary)

    def _pred_score(self, scan: bool, scores: np.ndarray, answered: np.ndarray) -> np.ndarray:
        """Each row's score on the operating point's scale (:attr:`InspectionResult.pred_score`):
        a scan row around the scan's gate (over the calibration images' score range, where
        the folder was calibrated), a prompt row around the prompts' gate."""
        settings = self.view_settings
        if scan:
            return normalized_score(image_scores(answered, scores),
                                    settings.scan_min_score if settings else None,
                                    *self._scan_score_range())
        return normalized_score(scores, settings.prompt_min_score if settings else None)

    def _scan_score_range(self):
        """(low, high) of scan scores for pred_score: the calibration images', else [0, 1]."""
        point = self.operating_point
        return (point.low, point.high) if point else (DEFAULT_LOW, DEFAULT_HIGH)
