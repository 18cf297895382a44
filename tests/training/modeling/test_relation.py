"""The relation adapter against a naive, materialised reference; FP16 safety."""

from __future__ import annotations

import math

import pytest
import torch

from samspt.training.modeling.relation import ImageRelation


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


def test_the_relation_of_an_image_holds_no_token_by_token_matrix():
    embedding = torch.randn(1, 8, 4, 4)
    relation = ImageRelation.from_embedding(embedding)
    # normalised tokens (TxC) and two T-vectors, whatever B is: nothing TxT, nothing per prompt
    assert relation.unit.shape == (16, 8)
    assert relation.self_weight.shape == relation.inv_denom.shape == (16,)
    out = relation.apply(torch.randn(7, 16, 8))
    assert out.shape == (7, 16, 8)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-2)])
@pytest.mark.parametrize("block", [1, 7, 25, 512])
def test_row_blocks_compute_the_naive_relation(monkeypatch, dtype, tol, block):
    """E in blocks of ``block`` rows (one row, uneven blocks, one block, the default) gives the
    naive materialised relation's numbers, FP32 and FP16 keys."""
    import samspt.training.modeling.relation as relation

    monkeypatch.setattr(relation, "ROW_BLOCK", block)
    gen = torch.Generator().manual_seed(block)
    embedding = torch.randn(1, 16, 5, 5, generator=gen) * 2
    keys = torch.randn(3, 25, 16, generator=gen)
    ours = ImageRelation.from_embedding(embedding.to(dtype)).apply(keys.to(dtype))
    assert ours.dtype == dtype
    torch.testing.assert_close(ours.double(), naive_relation_apply(embedding, keys),
                               atol=tol, rtol=tol)
    views = torch.randn(2, 16, 5, 5, generator=gen)
    batched = ImageRelation.from_embedding(views.to(dtype)).apply(keys[:2].to(dtype))
    for i in range(2):
        torch.testing.assert_close(batched[i].double(),
                                   naive_relation_apply(views[i:i + 1], keys[i:i + 1])[0],
                                   atol=tol, rtol=tol)


def test_row_blocks_train_as_the_whole_matrix_does(monkeypatch):
    import samspt.training.modeling.relation as relation

    embedding = torch.randn(1, 8, 4, 4, requires_grad=True)
    keys = torch.randn(2, 16, 8, requires_grad=True)
    grads = []
    for block in (16, 5):
        monkeypatch.setattr(relation, "ROW_BLOCK", block)
        embedding.grad = keys.grad = None
        ImageRelation.from_embedding(embedding).apply(keys).square().sum().backward()
        grads.append((embedding.grad.clone(), keys.grad.clone()))
    for whole, blocked in zip(*grads):
        torch.testing.assert_close(whole, blocked, atol=1e-5, rtol=1e-5)


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
    assert torch.isfinite(relation.inv_denom.half()).all() and torch.isfinite(out).all()
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
