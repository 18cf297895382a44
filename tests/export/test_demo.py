"""The quick-start job: export, then inspect the bundled samples."""

from __future__ import annotations

import json

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
