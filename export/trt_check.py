"""Checking engines against ONNX Runtime before they are recorded: mask IoU on sample images,
per image and pass with its prompts pooled, as export verification takes it
(:func:`samspt.runtime.parity.pooled_mask_iou`).

:func:`verify_engines` compares any two backends with ``encode``/``decode`` (a TensorRT
:class:`samspt.runtime.trt_backend.TrtGraphs` against ONNX Runtime's
:class:`samspt.runtime.ort_backend.OrtGraphs`) within the engines' optimization profile;
:func:`check_engines` runs it against a model folder's FP32 graphs on the bundled samples. Needs
numpy and ONNX Runtime only (no torch), so engines can be built and checked on a machine with
just samspt's base install and TensorRT.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from samspt.runtime.postprocess import upscale_logits
from samspt.runtime.preprocess import preprocess_image, view_input
from samspt.runtime.prompts import pack_prompts, scale_coords
from samspt.runtime import tensors
from samspt.runtime.build_record import ShapeProfiles
from samspt.runtime.errors import SamsptError
from samspt.runtime.manifest import GRAPH_KINDS, Manifest
from samspt.runtime.parity import PARITY_GATES, meets_gate, pooled_mask_iou
from samspt.runtime.samples import VerifyImage, bundled_verify_images
from samspt.runtime.view_inference import infer_views
from samspt.runtime.views import plan_views

log = logging.getLogger(__name__)

# Mask IoU of engine vs ONNX Runtime (FP32 graphs), draft and final masks. FP32 engines may use
# TF32 (TensorRT's default on Ampere and later), so their gate allows FP16-like differences.
ENGINE_GATES = PARITY_GATES["engines"]  # engines against ONNX Runtime, by precision
Stage = Callable[[str], None]


class EngineVerificationError(SamsptError):
    """A built engine does not compute what ONNX Runtime computes from the same model."""


def _fit(coords: np.ndarray, labels: np.ndarray, batch: int,
         points: int) -> Tuple[np.ndarray, np.ndarray]:
    """Repeat prompts up to ``batch`` rows and pad with padding points up to ``points``."""
    reps = -(-batch // len(coords))
    coords, labels = np.tile(coords, (reps, 1, 1))[:batch], np.tile(labels, (reps, 1))[:batch]
    extra = points - coords.shape[1]
    if extra > 0:
        coords = np.concatenate([coords, np.zeros((batch, extra, 2), np.float32)], axis=1)
        labels = np.concatenate([labels, np.full((batch, extra), tensors.LABEL_PADDING,
                                                 np.float32)], axis=1)
    return np.ascontiguousarray(coords), np.ascontiguousarray(labels)


def _decode_all(graphs: Any, embedding: Any, coords: np.ndarray, labels: np.ndarray,
                profiles: ShapeProfiles) -> Tuple[np.ndarray, ...]:
    """Decode B prompts in batches the profile allows (N padded up to its minimum)."""
    n = max(coords.shape[1], profiles.points.min)
    outs = []
    for start in range(0, len(coords), profiles.prompts.max):
        chunk = slice(start, start + profiles.prompts.max)
        rows = len(coords[chunk])
        c, l = _fit(coords[chunk], labels[chunk], max(rows, profiles.prompts.min), n)
        outs.append([o[:rows] for o in graphs.decode(embedding, c, l)])
    return tuple(np.concatenate(parts) for parts in zip(*outs))


def _no_encode(batch: np.ndarray) -> np.ndarray:
    """Every view is encoded before :func:`infer_views` runs (its cache holds them all)."""
    raise RuntimeError("a view was not embedded beforehand")


def _upscale(low_res: np.ndarray, resized, original, size: int) -> np.ndarray:
    return upscale_logits(low_res, resized, original, size)


def verify_engines(candidate: Any, reference: Any, manifest: Manifest,
                   images: Sequence[VerifyImage], precision: str,
                   profiles: ShapeProfiles) -> Dict[str, Any]:
    """Mask IoU of ``candidate`` (TrtGraphs) against ``reference`` (OrtGraphs), draft and final
    masks at each image's resolution, plus one call at the profile's largest B and N. A view
    model's boxes are answered in their views (:mod:`samspt.runtime.views`), as the Inspector
    answers them: the inputs the engines will see (a whole tile shrunk to the input size is not
    one of them, and INT8 ranges are calibrated on views).

    Both are :class:`samspt.runtime.backend.Backend` s. Returns the figures;
    raises :class:`EngineVerificationError` when :data:`ENGINE_GATES` ``[precision]`` is missed.
    """
    size = manifest.input.image_size
    mean, std = manifest.input.pixel_mean, manifest.input.pixel_std
    threshold = manifest.mask_threshold
    settings = manifest.views
    per_image, errors = [], {"logit": 0.0, "score": 0.0}

    def compare(label: str, got: Sequence[np.ndarray], ref: Sequence[np.ndarray],
                upscale: Callable[[np.ndarray], np.ndarray], prompts: int, points: int) -> None:
        """got/ref: (draft logits, final logits, scores, final low-res logits)."""
        errors["logit"] = max(errors["logit"], float(np.abs(got[3] - ref[3]).max()))
        errors["score"] = max(errors["score"], float(np.abs(got[2] - ref[2]).max()))
        ious = [pooled_mask_iou(upscale(mine) > threshold, upscale(theirs) > threshold)
                for mine, theirs in ((got[0], ref[0]), (got[1], ref[1]))]  # draft, final
        per_image.append({"image": label, "prompts": prompts, "points": points,
                          "mean_iou": float(np.mean(ious)), "min_iou": float(np.min(ious))})

    for index, (name, image, boxes) in enumerate(images):
        coords, labels = pack_prompts(boxes=boxes)
        if settings is not None:
            # A view model: each box answered in its view, as the Inspector answers it (and as
            # export verification checks the graphs); the largest shapes on the first view.
            plan = plan_views(image.shape[:2], size, settings, "auto", boxes=boxes)
            outs = [infer_views(image, plan, _no_encode,
                                partial(_decode_all, graphs, profiles=profiles),
                                pixel_mean=mean, pixel_std=std,
                                cache={view: graphs.encode(view_input(view, image, mean,
                                                                             std)[None])
                                       for view in set(plan.views)})
                    for graphs in (candidate, reference)]
            compare(name, *[(o.draft_logits, o.logits, o.scores, o.low_res) for o in outs],
                    lambda logits: logits, len(boxes), coords.shape[1])
            view = plan.views[0]
            x = view_input(view, image, mean, std)[None]
            coords, labels = view.to_input(plan.coords[:1]), plan.labels[:1]
            upscale = partial(_upscale, resized=(size, size), original=(size, size), size=size)
        else:
            x, resized = preprocess_image(image, size, mean, std)
            coords = scale_coords(coords, image.shape[:2], resized)
            upscale = partial(_upscale, resized=resized, original=image.shape[:2], size=size)
        cases = [] if settings is not None else [(name, coords, labels)]
        if index == 0:  # the profile's largest shapes, once
            big = _fit(coords, labels, profiles.prompts.max, profiles.points.max)
            cases.append((f"{name}@B{profiles.prompts.max}xN{profiles.points.max}", *big))
        if not cases:
            continue
        ref_emb, cand_emb = reference.encode(x), candidate.encode(x)
        for label, c, l in cases:
            ref = _decode_all(reference, ref_emb, c, l, profiles)
            got = _decode_all(candidate, cand_emb, c, l, profiles)
            compare(label, (got[0], got[1], got[2], got[1]), (ref[0], ref[1], ref[2], ref[1]),
                    upscale, int(c.shape[0]), int(c.shape[1]))
    logit_err, score_err = errors["logit"], errors["score"]
    gate = ENGINE_GATES[precision]
    figures = {"gates": gate, "images": len(images),
               "mean_iou": float(np.mean([r["mean_iou"] for r in per_image])),
               "min_iou": float(np.min([r["min_iou"] for r in per_image])),
               "max_logit_error": logit_err, "max_score_error": score_err,
               "per_image": per_image}
    log.info("%s engines vs ONNX Runtime: mean mask IoU %.5f, min %.5f, max logit error %.3g",
             precision, figures["mean_iou"], figures["min_iou"], logit_err)
    if not meets_gate(figures, gate):
        worst = min(per_image, key=lambda r: r["min_iou"])
        raise EngineVerificationError(
            f"the {precision} TensorRT engines do not match ONNX Runtime: mean mask IoU "
            f"{figures['mean_iou']:.4f} (gate {gate['mean_iou']}), minimum "
            f"{figures['min_iou']:.4f} (gate {gate['min_iou']}) at {worst['image']}, max logit "
            f"error {logit_err:.3g}. The engines were not recorded. Try --precision fp32, check "
            "the ONNX graphs with samspt-export's verification, or report the model and GPU")
    return figures


def _reference(model_dir: Path, manifest: Manifest, precision: str) -> Tuple[Any, str]:
    """ONNX Runtime on the FP32 graphs when the folder has them, on CPU."""
    from samspt.runtime.ort_backend import OrtGraphs

    ref = "fp32" if "fp32" in manifest.precisions("encoder") else precision
    files = [model_dir / manifest.graph(k, ref)["file"] for k in GRAPH_KINDS]
    return OrtGraphs(*files), f"onnxruntime {ref} (CPU)"


def check_engines(graphs: Any, model_dir: Path, manifest: Manifest, precision: str,
                  images: Optional[Sequence[VerifyImage]], stage: Stage) -> Dict[str, Any]:
    """:func:`verify_engines` of ``graphs`` against ONNX Runtime on ``model_dir``'s graphs, on
    ``images`` (default: the bundled samples); the figures name the reference."""
    if images is None:
        images = bundled_verify_images()
    reference, described = _reference(model_dir, manifest, precision)
    stage(f"checking the {precision} engines against {described} on {len(images)} images")
    figures = verify_engines(graphs, reference, manifest, images, precision, graphs.profiles)
    figures["reference"] = described
    return figures
