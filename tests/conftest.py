"""Shared fixtures: tiny real models (segment-anything's own modules at toy sizes).

torch is imported where a fixture needs it, not here: the runtime's tests that need no model
(the base install's: numpy, onnxruntime, pillow) run without torch installed.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config, items):
    """Every test that starts Ray Serve or Chromium is an integration test too (one marker leaves
    out every test that starts other processes: ``-m 'not integration'``)."""
    for item in items:
        if item.get_closest_marker("service") or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.integration)


def randomize_spt_(model, seed: int = 0, scale: float = 0.05):
    """Give LoRA B matrices and relation scales random values, as if trained."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf.startswith("lora_B") or ".relation_scales." in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    return model


def exported_cnn_tiny(out, scale: float = 0.3, **changes):
    """A ``cnn_tiny`` model (``changes``: ModelConfig fields), seeded, LoRA and relation scales
    randomised (:func:`randomize_spt_`), exported unverified (FP32 and FP16) to ``out`` under
    its folder's name: (model, out)."""
    import dataclasses

    import torch

    from samspt.export.onnx_export import export_model
    from samspt.training.checkpoints import build_model
    from samspt.training.modeling.config import get_config

    torch.manual_seed(0)
    config = dataclasses.replace(get_config("cnn_tiny"), **changes)
    model = randomize_spt_(build_model(config, None), scale=scale).eval()
    export_model(model, out, out.name, verify=False)
    return model, out


@pytest.fixture
def tiny_config():
    from samspt.training.modeling.config import get_config

    return get_config("tiny")


@pytest.fixture
def tiny_sam(tiny_config):
    """segment-anything's ``Sam`` at the tiny configuration, random weights, seeded."""
    import torch

    from samspt.training.modeling.model import build_sam

    torch.manual_seed(0)
    return build_sam(tiny_config)


@pytest.fixture
def tiny_spt(tiny_sam, tiny_config):
    """An untrained SPT model holding ``tiny_sam``'s weights."""
    from samspt.training.checkpoints import load_sam_weights
    from samspt.training.modeling.model import SptSam

    import torch

    torch.manual_seed(1)
    model = SptSam(tiny_config)
    load_sam_weights(model, tiny_sam.state_dict())
    return model.eval()
