"""Training configuration: strict keys, overrides, validation; schedules; losses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from samspt.runtime.errors import ConfigError
from samspt.training.loss_weights import LossWeights
from samspt.training.losses import dice_loss, spt_loss
from samspt.training.schedule import lr_factor
from samspt.training.train_config import load_train_config

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = load_train_config(path)
    assert config.name == path.stem


def test_overrides_are_typed_and_nested(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 3e-4\n  epochs: 2\nmodel:\n  type: tiny\n  mode: full\n")
    config = load_train_config(path, ["optim.lr=1e-2", "data.box_mode=region",
                                      "optim.milestones=[10, 20]"])
    assert config.optim.lr == pytest.approx(1e-2) and config.optim.epochs == 2
    assert config.data.box_mode == "region" and config.optim.milestones == [10, 20]
    assert config.model.type == "tiny"
    # The resolved config round-trips through its own YAML.
    again = tmp_path / "again.yaml"
    again.write_text(config.to_yaml())
    assert load_train_config(again) == config


@pytest.mark.parametrize("text,match", [
    ("optim:\n  lrr: 1\n", "unknown key optim.lrr; known keys here: amp"),
    ("mdoel:\n  type: tiny\n", "unknown key mdoel"),
    ("optim:\n  batch_size: 2.5\n", "optim.batch_size must be an integer"),
    ("optim:\n  lr: fast\n", "optim.lr must be a number"),
    ("data:\n  augment: maybe\n", "data.augment must be true or false"),
    ("optim: 3\n", "optim must be a mapping"),
    ("model:\n  mode: half\n", "model.mode must be spt or full"),
    ("data:\n  val_fraction: 1.5\n", "val_fraction"),
    ("data:\n  test_fraction: 0.8\n", "data.test_fraction must be in"),
    ("optim: [\n", "not valid YAML"),
    ("loss:\n  defect_share: 1.0\n", "loss.defect_share must be in"),
    ("loss:\n  empty_mask: -0.5\n", "loss.empty_mask must be in"),
])
def test_bad_configs_say_what_is_wrong(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_train_config(path)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key=value"):
        load_train_config(None, ["optim.lr"])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_train_config(tmp_path / "nope.yaml")


def test_schedules():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(99, 100, 10, "cosine") < 0.02
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.505, abs=0.01)
    assert lr_factor(50, 100, 0, "step", milestones=[20, 40], gamma=0.1) == pytest.approx(0.01)
    assert lr_factor(30, 100, 0, "constant") == 1.0
    with pytest.raises(ConfigError, match="cosine"):
        lr_factor(0, 10, 0, "linear")


def test_dice_and_bce_losses_reward_the_right_mask():
    targets = torch.zeros(2, 8, 8)
    targets[:, 2:5, 2:5] = 1
    perfect = (targets * 2 - 1) * 20
    wrong = -perfect
    assert dice_loss(perfect, targets).mean() < 0.01 < 0.9 < dice_loss(wrong, targets).mean()
    low = torch.nn.functional.interpolate(perfect[:, None], (2, 2), mode="area")
    terms = spt_loss(low, low, torch.ones(2, 1), targets, LossWeights(score=1.0))
    assert set(terms) == {"loss", "draft", "final", "score"}
    assert terms["loss"] == pytest.approx(terms["draft"] + terms["final"] + terms["score"])


def test_draft_weight_zero_removes_draft_supervision():
    targets = torch.ones(1, 8, 8)
    draft = torch.zeros(1, 1, 2, 2, requires_grad=True)
    final = torch.zeros(1, 1, 2, 2, requires_grad=True)
    spt_loss(draft, final, torch.zeros(1, 1), targets, LossWeights(draft=0.0))["loss"].backward()
    assert draft.grad.abs().sum() == 0 and final.grad.abs().sum() > 0


def test_focus_masks_cover_each_box_with_a_margin():
    from samspt.training.losses import focus_masks

    coords = torch.tensor([[[10.0, 20.0], [29.0, 39.0]], [[5.0, 5.0], [0.0, 0.0]]])
    labels = torch.tensor([[2.0, 3.0], [1.0, -1.0]])
    focus = focus_masks(coords, labels, 64, margin=0.25)
    ys, xs = torch.nonzero(focus[0], as_tuple=True)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (5, 34, 15, 44)
    assert focus[1].all()  # a point prompt has no box: the whole image is in focus


def test_focused_bce_does_not_let_a_small_defect_drown():
    """All-background logits on a tiny defect: whole-image BCE barely notices, focused BCE does."""
    from samspt.training.losses import focus_masks, mask_loss

    targets = torch.zeros(1, 128, 128)
    targets[0, 60:63, 60:63] = 1  # 9 of 16384 pixels
    logits = torch.full((1, 128, 128), -6.0)
    coords = torch.tensor([[[60.0, 60.0], [62.0, 62.0]]])
    labels = torch.tensor([[2.0, 3.0]])
    plain = mask_loss(logits, targets, LossWeights(dice=0.0))
    focused = mask_loss(logits, targets, LossWeights(dice=0.0),
                        focus_masks(coords, labels, 128, 0.25))
    assert plain < 0.01 < 1.0 < focused


def test_empty_mask_weight_leaves_prompts_with_empty_targets_out_of_the_mask_loss():
    from samspt.training.losses import mask_loss

    torch.manual_seed(0)
    targets = torch.zeros(2, 8, 8)
    targets[0, 2:5, 2:5] = 1.0                      # prompt 0 a defect, prompt 1 empty
    logits = torch.randn(2, 8, 8)
    positive_only = mask_loss(logits[:1], targets[:1], LossWeights())
    ignored = mask_loss(logits, targets, LossWeights(empty_mask=0.0))
    assert torch.allclose(ignored, positive_only)
    both = mask_loss(logits, targets, LossWeights())
    assert not torch.allclose(both, positive_only)
    logits[1] = 50.0                                # a mask drawn where there is nothing
    assert torch.allclose(mask_loss(logits, targets, LossWeights(empty_mask=0.0)), ignored)
