"""The Inspector composed with another encoder, without Ray: its encoder runs go wherever the
``encode`` it was given sends them, and what comes back is the Inspector's answer (real ONNX
Runtime on the example model)."""

from __future__ import annotations

import numpy as np

from tests.serve.conftest import assert_same_result


def test_views_encoded_beside_other_requests_views_give_the_inspectors_answer(inspector):
    from samspt.runtime.backend import encode_in_chunks
    from samspt.runtime.inspector import Inspector
    from samspt.runtime.samples import EXAMPLE_MODEL_DIR, bundled_verify_images
    from samspt.serve.view_batching import batches_across_requests

    calls = []
    stranger = np.random.default_rng(0).standard_normal((3, 3, 128, 128)).astype(np.float32)

    def encode_views(views: np.ndarray) -> np.ndarray:
        # as the service's batcher does: this request's views run beside another request's
        calls.append(len(views))
        return encode_in_chunks(batched.graphs, np.concatenate([stranger, views]))[len(stranger):]

    batched = Inspector(EXAMPLE_MODEL_DIR, encode=encode_views)
    assert not calls, "warm-up runs the backend's own encoder"
    assert batches_across_requests(batched.graphs, 8)
    assert not batches_across_requests(batched.graphs, 1)
    for name, image, boxes in bundled_verify_images(0)[:3]:
        for prompts in (boxes[:1], boxes, None):
            assert_same_result(batched.inspect(image, boxes=prompts),
                               inspector.inspect(image, boxes=prompts), exact=False)
    assert calls and min(calls) >= 1
    batched.close()
