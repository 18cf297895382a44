"""Shared fixtures: tiny real models (segment-anything's own modules at toy sizes)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def randomize_spt_(model, seed: int = 0, scale: float = 0.05):
    """Give LoRA B matrices and relation scales random values, as if trained."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf.startswith("lora_B") or ".relation_scales." in name:
                param.copy_(torch.randn(param.shape, generator=gen) * scale)
    return model


@pytest.fixture
def tiny_config():
    from samspt.training.config import get_config

    return get_config("tiny")


@pytest.fixture
def tiny_sam(tiny_config):
    """segment-anything's ``Sam`` at the tiny configuration, random weights, seeded."""
    from samspt.training.model import build_sam

    torch.manual_seed(0)
    return build_sam(tiny_config)


@pytest.fixture
def tiny_spt(tiny_sam, tiny_config):
    """An untrained SPT model holding ``tiny_sam``'s weights."""
    from samspt.training.checkpoints import load_sam_weights
    from samspt.training.model import SptSam

    torch.manual_seed(1)
    model = SptSam(tiny_config)
    load_sam_weights(model, tiny_sam.state_dict())
    return model.eval()
