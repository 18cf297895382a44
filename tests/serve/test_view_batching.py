"""BatchedInspector without Ray: its encoder runs go wherever ``encode_views`` sends them, and
what comes back is the Inspector's answer (real ONNX Runtime on the example model)."""

from __future__ import annotations

import numpy as np

from tests.serve.conftest import assert_same_result


def test_views_encoded_beside_other_requests_views_give_the_inspectors_answer(inspector):
    from samspt.runtime.samples import EXAMPLE_MODEL_DIR, bundled_verify_images
    from samspt.serve.view_batching import BatchedInspector

    batched = BatchedInspector(EXAMPLE_MODEL_DIR)
    assert batched.batches_across_requests
    calls = []
    stranger = np.random.default_rng(0).standard_normal((3, 3, 128, 128)).astype(np.float32)

    def encode_views(views: np.ndarray) -> np.ndarray:
        # as the service's batcher does: this request's views run beside another request's
        calls.append(len(views))
        return batched.encode_directly(np.concatenate([stranger, views]))[len(stranger):]

    for name, image, boxes in bundled_verify_images(0)[:3]:
        batched.encode_views = None
        assert_same_result(batched.inspect(image, boxes=boxes[:1]),
                           inspector.inspect(image, boxes=boxes[:1]))       # exact
        batched.encode_views = encode_views
        for prompts in (boxes[:1], boxes, None):
            assert_same_result(batched.inspect(image, boxes=prompts),
                               inspector.inspect(image, boxes=prompts), exact=False)
    assert calls and min(calls) >= 1
    batched.close()
