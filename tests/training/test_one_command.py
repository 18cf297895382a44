"""samspt-train --data DIR --out RUN: view settings derived from the masks, the time-budget
schedule, the command end to end on a tiny folder, continuing a run, and every refusal."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from samspt.runtime.errors import CheckpointError, ConfigError
from samspt.training import auto_views
from samspt.training.auto_run import classify_init, plan_run
from samspt.training.auto_views import MaskStats, collect_stats, derive_views, mask_stats, \
    stroke_width
from samspt.training.checkpoints import load_spt_model, save_spt_weights
from samspt.training.modeling.config import get_config
from samspt.training.data.records import DEFECT_FREE, DatasetError, Record
from samspt.training.schedule import MIN_STEPS, TimeBudget, progress_lr_factor
from samspt.training.train import main
from samspt.training.train_config import load_train_config
from samspt.training.trainer import build_training_model

# A tiny model at a tiny input, so a 1-minute budget trains many steps on two cores; one torch
# thread (two wait on each other when another process shares the cores).
TINY = ["--set", "model.type=cnn_tiny", "--set", "model.config.image_size=64",
        "--set", "optim.batch_size=4", "--set", "optim.threads=1",
        "--set", "log.log_every=1"]


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """optim.threads sets the process's torch threads: give the other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def make_dataset(root: Path, n_defect: int = 8, n_free: int = 4, seed: int = 0) -> Path:
    """images/ + masks/: bright tiles, each defective one with a dark rectangle."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n_defect + n_free):
        h, w = int(rng.integers(48, 72)), int(rng.integers(48, 72))
        image = rng.normal(200, 8, (h, w)).clip(0, 255).astype(np.uint8)
        mask = np.zeros((h, w), np.uint8)
        if i < n_defect:
            y0, x0 = int(rng.integers(0, h - 14)), int(rng.integers(0, w - 14))
            y1, x1 = y0 + int(rng.integers(5, 14)), x0 + int(rng.integers(5, 14))
            image[y0:y1, x0:x1] = 60
            mask[y0:y1, x0:x1] = 255
            Image.fromarray(mask).save(root / "masks" / f"tile{i:02d}.png")
        Image.fromarray(image).save(root / "images" / f"tile{i:02d}.png")
    return root


@pytest.fixture
def data(tmp_path):
    return make_dataset(tmp_path / "data")


def metrics(run: Path):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------ derived views
def test_stroke_width_measures_bands_discs_and_lines():
    band = np.zeros((60, 80), bool)
    band[20:25, 5:75] = True                       # 5 px wide
    assert stroke_width(band) == pytest.approx(5, abs=0.6)
    line = np.zeros((60, 80), bool)
    line[30, 5:75] = True
    assert stroke_width(line) == pytest.approx(1, abs=0.3)
    yy, xx = np.mgrid[:60, :60]
    disc = (yy - 30) ** 2 + (xx - 30) ** 2 <= 10 ** 2   # diameter 21
    assert 18 <= stroke_width(disc) <= 22                # about the diameter
    assert stroke_width(np.zeros((5, 5), bool)) == 0.0
    stats = mask_stats(band)
    assert stats.long_side == 70 and stats.image_hw == (60, 80)
    assert mask_stats(np.zeros((4, 4), bool)) is None


def _stats(n, long_side, thickness, image=400):
    return [MaskStats(float(long_side), float(thickness), (image, image))] * n


def test_small_thick_defects_get_128_px_views_with_a_least_side():
    derived = derive_views(_stats(50, 10, 8))
    assert derived.image_size == 128
    assert derived.view_context == auto_views.CONTEXT == 2.0
    assert derived.view_min_side == 64                   # at most 2x enlarged
    assert derived.view_max_side == 0
    assert derived.scan_side == 64                       # a median defect's view, >= min side
    assert derived.model_overrides() == {"image_size": 128, "view_context": 2.0,
                                         "view_min_side": 64, "scan_side": 64,
                                         "view_max_side": 0}
    assert "view_min_side 64" in derived.describe() and len(derived.reasons) == 5


def test_thin_defects_raise_the_input_size_to_256():
    # 4 px wide, 60 px long on 400 px images: view 120 px; at 128 px input 4 * 128 / (2 * 120)
    # = 2.1 mask cells... and at 3 px: 1.6, too thin at 128, 3.2 at 256.
    derived = derive_views(_stats(50, 60, 3))
    assert derived.image_size == 256 and derived.view_min_side == 128
    assert derived.view_max_side == 0
    assert derived.figures["share_at_least_2_cells"] == {"128": 0.0, "256": 1.0}


def test_long_thin_cracks_beyond_256_are_seen_through_tiles():
    # 300 px long, 3 px wide on 600 px images: even at 256 px input 3 * 256 / (2 * 600) < 2
    # cells; tiles of 3 * 256 / 4 = 192 px keep them 2 cells wide.
    derived = derive_views(_stats(40, 300, 3, image=600))
    assert derived.image_size == 256
    assert derived.view_max_side == 192
    assert derived.view_min_side <= derived.scan_side <= derived.view_max_side
    assert "tiles" in " ".join(derived.reasons)


def test_a_mix_mostly_thick_stays_at_128_without_tiles():
    stats = _stats(85, 20, 10) + _stats(15, 300, 2, image=600)
    derived = derive_views(stats)
    assert derived.image_size == 128 and derived.view_max_side == 0


def test_a_fixed_input_size_is_kept_and_said():
    derived = derive_views(_stats(10, 60, 3), sizes=(1024,), patch_size=16, fixed_by="SAM")
    assert derived.image_size == 1024 and derived.view_min_side == 400  # the image side caps
    assert "fixed by SAM" in derived.reasons[0]
    with pytest.raises(DatasetError, match="patch size"):
        derive_views(_stats(3, 10, 3), sizes=(100,))


def test_collect_stats_needs_a_defect(data):
    free = [Record(p, None, DEFECT_FREE, "d") for p in sorted((data / "images").glob("*.png"))]
    with pytest.raises(DatasetError, match="no defective image"):
        collect_stats(free)


# ----------------------------------------------------------------------------- schedule
def test_the_learning_rate_follows_the_progress_of_the_budget():
    assert progress_lr_factor(0.0, 0.05) == pytest.approx(0.01)      # warm-up starts low
    assert progress_lr_factor(0.025, 0.05) == pytest.approx(0.505)   # half-way up
    assert progress_lr_factor(0.05, 0.05) == pytest.approx(1.0)      # the peak
    assert progress_lr_factor(0.525, 0.05) == pytest.approx(0.505)   # cosine half-way down
    assert progress_lr_factor(1.0, 0.05) == pytest.approx(0.01)      # the deadline
    assert progress_lr_factor(1.7, 0.05) == pytest.approx(0.01)      # clamped
    factors = [progress_lr_factor(p, 0.05) for p in np.linspace(0.05, 1, 50)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))


def test_a_time_budget_plans_its_window_and_validations():
    budget = TimeBudget.plan(total_s=600, now_s=20, finish_share=0.12, finish_s=30, step_s=0.5,
                             val_s=5, warmup_share=0.03, evaluations=8)
    assert budget.train_start_s == 20 and budget.reserve_s == pytest.approx(72)  # 12 % > 30 s
    assert budget.train_end_s == pytest.approx(528)
    assert budget.lr_factor(20) == pytest.approx(0.01)
    assert budget.lr_factor(528) == pytest.approx(0.01)
    span = 528 - 20
    assert budget.validations_due(20 + span / 8 - 1) == 0
    assert budget.validations_due(20 + span / 8 + 1) == 1
    assert budget.validations_due(527) == 7            # the 8th comes when the steps stop
    assert not budget.should_stop(500, 0.5, 5) and budget.should_stop(523, 0.5, 5)
    measured = TimeBudget.plan(total_s=600, now_s=20, finish_share=0.12, finish_s=100,
                               step_s=0.5, val_s=5, warmup_share=0.03, evaluations=8)
    assert measured.reserve_s == pytest.approx(100)    # a larger measured estimate wins


def test_held_out_images_count_in_the_finish_stages_time():
    from samspt.training.schedule import FINISH_SCAN_VIEW_S, finish_estimate_s

    without = finish_estimate_s(0.2, 30, refit_s=5, scan_views=300)
    held = finish_estimate_s(0.2, 30, refit_s=5, scan_views=300, n_test=10, test_scan_views=100)
    assert held - without == pytest.approx(10 * 0.2 + 100 * FINISH_SCAN_VIEW_S)


def test_a_budget_too_short_for_one_validation_gives_the_least_that_works():
    args = dict(now_s=30, finish_share=0.12, finish_s=40, step_s=2.0, val_s=60,
                warmup_share=0.03, evaluations=8)
    with pytest.raises(ConfigError, match=r"too short.*--budget-min (\d+\.?\d*)") as info:
        TimeBudget.plan(total_s=120, **args)
    least = float(re.search(r"--budget-min (\d+(\.\d+)?)", str(info.value)).group(1))
    budget = TimeBudget.plan(total_s=least * 60, **args)   # the least budget works
    assert budget.train_end_s - budget.train_start_s >= MIN_STEPS * 2.0 + 60


# ----------------------------------------------------------------------- configuration
def test_model_config_overrides_are_checked_and_applied(tmp_path):
    config = load_train_config(None, ["model.type=cnn_tiny", "model.mode=full",
                                      "model.config.image_size=32",
                                      "model.config.view_min_side=24"])
    assert config.model.config == {"image_size": 32, "view_min_side": 24}
    model = build_training_model(config)
    assert model.config.image_size == 32 and model.config.view_min_side == 24
    assert model.config.name == "cnn_tiny"
    with pytest.raises(ConfigError, match=r"model\.config\.imagesize; known fields: .*image_size"):
        load_train_config(None, ["model.config.imagesize=32"])
    with pytest.raises(ConfigError, match="model.config.image_size must be an integer"):
        load_train_config(None, ["model.config.image_size=big"])
    with pytest.raises(ConfigError, match="not a multiple of patch_size"):
        build_training_model(load_train_config(None, [
            "model.type=cnn_tiny", "model.mode=full", "model.config.image_size=60"]))
    with pytest.raises(ConfigError, match="budget.evaluations"):
        load_train_config(None, ["budget.evaluations=0"])
    # The resolved configuration round-trips through its YAML.
    path = tmp_path / "c.yaml"
    path.write_text(config.to_yaml())
    assert load_train_config(path) == config


# ----------------------------------------------------------------------- end to end
def test_one_minute_end_to_end_stops_on_time_with_usable_weights(tmp_path, data, capsys):
    run = tmp_path / "run"
    start = time.monotonic()
    assert main(["--data", str(data), "--out", str(run), "--budget-min", "1"] + TINY) == 0
    wall = time.monotonic() - start
    out = capsys.readouterr().out
    assert "view settings derived from the training masks" in out and "done:" in out
    for name in ("config.yaml", "split.json", "metrics.jsonl", "model.safetensors",
                 "best.safetensors", "status.json", "checkpoints/latest.json"):
        assert (run / name).is_file(), name
    records = metrics(run)
    budget = next(r["budget"] for r in records if "budget" in r)
    assert budget["total_s"] == 60 and budget["train_end_s"] <= 60 * (1 - 0.12)
    steps = [r for r in records if "loss" in r]
    assert len(steps) >= 3 and all(np.isfinite(r["loss"]) for r in steps)
    assert all(r["views_per_s"] > 0 and 0 < r["compute_share"] <= 1 for r in steps)
    vals = [r for r in records if "val" in r]
    assert vals and vals[-1]["step"] == steps[-1]["step"]          # the last one at the end
    final = records[-1]
    assert final["step"] == steps[-1]["step"] and final["elapsed_s"] <= budget["train_end_s"] + 5
    status = json.loads((run / "status.json").read_text())
    # On time: training stops at its deadline (above); the whole command within the budget,
    # with slack for a loaded machine (the finish stage's required steps always run).
    assert status["elapsed_s"] <= 60 + 30 and wall < 60 + 45
    assert status["state"] == "finished" and (run / "model" / "manifest.json").is_file()
    # The finish stage fitted the scan head again and exported the weights that hold it.
    from samspt.runtime.manifest import read_manifest

    manifest = read_manifest(run / "model")
    assert manifest.sources["weights"]["name"] == "finished.safetensors"
    assert manifest.model["scan_head_hidden"] == 64
    assert "Scan head: fitted again" in (run / "MODEL_CARD.md").read_text()
    # The weights are usable: they load and answer a box.
    model = load_spt_model(run / "best.safetensors")
    assert model.config.image_size == 64 and model.config.view_context == 2.0
    from samspt.training.predict import predict

    image = np.asarray(Image.open(sorted((data / "images").glob("*.png"))[0]).convert("RGB"))
    result = predict(model, image, boxes=np.array([[5, 5, 20, 20]]))
    assert result.masks.shape == (1,) + image.shape[:2]
    # Find, then segment: the folder's scan finds a drawn defect on a new, larger tile and
    # comes back with its outline; a clean tile is not flagged.
    from samspt.runtime import Inspector

    rng = np.random.default_rng(5)
    drawn = rng.normal(200, 8, (160, 200)).clip(0, 255).astype(np.uint8)
    drawn[70:80, 120:132] = 60
    truth = np.zeros(drawn.shape, bool)
    truth[70:80, 120:132] = True
    clean = rng.normal(200, 8, (160, 200)).clip(0, 255).astype(np.uint8)
    with Inspector(run / "model", backend="onnxruntime") as ins:
        found, nothing = ins.inspect(drawn), ins.inspect(clean)
    assert found.pred_label[0] and found.anomaly_map.shape == drawn.shape
    assert (found.masks[0] & truth).sum() / (found.masks[0] | truth).sum() >= 0.5
    assert not nothing.pred_label[0] and nothing.scores[0] < found.scores[0]
    from safetensors import safe_open

    with safe_open(str(run / "model.safetensors"), framework="pt") as handle:
        meta = handle.metadata()
    assert int(meta["step"]) == final["step"] and float(meta["elapsed_s"]) > 0
    state = torch.load(run / "checkpoints" / json.loads(
        (run / "checkpoints" / "latest.json").read_text())["state"], weights_only=True)
    assert state["step"] == final["step"] and state["elapsed_s"] > 0


class _Stop(Exception):
    pass


def test_the_same_command_again_continues_the_run(tmp_path, data, capsys):
    from samspt.training.auto_run import execute

    run = tmp_path / "run"
    where = ["--data", str(data), "--out", str(run)]
    # Held-out images too: written into the split, kept by the resume, measured at the end.
    rest = TINY + ["--set", "log.checkpoint_every=1", "--set", "data.test_fraction=0.25"]
    args = where + ["--budget-min", "2"] + rest
    plan = plan_run(data, run, 2.0, None, rest[1::2])

    def crash(step, total, figures):
        if step == 2:
            raise _Stop()

    with pytest.raises(_Stop):
        execute(plan, progress=crash)
    split = (run / "split.json").read_text()
    config = (run / "config.yaml").read_text()
    checkpoint = json.loads((run / "checkpoints" / "latest.json").read_text())
    assert checkpoint["step"] == 1
    carried = torch.load(run / "checkpoints" / checkpoint["state"], weights_only=True)["elapsed_s"]

    assert main(args) == 0
    assert "continuing the run" in capsys.readouterr().out
    assert (run / "split.json").read_text() == split            # the same split ...
    assert (run / "config.yaml").read_text() == config          # ... and settings
    steps = [r["step"] for r in metrics(run) if "loss" in r]
    assert steps == list(range(1, steps[-1] + 1)) and steps[-1] > 2   # on from step 1
    budgets = [r["budget"] for r in metrics(run) if "budget" in r]
    assert len(budgets) == 2 and budgets[0] == budgets[1]         # the same deadline
    assert metrics(run)[-1]["elapsed_s"] > carried

    # Again: a trained run goes on to its finish stage; a finished one says so, exits 0.
    assert main(where + rest) == 0
    assert main(where + rest) == 0
    assert "holds a finished run" in capsys.readouterr().out
    doc = json.loads(split)
    held = {e["image"] for e in doc["test"]}
    assert len(held) == 3 and not held & {e["image"] for e in doc["train"] + doc["val"]}
    finished = json.loads((run / "finish.json").read_text())["held_out"]
    assert finished["model"]["n_defective"] + finished["model"]["n_defect_free"] == 3
    assert 0 <= finished["model"]["final_miou"] <= 1 and finished["box"]["final_miou"] > 0
    card = (run / "MODEL_CARD.md").read_text()
    assert "## Held-out images" in card and "--subset test" in card

    # Another budget, other settings, or other data: refused, the run untouched.
    assert main(where + ["--budget-min", "3"] + rest) == 2
    assert "budget of 2 min" in capsys.readouterr().err
    assert main(args + ["--set", "optim.lr=0.1"]) == 2
    assert "optim.lr (was 0.001)" in capsys.readouterr().err
    other = make_dataset(tmp_path / "other", seed=1)
    assert main(["--data", str(other), "--out", str(run)] + rest) == 2
    assert "run of other data" in capsys.readouterr().err
    assert (run / "split.json").read_text() == split


# --------------------------------------------------------------------------- refusals
def _refused(capsys, argv, words, out: Path):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err, err
    assert not out.exists(), f"{out} was left behind"
    return err


def test_refusals_leave_no_run_folder(tmp_path, data, capsys):
    run = tmp_path / "run"
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused(capsys, ["--data", str(tmp_path / "missing"), "--out", str(run)], "does not exist",
             run)
    _refused(capsys, ["--data", str(empty), "--out", str(run)], "cannot tell the layout", run)
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "notes.txt").write_text("hello")
    _refused(capsys, ["--data", str(odd), "--out", str(run)], "Known layouts", run)
    bad = make_dataset(tmp_path / "bad", n_defect=2, n_free=1)
    mask = sorted((bad / "masks").glob("*.png"))[0]
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(mask)
    _refused(capsys, ["--data", str(bad), "--out", str(run)], "must cover its image", run)
    _refused(capsys, ["--data", str(data), "--out", str(run), "--budget-min", "0"],
             "--budget-min must be > 0", run)
    err = _refused(capsys, ["--data", str(data), "--out", str(run), "--budget-min", "0.02"]
                   + TINY, "too short", run)
    assert "give at least --budget-min" in err
    _refused(capsys, ["--data", str(data), "--out", str(run), "--set", "model.config.sizes=3"],
             "known fields", run)
    _refused(capsys, ["--data", str(data), "--out", str(run), "--set", "name=elsewhere"],
             "would move the run", run)
    _refused(capsys, ["--data", str(data)], "both --data DIR and --out RUN", run)
    _refused(capsys, ["--data", str(data), "--out", str(run), "--resume"], "YAML way", run)


def test_an_out_folder_with_other_files_is_refused_and_left_alone(tmp_path, data, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    assert main(["--data", str(data), "--out", str(out)] + TINY) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]
    # An empty folder given as --out is left empty by a refused start.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--data", str(data), "--out", str(empty), "--budget-min", "0.02"] + TINY) == 2
    assert empty.is_dir() and not list(empty.iterdir())


def test_checkpoints_of_the_wrong_kind_are_refused(tmp_path, data, capsys):
    run = tmp_path / "run"
    text = tmp_path / "weights.onnx"
    text.write_text("not a checkpoint")
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3)}, foreign)
    plain = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(plain))
    for path in (text, foreign, plain):
        _refused(capsys, ["--data", str(data), "--out", str(run), "--init", str(path)],
                 "a checkpoint of the wrong kind", run)
    _refused(capsys, ["--data", str(data), "--out", str(run), "--init",
                      str(tmp_path / "nope.pth")], "does not exist", run)


def test_init_picks_spt_on_sam_or_training_on_from_weights(tmp_path, data):
    from samspt.training.modeling.model import SptSam, build_sam

    sam = tmp_path / "sam_tiny.pth"
    torch.save(build_sam(get_config("tiny")).state_dict(), sam)
    found = classify_init(sam)
    assert (found.kind, found.model_type, found.image_size) == ("sam", "tiny", 64)
    plan = plan_run(data, tmp_path / "a", 5.0, sam)
    model = plan.config.model
    assert (model.mode, model.type, model.sam_checkpoint) == ("spt", "tiny", str(sam))
    assert "image_size" not in model.config and model.config["view_context"] == 2.0
    assert "fixed by the SAM checkpoint" in plan.derived.reasons[0]
    built = build_training_model(plan.config)
    assert built.config.view_context == 2.0 and built.config.image_size == 64

    weights = tmp_path / "tiny.safetensors"
    save_spt_weights(SptSam(get_config("cnn_tiny")), weights, mode="full")
    assert classify_init(weights).kind == "weights"
    plan = plan_run(data, tmp_path / "b", 5.0, weights)
    assert plan.config.model.init_weights == str(weights) and plan.config.model.mode == "full"
    assert build_training_model(plan.config).config.view_min_side == \
        plan.config.model.config["view_min_side"]
    spt_only = tmp_path / "spt.safetensors"
    save_spt_weights(SptSam(get_config("tiny")), spt_only, mode="spt")
    with pytest.raises(CheckpointError, match="need the SAM checkpoint"):
        classify_init(spt_only)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------ CLI
def test_help_explains_the_command_with_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for words in ("--data", "--out", "--budget-min", "--init", "samspt-train --data",
                  "--config", "--set", "finish stage", "continue"):
        assert words in text


def test_print_config_shows_the_recipe_with_derived_settings(tmp_path, data, capsys):
    run = tmp_path / "run"
    assert main(["--data", str(data), "--out", str(run), "--print-config",
                 "--set", "optim.lr=5e-4", "--set", "model.config.view_max_side=200"]) == 0
    text = capsys.readouterr().out
    assert "# view settings derived from the training masks" in text
    assert "replaced by --set: view_max_side 200 (derived " in text
    config = yaml.safe_load(text)
    assert config["optim"]["lr"] == 5e-4 and config["model"]["type"] == "cnn_small"
    assert config["model"]["config"]["image_size"] in (128, 256)
    assert config["budget"]["minutes"] == 60 and config["optim"]["amp"] == "off"
    assert config["data"]["root"] == str(data) and not run.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU's choice of input size")
def test_on_a_cpu_thin_defects_keep_128_px_views_and_get_tiles(tmp_path):
    root = tmp_path / "thin"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(6):
        image = np.full((240, 240), 180, np.uint8)
        mask = np.zeros((240, 240), np.uint8)
        mask[60 + 10 * i:62 + 10 * i, 30:210] = 255       # 2 px wide, 180 px long
        image[mask > 0] = 90
        Image.fromarray(image).save(root / "images" / f"t{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"t{i}.png")
    plan = plan_run(root, tmp_path / "run")
    assert plan.derived.image_size == 128
    assert "training on a CPU" in plan.derived.describe()
    assert plan.config.model.config["view_max_side"] > 0     # tiles keep them wide enough
    assert not (tmp_path / "run").exists()                    # planning writes nothing
