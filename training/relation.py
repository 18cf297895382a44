"""The visual-relation-aware adapter: a token-to-token relation of the image embedding.

For the ``T = h*w`` tokens of an image embedding (1xCxhxw), with ``n_i`` the L2-normalised token
vectors, the relation is ``R[i, j] = softmax_{j != i}(n_i . n_j)``: cosine similarity, each token's
similarity to itself excluded, softmax over the other tokens. Each two-way-transformer block of
both decoders then mixes it into its image keys: ``keys + (R @ keys) * scale``.

How it is computed (once per image, shared by both decoders and all B prompts):

* ``E = exp(S - ln T)`` with ``S`` the cosine similarities in [-1, 1]: entries lie in
  [e^-1 / T, e / T] (normal FP16 numbers up to T = 4096), so the softmax needs no running maximum
  and no large negative mask constant. ``E`` is the only TxT tensor: the exponential is taken in
  place on the similarity product, and the rows are never normalised in TxT.
* The self term is removed algebraically instead of by a TxT diagonal mask:
  ``R @ V = (E @ V - e_self * V) / d`` with ``d_i = sum_j E_ij - e_self_i`` and
  ``e_self_i = exp(|n_i|^2 - ln T)``. Rows of E sum to at most e, so ``E @ V`` stays within
  e * max|V| (FP16-safe), and ``d`` lies in [e^-1 (T-1)/T, e].
* The B prompts' keys are folded into the channel axis and mixed with one TxT @ Tx(B*C)
  product, so no TxT matrix exists per prompt; the row normalisation ``1/d`` is applied to that
  product (T x B*C) instead of to E.
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


@dataclass
class ImageRelation:
    """The relation of one image's tokens: ``weights`` E (TxT), ``self_weight`` e_self (T) and
    ``inv_denom`` 1/d (T), as in the module doc."""

    weights: torch.Tensor
    self_weight: torch.Tensor
    inv_denom: torch.Tensor

    @classmethod
    def from_embedding(cls, image_embedding: torch.Tensor) -> "ImageRelation":
        """``image_embedding``: 1xCxhxw (any float dtype); computed in float32."""
        return cls(*relation_weights(image_embedding))

    def apply(self, keys: torch.Tensor) -> torch.Tensor:
        """``R @ keys`` for keys of shape BxTxC (B prompts of one image); same dtype as keys.
        A relation of B views (weights BxTxT) mixes each view's keys with its own relation."""
        if self.weights.dim() == 3:
            mixed = self.weights.to(keys.dtype) @ keys \
                - self.self_weight.to(keys.dtype)[:, :, None] * keys
            return mixed * self.inv_denom.to(keys.dtype)[:, :, None]
        num_tokens, channels = keys.shape[1], keys.shape[2]
        folded = keys.transpose(0, 1).reshape(num_tokens, -1)  # T x (B*C)
        mixed = (self.weights.to(keys.dtype) @ folded).reshape(num_tokens, -1, channels)
        mixed = mixed.transpose(0, 1) - self.self_weight.to(keys.dtype)[None, :, None] * keys
        return mixed * self.inv_denom.to(keys.dtype)[None, :, None]


def relation_weights(image_embedding: torch.Tensor
                     ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(E: TxT, e_self: T, 1/d: T), float32, of a 1xCxhxw image embedding (see the module doc);
    of a BxCxhxw batch of views (B > 1): (BxTxT, BxT, BxT), one relation per view."""
    if image_embedding.dim() != 4:
        raise ValueError("relation expects image embeddings of shape BxCxhxw, got "
                         f"{tuple(image_embedding.shape)}")
    if image_embedding.shape[0] == 1:
        tokens = image_embedding[0].flatten(1).transpose(0, 1).float()  # T x C
    else:
        tokens = image_embedding.flatten(2).transpose(1, 2).float()  # B x T x C
    log_count = math.log(tokens.shape[-2])
    unit = tokens / tokens.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)
    # One TxT tensor: the product, shifted and exponentiated in place (autograd keeps the
    # result, which exp's backward needs; the product itself is not needed by mm's backward).
    weights = (unit @ unit.transpose(-1, -2)).sub_(log_count).exp_()
    self_weight = torch.exp((unit * unit).sum(dim=-1) - log_count)  # T, the diagonal of E
    inv_denom = 1.0 / (weights.sum(dim=-1) - self_weight)
    return weights, self_weight, inv_denom


class RelationBuilder(nn.Module):
    """The relation's construction as a module (no parameters), so exported graphs hold it in
    one named scope (``/relation/``) that FP16 conversion keeps in FP32."""

    def forward(self, image_embedding: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return relation_weights(image_embedding)
