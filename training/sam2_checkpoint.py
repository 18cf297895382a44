"""SAM 2.1 checkpoints (``sam2.1_hiera_*.pt``, ``{"model": state_dict}``) in SAM's key layout.

SAM 2's image path maps onto SPT's modules as follows; the rest of the checkpoint is the video
memory, out of scope for single images, and is set aside by name (never silently: any other key
fails the strict check as SAM's do).

* ``image_encoder.*`` (Hiera trunk, FPN neck) -> ``image_encoder.*``
* ``no_mem_embed`` and ``sam_mask_decoder.conv_s0/conv_s1.*`` -> ``image_encoder.*``
  (computed once per image: :class:`samspt.training.modeling.hiera_encoder.HieraEncoder`)
* ``sam_prompt_encoder.*`` -> ``prompt_encoder.*``
* ``sam_mask_decoder.*`` -> ``mask_decoder.*``, the two-way blocks' MLPs renamed from sam2's
  ``MLP`` (``mlp.layers.0/1``) to segment-anything's ``MLPBlock`` (``mlp.lin1/lin2``): the same
  two linear layers with a ReLU between.
"""

from __future__ import annotations

import logging
import re
from typing import Dict, Mapping, Optional, Tuple

import torch

log = logging.getLogger(__name__)

SAM2_DECODER = "sam_mask_decoder."
SAM2_PROMPT_ENCODER = "sam_prompt_encoder."
# SAM2Base's video-memory tensors: not part of the single-image path.
MEMORY_PREFIXES = ("memory_attention.", "memory_encoder.", "mask_downsample.", "obj_ptr_proj.",
                   "obj_ptr_tpos_proj.")
MEMORY_TENSORS = ("maskmem_tpos_enc", "no_mem_pos_enc", "no_obj_embed_spatial", "no_obj_ptr")
_MLP = re.compile(r"(transformer\.layers\.\d+\.mlp\.)layers\.([01])\.")
TRUNK_PATCH = "image_encoder.trunk.patch_embed.proj.weight"


def is_sam2_layout(state: Mapping[str, torch.Tensor]) -> bool:
    """True for a SAM 2 model's state dict (its decoder is ``sam_mask_decoder.*``)."""
    return any(k.startswith(SAM2_DECODER) for k in state)


def is_memory_key(key: str) -> bool:
    return key.startswith(MEMORY_PREFIXES) or key in MEMORY_TENSORS


def sam2_to_sam_keys(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """SAM 2's image-path tensors under SAM's names (``image_encoder.*``, ``prompt_encoder.*``,
    ``mask_decoder.*``); the video memory's tensors left out."""
    out: Dict[str, torch.Tensor] = {}
    memory = 0
    for key, value in state.items():
        if is_memory_key(key):
            memory += 1
            continue
        if key == "no_mem_embed":
            key = "image_encoder.no_mem_embed"
        elif key.startswith(SAM2_DECODER + "conv_s"):
            key = "image_encoder." + key[len(SAM2_DECODER):]
        elif key.startswith(SAM2_DECODER):
            key = "mask_decoder." + _MLP.sub(
                lambda m: m.group(1) + ("lin1." if m.group(2) == "0" else "lin2."),
                key[len(SAM2_DECODER):])
        elif key.startswith(SAM2_PROMPT_ENCODER):
            key = "prompt_encoder." + key[len(SAM2_PROMPT_ENCODER):]
        out[key] = value
    log.info("SAM 2 checkpoint: %d image-path tensors, %d video-memory tensors set aside",
             len(out), memory)
    return out


def hiera_shape(state: Mapping[str, torch.Tensor]) -> Optional[Tuple[int, Tuple[int, ...]]]:
    """(first stage width, blocks per stage) of a Hiera trunk's tensors, or None. A stage
    starts at each block that changes the width (it has a ``proj``)."""
    patch = state.get(TRUNK_PATCH)
    if patch is None:
        return None
    prefix = "image_encoder.trunk.blocks."
    blocks = {int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix)}
    if not blocks:
        return None
    starts = sorted({0} | {b for b in blocks if f"{prefix}{b}.proj.weight" in state})
    ends = starts[1:] + [max(blocks) + 1]
    return int(patch.shape[0]), tuple(e - s for s, e in zip(starts, ends))
