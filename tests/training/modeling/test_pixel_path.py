"""The model's path to pixels: the conv family's pixel decoder (top-down high-res features), the
residual refinement of the decoders' upscaling, the box as a dense prompt and at mask
resolution."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from samspt.runtime.errors import ConfigError
from samspt.training.modeling.config import get_config
from samspt.training.modeling.model import SptSam, is_spt_parameter

from ...conftest import randomize_spt_

FLAGS = {"pixel_decoder": True, "upscale_convs": True, "box_dense_prompt": True,
         "box_high_res": True}


def _prompts():
    coords = torch.tensor([[[4.0, 6.0], [40.0, 30.0]], [[20.0, 20.0], [0.0, 0.0]]])
    labels = torch.tensor([[2.0, 3.0], [1.0, -1.0]])  # a box; a point
    return coords, labels


def test_untrained_additions_compute_what_the_model_without_them_computes():
    """The upscaling blocks and the box vectors start at zero: a model with them, holding the
    same other weights, gives the same logits and scores (SPT on a pretrained SAM starts as SAM)."""
    base_config = get_config("cnn_tiny")
    torch.manual_seed(0)
    base = randomize_spt_(SptSam(base_config), scale=0.2).eval()
    more = SptSam(dataclasses.replace(base_config, upscale_convs=True,
                                      box_dense_prompt=True, box_high_res=True)).eval()
    missing, unexpected = more.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected
    assert missing and all(is_spt_parameter(k) for k in missing)
    coords, labels = _prompts()
    with torch.no_grad():
        emb = base.encode(torch.randn(1, 3, 64, 64))
        a, b = base.decode(emb, coords, labels), more.decode(emb, coords, labels)
    for x, y in ((a.draft_logits, b.draft_logits), (a.logits, b.logits), (a.scores, b.scores)):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6)


def test_the_box_dense_prompt_marks_the_tokens_inside_each_box_only():
    config = dataclasses.replace(get_config("cnn_tiny"), box_dense_prompt=True)
    model = SptSam(config)
    coords = torch.tensor([[[4.0, 6.0], [40.0, 30.0]], [[33.0, 33.0], [34.0, 34.0]],
                           [[20.0, 20.0], [0.0, 0.0]]])
    labels = torch.tensor([[2.0, 3.0], [2.0, 3.0], [1.0, -1.0]])
    inside = model._inside_box(coords, labels)[:, 0]  # 8x8 tokens of 8 px
    assert inside.shape == (3, 8, 8)
    # The box x 4..40, y 6..30 holds the cell centres 4, 12, 20, 28, 36 (x) and 12, 20, 28 (y),
    # and those within half a cell of it: x cells 0..5, y cells 0..3.
    expected = torch.zeros(8, 8)
    expected[0:4, 0:6] = 1
    assert torch.equal(inside[0], expected)
    assert inside[1].sum() >= 1          # a box smaller than a cell still marks one token
    assert inside[2].sum() == 0          # a point prompt has no box


def test_the_box_at_mask_resolution_marks_the_pixels_inside_each_box_only():
    config = dataclasses.replace(get_config("cnn_tiny"), box_high_res=True)
    model = SptSam(config)
    coords = torch.tensor([[[4.0, 6.0], [40.0, 30.0]], [[20.0, 20.0], [0.0, 0.0]]])
    labels = torch.tensor([[2.0, 3.0], [1.0, -1.0]])
    coarse, fine = model._inside_box_fine(coords, labels)   # 16x16 cells of 4 px, 32x32 of 2 px
    assert coarse.shape == (2, 1, 16, 16) and fine.shape == (2, 1, 32, 32)
    # x 4..40 (pixels 4 to 40 inclusive, so up to 41) and y 6..30 with half a cell of slack:
    # cell centres 2 + 4k in [2, 43] (x) and [4, 33] (y) -> x cells 0..10, y cells 1..7.
    expected = torch.zeros(16, 16)
    expected[1:8, 0:11] = 1
    assert torch.equal(coarse[0, 0], expected)
    assert fine[0, 0].sum() > 4 * coarse[0, 0].sum() - 40   # the same box, four times the cells
    assert coarse[1].sum() == 0 and fine[1].sum() == 0      # a point prompt has no box


def test_a_box_at_mask_resolution_needs_the_high_res_features():
    with pytest.raises(ConfigError, match="box_high_res"):
        dataclasses.replace(get_config("cnn_tiny"), high_res_features=False, box_high_res=True)


def test_the_box_dense_prompt_and_the_upscale_blocks_change_the_answer_once_trained():
    torch.manual_seed(0)
    config = dataclasses.replace(get_config("cnn_tiny"), **FLAGS)
    model = randomize_spt_(SptSam(config), scale=0.2).eval()
    coords, labels = _prompts()
    with torch.no_grad():
        emb = model.encode(torch.randn(1, 3, 64, 64))
        before = model.decode(emb, coords, labels).draft_logits
        model.box_dense.normal_()
        boxed = model.decode(emb, coords, labels).draft_logits
        for block in model.draft_decoder.upscale_refine:
            block.conv_b.weight.normal_(std=0.1)
        refined = model.decode(emb, coords, labels).draft_logits
        for vectors in model.box_high_res:
            vectors.normal_()
        fine = model.decode(emb, coords, labels).draft_logits
    assert (boxed[0] - before[0]).abs().amax() > 1e-3      # the box prompt's answer moved
    torch.testing.assert_close(boxed[1], before[1])        # the point prompt's did not
    assert (refined - boxed).abs().amax() > 1e-3
    assert (fine[0] - refined[0]).abs().amax() > 1e-3      # the box at mask resolution too
    torch.testing.assert_close(fine[1], refined[1])


def test_the_pixel_decoder_carries_deep_features_to_the_fine_ones():
    """With the top-down path, the stride-2 features depend on what the deepest layer saw: an
    input change far from a pixel (beyond the first layers' receptive field) moves that pixel's
    fine features; with 1x1 projections of the first layers it cannot."""
    torch.manual_seed(0)
    config = dataclasses.replace(get_config("cnn_tiny"), pixel_decoder=True)
    dim = config.prompt_embed_dim
    moved = {}
    for flag in (False, True):
        torch.manual_seed(0)
        model = SptSam(dataclasses.replace(config, pixel_decoder=flag)).eval()
        image = torch.randn(1, 3, 64, 64)
        other = image.clone()
        other[..., 24:, 24:] += 2.0
        with torch.no_grad():
            fine = [model.encode(x)[:, 2 * dim:] for x in (image, other)]
        # fine features are folded 4x onto 8x8 tokens: token (0, 0) holds pixels 0..3 of the
        # stride-2 grid, i.e. input pixels 0..7, beyond the first layers' reach of the change at 24+.
        moved[flag] = float((fine[0] - fine[1])[:, :, 0, 0].abs().amax())
    assert moved[False] == 0.0
    assert moved[True] > 1e-4


def test_a_pixel_decoder_needs_the_high_res_features():
    with pytest.raises(ConfigError, match="pixel_decoder"):
        dataclasses.replace(get_config("cnn_tiny"), high_res_features=False, pixel_decoder=True)


def test_the_additions_export_and_pass_the_parity_gates(tmp_path):
    """All four in the graphs: the FP32 and FP16 parity gates pass, and the Inspector answers
    through the folder what PyTorch answers."""
    from samspt.export.onnx_export import export_model
    from samspt.runtime import Inspector
    from samspt.runtime.samples import bundled_verify_images
    from samspt.training.predict import predict

    torch.manual_seed(0)
    model = randomize_spt_(SptSam(dataclasses.replace(get_config("cnn_tiny"), **FLAGS)),
                           scale=0.2)
    with torch.no_grad():
        model.box_dense.normal_(std=0.5)
        for vectors in model.box_high_res:
            vectors.normal_(std=0.5)
        for decoder in (model.draft_decoder, model.refine_decoder):
            for block in decoder.upscale_refine:
                block.conv_b.weight.normal_(std=0.05)
    model.eval()
    images = bundled_verify_images()[:2]
    result = export_model(model, tmp_path / "m", "m", verify_images=images)
    verification = result.manifest.verification
    assert verification["fp32"]["mean_iou"] >= 0.999
    _, image, boxes = images[0]
    box = boxes[:1]
    with Inspector(tmp_path / "m") as inspector:
        answer = inspector.inspect(image, boxes=box)
    expected = predict(model, image, boxes=box)
    agree = (answer.masks[0] == expected.masks[0]).mean()
    assert agree > 0.995
