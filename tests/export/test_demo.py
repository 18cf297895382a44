"""The quick-start job: export, then inspect the bundled samples."""

from __future__ import annotations

import json

import numpy as np
import torch

from samspt.export.demo import main
from samspt.training.checkpoints import build_model, save_spt_weights

from ..conftest import randomize_spt_


def test_demo_exports_once_then_inspects_the_samples(tmp_path, capsys):
    torch.manual_seed(0)
    weights = save_spt_weights(randomize_spt_(build_model("tiny"), scale=0.1),
                               tmp_path / "tiny_full.safetensors", mode="full")
    argv = ["--weights", str(weights), "--model-dir", str(tmp_path / "model"), "--out",
            str(tmp_path / "out")]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "exporting tiny_full to" in captured.err
    assert "crack_exp1_num_249594" in captured.out and "final IoU" in captured.out
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(results) == 6
    for record in results:
        assert (tmp_path / "out" / f"{record['image']}_overlay.png").is_file()
        assert 0.0 <= record["iou_final"] <= 1.0
    assert main(argv) == 0
    assert "already holds this model's export" in capsys.readouterr().err


def test_demo_reports_a_missing_model(tmp_path, capsys):
    assert main(["--weights", str(tmp_path / "none.safetensors"), "--model-dir",
                 str(tmp_path / "m")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_without_bundled_weights_the_demo_says_so_and_still_runs(tmp_path, capsys, monkeypatch):
    import samspt.training.example as example

    monkeypatch.setattr(example, "EXAMPLE_MODEL", tmp_path / "absent.safetensors")
    assert main(["--model-dir", str(tmp_path / "model"), "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "no trained example model" in captured.err and "meaningless" in captured.err
    assert len(list((tmp_path / "out").glob("*_overlay.png"))) == 6


def test_the_quick_start_demo_runs_the_bundled_example_model(tmp_path, capsys):
    """The README's main job: export of the bundled example model (verified), then inspection."""
    out = tmp_path / "out"
    assert main(["--model-dir", str(tmp_path / "model"), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "exporting example_small to" in captured.err and "verified against PyTorch" in captured.err
    assert "meaningless" not in captured.err
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
    assert manifest["verification"]["fp32"]["mean_iou"] >= 0.999
    results = json.loads((out / "results.json").read_text())
    defects = [r for r in results if "free" not in r["image"]]
    assert len(results) == 6 and all(0.0 <= r["iou_final"] <= 1.0 for r in results)
    assert np.mean([r["iou_final"] for r in defects]) > 0.2  # a trained model, not noise
    # Run again: the export is up to date and is not redone.
    assert main(["--model-dir", str(tmp_path / "model"), "--out", str(out)]) == 0
    assert "already holds this model's export" in capsys.readouterr().err
