"""ONNX Runtime execution of an exported model's two graphs (numpy in, numpy out): a
:class:`samspt.runtime.backend.Backend`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from samspt.runtime import tensors
from samspt.runtime.errors import BackendError
from samspt.runtime.manifest import (GRAPH_KINDS, Manifest, graph_variant,
                                     variant_for_provider)

log = logging.getLogger(__name__)

# ONNX Runtime's common-subexpression elimination would merge the relation's row blocks that
# every two-way block recomputes (the same normalised tokens) into one set kept alive from the
# first application to the last: the whole tokens x tokens matrix the blocks exist to avoid
# (samspt.training.modeling.relation).
DISABLED_OPTIMIZERS = ("CommonSubexpressionElimination",)


def available_providers() -> Sequence[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


def session_provider(providers: Optional[Sequence[str]] = None) -> str:
    """The execution provider ONNX Runtime runs a session on: the first of ``providers``
    (default: CPU) that this onnxruntime offers (it skips the others). An entry may be a name
    or ONNX Runtime's (name, options) pair."""
    available = set(available_providers())
    names = [p[0] if isinstance(p, (tuple, list)) else p
             for p in providers or ["CPUExecutionProvider"]]
    return next((name for name in names if name in available), "CPUExecutionProvider")


def graph_files(model_dir: Path, manifest: Manifest, precision: str,
                providers: Optional[Sequence[str]] = None) -> Tuple[Path, Path]:
    """(encoder, decoder) files ONNX Runtime runs at ``precision`` on ``providers``: each graph's
    variant made for the provider the session will run on when the manifest has one (INT8 on
    the CPU: ``encoder.int8-cpu.onnx``, unsigned activations), else the plain graph (what
    TensorRT reads, and what folders without variants hold)."""
    provider = session_provider(providers)
    variant = variant_for_provider(provider)
    files = []
    for kind in GRAPH_KINDS:
        entry = manifest.graph(kind, precision)
        chosen = graph_variant(entry, variant) or entry
        files.append(Path(model_dir) / chosen["file"])
        log.info("%s %s graph on %s: %s%s", precision, kind, provider, chosen["file"],
                 f" (the {variant} variant)" if chosen is not entry else "")
    return files[0], files[1]


def set_spinning(options: Any, spin: bool) -> None:
    """Let ONNX Runtime's threads of the session ``options`` spin-wait between ops (``spin``)
    or sleep (see :class:`OrtGraphs`)."""
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")


class OrtGraphs:
    """Sessions of ``encoder`` and ``decoder`` ONNX files.

    ``providers``: ONNX Runtime execution providers in order of preference (default: CPU).
    ``spin``: whether ONNX Runtime's threads spin-wait for work between ops (ONNX Runtime's own
    default) instead of sleeping (samspt's default). Spinning burns the cores that callers'
    other threads, an HTTP proxy or the next request need: on the 2-core VM, sleeping threads
    gave 96 against 74 requests/s from 8 threads on the example model, 19.5 against 21.0 ms
    for one caller, and 198 against 241 ms for the small ViT (``spin=True`` is there to measure
    on a machine whose cores are the model's alone).
    ORT sessions are safe to call from several threads at once.
    """

    max_prompts: Optional[int] = None  # any number of prompts per decode
    max_views: Optional[int] = None    # any number of views per encode

    def __init__(self, encoder_path: Path, decoder_path: Path,
                 providers: Optional[Sequence[str]] = None, threads: int = 0,
                 spin: bool = False, precision: str = "fp32") -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: FP16 constant-folding notes are noise
        if threads:
            options.intra_op_num_threads = threads
        set_spinning(options, spin)
        providers = list(providers or ["CPUExecutionProvider"])
        try:
            self.encoder = ort.InferenceSession(str(encoder_path), options, providers=providers)
            self.decoder = ort.InferenceSession(str(decoder_path), options, providers=providers,
                                                disabled_optimizers=list(DISABLED_OPTIMIZERS))
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise BackendError(f"ONNX Runtime cannot load {encoder_path.parent}: {exc}") from None
        self.providers = self.encoder.get_providers()
        self.name = f"onnxruntime ({', '.join(self.providers)})"
        self.precision = precision
        self.files = (Path(encoder_path).name, Path(decoder_path).name)
        log.debug("ONNX Runtime sessions on %s", self.providers)

    @classmethod
    def for_precision(cls, model_dir: Path, manifest: Manifest, precision: str,
                      providers: Optional[Sequence[str]] = None,
                      threads: int = 0, spin: bool = False) -> "OrtGraphs":
        """Sessions of the model folder's graphs at ``precision``, the files as
        :func:`graph_files` chooses them for ``providers``."""
        encoder, decoder = graph_files(model_dir, manifest, precision, providers)
        return cls(encoder, decoder, providers=providers, threads=threads, spin=spin,
                   precision=precision)

    def encode(self, views: np.ndarray) -> np.ndarray:
        """Vx3xSxS float32 preprocessed views -> VxC'xhxw float32 embeddings, one call."""
        return self.encoder.run(None, {tensors.IMAGE: views})[0]

    def close(self) -> None:
        """Nothing to free beyond what the sessions free when collected."""

    def decode(self, embedding: np.ndarray, coords: np.ndarray,
               labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> (draft_logits Bx1xLxL, logits Bx1xLxL, scores Bx1), all float32."""
        draft, logits, scores = self.decoder.run(
            list(tensors.DECODER_OUTPUTS),
            {tensors.IMAGE_EMBEDDINGS: embedding, tensors.POINT_COORDS: coords,
             tensors.POINT_LABELS: labels})
        return draft, logits, scores
