"""ONNX Runtime execution of an exported model's two graphs (numpy in, numpy out)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from samspt.runtime import tensors
from samspt.runtime.errors import BackendError

log = logging.getLogger(__name__)

# ONNX Runtime's common-subexpression elimination would merge the relation's row blocks that
# every two-way block recomputes (the same normalised tokens) into one set kept alive from the
# first application to the last: the whole tokens x tokens matrix the blocks exist to avoid
# (samspt.training.relation).
DISABLED_OPTIMIZERS = ("CommonSubexpressionElimination",)


def available_providers() -> Sequence[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


class OrtGraphs:
    """Sessions of ``encoder`` and ``decoder`` ONNX files.

    ``providers``: ONNX Runtime execution providers in order of preference (default: CPU).
    ORT sessions are safe to call from several threads at once.
    """

    def __init__(self, encoder_path: Path, decoder_path: Path,
                 providers: Optional[Sequence[str]] = None, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: FP16 constant-folding notes are noise
        if threads:
            options.intra_op_num_threads = threads
        providers = list(providers or ["CPUExecutionProvider"])
        try:
            self.encoder = ort.InferenceSession(str(encoder_path), options, providers=providers)
            self.decoder = ort.InferenceSession(str(decoder_path), options, providers=providers,
                                                disabled_optimizers=list(DISABLED_OPTIMIZERS))
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise BackendError(f"ONNX Runtime cannot load {encoder_path.parent}: {exc}") from None
        self.providers = self.encoder.get_providers()
        log.debug("ONNX Runtime sessions on %s", self.providers)

    def embed(self, image: np.ndarray) -> np.ndarray:
        """1x3xSxS float32 preprocessed image -> 1xCxhxw float32 image embedding."""
        return self.encoder.run(None, {tensors.IMAGE: image})[0]

    def decode(self, embedding: np.ndarray, coords: np.ndarray,
               labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> (draft_logits Bx1xLxL, logits Bx1xLxL, scores Bx1), all float32."""
        draft, logits, scores = self.decoder.run(
            list(tensors.DECODER_OUTPUTS),
            {tensors.IMAGE_EMBEDDINGS: embedding, tensors.POINT_COORDS: coords,
             tensors.POINT_LABELS: labels})
        return draft, logits, scores
