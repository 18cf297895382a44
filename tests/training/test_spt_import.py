"""Import of the SPT paper authors' loralib-layout checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from samspt.runtime.errors import CheckpointError
from samspt.training.checkpoints import load_sam_weights, load_spt_model
from samspt.training.convert_spt import main as convert_main
from samspt.training.modeling.lora import iter_lora_layers
from samspt.training.spt_import import convert_authors_state_dict

RANK = 8


def authors_state_dict(model, seed=0):
    """A state dict in the authors' layout, built from the shapes their code produces."""
    gen = torch.Generator().manual_seed(seed)
    config = model.config
    dim = config.encoder_embed_dim
    state = {"image_encoder.pos_embed": torch.zeros(1),  # base weights: ignored by the import
             "mask_decoder.iou_token.weight": torch.zeros(1)}
    for i in range(config.encoder_depth):
        state[f"image_encoder.blocks.{i}.attn.qkv.lora_A"] = torch.randn(2 * RANK, dim, generator=gen)
        state[f"image_encoder.blocks.{i}.attn.qkv.lora_B"] = torch.randn(2 * dim, RANK, generator=gen)
    for theirs in ("mask_decoder.", "draft_decoder."):
        for name, module in model.draft_decoder.named_modules():
            if name.endswith(("q_proj", "v_proj")):
                state[f"{theirs}{name}.lora_A"] = torch.randn(RANK, module.in_features, generator=gen)
                state[f"{theirs}{name}.lora_B"] = torch.randn(module.out_features, RANK, generator=gen)
        for j in range(config.decoder_depth):
            state[f"{theirs}transformer.layers.{j}.lora_sim_scale"] = \
                torch.randn(config.prompt_embed_dim, generator=gen)
    return state


def loralib_merged_qkv_delta(lora_a, lora_b, dim):
    """loralib's MergedLinear(enable_lora=[True, False, True]) update, computed its way: a grouped
    1-D convolution, zero-padded into the q and v rows, times alpha/r = 1/8."""
    delta = F.conv1d(lora_a.unsqueeze(0), lora_b.unsqueeze(-1), groups=2).squeeze(0)
    full = torch.zeros(3 * dim, lora_a.shape[1])
    full[:dim], full[2 * dim:] = delta[:dim], delta[dim:]
    return full / RANK


def test_authors_checkpoint_converts_to_the_same_weight_updates(tiny_spt, tiny_sam):
    state = authors_state_dict(tiny_spt)
    tensors, model = convert_authors_state_dict(state)
    assert model.config.name == "tiny" and model.lora.rank == RANK and model.lora.scaling == 1 / 8
    load_sam_weights(model, tiny_sam.state_dict())
    model.load_state_dict(tensors, strict=False)
    merged = model.merged().state_dict()
    base = tiny_sam.state_dict()
    dim = model.config.encoder_embed_dim
    for i in range(model.config.encoder_depth):
        key = f"image_encoder.blocks.{i}.attn.qkv.weight"
        expected = loralib_merged_qkv_delta(state[f"image_encoder.blocks.{i}.attn.qkv.lora_A"],
                                            state[f"image_encoder.blocks.{i}.attn.qkv.lora_B"], dim)
        torch.testing.assert_close(merged[key] - base[key], expected, atol=1e-5, rtol=1e-4)
    # Their mask_decoder is our draft decoder; their draft_decoder is our refine decoder.
    for theirs, ours in (("mask_decoder.", "draft_decoder."), ("draft_decoder.", "refine_decoder.")):
        for parent_name in [n for n, _ in model.draft_decoder.named_modules()
                            if n.endswith(("q_proj", "v_proj"))]:
            a, b = state[f"{theirs}{parent_name}.lora_A"], state[f"{theirs}{parent_name}.lora_B"]
            key = f"{parent_name}.weight"
            torch.testing.assert_close(merged[ours + key] - base["mask_decoder." + key],
                                       b @ a / RANK, atol=1e-5, rtol=1e-4)
        for j in range(model.config.decoder_depth):
            assert torch.equal(merged[f"{ours}relation_scales.{j}"],
                               state[f"{theirs}transformer.layers.{j}.lora_sim_scale"])


def test_convert_command_writes_loadable_spt_weights(tmp_path, tiny_spt, tiny_sam, capsys):
    source = tmp_path / "spt_vit_tiny.pth"
    torch.save(authors_state_dict(tiny_spt), source)
    sam_path = tmp_path / "sam_tiny.pth"
    torch.save(tiny_sam.state_dict(), sam_path)
    out = tmp_path / "spt_tiny.safetensors"
    assert convert_main([str(source), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    model = load_spt_model(out, sam_path)
    assert len(list(iter_lora_layers(model))) > 0
    qkv = model.image_encoder.blocks[0].attn.qkv
    torch.testing.assert_close(
        qkv.lora_A_v, authors_state_dict(tiny_spt)["image_encoder.blocks.0.attn.qkv.lora_A"][RANK:])


def test_a_sam_checkpoint_is_not_an_authors_checkpoint(tmp_path, tiny_sam, capsys):
    path = tmp_path / "sam.pth"
    torch.save(tiny_sam.state_dict(), path)
    assert convert_main([str(path)]) == 2
    assert "not an SPT checkpoint" in capsys.readouterr().err


def test_misshapen_authors_tensor_is_named(tiny_spt):
    state = authors_state_dict(tiny_spt)
    state["image_encoder.blocks.1.attn.qkv.lora_B"] = torch.zeros(5, RANK)
    with pytest.raises(CheckpointError, match="blocks.1.attn.qkv.lora_B has shape"):
        convert_authors_state_dict(state)


def test_incomplete_authors_checkpoint_is_named(tiny_spt):
    state = authors_state_dict(tiny_spt)
    del state["draft_decoder.transformer.layers.0.lora_sim_scale"]
    with pytest.raises(CheckpointError, match="missing.*refine_decoder.relation_scales.0"):
        convert_authors_state_dict(state)


def _authors_layout(name):
    """Key names and shapes of what the authors' training trains, written by their own model code
    (``tests/training/authors_layout/make_authors_layout.py`` run on THU-MIG/SAM-SPT)."""
    import json
    from pathlib import Path

    return json.loads((Path(__file__).parent / "authors_layout" / f"{name}.json").read_text())


def test_the_authors_own_vit_b_layout_converts_completely():
    """Every tensor their vit_b training trains (84, from their code) lands in samspt's model, with
    the shapes samspt's vit_b expects; none is left behind."""
    layout = _authors_layout("vit_b")
    assert layout["source"].endswith("THU-MIG/SAM-SPT") and len(layout["trainable"]) == 84
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(*shape, generator=gen) for k, shape in layout["trainable"].items()}
    state["image_encoder.patch_embed.proj.weight"] = torch.zeros(768, 3, 16, 16)  # base: ignored
    tensors, model = convert_authors_state_dict(state)
    assert model.config.name == "vit_b" and model.lora.rank == layout["lora_r"]
    assert model.lora.scaling == 1 / layout["lora_r"]  # their loralib alpha 1
    expected = model.spt_state_dict()
    assert sorted(tensors) == sorted(expected)
    # Each of theirs is found again in ours, values untouched: the q/v halves of the encoder's
    # merged qkv, and the decoders under swapped names.
    for key, value in state.items():
        if "lora" not in key:
            continue
        if key.startswith("image_encoder."):
            prefix, half = key.rsplit(".", 1)[0], key.rsplit("_", 1)[1]
            parts = [tensors[f"{prefix}.lora_{half}_q"], tensors[f"{prefix}.lora_{half}_v"]]
            assert torch.equal(torch.cat(parts), value)
        elif key.endswith("lora_sim_scale"):
            ours = "draft_decoder" if key.startswith("mask_decoder.") else "refine_decoder"
            layer = key.split("layers.")[1].split(".")[0]
            assert torch.equal(tensors[f"{ours}.relation_scales.{layer}"], value)
        else:
            theirs, rest = key.split(".", 1)
            ours = "draft_decoder" if theirs == "mask_decoder" else "refine_decoder"
            assert torch.equal(tensors[f"{ours}.{rest}"], value)


def test_an_unknown_trained_tensor_is_refused_not_dropped():
    layout = _authors_layout("vit_b")
    state = {k: torch.zeros(*shape) for k, shape in layout["trainable"].items()}
    state["image_encoder.blocks.0.mlp.lin1.lora_A"] = torch.zeros(8, 768)
    with pytest.raises(CheckpointError, match="mlp.lin1.lora_A.*would be lost"):
        convert_authors_state_dict(state)
    del state["image_encoder.blocks.0.mlp.lin1.lora_A"]
    state["mask_decoder.transformer.layers.0.self_attn.k_proj.lora_A"] = torch.zeros(8, 256)
    with pytest.raises(CheckpointError, match="unexpected.*self_attn.k_proj.lora_A"):
        convert_authors_state_dict(state)
