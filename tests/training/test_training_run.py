"""End-to-end training on a small generated dataset: files, exact resume, DDP with 2 processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samspt.runtime.errors import ConfigError
from samspt.training.checkpoints import read_spt_weights
from samspt.training.train_config import load_train_config
from samspt.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]


def make_folder_dataset(root: Path, n_defect: int = 8, n_free: int = 4, seed: int = 0) -> Path:
    """images/ + masks/: bright tiles, each defective one with a dark rectangle."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n_defect + n_free):
        h, w = int(rng.integers(40, 72)), int(rng.integers(40, 72))
        image = rng.normal(200, 8, (h, w)).clip(0, 255).astype(np.uint8)
        mask = np.zeros((h, w), np.uint8)
        if i < n_defect:
            y0, x0 = int(rng.integers(0, h - 12)), int(rng.integers(0, w - 12))
            y1, x1 = y0 + int(rng.integers(4, 12)), x0 + int(rng.integers(4, 12))
            image[y0:y1, x0:x1] = 60
            mask[y0:y1, x0:x1] = 255
            Image.fromarray(mask).save(root / "masks" / f"tile{i:02d}.png")
        Image.fromarray(image).save(root / "images" / f"tile{i:02d}.png")
    return root


def tiny_config_file(tmp_path: Path, data: Path, **optim) -> Path:
    optim_lines = "\n".join(f"  {k}: {v}" for k, v in {
        "max_steps": 6, "batch_size": 2, "lr": 0.002, "warmup_steps": 2, "seed": 0,
        "amp": "'off'", **optim}.items())
    text = (f"name: run\nout_dir: {tmp_path / 'runs'}\n"
            "model:\n  type: tiny\n  mode: full\n"
            f"data:\n  root: {data}\n  val_fraction: 0.25\n  prompts_per_image: 2\n"
            "  defect_free_fraction: 0.5\n"
            f"optim:\n{optim_lines}\n"
            "log:\n  log_every: 1\n  val_every: 3\n  checkpoint_every: 3\n  overlay_images: 2\n")
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def dataset(tmp_path):
    return make_folder_dataset(tmp_path / "data")


def test_training_writes_every_run_file(tmp_path, dataset):
    config = load_train_config(tiny_config_file(tmp_path, dataset))
    result = Trainer(config).run()
    run = config.run_dir
    assert result.step == 6 and result.ranks_in_sync
    for name in ("config.yaml", "split.json", "metrics.jsonl", "model.safetensors",
                 "best.safetensors", "plots/curves.png", "plots/val_overlays.png",
                 "checkpoints/latest.json"):
        assert (run / name).is_file(), name
    assert load_train_config(run / "config.yaml") == config
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [m["step"] for m in metrics if "loss" in m]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(m["loss"]) and m["loss_draft"] > 0 for m in metrics if "loss" in m)
    val = [m for m in metrics if "val" in m]
    assert [m["step"] for m in val] == [3, 6]
    assert 0 <= val[-1]["val"]["final"]["miou"] <= 1
    tensors, info = read_spt_weights(run / "model.safetensors")
    assert info.mode == "full" and "image_encoder.pos_embed" in tensors
    assert len(list((run / "checkpoints").glob("step_*.safetensors"))) == 2
    assert not list(run.rglob("*.tmp"))


def test_training_changes_the_weights_and_lowers_the_loss(tmp_path, dataset):
    config = load_train_config(tiny_config_file(tmp_path, dataset, max_steps=24, lr=0.003),
                               ["log.val_every=24", "log.checkpoint_every=24"])
    Trainer(config).run()
    metrics = [json.loads(line) for line in (config.run_dir / "metrics.jsonl").read_text()
               .splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert np.mean(losses[-4:]) < np.mean(losses[:4])


class _Stop(Exception):
    pass


def test_resume_continues_exactly(tmp_path, dataset):
    straight = load_train_config(tiny_config_file(tmp_path, dataset), ["name=straight"])
    Trainer(straight).run()

    interrupted = load_train_config(tiny_config_file(tmp_path, dataset), ["name=broken"])

    def crash(step, total, figures):
        if step == 5:  # after the step-3 checkpoint, before the step-6 one
            raise _Stop()

    with pytest.raises(_Stop):
        Trainer(interrupted, progress=crash).run()
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(interrupted).run()
    seen = []
    Trainer(interrupted, progress=lambda step, total, figures: seen.append(step)).run(
        resume=True)
    # Resuming, not restarting: the resumed run does only the steps after its checkpoint.
    assert seen == [4, 5, 6]

    a, _ = read_spt_weights(straight.run_dir / "model.safetensors")
    b, _ = read_spt_weights(interrupted.run_dir / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in
             (interrupted.run_dir / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [1, 2, 3, 4, 5, 6]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.integration
def test_two_process_ddp_ends_with_identical_weights(tmp_path, dataset):
    config = tiny_config_file(tmp_path, make_folder_dataset(tmp_path / "more", n_defect=12),
                              max_steps=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
           str(ROOT / "training" / "train.py"), "--config", str(config), "--device", "cpu"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = [json.loads(line) for line in
               (tmp_path / "runs" / "run" / "metrics.jsonl").read_text().splitlines()]
    final = metrics[-1]
    assert final["ranks"] == 2 and final["ranks_in_sync"] is True
    assert len(final["digests"]) == 2 and final["digests"][0] == final["digests"][1]


def test_the_conv_family_trains_on_views(tmp_path, dataset):
    """A model with view settings (cnn_tiny) trains on views end to end and validates with the
    Inspector's policy; its weights load back as the same configuration."""
    path = tiny_config_file(tmp_path, dataset, max_steps=4, batch_size=3)
    path.write_text(path.read_text().replace("type: tiny", "type: cnn_tiny"))
    config = load_train_config(path)
    result = Trainer(config).run()
    assert result.step == 4
    metrics = [json.loads(line) for line in
               (config.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(m["loss"]) for m in metrics if "loss" in m)
    tensors, info = read_spt_weights(config.run_dir / "model.safetensors")
    assert info.config.name == "cnn_tiny" and info.config.view_settings is not None


def test_gradient_accumulation_of_two_single_batches_equals_one_batch_of_two(tmp_path, dataset):
    runs = []
    for name, optim in (("one", {"batch_size": 2, "grad_accum": 1}),
                        ("two", {"batch_size": 1, "grad_accum": 2}),
                        ("faster", {"batch_size": 2, "grad_accum": 1, "lr": 0.004})):
        (tmp_path / name).mkdir()
        config = load_train_config(tiny_config_file(tmp_path / name, dataset, max_steps=2,
                                                    **optim))
        Trainer(config).run()
        runs.append(read_spt_weights(config.run_dir / "model.safetensors")[0])
    one, two, faster = runs
    for key, value in one.items():
        # float32 sums in another order (one batch of two against two of one) move a weight by
        # up to ~2.5e-5 after the optimiser divides by the gradients' second moments
        torch.testing.assert_close(two[key], value, atol=5e-5, rtol=1e-4)
    # The steps did move the weights (another learning rate lands elsewhere).
    assert any(not torch.allclose(faster[key], value) for key, value in one.items())


def test_a_bf16_autocast_run_trains_on_the_cpu(tmp_path, dataset):
    config = load_train_config(tiny_config_file(tmp_path, dataset, max_steps=3, amp="bf16"))
    Trainer(config).run()
    metrics = [json.loads(line) for line in
               (config.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert len(losses) == 3 and all(np.isfinite(losses))
    (tmp_path / "fp32").mkdir()
    reference = load_train_config(tiny_config_file(tmp_path / "fp32", dataset, max_steps=3))
    Trainer(reference).run()
    a, _ = read_spt_weights(config.run_dir / "model.safetensors")
    b, _ = read_spt_weights(reference.run_dir / "model.safetensors")
    # Same steps in another precision: close to the float32 run, and not identical to it.
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) < 0.05


def test_a_moving_average_is_what_the_run_keeps_and_resumes_exactly(tmp_path, dataset):
    """optim.ema: model.safetensors holds the average (not the last step's weights), equal to
    the average computed by timm's ModelEmaV3 beside the run; an interrupted run resumes its
    average exactly."""
    plain = load_train_config(tiny_config_file(tmp_path, dataset), ["name=plain"])
    Trainer(plain).run()
    averaged = load_train_config(tiny_config_file(tmp_path, dataset, ema=0.9), ["name=ema"])
    trainer = Trainer(averaged)
    trainer.run()
    raw, _ = read_spt_weights(plain.run_dir / "model.safetensors")
    kept, _ = read_spt_weights(averaged.run_dir / "model.safetensors")
    trained = trainer.model.state_dict()
    # the same trajectory (same seed), but the average is kept
    assert all(torch.equal(raw[k], trained[k]) for k in raw)
    moved = [k for k in kept if kept[k].is_floating_point() and not torch.equal(kept[k], raw[k])]
    assert moved, "the kept weights should be the moving average, not the last step's"

    broken = load_train_config(tiny_config_file(tmp_path, dataset, ema=0.9), ["name=broken"])

    def crash(step, total, figures):
        if step == 5:
            raise _Stop()

    with pytest.raises(_Stop):
        Trainer(broken, progress=crash).run()
    Trainer(broken).run(resume=True)
    resumed, _ = read_spt_weights(broken.run_dir / "model.safetensors")
    assert all(torch.equal(kept[k], resumed[k]) for k in kept)
    with pytest.raises(ConfigError, match="optim.ema"):
        load_train_config(tiny_config_file(tmp_path, dataset, ema=1.0))
