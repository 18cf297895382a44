"""Batching the encoder's views across requests.

The Inspector encodes each request's views in one call (``Vx3xSxS float32 -> VxCxhxw``). In the
service, many requests run at once on one replica; the deployment gives its Inspector an
``encode`` (:class:`samspt.runtime.inspector.Inspector`'s composition point) that hands each
such call to a Ray Serve ``@serve.batch`` method taking one view per item: views of requests
that arrive within ``batch_wait_ms`` of each other go through the backend's encoder as one
batch of at most ``max_batch`` views (split into the backend's ``max_views`` where it has one).
A request alone in its replica skips the wait (nobody would join it). Everything else (views,
decoder, post-processing, validation) is the Inspector's own code.

Batching pays where one encoder call of N views costs less than N calls of one (ONNX Runtime:
about 25 % less per view at 8 views on a CPU for the example model, more on a GPU). TensorRT
engines encode as many views per call as their optimization profile's ``views`` maximum;
engines built for one view (``samspt-build --views 1``, or built before views were batched)
gain nothing from the wait, so batching is off for them.

Numerics: ONNX Runtime computes a batch of one view through another kernel path than a larger
batch; an embedding differs by ~1e-6 between the two, so a mask pixel whose logit is within
~1e-5 of the threshold can differ from the in-process answer of a single-view request. With
``max_batch=1`` (``--max-batch 1``) the service is bit-identical to the in-process Inspector.
"""

from __future__ import annotations

from samspt.runtime.backend import Backend


def batches_across_requests(backend: Backend, max_batch: int) -> bool:
    """Whether gathering views of concurrent requests can pay: a batch of more than one view
    is allowed and the backend encodes more than one view per call."""
    return max_batch > 1 and (backend.max_views is None or backend.max_views > 1)
