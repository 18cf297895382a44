"""The bundled example model: what ships, and that every command's default uses it."""

from __future__ import annotations

import json

import numpy as np
import torch
from safetensors import safe_open

from samspt.training.checkpoints import load_spt_model, read_spt_weights
from samspt.training.config import get_config
from samspt.training.evaluate import main as eval_main
from samspt.training.example import EXAMPLE_MODEL, EXAMPLE_MODEL_DIR
from samspt.training.predict import predict
from samspt.runtime.samples import bundled_samples


def test_the_example_model_ships_as_small_fp16_full_weights_with_its_card():
    assert EXAMPLE_MODEL.is_file(), "the bundled example model is missing"
    assert EXAMPLE_MODEL.stat().st_size <= 25 * 2**20
    tensors, info = read_spt_weights(EXAMPLE_MODEL)
    assert info.mode == "full" and info.config == get_config("small")
    with safe_open(str(EXAMPLE_MODEL), framework="pt") as handle:
        dtypes = {handle.get_slice(name).get_dtype() for name in handle.keys()}
    assert dtypes <= {"F16", "I64"} and "F16" in dtypes
    card = (EXAMPLE_MODEL_DIR / "MODEL_CARD.md").read_text()
    for words in ("samspt-train --config training/configs/example_small_boxes.yaml",
                  "box as mask", "GrabCut", "defect-free"):
        assert words in card


def test_the_example_model_answers_a_bundled_crack_inside_its_box():
    model = load_spt_model(EXAMPLE_MODEL)
    sample = next(s for s in bundled_samples() if s.defect_class.lower() == "crack")
    truth = sample.mask()
    ys, xs = np.nonzero(truth)
    box = np.array([[xs.min(), ys.min(), xs.max(), ys.max()]], np.float32)
    with torch.no_grad():
        result = predict(model, sample.image(), boxes=box)
    mask = result.masks[0]
    # The box clip: nothing beyond the box, its one low-res cell of slack (4 px of the 512 px
    # input) and the bilinear spread of one more cell.
    slack = int(np.ceil(2 * 4 * max(truth.shape) / 512)) + 1
    outside = np.ones_like(mask)
    outside[max(0, ys.min() - slack):ys.max() + slack + 1,
            max(0, xs.min() - slack):xs.max() + slack + 1] = False
    assert mask.any() and not (mask & outside).any()


def test_samspt_eval_defaults_to_the_example_model(capsys):
    assert eval_main(["--json", "--limit", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_images"] == 6 and "example" in report["model"]
    assert 0.0 < report["final"]["miou"] <= 1.0
