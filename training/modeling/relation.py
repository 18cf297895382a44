"""The visual-relation-aware adapter: a token-to-token relation of the image embedding.

For the ``T = h*w`` tokens of an image embedding (1xCxhxw), with ``n_i`` the L2-normalised token
vectors, the relation is ``R[i, j] = softmax_{j != i}(n_i . n_j)``: cosine similarity, each token's
similarity to itself excluded, softmax over the other tokens. Each two-way-transformer block of
both decoders then mixes it into its image keys: ``keys + (R @ keys) * scale``.

How it is computed (never holding a TxT matrix; one image's relation is shared by both decoders
and all B prompts):

* ``E = exp(S - ln T)`` with ``S`` the cosine similarities in [-1, 1]: entries lie in
  [e^-1 / T, e / T] (normal FP16 numbers up to T = 4096), so the softmax needs no running maximum
  and no large negative mask constant.
* Rows of the relation are independent, so ``E`` exists only in blocks of at most
  :data:`ROW_BLOCK` rows (``ROW_BLOCK x T``): building the relation (once per image) keeps each
  row's sum, and every application recomputes a block's ``E`` from the normalised tokens and
  mixes it into that block's rows of the keys. Peak memory is one block, not TxT: at T = 4096
  (vit_b) 1/8 of one TxT matrix. In training each block is recomputed in the backward pass
  (activation checkpointing) rather than kept for it, so a training step holds one block too.
* The self term is removed algebraically instead of by a TxT diagonal mask:
  ``R @ V = (E @ V - e_self * V) / d`` with ``d_i = sum_j E_ij - e_self_i`` and
  ``e_self_i = exp(|n_i|^2 - ln T)``. Rows of E sum to at most e, so ``E @ V`` stays within
  e * max|V| (FP16-safe), and ``d`` lies in [e^-1 (T-1)/T, e].
* The B prompts' keys are folded into the channel axis and mixed with one block @ Tx(B*C)
  product per block, so nothing is held per prompt; the row normalisation ``1/d`` is applied to
  that product (T x B*C).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import torch
from torch import nn

# Clamp of the token norm before dividing; a normal FP16 number (FP16's smallest normal is
# 6.1e-5), so it survives a cast and never turns the division into x/0.
NORM_EPS = 1e-4


# Rows of E computed at a time: E exists only as ROW_BLOCK x T blocks (see the module doc).
ROW_BLOCK = 512


def _row_blocks(count: int):
    return [(start, min(start + ROW_BLOCK, count)) for start in range(0, count, ROW_BLOCK)]


def _block_weights(unit: torch.Tensor, start: int, stop: int, log_count: float) -> torch.Tensor:
    """Rows ``start:stop`` of E (float32): (stop-start) x T, or B x (stop-start) x T."""
    block = unit[..., start:stop, :] @ unit.transpose(-1, -2)
    return block.sub_(log_count).exp_() if not block.requires_grad else \
        torch.exp(block - log_count)


def _block_sum(unit: torch.Tensor, start: int, stop: int, log_count: float) -> torch.Tensor:
    return _block_weights(unit, start, stop, log_count).sum(dim=-1)


def _block_mix(unit: torch.Tensor, values: torch.Tensor, start: int, stop: int,
               log_count: float) -> torch.Tensor:
    return _block_weights(unit, start, stop, log_count).to(values.dtype) @ values


def _per_block(fn, *args):
    """``fn(*args)`` for one row block; under autograd, recomputed in the backward pass instead
    of keeping the block's E for it (activation checkpointing), so training, too, holds one
    block at a time rather than every block of E: the TxT matrix, in pieces."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors) \
            and not torch.jit.is_tracing():
        from torch.utils.checkpoint import checkpoint

        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


@dataclass
class ImageRelation:
    """The relation of one image's tokens: ``unit`` the normalised tokens (TxC, float32),
    ``self_weight`` e_self (T) and ``inv_denom`` 1/d (T), as in the module doc; for a batch of
    views each has a leading B axis."""

    unit: torch.Tensor
    self_weight: torch.Tensor
    inv_denom: torch.Tensor

    @classmethod
    def from_embedding(cls, image_embedding: torch.Tensor) -> "ImageRelation":
        """``image_embedding``: 1xCxhxw (any float dtype); computed in float32."""
        return cls(*relation_weights(image_embedding))

    def apply(self, keys: torch.Tensor) -> torch.Tensor:
        """``R @ keys`` for keys of shape BxTxC (B prompts of one image); same dtype as keys.
        A relation of B views (unit BxTxC) mixes each view's keys with its own relation."""
        log_count = math.log(self.unit.shape[-2])
        num_tokens, channels = keys.shape[1], keys.shape[2]
        views = self.unit.dim() == 3
        # One image: the prompts' keys folded into channels, T x (B*C); views: B x T x C.
        values = keys if views else keys.transpose(0, 1).reshape(num_tokens, -1)
        blocks = [_per_block(_block_mix, self.unit, values, start, stop, log_count)
                  for start, stop in _row_blocks(num_tokens)]
        mixed = torch.cat(blocks, dim=-2) if len(blocks) > 1 else blocks[0]
        if views:
            mixed = mixed - self.self_weight.to(keys.dtype)[:, :, None] * keys
            return mixed * self.inv_denom.to(keys.dtype)[:, :, None]
        mixed = mixed.reshape(num_tokens, -1, channels).transpose(0, 1) \
            - self.self_weight.to(keys.dtype)[None, :, None] * keys
        return mixed * self.inv_denom.to(keys.dtype)[None, :, None]


def relation_weights(image_embedding: torch.Tensor
                     ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(normalised tokens: TxC, e_self: T, 1/d: T), float32, of a 1xCxhxw image embedding (see
    the module doc); of a BxCxhxw batch of views (B > 1): (BxTxC, BxT, BxT), one per view.
    The row sums of E are taken block by block; E is never held whole."""
    if image_embedding.dim() != 4:
        raise ValueError("relation expects image embeddings of shape BxCxhxw, got "
                         f"{tuple(image_embedding.shape)}")
    if image_embedding.shape[0] == 1:
        tokens = image_embedding[0].flatten(1).transpose(0, 1).float()  # T x C
    else:
        tokens = image_embedding.flatten(2).transpose(1, 2).float()  # B x T x C
    count = tokens.shape[-2]
    log_count = math.log(count)
    unit = tokens / tokens.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)
    sums = [_per_block(_block_sum, unit, start, stop, log_count)
            for start, stop in _row_blocks(count)]
    row_sum = torch.cat(sums, dim=-1) if len(sums) > 1 else sums[0]
    self_weight = torch.exp((unit * unit).sum(dim=-1) - log_count)  # T, the diagonal of E
    inv_denom = 1.0 / (row_sum - self_weight)
    return unit, self_weight, inv_denom


class RelationBuilder(nn.Module):
    """The relation's construction as a module (no parameters), so exported graphs hold it in
    one named scope (``/relation/``) that FP16 conversion keeps in FP32."""

    def forward(self, image_embedding: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return relation_weights(image_embedding)
