"""LoRA layers for SAM's attention projections, their injection, and their exact merge.

``LoRALinear`` replaces a decoder ``q_proj``/``v_proj``; ``LoRAQKV`` replaces an image-encoder
block's fused ``qkv`` and adapts its q and v thirds only (k is left alone, as in SPT). Both are
``nn.Linear`` subclasses, so the base weights keep SAM's state-dict keys (``...qkv.weight``) and
official checkpoints load into them unchanged. A is Kaiming-uniform, B is zero: an untrained
LoRA layer computes exactly what the base layer computes.
"""

from __future__ import annotations

import math
from typing import Iterator, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from samspt.training.modeling.config import LoraConfig


def _kaiming_(tensor: torch.Tensor) -> None:
    nn.init.kaiming_uniform_(tensor, a=math.sqrt(5))


class LoRALinear(nn.Linear):
    """``y = x W^T + b + scaling * (x A^T) B^T``; A: (rank, in), B: (out, rank)."""

    def __init__(self, in_features: int, out_features: int, lora: LoraConfig,
                 bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.rank = lora.rank
        self.scaling = lora.scaling
        self.lora_A = nn.Parameter(torch.empty(lora.rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, lora.rank))
        _kaiming_(self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(x, self.lora_A), self.lora_B)
        return F.linear(x, self.weight, self.bias) + update * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """The (out, in) update LoRA adds to ``weight``."""
        return (self.lora_B @ self.lora_A) * self.scaling


class LoRAQKV(nn.Linear):
    """A fused (3*dim, in) qkv projection with LoRA on its q and v rows, k untouched.

    ``groups`` 1: SAM's layout, rows [q; k; v]. ``groups`` H: the rows come per head, [q_h; k_h;
    v_h] for each of H heads (TinyViT's, MobileSAM's encoder), and q's (v's) LoRA update of
    ``dim`` rows is spread over the heads' q (v) rows in order."""

    def __init__(self, in_features: int, out_features: int, lora: LoraConfig,
                 bias: bool = True, groups: int = 1) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if groups < 1 or out_features % (3 * groups):
            raise ValueError(f"fused qkv needs out_features divisible by 3 x {groups} groups, "
                             f"got {out_features}")
        dim = out_features // 3
        self.groups = groups
        self.rank = lora.rank
        self.scaling = lora.scaling
        self.lora_A_q = nn.Parameter(torch.empty(lora.rank, in_features))
        self.lora_B_q = nn.Parameter(torch.zeros(dim, lora.rank))
        self.lora_A_v = nn.Parameter(torch.empty(lora.rank, in_features))
        self.lora_B_v = nn.Parameter(torch.zeros(dim, lora.rank))
        _kaiming_(self.lora_A_q)
        _kaiming_(self.lora_A_v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.linear(x, self.weight, self.bias)
        dq = F.linear(F.linear(x, self.lora_A_q), self.lora_B_q) * self.scaling
        dv = F.linear(F.linear(x, self.lora_A_v), self.lora_B_v) * self.scaling
        if self.groups == 1:
            q, k, v = base.chunk(3, dim=-1)
            return torch.cat([q + dq, k, v + dv], dim=-1)
        return base + self._spread(dq, dv)

    def _spread(self, dq: torch.Tensor, dv: torch.Tensor) -> torch.Tensor:
        """(..., dim) q and v updates -> (..., 3*dim) in the per-head row layout."""
        heads = self.groups
        dq, dv = dq.unflatten(-1, (heads, -1)), dv.unflatten(-1, (heads, -1))
        return torch.stack([dq, torch.zeros_like(dq), dv], dim=-2).flatten(-3)

    def delta_weight(self) -> torch.Tensor:
        """The (3*dim, in) update: q and v rows from LoRA, k rows zero."""
        dq = self.lora_B_q @ self.lora_A_q
        dv = self.lora_B_v @ self.lora_A_v
        if self.groups == 1:
            return torch.cat([dq, torch.zeros_like(dq), dv], dim=0) * self.scaling
        return self._spread(dq.T, dv.T).T * self.scaling


LORA_TYPES = (LoRALinear, LoRAQKV)


def lora_from_linear(cls: type, linear: nn.Linear, lora: LoraConfig, **options) -> nn.Linear:
    """A LoRA layer of type ``cls`` that shares ``linear``'s weight and bias tensors
    (``options``: the layer type's own, e.g. LoRAQKV's ``groups``)."""
    layer = cls(linear.in_features, linear.out_features, lora, bias=linear.bias is not None,
                **options)
    layer.weight = linear.weight
    if linear.bias is not None:
        layer.bias = linear.bias
    return layer.to(device=linear.weight.device, dtype=linear.weight.dtype)


def merged_linear(layer: nn.Linear) -> nn.Linear:
    """A plain ``nn.Linear`` computing what the LoRA ``layer`` computes (weight + delta)."""
    plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                      device=layer.weight.device, dtype=layer.weight.dtype)
    with torch.no_grad():
        delta = layer.delta_weight().to(torch.float64)
        plain.weight.copy_((layer.weight.to(torch.float64) + delta).to(layer.weight.dtype))
        if layer.bias is not None:
            plain.bias.copy_(layer.bias)
    return plain


def iter_lora_layers(module: nn.Module) -> Iterator[Tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute name, layer) for every LoRA layer below ``module``."""
    for parent in module.modules():
        for name, child in parent.named_children():
            if isinstance(child, LORA_TYPES):
                yield parent, name, child


def merge_lora_(module: nn.Module) -> nn.Module:
    """Replace, in place, every LoRA layer below ``module`` by its merged ``nn.Linear``."""
    for parent, name, layer in list(iter_lora_layers(module)):
        setattr(parent, name, merged_linear(layer))
    return module


def is_lora_parameter(name: str) -> bool:
    """True for the state-dict names of LoRA tensors (``...lora_A``, ``...lora_B_v``, ...)."""
    leaf = name.rsplit(".", 1)[-1]
    return leaf.startswith("lora_A") or leaf.startswith("lora_B")
