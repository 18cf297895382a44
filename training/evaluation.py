"""Evaluate a box- or point-prompted segmenter on defect records: the paper's protocol.

Predictor protocol (:class:`Predictor`)::

    final, draft = predictor.predict(image, boxes=Kx4 float32)      # or points=KxPx2 float32
    # image HxWx3 uint8; final, draft KxHxW bool (one mask per prompt)

:class:`TorchPredictor` adapts the PyTorch SPT model (``final`` = refine pass, ``draft`` = draft
pass); the baselines of :mod:`samspt.training.baselines` answer with ``final`` == ``draft``.

Protocol (:func:`evaluate_records`), one prompt per image:

* **defective image, box protocol** (default, the paper's): the tight box around the whole ground
  truth mask, corners inclusive (:func:`samspt.runtime.preprocess.mask_box`);
* **defective image, point protocol**: one foreground point, a ground-truth pixel drawn uniformly
  at random (a defect of several blobs is prompted on one of them);
* **defect-free image**: one random box, each side uniform in 10%..50% of the image's side, placed
  uniformly inside the image (point protocol: one uniform random pixel). The model should answer
  with an empty mask: ``empty_rate`` is the share of images answered with an empty mask,
  ``fp_area`` the mean share of the image marked defect.

Randomness comes from a generator seeded with ``(seed, crc32(dataset/class/stem))``: an image gets
the same prompt whatever else is evaluated and in whatever order (``--limit`` changes nothing).
Scores are means over images: mIoU and boundary IoU (:mod:`samspt.training.metrics`) of the final
and draft masks, overall, per class and as the mean of the class means. Images of a defect class
whose mask is empty cannot be prompted; they are skipped and listed under ``skipped``.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import (Callable, Dict, Iterable, Iterator, List, Optional, Protocol, Sequence, Tuple,
                    runtime_checkable)

import numpy as np

from samspt.runtime.errors import ConfigError, InputError
from samspt.runtime.prompts import mask_box
from samspt.runtime.result import summarize_masks
from samspt.runtime.samples import bundled_samples
from samspt.training.data.records import DEFECT_FREE, DatasetError, Record
from samspt.training.metrics import boundary_iou, false_positive_area, mask_iou
from samspt.training.scan_tradeoff import format_trade_off, trade_off

log = logging.getLogger(__name__)

PROMPTS = ("box", "point")
#: Side of a defect-free image's random box, as a fraction of the image's side (min, max).
DEFECT_FREE_BOX_SIDE = (0.1, 0.5)
#: Dataset name of the records made from the bundled sample images.
SAMPLES_DATASET = "samples"

Progress = Callable[[int, int], None]


class Predictor(Protocol):
    """What :func:`evaluate_records` calls: one image, K prompts, K final and K draft masks.
    A predictor that also has ``scan(image) -> (HxW bool mask, flagged bool, score float)`` (the
    prompt-free scan; ``scan_gate``: its gate, ViewSettings.scan_min_score) gets the prompt-free
    figures too, with their trade-off against the gate."""

    name: str

    def predict(self, image: np.ndarray, boxes: Optional[np.ndarray] = None,
                points: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """image HxWx3 uint8; boxes Kx4 float32 (x0, y0, x1, y1) or points KxPx2 float32 (x, y)
        foreground points -> (final KxHxW bool, draft KxHxW bool)."""
        ...


@runtime_checkable
class ScoredPredictor(Predictor, Protocol):
    """A model predictor that also gives its own score per prompt (the predicted mask IoU the
    prompt gate, ViewSettings.prompt_min_score, compares): ``final_score`` in the results."""

    def predict_scored(self, image: np.ndarray, boxes: Optional[np.ndarray] = None,
                       points: Optional[np.ndarray] = None
                       ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As :meth:`Predictor.predict`, plus the K scores (float32)."""
        ...


def _gate(settings) -> Optional[float]:
    """The scan's gate of a model's view settings (None: a whole-image model, or no gate)."""
    return settings.scan_min_score if settings is not None else None


class RuntimePredictor:
    """An exported model folder through :class:`samspt.runtime.Inspector` (what the line runs)
    as a :class:`Predictor`; points are foreground (label 1)."""

    def __init__(self, model_dir, backend: str = "auto", precision: Optional[str] = None,
                 views: str = "auto", min_defect_area: int = 1,
                 scan_min_score: Optional[float] = None,
                 prompt_min_score: Optional[float] = None, flips: Optional[int] = None) -> None:
        from samspt.runtime.inspector import Inspector

        self.inspector = Inspector(model_dir, backend=backend, precision=precision, views=views,
                                   min_defect_area=min_defect_area, scan_min_score=scan_min_score,
                                   prompt_min_score=prompt_min_score, flips=flips)
        self.name = f"{Path(model_dir).name} ({self.inspector.backend}, views {views})"

    @property
    def scan_gate(self) -> Optional[float]:
        return _gate(self.inspector.view_settings)

    @property
    def scan_scores_every_image(self) -> bool:
        return self.inspector.scan_scores_every_image

    def scan(self, image: np.ndarray) -> Tuple[np.ndarray, bool, float]:
        result = self.inspector.inspect(image)
        return result.masks[0], bool(result.pred_label[0]), float(result.scores[0])

    def predict(self, image: np.ndarray, boxes: Optional[np.ndarray] = None,
                points: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        final, draft, _ = self.predict_scored(image, boxes, points)
        return final, draft

    def predict_scored(self, image: np.ndarray, boxes: Optional[np.ndarray] = None,
                       points: Optional[np.ndarray] = None
                       ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        labels = None if points is None else np.ones(np.asarray(points).shape[:-1], np.float32)
        result = self.inspector.inspect(image, boxes=boxes, points=points, point_labels=labels)
        return result.masks, result.draft_masks, np.asarray(result.scores, np.float32)


class TorchPredictor:
    """The PyTorch SPT model (:class:`samspt.training.modeling.model.SptSam`) as a
    :class:`Predictor`.

    Runs :func:`samspt.training.predict.predict` on the model's device; points are foreground
    (label 1). ``final`` is the refine pass, ``draft`` the draft pass. The model is put in eval
    mode (a training loop sets ``model.train()`` again after validating).
    """

    def __init__(self, model, name: str = "spt", views: str = "auto",
                 min_defect_area: int = 1) -> None:
        from samspt.training.predict import predict  # torch only when a model is evaluated

        self.model = model.eval()
        self.name = name if views == "auto" else f"{name} (views {views})"
        self.views = views
        self.min_defect_area = int(min_defect_area)
        self._predict = predict

    @property
    def scan_gate(self) -> Optional[float]:
        return _gate(self.model.config.view_settings)

    @property
    def scan_scores_every_image(self) -> bool:
        return self.views == "auto" and getattr(self.model, "scan_head", None) is not None

    def scan(self, image: np.ndarray) -> Tuple[np.ndarray, bool, float]:
        out = self._predict(self.model, image, views=self.views)
        mask = out.masks[0]
        flagged = bool(summarize_masks(mask[None], self.min_defect_area)["pred_label"][0])
        return mask, flagged, float(np.ravel(out.scores)[0])

    def predict(self, image: np.ndarray, boxes: Optional[np.ndarray] = None,
                points: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        final, draft, _ = self.predict_scored(image, boxes, points)
        return final, draft

    def predict_scored(self, image: np.ndarray, boxes: Optional[np.ndarray] = None,
                       points: Optional[np.ndarray] = None
                       ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        labels = None
        if points is not None:
            points = np.asarray(points, dtype=np.float32)
            if points.ndim != 3 or points.shape[2] != 2:
                raise InputError(f"points must be KxPx2 (x, y), got shape {points.shape}")
            labels = np.ones(points.shape[:2], dtype=np.float32)
        result = self._predict(self.model, image, boxes=boxes, points=points, point_labels=labels,
                               views=self.views)
        return result.masks, result.draft_masks, np.asarray(result.scores, np.float32)


# ----------------------------------------------------------------------------- records
def sample_records() -> List[Record]:
    """The bundled MTD sample images as records (class ``Blowhole``, ..., ``free`` ->
    :data:`DEFECT_FREE`), dataset ``samples``."""
    records = []
    for sample in bundled_samples():
        cls = sample.defect_class.lower()
        if cls == "free":
            records.append(Record(sample.image_path, None, DEFECT_FREE, SAMPLES_DATASET))
        else:
            records.append(Record(sample.image_path, sample.mask_path, cls.capitalize(),
                                  SAMPLES_DATASET))
    return records


def limit_per_class(records: Iterable[Record], limit: Optional[int]) -> List[Record]:
    """The first ``limit`` records of each class, in the given order (``None``: all)."""
    records = list(records)
    if limit is None:
        return records
    if int(limit) < 1:
        raise ConfigError(f"the limit per class must be at least 1, got {limit}")
    counts: Dict[str, int] = {}
    kept = []
    for record in records:
        seen = counts.get(record.defect_class, 0)
        if seen < limit:
            kept.append(record)
            counts[record.defect_class] = seen + 1
    return kept


# ----------------------------------------------------------------------------- prompts
def image_rng(seed: int, record: Record) -> np.random.Generator:
    """The generator an image's random prompt comes from: (seed, crc32 of its name)."""
    key = zlib.crc32(f"{record.dataset}/{record.name}".encode("utf-8"))
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, key])


def defect_prompt(mask: np.ndarray, prompt: str, rng: np.random.Generator) -> np.ndarray:
    """The prompt for a defective image's HxW bool ground truth: box -> (4,) float32 tight box;
    point -> (2,) float32 (x, y) of a ground-truth pixel drawn from ``rng``."""
    if prompt == "box":
        return mask_box(mask)
    ys, xs = np.nonzero(mask)
    k = int(rng.integers(len(ys)))
    return np.array([xs[k], ys[k]], dtype=np.float32)


def defect_free_prompt(shape: Tuple[int, int], prompt: str,
                       rng: np.random.Generator) -> np.ndarray:
    """The prompt for a defect-free HxW image: box -> (4,) float32 inclusive box with sides of
    10%..50% of the image's, inside the image; point -> (2,) float32 uniform pixel."""
    height, width = shape[:2]
    if prompt == "point":
        return np.array([rng.integers(width), rng.integers(height)], dtype=np.float32)
    low, high = DEFECT_FREE_BOX_SIDE
    box_w = max(1, int(round(rng.uniform(low, high) * width)))
    box_h = max(1, int(round(rng.uniform(low, high) * height)))
    x0 = int(rng.integers(width - box_w + 1))
    y0 = int(rng.integers(height - box_h + 1))
    return np.array([x0, y0, x0 + box_w - 1, y0 + box_h - 1], dtype=np.float32)


def _ask(predictor: Predictor, image: np.ndarray, prompt: str,
         value: np.ndarray) -> Tuple[np.ndarray, np.ndarray, Optional[float]]:
    """(final HxW bool, draft HxW bool, the model's score or None) of one prompt."""
    ask = {"boxes": value[None]} if prompt == "box" else {"points": value[None, None]}
    score = None
    if isinstance(predictor, ScoredPredictor):
        final, draft, scores = predictor.predict_scored(image, **ask)
        score = float(np.ravel(scores)[0])
    else:
        final, draft = predictor.predict(image, **ask)
    out = []
    for which, masks in (("final", final), ("draft", draft)):
        masks = np.asarray(masks)
        if masks.shape != (1,) + image.shape[:2] or masks.dtype != bool:
            raise InputError(f"predictor {getattr(predictor, 'name', predictor)!r} returned "
                             f"{which} masks of shape {masks.shape} and dtype {masks.dtype} for "
                             f"one prompt on a {image.shape[0]}x{image.shape[1]} image; a "
                             "predictor returns KxHxW bool masks")
        out.append(masks[0])
    return out[0], out[1], score


# ----------------------------------------------------------------------------- per image
@dataclass
class ImageResult:
    """One evaluated image: the prompt, the masks (HxW bool; ``None`` once dropped, as in
    :func:`evaluate_records`) and their scores.

    ``prompt_value`` is a (4,) box or a (2,) point, float32 image pixels. ``scores`` holds, for a
    defective image, ``final_iou``, ``final_biou``, ``draft_iou``, ``draft_biou``; for a
    defect-free one ``final_empty``, ``draft_empty`` (0/1) and ``final_fp_area``,
    ``draft_fp_area``; for both ``final_area``, ``draft_area`` (share of the image).
    """

    record: Record
    prompt: str
    prompt_value: np.ndarray
    gt: Optional[np.ndarray]
    final: Optional[np.ndarray]
    draft: Optional[np.ndarray]
    scores: Dict[str, float]

    @property
    def is_defect_free(self) -> bool:
        return self.record.is_defect_free

    def gated(self, gate: Optional[float]) -> "ImageResult":
        """This result as a model folder with prompt gate ``gate`` (ViewSettings.
        prompt_min_score) answers it: scored below the gate, the prompt is answered empty (both
        passes); unchanged without a gate or a score. Scores only (the masks are not redrawn)."""
        score = self.scores.get("final_score")
        if gate is None or score is None or score >= gate:
            return self
        scores = dict(self.scores)
        for which in ("final", "draft"):
            scores[f"{which}_area"] = 0.0
            if self.is_defect_free:
                scores[f"{which}_empty"], scores[f"{which}_fp_area"] = 1.0, 0.0
            else:
                scores[f"{which}_iou"], scores[f"{which}_biou"] = 0.0, 0.0
        return replace(self, scores=scores)

    def to_dict(self) -> Dict[str, object]:
        """JSON-ready summary without the masks."""
        rec = self.record
        return {"name": rec.name, "dataset": rec.dataset, "defect_class": rec.defect_class,
                "image_path": str(rec.image_path),
                "mask_path": None if rec.mask_path is None else str(rec.mask_path),
                "defect_free": rec.is_defect_free,
                "prompt": {self.prompt: [float(v) for v in self.prompt_value]},
                **{k: float(v) for k, v in self.scores.items()}}


def evaluate_image(predictor: Predictor, record: Record, prompt: str = "box",
                   seed: int = 0, scan: bool = True) -> Optional[ImageResult]:
    """Prompt ``predictor`` once on ``record`` and score its answer (``None``: a defect-class
    record with an empty mask, which cannot be prompted); with ``scan``, also the prompt-free
    scan of a predictor that has one (``scan_flagged``, and ``scan_iou`` on defective images)."""
    _check_prompt(prompt)
    image = record.load_image()
    gt = record.load_mask(image.shape[:2])
    if gt.shape != image.shape[:2]:
        raise DatasetError(f"mask {record.mask_path} is {gt.shape[1]}x{gt.shape[0]} but image "
                           f"{record.image_path} is {image.shape[1]}x{image.shape[0]}; masks "
                           "must have their image's size")
    rng = image_rng(seed, record)
    if record.is_defect_free:
        value = defect_free_prompt(image.shape[:2], prompt, rng)
    elif not gt.any():
        log.warning("%s: class %s but its mask is empty; skipped (no defect to prompt)",
                    record.name, record.defect_class)
        return None
    else:
        value = defect_prompt(gt, prompt, rng)
    final, draft, score = _ask(predictor, image, prompt, value)
    scores: Dict[str, float] = {}
    if score is not None:
        scores["final_score"] = score
    if scan and hasattr(predictor, "scan"):
        scanned, flagged, scan_score = predictor.scan(image)
        scores["scan_flagged"] = float(flagged)
        scores["scan_score"] = float(scan_score)
        if getattr(predictor, "scan_scores_every_image", False):
            scores["scan_scored"] = 1.0     # a score for every image, flagged or not
        if not record.is_defect_free:
            scores["scan_iou"] = mask_iou(np.asarray(scanned, bool), gt)
            scores["scan_biou"] = boundary_iou(np.asarray(scanned, bool), gt)
    for which, mask in (("final", final), ("draft", draft)):
        scores[f"{which}_area"] = float(np.count_nonzero(mask)) / mask.size
        if record.is_defect_free:
            scores[f"{which}_empty"] = float(not mask.any())
            scores[f"{which}_fp_area"] = false_positive_area(mask)
        else:
            scores[f"{which}_iou"] = mask_iou(mask, gt)
            scores[f"{which}_biou"] = boundary_iou(mask, gt)
    return ImageResult(record, prompt, value, gt, final, draft, scores)


def iter_results(predictor: Predictor, records: Sequence[Record], prompt: str = "box",
                 seed: int = 0, progress: Optional[Progress] = None,
                 scan: bool = True) -> Iterator[ImageResult]:
    """:func:`evaluate_image` over ``records``, yielding results with their masks (for overlays;
    skipped records yield nothing); ``progress(done, total)`` is called after each record."""
    for _, result in _evaluate_all(predictor, records, prompt, seed, progress, scan):
        if result is not None:
            yield result


def _evaluate_all(predictor: Predictor, records: Sequence[Record], prompt: str, seed: int,
                  progress: Optional[Progress], scan: bool = True
                  ) -> Iterator[Tuple[Record, Optional[ImageResult]]]:
    _check_prompt(prompt)
    total = len(records)
    for done, record in enumerate(records, start=1):
        result = evaluate_image(predictor, record, prompt, seed, scan)
        if progress is not None:
            progress(done, total)
        yield record, result


# ----------------------------------------------------------------------------- summary
def _mean(values: List[float]) -> Optional[float]:
    return float(np.mean(values)) if values else None


def _pass_means(rows: List[Dict[str, float]], which: str) -> Dict[str, Optional[float]]:
    return {"miou": _mean([r[f"{which}_iou"] for r in rows]),
            "biou": _mean([r[f"{which}_biou"] for r in rows])}


def summarize(results: Iterable[ImageResult], prompt: str = "box", seed: int = 0,
              predictor_name: str = "?", skipped: Sequence[str] = (),
              scan_gate: Optional[float] = None) -> Dict[str, object]:
    """The report of :func:`evaluate_records` from per-image results (means over images; ``None``
    where there is no image to average); ``scan_gate``: the scan's gate in the run (its
    trade-off lists that gate and stricter ones; None: no gate)."""
    defective: "OrderedDict[str, List[Dict[str, float]]]" = OrderedDict()
    free: List[Dict[str, float]] = []
    images = []
    for result in results:
        images.append(result.to_dict())
        if result.is_defect_free:
            free.append(result.scores)
        else:
            defective.setdefault(result.record.defect_class, []).append(result.scores)
    rows = [r for group in defective.values() for r in group]
    per_class = {cls: {"final": _pass_means(group, "final"), "draft": _pass_means(group, "draft"),
                       "n_images": len(group)} for cls, group in sorted(defective.items())}
    class_mean = {which: {metric: _mean([c[which][metric] for c in per_class.values()])
                          for metric in ("miou", "biou")} for which in ("final", "draft")}
    defect_free = {"n_images": len(free),
                   "empty_rate": _mean([r["final_empty"] for r in free]),
                   "fp_area": _mean([r["final_fp_area"] for r in free]),
                   "draft": {"empty_rate": _mean([r["draft_empty"] for r in free]),
                             "fp_area": _mean([r["draft_fp_area"] for r in free])}}
    scanned = [r for r in rows if "scan_flagged" in r]
    scanned_free = [r for r in free if "scan_flagged" in r]
    scan = {"defective_flagged": _mean([r["scan_flagged"] for r in scanned]),
            "defect_free_flagged": _mean([r["scan_flagged"] for r in scanned_free]),
            "miou": _mean([r["scan_iou"] for r in scanned]),
            "biou": _mean([r["scan_biou"] for r in scanned if "scan_biou" in r]),
            "per_class": {cls: {"flagged": _mean([r["scan_flagged"] for r in group
                                                  if "scan_flagged" in r]),
                                "miou": _mean([r["scan_iou"] for r in group if "scan_iou" in r]),
                                "biou": _mean([r["scan_biou"] for r in group
                                               if "scan_biou" in r])}
                          for cls, group in sorted(defective.items())},
            "trade_off": trade_off(scanned, scanned_free,
                                   None if all(r.get("scan_scored") for r in scanned)
                                   else scan_gate) if scanned else None}
    return {"predictor": predictor_name, "prompt": prompt, "seed": int(seed),
            "n_images": len(images), "n_defective": len(rows), "scan": scan,
            "final": _pass_means(rows, "final"), "draft": _pass_means(rows, "draft"),
            "class_mean": class_mean, "per_class": per_class, "defect_free": defect_free,
            "skipped": list(skipped), "images": images}


def evaluate_records(predictor: Predictor, records: Sequence[Record], prompt: str = "box",
                     seed: int = 0, progress: Optional[Progress] = None,
                     scan: bool = True) -> Dict[str, object]:
    """Evaluate ``predictor`` on ``records`` with one ``prompt`` ("box" or "point") per image.

    Returns the report: ``final``/``draft`` ``{"miou", "biou"}`` over defective images,
    ``class_mean`` (mean of the class means), ``per_class`` ``{cls: {"final", "draft",
    "n_images"}}``, ``defect_free`` ``{"n_images", "empty_rate", "fp_area", "draft": {...}}``,
    ``scan`` (prompt-free figures, where the predictor scans: ``defective_flagged``,
    ``defect_free_flagged`` shares of images, ``miou`` of the merged mask on defective images,
    ``per_class``, ``trade_off``: :func:`~samspt.training.scan_tradeoff.trade_off`),
    ``n_images``, ``n_defective``, ``prompt``, ``seed``, ``predictor``, ``skipped`` (names of
    defect-class records with empty masks) and ``images`` (:meth:`ImageResult.to_dict` of every
    image). Means are ``None`` where no image contributes.
    """
    kept, skipped = collect_results(predictor, records, prompt, seed, progress, scan)
    name = getattr(predictor, "name", type(predictor).__name__)
    report = summarize(kept, prompt, seed, name, skipped, getattr(predictor, "scan_gate", None))
    log.info("evaluated %s on %d images (%d defective, %d defect-free, %d skipped)", name,
             report["n_images"], report["n_defective"], report["defect_free"]["n_images"],
             len(skipped))
    return report


def collect_results(predictor: Predictor, records: Sequence[Record], prompt: str = "box",
                    seed: int = 0, progress: Optional[Progress] = None, scan: bool = True
                    ) -> Tuple[List[ImageResult], List[str]]:
    """The per-image results of :func:`evaluate_records` (scores only, the masks dropped) and
    the names of the records skipped (defect classes with an empty mask)."""
    _check_prompt(prompt)
    records = list(records)
    if not records:
        raise InputError("no images to evaluate: the record list is empty; check the dataset "
                         "folder, the split file and --subset")
    skipped, kept = [], []
    for record, result in _evaluate_all(predictor, records, prompt, seed, progress, scan):
        if result is None:
            skipped.append(record.name)
        else:
            # Keep the scores, drop the masks: a whole dataset's masks would fill the memory.
            kept.append(replace(result, gt=None, final=None, draft=None))
    return kept, skipped


def _check_prompt(prompt: str) -> None:
    if prompt not in PROMPTS:
        raise ConfigError(f"unknown prompt protocol {prompt!r}; choose one of {PROMPTS}")


# ----------------------------------------------------------------------------- table
def fmt_figure(value: Optional[float]) -> str:
    """A mean for a table or log; the report holds None where no image was behind it."""
    return "-" if value is None else f"{value:.3f}"


def format_table(report: Dict[str, object]) -> str:
    """A plain-text table of a report: one row per class and an overall row (n, final mIoU,
    final bIoU, draft mIoU, draft bIoU), then the defect-free figures."""
    header = f"{'class':<16} {'n':>5} {'final mIoU':>10} {'final bIoU':>10} " \
             f"{'draft mIoU':>10} {'draft bIoU':>10}"
    lines = [f"predictor {report['predictor']}, {report['prompt']} prompts, seed {report['seed']}",
             header, "-" * len(header)]

    def row(label: str, n: object, block: Dict[str, Dict[str, Optional[float]]]) -> str:
        return (f"{label:<16} {n!s:>5} {fmt_figure(block['final']['miou']):>10} "
                f"{fmt_figure(block['final']['biou']):>10} {fmt_figure(block['draft']['miou']):>10} "
                f"{fmt_figure(block['draft']['biou']):>10}")

    for cls, block in report["per_class"].items():
        lines.append(row(cls, block["n_images"], block))
    lines.append("-" * len(header))
    lines.append(row("all images", report["n_defective"], report))
    lines.append(row("class mean", len(report["per_class"]), report["class_mean"]))
    free = report["defect_free"]
    if free["n_images"]:
        lines.append(f"defect-free images: {free['n_images']}; answered empty "
                     f"{fmt_figure(free['empty_rate'])} (draft {fmt_figure(free['draft']['empty_rate'])}), "
                     f"mean area marked {fmt_figure(free['fp_area'])} "
                     f"(draft {fmt_figure(free['draft']['fp_area'])})")
    else:
        lines.append("defect-free images: none")
    scan = report.get("scan") or {}
    if scan.get("defective_flagged") is not None or scan.get("defect_free_flagged") is not None:
        lines.append(f"prompt-free scan: defective images flagged "
                     f"{fmt_figure(scan['defective_flagged'])}, defect-free images flagged "
                     f"{fmt_figure(scan['defect_free_flagged'])}, merged-mask mIoU "
                     f"{fmt_figure(scan['miou'])}, boundary IoU {fmt_figure(scan.get('biou'))}")
        for cls, figures in (scan.get("per_class") or {}).items():
            lines.append(f"  {cls}: flagged {fmt_figure(figures['flagged'])}, mIoU "
                         f"{fmt_figure(figures['miou'])}, boundary IoU "
                         f"{fmt_figure(figures.get('biou'))}")
        lines.extend(format_trade_off(scan.get("trade_off")))
    if report["skipped"]:
        lines.append(f"skipped (defect class, empty mask): {', '.join(report['skipped'])}")
    return "\n".join(lines)
