"""The bundled example model: what ships, that every command's default uses it, that it beats an
untrained model of its size by a clear margin, and that its figures on the bundled samples hold."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from samspt.runtime.samples import EXAMPLE_MODEL_DIR as SHIPPED_FOLDER
from samspt.training.checkpoints import build_model, load_spt_model, read_spt_weights
from samspt.training.modeling.config import get_config
from samspt.training.evaluate import main as eval_main
from samspt.training.evaluation import (RuntimePredictor, TorchPredictor, evaluate_records,
                                        sample_records)
from samspt.training.example import EXAMPLE_MODEL, EXAMPLE_WEIGHTS_DIR

# The shipped model's figures on the bundled samples (box prompts in views; the scan), pinned:
# a retrained model updates them together with its card.
PINNED = {"final_miou": 0.846, "draft_miou": 0.804, "scan_miou": 0.329}
TOLERANCE = 0.02


@pytest.fixture(scope="module")
def example_report():
    model = load_spt_model(EXAMPLE_MODEL)
    return evaluate_records(TorchPredictor(model), sample_records())


def test_the_example_model_ships_as_small_fp16_full_weights_with_its_card():
    assert EXAMPLE_MODEL.is_file(), "the bundled example model is missing"
    assert EXAMPLE_MODEL.stat().st_size <= 8 * 2**20
    tensors, info = read_spt_weights(EXAMPLE_MODEL)
    # The cnn_small architecture as the one command builds it (scan head, views), with the
    # operating point samspt-calibrate chose on the run's validation images.
    assert info.mode == "full" and info.config.scan_min_score is not None
    base = get_config("cnn_small")
    assert (info.config.name, info.config.image_size, info.config.patch_size) == \
        (base.name, base.image_size, base.patch_size)
    assert info.config.scan_head and info.config.view_settings is not None
    manifest = json.loads((SHIPPED_FOLDER / "manifest.json").read_text())
    assert manifest["views"]["scan_min_score"] == info.config.scan_min_score
    point = manifest["calibration"]
    assert point["min_score"] == info.config.scan_min_score and point["target"] == 0.02
    assert point["normal_flagged"] <= 0.02 * point["normal_images"]
    with safe_open(str(EXAMPLE_MODEL), framework="pt") as handle:
        dtypes = {handle.get_slice(name).get_dtype() for name in handle.keys()}
    assert dtypes <= {"F16", "I64"} and "F16" in dtypes
    card = (EXAMPLE_WEIGHTS_DIR / "MODEL_CARD.md").read_text()
    for words in ("samspt-train --data DEV --out runs/example", "samspt-export --compact",
                  "samspt-calibrate runtime/assets/example_model", "## Held-out figures",
                  "box as mask", "GrabCut", "defect-free", "prompt-free"):
        assert words in card


def test_the_example_model_beats_an_untrained_one_by_a_clear_margin(example_report):
    torch.manual_seed(0)
    untrained = evaluate_records(TorchPredictor(build_model("cnn_small").eval()),
                                 sample_records())
    # An untrained model with the box clip answers about "the box" (0.53 here; the trained one
    # 0.85), and its scan flags everything (0.09 merged-mask IoU, the clean sample flagged).
    assert example_report["final"]["miou"] >= untrained["final"]["miou"] + 0.15
    assert example_report["scan"]["miou"] >= untrained["scan"]["miou"] + 0.2
    assert example_report["scan"]["defect_free_flagged"] < untrained["scan"]["defect_free_flagged"]
    assert example_report["final"]["miou"] > example_report["draft"]["miou"]


def test_the_example_models_figures_on_the_samples_are_pinned(example_report):
    assert example_report["final"]["miou"] == pytest.approx(PINNED["final_miou"], abs=TOLERANCE)
    assert example_report["draft"]["miou"] == pytest.approx(PINNED["draft_miou"], abs=TOLERANCE)
    assert example_report["scan"]["miou"] == pytest.approx(PINNED["scan_miou"], abs=TOLERANCE)


def test_evaluation_through_the_shipped_graphs_agrees_with_pytorch(example_report):
    """samspt-eval's figures and the Inspector's agree on the same images (each box answered
    once: the PyTorch path has no test-time flips)."""
    runtime = evaluate_records(RuntimePredictor(SHIPPED_FOLDER, flips=1), sample_records())
    for part in ("final", "draft"):
        assert runtime[part]["miou"] == pytest.approx(example_report[part]["miou"], abs=0.01)
    assert runtime["scan"]["defective_flagged"] == example_report["scan"]["defective_flagged"]
    assert runtime["scan"]["miou"] == pytest.approx(example_report["scan"]["miou"], abs=0.01)


def test_samspt_eval_defaults_to_the_example_model(capsys, example_report):
    assert eval_main(["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_images"] == 6 and "example" in report["model"]
    assert report["final"]["miou"] == pytest.approx(example_report["final"]["miou"], abs=1e-6)
    assert report["scan"]["defective_flagged"] is not None


def test_the_box_clip_keeps_masks_near_their_box():
    from samspt.runtime.prompts import mask_box
    from samspt.runtime.samples import bundled_samples
    from samspt.training.predict import predict

    model = load_spt_model(EXAMPLE_MODEL)
    for sample in bundled_samples():
        truth = sample.mask()
        if not truth.any():
            continue
        box = mask_box(truth)
        result = predict(model, sample.image(), boxes=box[None])
        view = result.views[0]
        cell = view.side / model.config.image_size * 2      # one low-res cell, image pixels
        slack = int(np.ceil(2 * cell)) + 1
        outside = np.ones_like(result.masks[0])
        x0, y0, x1, y1 = box.astype(int)
        outside[max(0, y0 - slack):y1 + slack + 1, max(0, x0 - slack):x1 + slack + 1] = False
        assert not (result.masks[0] & outside).any(), sample.name
