"""Import of the SPT paper authors' released checkpoints (``spt_vit_{b,l,h}.pth``, THU-MIG/SAM-SPT).

Their layout (loralib):

* encoder ``image_encoder.blocks.{i}.attn.qkv`` is a ``MergedLinear`` with
  ``enable_lora=[True, False, True]``: ``lora_A`` (2r, dim), ``lora_B`` (2*dim, r), applied group
  by group: rows ``[:r]`` of A with rows ``[:dim]`` of B give q's update, the rest give v's;
* decoder ``q_proj``/``v_proj`` are loralib ``Linear``: ``lora_A`` (r, in), ``lora_B`` (out, r);
* each two-way block holds ``lora_sim_scale`` (C), our relation scale;
* their ``mask_decoder.*`` is the *draft* decoder and their ``draft_decoder.*`` the *refine*
  decoder. Scaling alpha/r = 1/8 is not stored (loralib's default alpha 1).
"""

from __future__ import annotations

import logging
import re
from typing import Dict, Mapping, Optional, Tuple

import torch

from samspt.runtime.errors import CheckpointError
from samspt.training.checkpoints import StateDict, infer_model_type
from samspt.training.modeling.config import MODEL_CONFIGS, LoraConfig, ModelConfig
from samspt.training.modeling.model import SptSam

log = logging.getLogger(__name__)

# Their decoder prefix -> ours.
AUTHORS_DECODERS = {"mask_decoder.": "draft_decoder.", "draft_decoder.": "refine_decoder."}
AUTHORS_LORA_ALPHA = 1.0
_ENCODER_QKV = re.compile(r"^image_encoder\.blocks\.(\d+)\.attn\.qkv\.lora_([AB])$")
_SIM_SCALE = re.compile(r"^(.*transformer\.layers\.(\d+))\.lora_sim_scale$")


def infer_authors_config(state: Mapping[str, torch.Tensor]) -> Tuple[ModelConfig, int]:
    """(configuration, LoRA rank) of an authors' checkpoint, from its LoRA tensor shapes."""
    found = infer_model_type(state)
    encoder = {int(m.group(1)): v for k, v in state.items()
               if (m := _ENCODER_QKV.match(k)) and m.group(2) == "A"}
    if not encoder:
        raise CheckpointError("no image_encoder.blocks.*.attn.qkv.lora_A tensors: this is not an "
                              "SPT checkpoint of the paper authors")
    lora_a = encoder[0]
    rank, width, depth = lora_a.shape[0] // 2, lora_a.shape[1], max(encoder) + 1
    if found is None:
        matches = [name for name, c in MODEL_CONFIGS.items()
                   if (c.encoder_embed_dim, c.encoder_depth) == (width, depth)]
        if not matches:
            raise CheckpointError(f"authors' checkpoint has an encoder of width {width} and depth "
                                  f"{depth}, which matches no known model type")
        found = matches[0]
    return MODEL_CONFIGS[found], rank


def convert_authors_state_dict(state: Mapping[str, torch.Tensor],
                               config: Optional[ModelConfig] = None) -> Tuple[StateDict, SptSam]:
    """Convert the authors' tensors to samspt's names; returns (tensors, an SptSam to load into).

    Only the trained tensors are converted; base weights in the file are ignored (they come from
    the SAM checkpoint). Raises :class:`CheckpointError` naming what is missing or misshapen.
    """
    inferred, rank = infer_authors_config(state)
    config = config or inferred
    if config.name != inferred.name:
        raise CheckpointError(f"the authors' checkpoint is for {inferred.name}, not {config.name}")
    model = SptSam(config, LoraConfig(rank, AUTHORS_LORA_ALPHA))
    dim = config.encoder_embed_dim
    out: StateDict = {}
    ignored = 0
    for key, value in state.items():
        if (match := _ENCODER_QKV.match(key)):
            prefix = f"image_encoder.blocks.{match.group(1)}.attn.qkv."
            if match.group(2) == "A":
                _expect(key, value, (2 * rank, dim))
                out[prefix + "lora_A_q"], out[prefix + "lora_A_v"] = value[:rank], value[rank:]
            else:
                _expect(key, value, (2 * dim, rank))
                out[prefix + "lora_B_q"], out[prefix + "lora_B_v"] = value[:dim], value[dim:]
            continue
        renamed = _rename_decoder_key(key)
        if renamed is not None and (match := _SIM_SCALE.match(renamed)):
            decoder = renamed.split(".", 1)[0]
            out[f"{decoder}.relation_scales.{match.group(2)}"] = value
        elif renamed is not None and renamed.endswith((".lora_A", ".lora_B")):
            out[renamed] = value
        elif "lora" in key:  # what their training trains: never dropped silently
            raise CheckpointError(f"authors' checkpoint holds a trained tensor samspt does not "
                                  f"know: {key} {tuple(value.shape)}; it would be lost in the "
                                  "conversion")
        else:
            ignored += 1
    if ignored:
        log.info("ignored %d base-weight tensors of the authors' checkpoint (SAM's weights come "
                 "from the SAM checkpoint)", ignored)
    expected = model.spt_state_dict()
    missing, unexpected = set(expected) - set(out), set(out) - set(expected)
    if missing or unexpected:
        raise CheckpointError(f"authors' checkpoint does not convert cleanly: missing "
                              f"{sorted(missing)[:6]}, unexpected {sorted(unexpected)[:6]}")
    for key, value in out.items():
        _expect(key, value, tuple(expected[key].shape))
    return {k: v.detach().to(torch.float32).contiguous() for k, v in out.items()}, model


def _rename_decoder_key(key: str) -> Optional[str]:
    for theirs, ours in AUTHORS_DECODERS.items():
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    return None


def _expect(key: str, value: torch.Tensor, shape: Tuple[int, ...]) -> None:
    if tuple(value.shape) != shape:
        raise CheckpointError(f"authors' tensor {key} has shape {tuple(value.shape)}, expected "
                              f"{shape}")


def authors_extra_metadata(source_name: str, sha256: str) -> Dict[str, str]:
    return {"converted_from": source_name, "converted_from_sha256": sha256}
