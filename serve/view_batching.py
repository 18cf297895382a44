"""Batching the encoder's views across requests.

The Inspector encodes each request's views in one call (``Vx3xSxS float32 -> VxCxhxw``). In the
service, many requests run at once on one replica; :class:`BatchedInspector` hands each such
call to ``encode_views`` instead, which the deployment points at a Ray Serve ``@serve.batch``
method taking one view per item: views of requests that arrive within ``batch_wait_ms`` of each
other go through the encoder as one batch of at most ``max_batch`` views. A request alone in its
replica skips the wait (nobody would join it). Everything else (views, decoder,
post-processing, validation) is the Inspector's own code.

Batching pays where one encoder call of N views costs less than N calls of one (ONNX Runtime:
about 25 % less per view at 8 views on a CPU for the example model, more on a GPU). TensorRT
engines here are built for one view, so with TensorRT the Inspector's own path is kept.

Numerics: ONNX Runtime computes a batch of one view through another kernel path than a larger
batch; an embedding differs by ~1e-6 between the two, so a mask pixel whose logit is within
~1e-5 of the threshold can differ from the in-process answer of a single-view request. With
``max_batch=1`` (``--max-batch 1``) the service is bit-identical to the in-process Inspector.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from samspt.runtime.inspector import Inspector

EncodeViews = Callable[[np.ndarray], np.ndarray]


class BatchedInspector(Inspector):
    """An :class:`Inspector` whose encoder runs go through ``encode_views`` once it is set
    (``Vx3xSxS float32 -> VxCxhxw float32``); loading and warm-up use the encoder directly."""

    encode_views: Optional[EncodeViews] = None

    @property
    def batches_across_requests(self) -> bool:
        """False where the backend encodes one view per call (TensorRT): nothing to batch."""
        return getattr(self._graphs, "download", None) is None

    def encode_directly(self, batch: np.ndarray) -> np.ndarray:
        """The backend's own encoder call (what the batcher runs on a gathered batch)."""
        return super()._encode(batch)

    def _encode(self, batch: np.ndarray):
        if self.encode_views is None or not self.batches_across_requests:
            return super()._encode(batch)
        return self.encode_views(batch)

