"""SPT model: equality with segment-anything when untrained, self-drafting, train modes, merge."""

from __future__ import annotations

import pytest
import torch
from segment_anything.modeling import ImageEncoderViT
from torch import nn

from samspt.runtime.errors import ConfigError
from samspt.training.modeling.config import LoraConfig, get_config
from samspt.training.modeling.lora import LoRAQKV, iter_lora_layers
from samspt.training.modeling.model import SptSam

from ...conftest import randomize_spt_


def _image(config, seed=0):
    return torch.randn(1, 3, config.image_size, config.image_size,
                       generator=torch.Generator().manual_seed(seed))


def _sam_input(sam, image):
    # Sam.forward normalises itself: hand it the un-normalised image.
    return image[0] * sam.pixel_std + sam.pixel_mean


BOXES = torch.tensor([[5.0, 6.0, 40.0, 50.0], [1.0, 2.0, 30.0, 20.0], [10.0, 10.0, 63.0, 63.0]])


def test_untrained_draft_equals_segment_anything_for_boxes(tiny_sam, tiny_spt, tiny_config):
    image = _image(tiny_config)
    coords = BOXES.reshape(-1, 2, 2)
    labels = torch.tensor([[2.0, 3.0]]).expand(3, 2)
    with torch.no_grad():
        ours = tiny_spt(image, coords, labels)
        ref = tiny_sam([{"image": _sam_input(tiny_sam, image), "original_size": (64, 64),
                         "boxes": BOXES}], multimask_output=False)[0]
    torch.testing.assert_close(ours.draft_logits, ref["low_res_logits"], atol=1e-5, rtol=1e-5)
    assert ours.logits.shape == (3, 1, 32, 32)
    assert ours.scores.shape == (3, 1)


def test_untrained_draft_equals_segment_anything_for_points(tiny_sam, tiny_spt, tiny_config):
    image = _image(tiny_config, seed=3)
    points = torch.tensor([[[20.0, 30.0], [40.0, 12.0]], [[5.0, 5.0], [60.0, 61.0]]])
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # SAM pads point-only prompts with one (0, 0) point labelled -1; the contract does the same.
    coords = torch.cat([points, torch.zeros(2, 1, 2)], dim=1)
    padded = torch.cat([labels, -torch.ones(2, 1)], dim=1)
    with torch.no_grad():
        ours = tiny_spt(image, coords, padded)
        ref = tiny_sam([{"image": _sam_input(tiny_sam, image), "original_size": (64, 64),
                         "point_coords": points, "point_labels": labels}],
                       multimask_output=False)[0]
    torch.testing.assert_close(ours.draft_logits, ref["low_res_logits"], atol=1e-5, rtol=1e-5)


def test_refine_takes_the_draft_as_its_mask_prompt(tiny_spt, tiny_config):
    image = _image(tiny_config)
    coords, labels = BOXES.reshape(-1, 2, 2), torch.tensor([[2.0, 3.0]]).expand(3, 2)
    with torch.no_grad():
        before = tiny_spt(image, coords, labels)
        # Changing only the draft decoder's LoRA must change the final logits (through the mask
        # prompt) as well as the draft.
        randomize_spt_(tiny_spt.draft_decoder, scale=0.5)
        after = tiny_spt(image, coords, labels)
    assert not torch.allclose(before.draft_logits, after.draft_logits)
    assert not torch.allclose(before.logits, after.logits)


def test_draft_is_detached_from_refine_loss(tiny_spt, tiny_config):
    tiny_spt.set_train_mode("spt")
    randomize_spt_(tiny_spt)
    out = tiny_spt(_image(tiny_config), BOXES[:1].reshape(1, 2, 2), torch.tensor([[2.0, 3.0]]))
    out.logits.sum().backward()
    # The refine loss reaches the draft decoder only through the (detached) draft: not at all.
    assert all(p.grad is None for p in tiny_spt.draft_decoder.parameters())
    assert any(p.grad is not None for p in tiny_spt.refine_decoder.parameters())


def test_prompts_of_one_image_are_independent(tiny_spt, tiny_config):
    randomize_spt_(tiny_spt)
    image = _image(tiny_config)
    coords, labels = BOXES.reshape(-1, 2, 2), torch.tensor([[2.0, 3.0]]).expand(3, 2)
    with torch.no_grad():
        batched = tiny_spt(image, coords, labels)
        single = tiny_spt(image, coords[1:2], labels[1:2])
    torch.testing.assert_close(batched.logits[1:2], single.logits, atol=1e-5, rtol=1e-5)


def _expected_spt_count(config, rank=8):
    encoder = config.encoder_depth * 2 * rank * (2 * config.encoder_embed_dim)
    c = config.prompt_embed_dim
    self_attn = 2 * rank * (c + c)
    cross = 2 * rank * (c + c // 2)  # downsample rate 2
    per_decoder = config.decoder_depth * (self_attn + 2 * cross) + cross + config.decoder_depth * c
    return encoder + 2 * per_decoder


@pytest.mark.parametrize("name", ["tiny", "small", "vit_b"])
def test_trainable_parameter_counts(name):
    model = SptSam(get_config(name))
    assert model.set_train_mode("spt") == _expected_spt_count(model.config)
    assert model.set_train_mode("full") == sum(p.numel() for p in model.parameters())
    if name == "vit_b":
        assert model.set_train_mode("spt") == 390_144  # "about 0.39 M" of the paper


def test_spt_mode_trains_only_lora_and_relation_scales(tiny_spt):
    tiny_spt.set_train_mode("spt")
    names = {n for n, p in tiny_spt.named_parameters() if p.requires_grad}
    assert names and all(".lora_" in n or ".relation_scales." in n for n in names)
    assert not any("k_proj" in n or "out_proj" in n for n in names)


def test_unknown_train_mode_is_a_clear_error(tiny_spt):
    with pytest.raises(ConfigError, match="spt"):
        tiny_spt.set_train_mode("partial")


def test_lora_layout_and_initialisation(tiny_spt, tiny_config):
    qkv = [m for _, _, m in iter_lora_layers(tiny_spt.image_encoder)]
    assert len(qkv) == tiny_config.encoder_depth and all(isinstance(m, LoRAQKV) for m in qkv)
    decoder_layers = [(p, n) for p, n, _ in iter_lora_layers(tiny_spt.draft_decoder)]
    # 3 attentions per block + the final token-to-image attention, q and v each.
    assert len(decoder_layers) == 2 * (3 * tiny_config.decoder_depth + 1)
    assert {n for _, n in decoder_layers} == {"q_proj", "v_proj"}
    for layer in qkv:
        assert layer.lora_A_q.abs().sum() > 0 and layer.lora_B_q.abs().sum() == 0
        assert layer.scaling == pytest.approx(1 / 8)


def test_qkv_lora_leaves_k_alone():
    layer = LoRAQKV(12, 36, LoraConfig(rank=2))
    with torch.no_grad():
        layer.lora_B_q.normal_()
        layer.lora_B_v.normal_()
    x = torch.randn(5, 12)
    base = torch.nn.functional.linear(x, layer.weight, layer.bias)
    out = layer(x)
    torch.testing.assert_close(out[:, 12:24], base[:, 12:24])
    assert not torch.allclose(out[:, :12], base[:, :12])
    assert not torch.allclose(out[:, 24:], base[:, 24:])


def test_merge_is_exact_and_leaves_plain_sam_modules(tiny_spt, tiny_config):
    randomize_spt_(tiny_spt, scale=0.2)
    merged = tiny_spt.merged()
    assert not list(iter_lora_layers(merged))
    assert all(type(m) is nn.Linear for m in merged.modules() if isinstance(m, nn.Linear))
    image = _image(tiny_config)
    coords, labels = BOXES.reshape(-1, 2, 2), torch.tensor([[2.0, 3.0]]).expand(3, 2)
    with torch.no_grad():
        a = tiny_spt(image, coords, labels)
        b = merged(image, coords, labels)
    # Trained LoRA really changes the outputs, so the comparison below means something.
    with torch.no_grad():
        plain = SptSam(tiny_config)
        plain.load_state_dict(tiny_spt.state_dict())
        for _, _, layer in iter_lora_layers(plain):
            for name, param in layer.named_parameters():
                if name.startswith("lora_B"):
                    param.zero_()
        assert not torch.allclose(plain(image, coords, labels).logits, a.logits, atol=1e-3)
    for x, y in ((a.draft_logits, b.draft_logits), (a.logits, b.logits), (a.scores, b.scores)):
        torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)
    # The original keeps its LoRA layers.
    assert list(iter_lora_layers(tiny_spt))


def test_merged_encoder_has_the_structure_of_a_plain_sam_encoder(tiny_spt, tiny_sam):
    merged = tiny_spt.merged().image_encoder
    assert type(merged) is ImageEncoderViT
    ours = {k: tuple(v.shape) for k, v in merged.state_dict().items()}
    vanilla = {k[len("image_encoder."):]: tuple(v.shape) for k, v in tiny_sam.state_dict().items()
               if k.startswith("image_encoder.")}
    assert ours == vanilla
    assert [type(m) for m in merged.modules()] == [type(m) for m in tiny_sam.image_encoder.modules()]


def test_positional_encoding_scale_is_a_configuration_fact():
    from dataclasses import replace

    base = get_config("tiny")
    torch.manual_seed(0)
    plain = SptSam(base).prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
    torch.manual_seed(0)
    finer = SptSam(replace(base, pe_scale=4.0)).prompt_encoder.pe_layer \
        .positional_encoding_gaussian_matrix
    torch.testing.assert_close(finer, plain * 4.0)
    assert get_config("vit_b").pe_scale == 1.0  # SAM's own
