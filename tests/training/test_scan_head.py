"""The scan head in training: its targets, its loss, scan windows that train it alone, and a run
that learns it and exports it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from samspt.training.checkpoints import build_model, read_spt_weights
from samspt.training.modeling.config import get_config
from samspt.training.data.dataset import DefectDataset
from samspt.training.data.prompt_settings import PromptSettings
from samspt.training.data.readers import read_dataset
from samspt.training.data.view_samples import ViewSampling
from samspt.training.loss_weights import LossWeights
from samspt.training.losses import focus_masks, scan_head_loss, spt_loss, token_targets
from samspt.training.train_config import load_train_config
from samspt.training.trainer import Trainer, _TrainStep

from .test_training_run import make_folder_dataset, tiny_config_file


def test_a_token_is_a_defect_where_any_pixel_of_its_cell_is():
    mask = torch.zeros(16, 16)
    mask[5, 9] = 1
    grid = token_targets(mask, 4)
    assert grid.shape == (4, 4) and grid.sum() == 1 and grid[1, 2] == 1


def test_scan_windows_train_the_head_alone_when_scan_prompts_are_off(tmp_path):
    root = make_folder_dataset(tmp_path / "data", n_defect=6, n_free=6)
    config = dataclasses.replace(get_config("cnn_tiny"), scan_head=True)
    sampling = ViewSampling(tight=0.0, loose=0.0, scan=1.0, free_scan=1.0, scan_prompts=False)
    data = DefectDataset(read_dataset(root), config, PromptSettings(), train=True,
                         sampling=sampling)
    items = [data[i] for i in range(len(data))]
    assert all(item["kind"] == "scan" for item in items)
    assert all(item["prompt_weight"].sum() == 0 for item in items)
    assert all(item["view_mask"].shape == (64, 64) for item in items)
    assert any(item["view_mask"].sum() > 0 for item in items)

    torch.manual_seed(0)
    model = build_model(config, None)
    model.set_train_mode("full")
    step = _TrainStep(model, LossWeights(score=1.0, scan_head=1.0))
    batch = items[:4]
    images = torch.stack([b["image"] for b in batch])
    terms = step(images, [b["point_coords"] for b in batch], [b["point_labels"] for b in batch],
                 [b["targets"] for b in batch], torch.stack([b["view_mask"] for b in batch]),
                 torch.cat([b["prompt_weight"] for b in batch]))
    assert terms["draft"].item() == 0 and terms["final"].item() == 0
    assert terms["scan_head"].item() > 0
    terms["loss"].backward()
    assert model.scan_head.out.weight.grad.abs().sum() > 0
    assert all(p.grad is None or not p.grad.any()
               for p in model.refine_decoder.parameters()), "the prompts weigh nothing"


def test_prompts_that_weigh_nothing_are_not_decoded_and_the_loss_is_unchanged(tmp_path):
    """A batch mixing scan windows (weight 0) and tight boxes: the step decodes only the boxes,
    and its loss and gradients equal those of decoding every prompt and weighing the windows 0
    (the plain weighted mean of :func:`spt_loss`)."""
    root = make_folder_dataset(tmp_path / "data", n_defect=6, n_free=2)
    config = dataclasses.replace(get_config("cnn_tiny"), scan_head=True)
    sampling = ViewSampling(tight=0.5, loose=0.0, scan=0.5, free_scan=1.0, scan_prompts=False)
    data = DefectDataset(read_dataset(root), config, PromptSettings(), train=True,
                         sampling=sampling, seed=3)
    items = [data[i] for i in range(len(data))]
    weights = torch.cat([b.get("prompt_weight", torch.ones(len(b["targets"]))) for b in items])
    assert (weights == 0).any() and (weights > 0).any()
    torch.manual_seed(0)
    model = build_model(config, None)
    model.set_train_mode("full")
    model.eval()  # no batch-norm statistics moving between the two passes
    step = _TrainStep(model, LossWeights(score=1.0, scan_head=1.0))
    images = torch.stack([b["image"] for b in items])
    args = ([b["point_coords"] for b in items], [b["point_labels"] for b in items],
            [b["targets"] for b in items], torch.stack([b["view_mask"] for b in items]))
    decoded = []
    decode = model.decode
    model.decode = lambda e, c, l: decoded.append(len(e)) or decode(e, c, l)
    terms = step(images, *args, weights)
    terms["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert decoded == [int((weights > 0).sum())]
    model.zero_grad()
    embeddings = model.encode(images)
    out = decode(embeddings, torch.cat(args[0]), torch.cat(args[1]))
    focus = focus_masks(torch.cat(args[0]), torch.cat(args[1]), 64, step.weights.focus_margin)
    full = spt_loss(out.draft_logits, out.logits, out.scores, torch.cat(args[2]), step.weights,
                    focus, weights)
    tokens = config.embedding_size
    head = scan_head_loss(model.defect_logits(embeddings),
                          torch.stack([token_targets(m, tokens) for m in args[3]]))
    reference = full["loss"] + head
    torch.testing.assert_close(terms["loss"], reference, rtol=1e-5, atol=1e-6)
    reference.backward()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, model.get_parameter(name).grad, rtol=1e-4, atol=1e-6)


def test_a_run_learns_the_head_and_exports_it(tmp_path):
    from samspt.export.onnx_export import export_model
    from samspt.runtime import Inspector
    from samspt.training.checkpoints import load_spt_model

    data = make_folder_dataset(tmp_path / "data", n_defect=8, n_free=4)
    path = tiny_config_file(tmp_path, data, max_steps=4, batch_size=3)
    path.write_text(path.read_text().replace("type: tiny", "type: cnn_tiny\n  config:\n"
                                             "    scan_head: true"))
    config = load_train_config(path)
    result = Trainer(config).run()
    metrics = [json.loads(line) for line in
               (config.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("loss_scan_head" in m and np.isfinite(m["loss_scan_head"]) for m in metrics)
    _, info = read_spt_weights(result.final_weights)
    assert info.config.scan_head
    model = load_spt_model(result.final_weights)
    out = tmp_path / "model"
    export_model(model, out, "head", verify=False)
    image = np.full((64, 64, 3), 200, np.uint8)
    with Inspector(out, backend="onnxruntime") as ins:
        scan = ins.inspect(image)
    assert scan.anomaly_map is not None and scan.anomaly_map.shape == (64, 64)


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_the_prompt_weight_scales_the_mask_terms(weight):
    from samspt.training.losses import spt_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 1, 8, 8)
    targets = (torch.rand(2, 32, 32) > 0.5).float()
    scores = torch.rand(2, 1)
    base = spt_loss(logits, logits, scores, targets, LossWeights(score=1.0))
    weighted = spt_loss(logits, logits, scores, targets, LossWeights(score=1.0),
                        prompt_weight=torch.tensor([1.0, weight]))
    if weight == 1.0:
        assert torch.allclose(base["loss"], weighted["loss"])
    else:
        alone = spt_loss(logits[:1], logits[:1], scores[:1], targets[:1], LossWeights(score=1.0))
        assert torch.allclose(alone["loss"], weighted["loss"])
