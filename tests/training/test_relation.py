"""The relation adapter against a naive, materialised reference; FP16 safety."""

from __future__ import annotations

import math

import pytest
import torch

from samspt.training.relation import ImageRelation


def naive_relation_apply(image_embedding: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The definition, spelled out: per prompt, a TxT softmax of cosine similarity with the
    diagonal masked out, times the keys (float64)."""
    tokens = image_embedding[0].flatten(1).t().double()
    unit = tokens / tokens.norm(dim=-1, keepdim=True)
    sim = unit @ unit.t()
    sim = sim.masked_fill(torch.eye(sim.shape[0], dtype=torch.bool), float("-inf"))
    relation = torch.softmax(sim, dim=-1)
    return torch.stack([relation @ k.double() for k in keys])


@pytest.mark.parametrize("channels,side,batch", [(8, 3, 1), (32, 8, 3), (16, 5, 4)])
def test_relation_equals_naive_reference(channels, side, batch):
    gen = torch.Generator().manual_seed(channels + side)
    embedding = torch.randn(1, channels, side, side, generator=gen) * 3
    keys = torch.randn(batch, side * side, channels, generator=gen)
    ours = ImageRelation.from_embedding(embedding).apply(keys)
    torch.testing.assert_close(ours.double(), naive_relation_apply(embedding, keys),
                               atol=1e-5, rtol=1e-5)


def test_relation_weights_are_computed_once_per_image_not_per_prompt():
    embedding = torch.randn(1, 16, 4, 4)
    relation = ImageRelation.from_embedding(embedding)
    assert relation.weights.shape == (16, 16)  # one TxT for the image, whatever B is
    out = relation.apply(torch.randn(7, 16, 16))
    assert out.shape == (7, 16, 16)


def test_self_is_excluded():
    # Two identical tokens and one opposite: a token's relation must put all weight on its twin
    # (similarity 1) rather than itself, and almost none on the opposite token.
    embedding = torch.tensor([[1.0, 1.0, -1.0]]).reshape(1, 1, 1, 3)
    keys = torch.tensor([[[10.0], [20.0], [30.0]]])
    out = ImageRelation.from_embedding(embedding).apply(keys)[0, :, 0]
    e2 = math.exp(-2.0)
    assert out[0].item() == pytest.approx((20 + 30 * e2) / (1 + e2), rel=1e-5)
    assert out[1].item() == pytest.approx((10 + 30 * e2) / (1 + e2), rel=1e-5)


def test_fp16_relation_has_no_inf_or_nan_even_for_extreme_embeddings():
    gen = torch.Generator().manual_seed(0)
    embedding = torch.randn(1, 256, 16, 16, generator=gen) * 1000  # |x|^2 overflows FP16
    embedding[..., 0, :4] = 0  # all-zero tokens: norm clamp must not divide by zero
    embedding[..., 1, :2] = 1e-6
    relation = ImageRelation.from_embedding(embedding.half())
    keys = (torch.randn(2, 256, 256, generator=gen) * 200).half()
    out = relation.apply(keys)
    assert out.dtype == torch.float16
    assert torch.isfinite(relation.weights.half()).all() and torch.isfinite(out).all()
    ref = ImageRelation.from_embedding(embedding).apply(keys.float())
    assert (out.float() - ref).abs().max() <= 2.0  # FP16 resolution at |keys| ~ 1e3


def test_a_batch_of_views_gets_one_relation_per_view():
    """B view embeddings (training on views): each view's keys are mixed with its own relation,
    exactly as one-image relations do."""
    embeddings = torch.randn(3, 8, 4, 4)
    keys = torch.randn(3, 16, 8)
    batched = ImageRelation.from_embedding(embeddings).apply(keys)
    for i in range(3):
        alone = ImageRelation.from_embedding(embeddings[i:i + 1]).apply(keys[i:i + 1])
        torch.testing.assert_close(batched[i:i + 1], alone, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="BxCxhxw"):
        ImageRelation.from_embedding(torch.randn(8, 4, 4))
