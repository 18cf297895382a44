"""The finish stage of a training run: model folder, figures, scan gate, model card."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from samspt.runtime.errors import CheckpointError, ConfigError
from samspt.runtime.manifest import read_manifest
from samspt.training.checkpoints import build_model, save_spt_weights
from samspt.training.data.readers import read_dataset
from samspt.training.data.split import split_records, write_split
from samspt.training.finish import finish_run, main_finish
from samspt.training.finish_report import (GRABCUT, ScanFigures, ScanPoint, check_goals,
                                           choose_gate)
from samspt.training.model_card import fmt, gate_text, share
from samspt.training.train_config import load_train_config


def make_dataset(root: Path, n_defect: int = 6, n_free: int = 6, seed: int = 0) -> Path:
    """images/ + masks/: bright tiles, the defective ones with a dark rectangle (class
    ``defect``); images without a mask are defect-free."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n_defect + n_free):
        h, w = int(rng.integers(48, 80)), int(rng.integers(48, 80))
        image = rng.normal(200, 8, (h, w)).clip(0, 255).astype(np.uint8)
        if i < n_defect:
            y0, x0 = int(rng.integers(0, h - 14)), int(rng.integers(0, w - 14))
            y1, x1 = y0 + int(rng.integers(4, 14)), x0 + int(rng.integers(4, 14))
            image[y0:y1, x0:x1] = 60
            mask = np.zeros((h, w), np.uint8)
            mask[y0:y1, x0:x1] = 255
            Image.fromarray(mask).save(root / "masks" / f"tile{i:02d}.png")
        Image.fromarray(image).save(root / "images" / f"tile{i:02d}.png")
    return root


def make_run(tmp: Path):
    """A run folder as the trainer leaves it: a cnn_tiny model's best and last weights, the
    config, the split and metrics (no plots: the finish stage draws the curves)."""
    data = make_dataset(tmp / "data")
    run = tmp / "runs" / "tiny"
    run.mkdir(parents=True)
    config = load_train_config(None, ["model.type=cnn_tiny", "model.mode=full",
                                      f"data.root={data}", "data.val_fraction=0.5",
                                      f"out_dir={run.parent}", "name=tiny",
                                      "log.overlay_images=2"])
    (run / "config.yaml").write_text(config.to_yaml())
    train, val = split_records(read_dataset(data), val_fraction=0.5, seed=0)
    write_split(run / "split.json", train, val, data, seed=0, val_fraction=0.5)
    torch.manual_seed(1)          # seed 0's FP16 graphs miss the parity gate on one image
    model = build_model("cnn_tiny")
    save_spt_weights(model, run / "best.safetensors", mode="full", extra={"step": "4"})
    save_spt_weights(model, run / "model.safetensors", mode="full", extra={"step": "6"})
    lines = [{"step": s, "loss": 1.0 / s, "loss_draft": 0.5 / s, "loss_final": 0.5 / s,
              "images_per_s": 20.0 + s} for s in range(1, 7)]
    lines.append({"step": 4, "val": {"final": {"miou": 0.4, "biou": 0.3},
                                     "draft": {"miou": 0.35, "biou": 0.25}}})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run, config, train, val


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run, config, train, val = make_run(tmp_path_factory.mktemp("finish"))
    messages = []
    report = finish_run(run, config, train, val, progress=messages.append,
                        goals={"final_miou": 0.8, "defect_free_empty": 0.5},
                        command=["samspt-train", "--data", "D", "--out", str(run)])
    return run, report, messages


def test_finish_writes_a_model_folder_the_inspector_loads(finished):
    from samspt.runtime.inspector import Inspector

    run, report, messages = finished
    assert report.model_dir == run / "model" and report.weights.name == "best.safetensors"
    assert report.weights_step == 4
    with Inspector(report.model_dir, warmup=False) as inspector:
        result = inspector.inspect(np.full((60, 70, 3), 200, np.uint8), boxes=[[5, 5, 20, 20]])
        assert result.masks.shape == (1, 60, 70)
    manifest = read_manifest(report.model_dir)
    assert {"encoder.fp32.onnx", "encoder.fp16.onnx", "decoder.fp32.onnx",
            "decoder.fp16.onnx"} <= set(manifest.files)
    assert manifest.verification["fp16"]["mean_iou"] >= 0.99           # verified at export
    assert manifest.sources["weights"]["name"] == "best.safetensors"
    assert manifest.views.scan_min_score == report.scan_min_score == report.gate.gate
    # Nothing else left in the run: no probe, no temporary folders.
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]
    assert any("evaluating" in m for m in messages) and any("gate" in m for m in messages)


def test_report_holds_what_was_measured(finished):
    run, report, _ = finished
    m = report.model
    assert m.n_defective == 3 and m.n_defect_free == 3
    assert 0 <= m.final_miou <= 1 and 0 <= m.defect_free_empty <= 1
    assert set(report.baselines) == {"box as mask", GRABCUT}
    assert report.baselines[GRABCUT] is not None                      # no deadline: measured
    assert report.scan is not None and report.scan.points[0].gate is None
    assert report.gate.n_defective == 3 and report.gate.n_defect_free == 3
    assert {p.gate for p in report.scan.points} >= {report.gate.gate}
    assert set(report.pictures) == {"curves", "overlays"}
    assert all(p.is_file() for p in report.pictures.values())
    saved = json.loads((run / "finish.json").read_text())
    assert saved["scan_min_score"] == report.scan_min_score
    assert saved["model"]["final_miou"] == m.final_miou
    assert [g["met"] for g in saved["goals"]] == [g.met for g in report.goals]
    # Test-time flips: 4 measured against none on the validation images, the choice shipped.
    flips = report.flips
    assert flips is not None and set(flips.final_miou) == {1, 4}
    assert report.prompt_gate is flips.gate
    assert read_manifest(report.model_dir).views.flips == flips.flips
    assert read_manifest(report.model_dir).views.prompt_min_score == flips.gate.gate
    assert saved["flips"]["flips"] == flips.flips
    assert "Test-time flips" in report.card.read_text()


def _cells(card: str, start: str, columns: int = 0):
    """The cells of the card's first table row starting with ``start`` that has at least
    ``columns`` cells."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in card.splitlines()
            if line.startswith(start)]
    return next(row for row in rows if len(row) >= columns)


def test_card_states_the_measured_figures(finished):
    run, report, _ = finished
    card = (run / "MODEL_CARD.md").read_text()
    m, box, grab = report.model, report.baselines["box as mask"], report.baselines[GRABCUT]
    for row, f in ((f"| **{m.name}**", m), ("| box as mask", box), ("| OpenCV GrabCut", grab)):
        assert _cells(card, row)[1:] == [fmt(f.final_miou), fmt(f.final_biou),
                                          fmt(f.draft_miou), fmt(f.draft_biou),
                                          fmt(f.class_mean_miou), share(f.defect_free_empty)]
    cls = _cells(card, "| defect |", columns=5)
    block = m.per_class["defect"]
    assert cls[1:5] == [str(block["n_images"]),
                        f"{fmt(block['final_miou'])} ({fmt(block['draft_miou'])})",
                        fmt(box.per_class["defect"]["final_miou"]),
                        fmt(grab.per_class["defect"]["final_miou"])]
    chosen = _cells(card, f"| {gate_text(report.gate.gate)} (chosen)")
    assert chosen[1:] == [share(report.gate.defective_flagged),
                          share(report.gate.defect_free_flagged)]
    assert f"**Chosen gate: {gate_text(report.gate.gate)}**" in card
    assert f"image AUROC **{fmt(report.scan.auroc)}**" in card
    goal = _cells(card, "| final mIoU, tight boxes >= 0.800")
    assert goal[1] == fmt(m.final_miou) and goal[2] == ("**met**" if report.goals[0].met
                                                        else "**not met**")
    for picture in ("plots/curves.png", "plots/model_overlays.png"):
        assert f"]({picture})" in card
    assert "samspt-train --data D --out" in card
    assert f"samspt-eval --model {run / 'model'}" in card and "--split" in card
    assert f"samspt-inspect {run / 'model'} image.jpg" in card
    assert "| defect | 3 | 3 |" in card                          # split counts per class
    assert "6 optimizer steps" in card and "23.5 views a second" in card


def test_finish_only_command_writes_the_chosen_gate_into_the_folder(tmp_path, monkeypatch,
                                                                    capsys):
    """The random model's scan picks no gate; a gate forced here must reach the manifest, the
    Inspector and the card. No time left: GrabCut and the overlays are skipped, with notes."""
    from samspt.runtime.inspector import Inspector
    from samspt.training import finish

    def at_005(scan, *args, **kwargs):
        point = next(p for p in scan.points if p.gate == 0.05)
        return dataclasses.replace(choose_gate(scan, *args, **kwargs), gate=0.05,
                                   rule="forced by the test",
                                   defective_flagged=point.defective_flagged,
                                   defect_free_flagged=point.defect_free_flagged)

    monkeypatch.setattr(finish, "choose_gate", at_005)
    run, *_ = make_run(tmp_path)
    assert main_finish([str(run), "--minutes", "0", "--goal", "final_miou=0.1"]) == 0
    assert "scan gate: 0.05" in capsys.readouterr().out
    assert read_manifest(run / "model").views.scan_min_score == 0.05
    with Inspector(run / "model", warmup=False) as inspector:
        assert inspector.view_settings.scan_min_score == 0.05
    saved = json.loads((run / "finish.json").read_text())
    assert saved["scan_min_score"] == 0.05 and saved["baselines"][GRABCUT] is None
    assert [g["key"] for g in saved["goals"]] == ["final_miou"]
    card = (run / "MODEL_CARD.md").read_text()
    assert "| 0.05 (chosen) |" in card and "**Chosen gate: 0.05**" in card
    assert "GrabCut baseline: skipped" in card and "overlays: skipped" in card
    assert "model_overlays.png" not in card and not (run / "plots/model_overlays.png").exists()


def test_a_run_whose_weights_cannot_be_read_gets_no_model_folder(tmp_path):
    run, config, train, val = make_run(tmp_path)
    (run / "best.safetensors").write_bytes(b"\0" * 64)             # damaged
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(CheckpointError, match="best.safetensors"):
        finish_run(run, config, train, val)
    assert sorted(p.name for p in run.iterdir()) == before       # no model/, no card, no temp


def test_an_export_that_fails_leaves_nothing_half_written(tmp_path, monkeypatch):
    from samspt.export import verify

    run, config, train, val = make_run(tmp_path)
    (run / "best.safetensors").unlink()                           # falls back to the last
    before = sorted(p.name for p in run.iterdir())

    def fail(*args, **kwargs):
        raise verify.VerificationError("parity missed (test)")

    monkeypatch.setattr(verify, "verify_folder", fail)
    with pytest.raises(verify.VerificationError, match="parity missed"):
        finish_run(run, config, train, val)
    assert sorted(p.name for p in run.iterdir()) == before


def test_fp16_graphs_that_miss_parity_are_left_out_with_a_note(tmp_path, monkeypatch):
    from samspt.export import verify
    from samspt.training import finish

    checked = verify.verify_folder

    def fp16_fails(model, folder, graphs, *args, **kwargs):
        if "fp16" in graphs["encoder"]:
            raise verify.VerificationError("fp16: mean mask IoU 0.9 (test)")
        return checked(model, folder, graphs, *args, **kwargs)

    monkeypatch.setattr(verify, "verify_folder", fp16_fails)
    torch.manual_seed(1)
    notes = []
    images = [("a", np.full((40, 50, 3), 200, np.uint8), np.array([[5, 5, 20, 25]], np.float32))]
    with finish._one_torch_thread():
        result = finish._export(build_model("cnn_tiny"), tmp_path / "model", "tiny", images, {},
                                notes)
    assert sorted(read_manifest(result.out_dir).graphs["encoder"]) == ["fp32"]
    assert len(notes) == 1 and "FP16" in notes[0] and "mean mask IoU 0.9 (test)" in notes[0]


def test_unknown_goals_and_missing_weights_are_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="final_miou"):
        check_goals({"final_mio": 0.8})
    assert main_finish([str(tmp_path), "--goal", "final_miou"]) == 2   # KEY=NUMBER
    (tmp_path / "empty").mkdir()
    assert main_finish([str(tmp_path / "empty")]) == 2             # no config.yaml: an error


def test_an_optional_stage_stops_as_soon_as_its_pace_misses_the_deadline(monkeypatch):
    from samspt.training import finish

    clock = [1000.0]
    monkeypatch.setattr(finish, "time", SimpleNamespace(time=lambda: clock[0],
                                                        perf_counter=lambda: clock[0]))
    end = 1000.0 + finish.CARD_RESERVE_S
    slow = finish._Stages(None).counter("GrabCut", deadline=end + 50)
    fast = finish._Stages(None).counter("GrabCut", deadline=end + 150)
    for done in (1, 2):                       # one second an image; 100 images
        clock[0] += 1
        slow(done, 100), fast(done, 100)      # two images say too little
    clock[0] += 1
    fast(3, 100)                              # 97 s more fit in 147 s
    with pytest.raises(finish._OutOfTime):
        slow(3, 100)                          # ... not in 47 s
    clock[0] = end + 151
    with pytest.raises(finish._OutOfTime):
        fast(4, 100)                          # past the deadline


def _scan(points, n_defective=10, n_free=20):
    return ScanFigures(n_defective, n_free, 0.5, 0.9,
                       [ScanPoint(g, d, f) for g, d, f in points])


def test_gate_rule():
    # The lowest gate whose defect-free share is within the target (and still flags defects).
    scan = _scan([(None, 0.9, 0.3), (0.0, 0.9, 0.3), (0.1, 0.8, 0.05), (0.2, 0.7, 0.02),
                  (0.3, 0.5, 0.0), (0.4, 0.0, 0.0)])
    assert choose_gate(scan).gate == 0.2
    assert choose_gate(scan, false_alarm=0.1).gate == 0.1
    # No gate at all when the scan already meets the target.
    assert choose_gate(_scan([(None, 0.9, 0.0), (0.0, 0.9, 0.0)])).gate is None
    # None reaches it while flagging defects: the largest (defective - defect-free) flagged.
    scan = _scan([(None, 0.9, 0.6), (0.1, 0.8, 0.3), (0.2, 0.75, 0.1), (0.3, 0.0, 0.0)])
    pick = choose_gate(scan)
    assert pick.gate == 0.2 and "largest" in pick.rule
    assert (pick.defective_flagged, pick.defect_free_flagged) == (0.75, 0.1)
    # No defect-free validation images (NEU-Seg): no gate, and the card says why.
    pick = choose_gate(_scan([(None, 0.9, None), (0.1, 0.8, None)], n_free=0))
    assert pick.gate is None and "no defect-free" in pick.rule
    assert choose_gate(None).gate is None
    assert "whole-image" in choose_gate(scan, whole_image=True).rule


def test_the_export_check_takes_fewer_images_where_their_views_are_many(tmp_path, monkeypatch):
    from samspt.runtime.views import plan_views
    from samspt.training import finish
    from samspt.training.modeling.config import get_config

    records = read_dataset(make_dataset(tmp_path / "data", n_defect=6, n_free=2))
    config = get_config("cnn_tiny")
    every = finish._verify_images(records, config)
    assert len(every) == min(finish.VERIFY_IMAGES, len(records))
    counts = [len(plan_views(image.shape[:2], config.image_size, config.view_settings, "auto",
                             boxes=boxes).views) for _, image, boxes in every]
    monkeypatch.setattr(finish, "VERIFY_MAX_VIEWS", counts[0] + counts[1])
    assert [name for name, _, _ in finish._verify_images(records, config)] == \
        [name for name, _, _ in every[:2]]
    monkeypatch.setattr(finish, "VERIFY_MAX_VIEWS", 0)
    assert len(finish._verify_images(records, config)) == 1          # at least one image
