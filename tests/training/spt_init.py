"""The check both SAM-family tests share: ``samspt-train --init CHECKPOINT`` plans SPT on a
family's checkpoint, and a training step moves only SPT's tensors."""

from __future__ import annotations

from pathlib import Path

import torch


def assert_one_command_trains_spt(checkpoint: Path, model_type: str, encoder_blocks: str,
                                  tmp_path: Path) -> None:
    """``checkpoint`` is classified as ``model_type``'s SAM checkpoint, the one command plans
    SPT on it, and one step's gradients reach LoRA under ``encoder_blocks`` (the encoder's
    attention blocks' prefix) while only LoRA tensors and relation scales train."""
    from samspt.training.auto_run import classify_init, plan_run
    from samspt.training.trainer import build_training_model

    from .test_one_command import make_dataset

    found = classify_init(checkpoint)
    assert (found.kind, found.model_type) == ("sam", model_type)
    plan = plan_run(make_dataset(tmp_path / "data"), tmp_path / "run", 5.0, checkpoint)
    assert (plan.config.model.mode, plan.config.model.type) == ("spt", model_type)
    model = build_training_model(plan.config)
    model.set_train_mode(plan.config.model.mode)
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert any(name.startswith(encoder_blocks) and "lora_A_q" in name for name in trained)
    assert all("lora_" in name or "relation_scales" in name for name in trained)
    out = model(torch.randn(1, 3, 64, 64), torch.tensor([[[4.0, 4.0], [40.0, 40.0]]]),
                torch.tensor([[2.0, 3.0]]))
    (out.logits.mean() + out.draft_logits.mean()).backward()
    grads = [p.grad for name, p in model.named_parameters()
             if p.requires_grad and "image_encoder" in name and "lora_A" in name]
    assert grads and all(g is not None for g in grads)
