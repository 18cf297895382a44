"""The box region rule shared by the focused loss and the model's box clip."""

from __future__ import annotations

import dataclasses

import torch

from samspt.training.modeling.box_region import CLIPPED_LOGIT, box_region, clip_to_boxes
from samspt.training.checkpoints import build_model
from samspt.training.modeling.config import get_config
from samspt.training.loss_weights import LossWeights
from samspt.training.losses import mask_loss
from samspt.training.modeling.model import SptSam

BOX = torch.tensor([[[16.0, 8.0], [31.0, 39.0]]])  # x 16..31, y 8..39 inclusive, 64 px frame
BOX_LABELS = torch.tensor([[2.0, 3.0]])


def test_region_on_a_coarse_grid_holds_the_box_cells_and_one_cell_of_slack():
    region = box_region(BOX, BOX_LABELS, image_size=64, grid=16, margin=0.0, slack_cells=1.0)
    ys, xs = torch.nonzero(region[0], as_tuple=True)
    # 4-px cells: the box spans cells x 4..7, y 2..9; one cell of slack each side.
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (3, 8, 1, 10)


def test_prompts_without_a_box_are_never_clipped():
    coords = torch.tensor([[[20.0, 20.0], [0.0, 0.0]]])
    labels = torch.tensor([[1.0, -1.0]])
    logits = torch.randn(1, 1, 16, 16)
    assert torch.equal(clip_to_boxes(logits, coords, labels, 64, 0.0), logits)


def test_clip_keeps_logits_inside_and_sets_the_rest():
    logits = torch.randn(1, 1, 16, 16)
    clipped = clip_to_boxes(logits, BOX, BOX_LABELS, 64, 0.0)
    region = box_region(BOX, BOX_LABELS, 64, 16, 0.0, slack_cells=1.0)[0]
    assert torch.equal(clipped[0, 0][region], logits[0, 0][region])
    assert (clipped[0, 0][~region] == CLIPPED_LOGIT).all()
    # A bigger margin keeps more.
    wider = clip_to_boxes(logits, BOX, BOX_LABELS, 64, 0.5)
    assert (wider != CLIPPED_LOGIT).sum() > (clipped != CLIPPED_LOGIT).sum()


def test_a_clipping_model_never_answers_outside_its_box():
    torch.manual_seed(0)
    config = dataclasses.replace(get_config("tiny"), box_clip_margin=0.0)
    model = SptSam(config).eval()
    plain = build_model("tiny").eval()
    plain.load_state_dict(model.state_dict())
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model(image, BOX, BOX_LABELS)
        ref = plain(image, BOX, BOX_LABELS)
    region = box_region(BOX, BOX_LABELS, 64, out.logits.shape[-1], 0.0, slack_cells=1.0)[0]
    for logits in (out.draft_logits, out.logits):
        assert (logits[0, 0][~region] == CLIPPED_LOGIT).all()
    # Inside the box the draft is the unclipped model's draft.
    assert torch.allclose(out.draft_logits[0, 0][region], ref.draft_logits[0, 0][region])


def test_balanced_bce_weighs_a_thin_defect_as_much_as_its_background():
    targets = torch.zeros(1, 32, 32)
    targets[0, 10:30, 15] = 1  # a one-pixel-wide crack in a 20x20 box
    focus = torch.zeros(1, 32, 32, dtype=torch.bool)
    focus[0, 10:30, 6:26] = True
    nothing = torch.full((1, 32, 32), -4.0)
    plain = mask_loss(nothing, targets, LossWeights(dice=0.0, outside=0.0), focus)
    balanced = mask_loss(nothing, targets, LossWeights(dice=0.0, outside=0.0, defect_share=0.5), focus)
    assert balanced > 5 * plain  # "nothing" is no longer cheap
    # With no defect pixels, the balanced loss is the background mean.
    empty = torch.zeros_like(targets)
    assert torch.allclose(mask_loss(nothing, empty, LossWeights(dice=0.0, outside=0.0, defect_share=0.5),
                                    focus),
                          mask_loss(nothing, empty, LossWeights(dice=0.0, outside=0.0), focus))
