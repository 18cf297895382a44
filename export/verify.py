"""Parity of exported graphs with the PyTorch model, on real images with box prompts.

For every precision: the encoder graph's embedding against PyTorch's (max error), the decoder
graph alone on PyTorch's embedding, and both graphs end to end; masks compared at the image's
resolution through the runtime's views and post-processing (each box in its view, as the
Inspector answers it), several prompts per image in one call. Mask
IoU is taken per image and pass (draft, final), all its prompts' pixels pooled
(:func:`samspt.runtime.parity.pooled_mask_iou`). The gates (end to end, every precision
against PyTorch FP32) are :data:`samspt.runtime.parity.PARITY_GATES` ``["export"]``. A missed
gate raises :class:`VerificationError` naming the graph file, the image and the figure.

A precision's variants (the INT8 CPU variant, unsigned activations: ``int8-cpu``) are checked
as the runtime runs them, each graph's variant paired with the other graph's variant or, where
it has none, its plain graph, against the same gate. Export *drops* a variant that misses it
(:func:`keep_passing_variants`: the decoder's first, then the encoder's; a logged warning, and
the manifest's ``variants_dropped`` says why) rather than failing: a variant is an optional,
faster form of graphs that passed, the folder stays whole without it (ONNX Runtime's CPU
provider then runs the plain graphs), and failing would cost the INT8 graphs TensorRT reads.
Measured on the example model, the unsigned decoder moves masks more than the signed one while
the unsigned encoder moves them less, so dropping only the decoder's variant often suffices.
:func:`verify_folder` still fails on any variant left that misses the gate.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from samspt.runtime.postprocess import MASK_THRESHOLD
from samspt.runtime.errors import SamsptError
from samspt.runtime.manifest import GRAPH_KINDS, graph_variant
from samspt.runtime.ort_backend import OrtGraphs
from samspt.runtime.parity import PARITY_GATES, meets_gate, pooled_mask_iou
from samspt.runtime.samples import (PROMPTS_PER_IMAGE, VerifyImage, bundled_verify_images,
                                    prompt_boxes)
from samspt.runtime.view_inference import infer_views
from samspt.runtime.views import plan_views
from samspt.training.modeling.model import SptSam

log = logging.getLogger(__name__)

GATES = PARITY_GATES["export"]  # the graphs against PyTorch, by precision


class VerificationError(SamsptError):
    """An exported graph does not compute what the PyTorch model computes."""


def folder_verify_images(root: Path, limit: int = 8, seed: int = 0) -> List[VerifyImage]:
    """Up to ``limit`` images of a dataset folder (any layout samspt reads), classes mixed."""
    import itertools

    from samspt.training.data.readers import read_dataset

    by_class: Dict[str, list] = {}
    for record in read_dataset(root):
        by_class.setdefault(record.defect_class, []).append(record)
    chosen = [r for group in itertools.zip_longest(*by_class.values()) for r in group if r]
    rng = np.random.default_rng(seed)
    out = []
    for record in chosen[:limit]:
        image = record.load_image()
        out.append((record.name, image, prompt_boxes(record.load_mask(image.shape[:2]), rng)))
    return out


def _torch_fns(model: SptSam):
    def encode(batch: np.ndarray) -> np.ndarray:
        return model.encode(torch.from_numpy(batch)).numpy()

    def decode(embedding: np.ndarray, coords: np.ndarray, labels: np.ndarray):
        out = model.decode(torch.from_numpy(embedding), torch.from_numpy(coords),
                           torch.from_numpy(labels))
        return out.draft_logits.numpy(), out.logits.numpy(), out.scores[:, 0].numpy()

    return encode, decode


Prepared = List[Tuple[str, Callable, Dict[Any, np.ndarray], Any]]


def prepare_reference(model: SptSam, images: Optional[Sequence[VerifyImage]] = None) -> Prepared:
    """PyTorch's answers (FP32) to each image's box prompts in their views, with the view
    embeddings: what every graph is compared with. ``images`` default: the bundled samples."""
    images = list(images) if images is not None else bundled_verify_images()
    config = model.config
    encode, decode = _torch_fns(model)
    prepared = []
    with torch.no_grad():
        for name, image, boxes in images:
            plan = plan_views(image.shape[:2], config.image_size, config.view_settings, "auto",
                              boxes=boxes)
            run = partial(infer_views, image, plan, pixel_mean=config.pixel_mean,
                          pixel_std=config.pixel_std)
            embeddings: Dict[Any, np.ndarray] = {}
            ref = run(encode, decode, cache=embeddings)
            prepared.append((name, run, embeddings, ref))
    return prepared


def graph_parity(prepared: Prepared, encoder_path: Path, decoder_path: Path) -> Dict[str, Any]:
    """Parity figures of one encoder/decoder pair against the reference: end to end (the
    graphs' own embeddings) and the decoder alone (on PyTorch's embeddings)."""
    ort = OrtGraphs(encoder_path, decoder_path)
    per_image, enc_err, logit_err = [], 0.0, 0.0
    for name, run, ref_embeddings, ref in prepared:
        alone = run(ort.encode, ort.decode, cache=dict(ref_embeddings))
        mine: Dict[Any, np.ndarray] = {}
        both = run(ort.encode, ort.decode, cache=mine)
        enc_err = max(enc_err, max(float(np.abs(mine[v] - ref_embeddings[v]).max())
                                   for v in ref_embeddings))
        logit_err = max(logit_err, float(np.abs(both.low_res - ref.low_res).max()))
        ious = {}
        for label, out in (("decoder", alone), ("end_to_end", both)):
            ious[label] = [pooled_mask_iou(a > MASK_THRESHOLD, b > MASK_THRESHOLD)
                           for a, b in ((out.draft_logits, ref.draft_logits),
                                        (out.logits, ref.logits))]
        per_image.append({"image": name, "mean_iou": float(np.mean(ious["end_to_end"])),
                          "min_iou": float(np.min(ious["end_to_end"])),
                          "decoder_mean_iou": float(np.mean(ious["decoder"])),
                          "decoder_min_iou": float(np.min(ious["decoder"]))})
    return {
        "mean_iou": float(np.mean([r["mean_iou"] for r in per_image])),
        "min_iou": float(np.min([r["min_iou"] for r in per_image])),
        "decoder_mean_iou": float(np.mean([r["decoder_mean_iou"] for r in per_image])),
        "decoder_min_iou": float(np.min([r["decoder_min_iou"] for r in per_image])),
        "max_logit_error": logit_err,
        "encoder_max_error": enc_err,
        "per_image": per_image,
    }


def passes(figures: Dict[str, Any], precision: str, prefix: str = "") -> bool:
    """Whether ``figures`` (of :func:`graph_parity`) meet ``precision``'s gate; ``prefix``
    ``decoder_``: the decoder alone."""
    return meets_gate(figures, GATES[precision], prefix)


def graph_pairs(graphs: Dict[str, Dict[str, Any]]
                ) -> List[Tuple[str, str, Dict[str, Dict[str, Any]]]]:
    """(label, precision, {kind: GRAPH or VARIANT record}) of each precision's graphs
    (label: the precision) and of each of their variants (label ``int8-cpu``): a graph's variant
    paired with the other graph's same variant, or its plain graph where it has none."""
    pairs = []
    for precision in [p for p in GATES if p in graphs["encoder"]]:
        plain = {kind: graphs[kind][precision] for kind in GRAPH_KINDS}
        pairs.append((precision, precision, plain))
        names = sorted({name for record in plain.values()
                        for name in record.get("variants") or {}})
        pairs += [(f"{precision}-{name}", precision,
                   {kind: graph_variant(record, name) or record
                    for kind, record in plain.items()}) for name in names]
    return pairs


def keep_passing_variants(prepared: Prepared, folder: Path,
                          graphs: Dict[str, Dict[str, Any]]) -> List[str]:
    """Drop from ``graphs`` (and delete from ``folder``) the variants whose pair (see
    :func:`graph_pairs`) misses its precision's gate: the decoder's variant first, then the
    encoder's, until the pair passes or none is left. Returns the file names deleted."""
    removed: List[str] = []
    for precision in [p for p in GATES if p in graphs["encoder"]]:
        plain = {kind: graphs[kind][precision] for kind in GRAPH_KINDS}
        for name in sorted({n for r in plain.values() for n in r.get("variants") or {}}):
            while True:
                owners = [k for k in ("decoder", "encoder") if graph_variant(plain[k], name)]
                if not owners:
                    break
                pair = {k: graph_variant(r, name) or r for k, r in plain.items()}
                figures = graph_parity(prepared, folder / pair["encoder"]["file"],
                                       folder / pair["decoder"]["file"])
                if passes(figures, precision):
                    break
                variant = plain[owners[0]]["variants"].pop(name)
                reason = (f"{precision}-{name} graphs ({pair['encoder']['file']}, "
                          f"{pair['decoder']['file']}) reached mean mask IoU "
                          f"{figures['mean_iou']:.4f}, minimum {figures['min_iou']:.4f} (gate "
                          f"{GATES[precision]}): {variant['file']} dropped")
                log.warning("%s; ONNX Runtime's %s runs %s instead", reason,
                            variant.get("execution_provider", name), plain[owners[0]]["file"])
                plain[owners[0]].setdefault("variants_dropped", {})[name] = reason
                if not plain[owners[0]]["variants"]:
                    del plain[owners[0]]["variants"]
                for file in [variant["file"]] + list(variant.get("external_data") or []):
                    (folder / file).unlink()
                    removed.append(file)
    return removed


def verify_folder(model: SptSam, folder: Path, graphs: Dict[str, Dict[str, Any]],
                  images: Optional[Sequence[VerifyImage]] = None,
                  stage: Optional[Callable[[str], None]] = None,
                  prepared: Optional[Prepared] = None) -> Dict[str, Any]:
    """Parity figures of every precision in ``graphs`` (manifest GRAPH records in ``folder``)
    and of its variants (:func:`graph_pairs`; under their label, ``int8-cpu``), each image's box
    prompts answered in their views (the Inspector's default policy)."""
    prepared = prepared if prepared is not None else prepare_reference(model, images)
    report: Dict[str, Any] = {"images": len(prepared), "prompts_per_image": PROMPTS_PER_IMAGE,
                              "reference": "PyTorch FP32 (what the FP32 graphs compute)",
                              "gates": GATES}
    failures: List[str] = []
    for label, precision, pair in graph_pairs(graphs):
        if stage:
            stage(f"verifying {label} graphs against PyTorch on {len(prepared)} images")
        figures = graph_parity(prepared, folder / pair["encoder"]["file"],
                               folder / pair["decoder"]["file"])
        report[label] = figures
        gate = GATES[precision]
        if not passes(figures, precision):
            per_image = figures["per_image"]
            worst = min(per_image, key=lambda r: r["min_iou"])
            # The decoder alone (on PyTorch's embedding) already failing points at the decoder.
            culprit = "decoder" if figures["decoder_min_iou"] < gate["min_iou"] or \
                worst["decoder_min_iou"] < worst["min_iou"] else "encoder"
            failures.append(
                f"{label}: mean mask IoU {figures['mean_iou']:.4f} (gate "
                f"{gate['mean_iou']}), minimum {figures['min_iou']:.4f} (gate {gate['min_iou']}) "
                f"at image {worst['image']}; the {culprit} graph "
                f"({pair[culprit]['file']}) is the likely cause (decoder "
                f"alone on PyTorch's embedding: min IoU {worst['decoder_min_iou']:.4f}; encoder "
                f"max embedding error {figures['encoder_max_error']:.3g}; max logit error "
                f"{figures['max_logit_error']:.3g})")
        log.info("%s parity: mean IoU %.5f, min %.5f, max logit error %.3g", label,
                 figures["mean_iou"], figures["min_iou"], figures["max_logit_error"])
    if failures:
        fix = ("INT8: calibrate on images like the line's (--calib-data DIR), or leave int8 out "
               "of --precision; " if any(f.startswith("int8") for f in failures) else "")
        raise VerificationError("exported graphs do not match PyTorch: " + "; ".join(failures)
                                + f". {fix}Re-export with --precision fp32, or report the "
                                "model.")
    return report
