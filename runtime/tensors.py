"""Tensor names, prompt labels and shapes: the contract every stage shares.

Names follow Segment Anything's ONNX export where SAM has one. Prompts ride the batch axis:
one image embedding, ``B`` prompts, each made of ``N`` points with labels.

Encoder graph
    ``image``             Vx3xSxS float32, V views, normalised and zero-padded (see ``views``)
    -> ``image_embeddings``  VxC'xhxw float32 (SAM: C'=C=256, h=w=S/16). A model with SAM 2's
                          high-resolution features packs them after the C embedding channels
                          (C'=4C; samspt.training.modeling.high_res): still one tensor, opaque here.

Decoder graph (prompt encoder + draft decoder + relation adapter + refine decoder)
    ``image_embeddings``  1xC'xhxw float32 (one view, B prompts) or BxC'xhxw (one per prompt)
    ``point_coords``      BxNx2 float32, (x, y) in the encoder's input frame (resized image pixels)
    ``point_labels``      BxN float32, values in :data:`PROMPT_LABELS`
    -> ``draft_logits``   Bx1x(4h)x(4w) float32, low-resolution logits of the draft pass
    -> ``logits``         Bx1x(4h)x(4w) float32, low-resolution logits of the refine pass
    -> ``scores``         Bx1 float32, predicted IoU of the final mask
"""

from __future__ import annotations

IMAGE = "image"
IMAGE_EMBEDDINGS = "image_embeddings"
POINT_COORDS = "point_coords"
POINT_LABELS = "point_labels"
DRAFT_LOGITS = "draft_logits"
LOGITS = "logits"
SCORES = "scores"

ENCODER_INPUTS = (IMAGE,)
ENCODER_OUTPUTS = (IMAGE_EMBEDDINGS,)
DECODER_INPUTS = (IMAGE_EMBEDDINGS, POINT_COORDS, POINT_LABELS)
DECODER_OUTPUTS = (DRAFT_LOGITS, LOGITS, SCORES)

# Point labels, as SAM's ONNX model reads them.
LABEL_PADDING = -1
LABEL_BACKGROUND = 0
LABEL_FOREGROUND = 1
LABEL_BOX_TOP_LEFT = 2
LABEL_BOX_BOTTOM_RIGHT = 3
PROMPT_LABELS = (
    LABEL_PADDING,
    LABEL_BACKGROUND,
    LABEL_FOREGROUND,
    LABEL_BOX_TOP_LEFT,
    LABEL_BOX_BOTTOM_RIGHT,
)

# Low-resolution masks are this many times the image-embedding size (SAM: 64 -> 256).
LOW_RES_UPSCALE = 4
