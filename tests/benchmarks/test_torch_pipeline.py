"""The PyTorch pipeline computes what samspt.training.predict computes, stage by stage."""

from __future__ import annotations

import numpy as np
import torch

from samspt.benchmarks.backends import BACKENDS, OpenContext
from samspt.benchmarks.inputs import benchmark_inputs
from samspt.benchmarks.models import merged_model
from samspt.benchmarks.torch_pipeline import TorchPipeline
from samspt.training.predict import predict


def test_torch_pipeline_matches_predict(tmp_path):
    model = merged_model("tiny")
    _, image, boxes = benchmark_inputs([3])
    pipeline = TorchPipeline(BACKENDS["torch"], OpenContext("tiny", 0, "cpu", tmp_path, [3],
                                                            model=model))
    timings = pipeline.run(image, boxes[3])
    assert set(timings) == {"preprocess", "encoder", "decoder", "postprocess", "end_to_end"}
    assert timings["end_to_end"] >= sum(v for k, v in timings.items() if k != "end_to_end") * 0.99
    reference = predict(model, image, boxes=boxes[3])
    masks, drafts = pipeline.last_masks
    np.testing.assert_array_equal(masks, reference.masks)
    np.testing.assert_array_equal(drafts, reference.draft_masks)
    assert torch.is_grad_enabled()  # the pipeline does not leave no_grad behind
