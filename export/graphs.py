"""Export-only views of the SPT model: what each ONNX graph computes.

* Encoder graph: the LoRA-merged image encoder (a plain segment-anything ``ImageEncoderViT``, or
  the conv family's timm trunk and neck), on a batch of V views.
* Decoder graph: prompt encoder + draft decoder + relation adapter + refine decoder. The relation
  is built once per call from the image embedding (its own ``/relation/`` scope) and shared by
  both decoders and all B prompts.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from samspt.runtime import tensors
from samspt.training.modeling.model import SptSam


class DecoderGraph(nn.Module):
    """(image_embeddings 1xCxhxw, point_coords BxNx2, point_labels BxN) ->
    (draft_logits Bx1x4hx4w, logits Bx1x4hx4w, scores Bx1)."""

    def __init__(self, model: SptSam) -> None:
        super().__init__()
        self.model = model

    def forward(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor,
                point_labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model.decode(image_embeddings, point_coords, point_labels)
        return out.draft_logits, out.logits, out.scores


def example_inputs(model: SptSam, prompts: int = 2, points: int = 3):
    """Dummy inputs for tracing: (image,), (embedding, coords, labels)."""
    config = model.config
    size = config.embedding_size
    image = torch.zeros(1, 3, config.image_size, config.image_size)
    embedding = torch.randn(1, config.embedding_channels, size, size,
                            generator=torch.Generator().manual_seed(0))
    coords = torch.rand(prompts, points, 2, generator=torch.Generator().manual_seed(1)) * \
        config.image_size
    labels = torch.tensor([tensors.LABEL_BOX_TOP_LEFT, tensors.LABEL_BOX_BOTTOM_RIGHT] +
                          [tensors.LABEL_FOREGROUND] * (points - 2),
                          dtype=torch.float32).repeat(prompts, 1)
    return (image,), (embedding, coords, labels)


# The encoder takes a batch of V views (ONNX Runtime encodes all of a call's views at once).
ENCODER_DYNAMIC_AXES = {tensors.IMAGE: {0: "V"}, tensors.IMAGE_EMBEDDINGS: {0: "V"}}

DECODER_DYNAMIC_AXES = {
    tensors.POINT_COORDS: {0: "B", 1: "N"},
    tensors.POINT_LABELS: {0: "B", 1: "N"},
    tensors.DRAFT_LOGITS: {0: "B"},
    tensors.LOGITS: {0: "B"},
    tensors.SCORES: {0: "B"},
}
