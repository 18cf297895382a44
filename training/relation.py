"""The visual-relation-aware adapter: a token-to-token relation of the image embedding.

For the ``T = h*w`` tokens of an image embedding (1xCxhxw), with ``n_i`` the L2-normalised token
vectors, the relation is ``R[i, j] = softmax_{j != i}(n_i . n_j)``: cosine similarity, each token's
similarity to itself excluded, softmax over the other tokens. Each two-way-transformer block of
both decoders then mixes it into its image keys: ``keys + (R @ keys) * scale``.

How it is computed (once per image, shared by both decoders and all B prompts):

* Cosine similarities lie in [-1, 1], so ``exp(s - 1)`` lies in [e^-2, 1]: the softmax needs no
  running maximum and no large negative mask constant, and nothing over- or underflows in FP16.
* The self term is removed algebraically instead of by a TxT diagonal mask:
  ``R @ V = P @ V - p_self * V`` where ``P = exp(S - 1) / d``, ``d_i = sum_j exp(s_ij - 1) -
  exp(|n_i|^2 - 1)`` and ``p_self_i = exp(|n_i|^2 - 1) / d_i``. Rows of P sum to at most
  ``1 + 1/((T-1) e^-2)``, so ``P @ V`` stays bounded by max|V| (FP16-safe).
* ``P`` (TxT) is built once per image; the B prompts' keys are folded into the channel axis and
  mixed with one TxT @ Tx(B*C) product, so no TxT matrix exists per prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
from torch import nn

# Clamp of the token norm before dividing; a normal FP16 number (FP16's smallest normal is
# 6.1e-5), so it survives a cast and never turns the division into x/0.
NORM_EPS = 1e-4


@dataclass
class ImageRelation:
    """The relation of one image's tokens. ``weights``: TxT (P above); ``self_weight``: T."""

    weights: torch.Tensor
    self_weight: torch.Tensor

    @classmethod
    def from_embedding(cls, image_embedding: torch.Tensor) -> "ImageRelation":
        """``image_embedding``: 1xCxhxw (any float dtype); computed in float32."""
        return cls(*relation_weights(image_embedding))

    def apply(self, keys: torch.Tensor) -> torch.Tensor:
        """``R @ keys`` for keys of shape BxTxC (B prompts of one image); same dtype as keys."""
        num_tokens, channels = keys.shape[1], keys.shape[2]
        folded = keys.transpose(0, 1).reshape(num_tokens, -1)  # T x (B*C)
        mixed = (self.weights.to(keys.dtype) @ folded).reshape(num_tokens, -1, channels)
        return mixed.transpose(0, 1) - self.self_weight.to(keys.dtype)[None, :, None] * keys


def relation_weights(image_embedding: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(P: TxT float32, p_self: T float32) of a 1xCxhxw image embedding (see the module doc)."""
    if image_embedding.dim() != 4 or image_embedding.shape[0] != 1:
        raise ValueError("relation expects one image embedding of shape 1xCxhxw, got "
                         f"{tuple(image_embedding.shape)}")
    tokens = image_embedding[0].flatten(1).transpose(0, 1).float()  # T x C
    unit = tokens / tokens.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)
    similar = torch.exp(unit @ unit.transpose(0, 1) - 1.0)  # T x T, in [e^-2, 1]
    self_term = torch.exp((unit * unit).sum(dim=-1) - 1.0)  # T, the diagonal of `similar`
    denom = similar.sum(dim=-1) - self_term  # > (T-1) e^-2 > 0
    return similar / denom[:, None], self_term / denom


class RelationBuilder(nn.Module):
    """The relation's construction as a module (no parameters), so exported graphs hold it in
    one named scope (``/relation/``) that FP16 conversion keeps in FP32."""

    def forward(self, image_embedding: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return relation_weights(image_embedding)
