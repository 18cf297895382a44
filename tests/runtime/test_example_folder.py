"""The exported example model that ships with the base install: small, intact, equal to a fresh
export of the shipped weights, scale-free through its views, and run without torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samspt.runtime import Inspector
from samspt.runtime.manifest import read_manifest
from samspt.runtime.parity import pooled_mask_iou
from samspt.runtime.prompts import mask_box
from samspt.runtime.samples import EXAMPLE_MODEL_DIR, bundled_samples

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shipped():
    with Inspector(EXAMPLE_MODEL_DIR, backend="onnxruntime") as ins:
        yield ins


def test_the_shipped_folder_is_small_intact_and_zooms():
    manifest = read_manifest(EXAMPLE_MODEL_DIR)            # every file against its sha256
    assert manifest.name == "example_cnn" and manifest.views is not None
    total = sum(info["bytes"] for info in manifest.files.values())
    assert total <= 12 * 2**20
    assert manifest.graphs["encoder"]["fp32"]["weights_storage"] == "float16"
    assert manifest.verification["fp32"]["mean_iou"] >= 0.999


def test_a_fresh_export_of_the_shipped_weights_computes_the_shipped_masks(tmp_path, shipped):
    pytest.importorskip("torch")
    from samspt.export.model_source import load_export_model
    from samspt.export.onnx_export import export_model

    model, name, sources = load_export_model()
    export_model(model, tmp_path / "again", name, precision="fp32", sources=sources,
                 compact=True, verify=False)
    with Inspector(tmp_path / "again", backend="onnxruntime") as again:
        for sample in bundled_samples():
            image, mask = sample.image(), sample.mask()
            boxes = mask_box(mask)[None] if mask.any() else None
            a, b = shipped.inspect(image, boxes=boxes), again.inspect(image, boxes=boxes)
            assert pooled_mask_iou(a.masks, b.masks) >= 0.999, sample.name
            assert pooled_mask_iou(a.draft_masks, b.draft_masks) >= 0.999, sample.name


def test_a_4x_upscaled_image_gives_the_same_masks(shipped):
    """Views make answers scale-free: the same defect in a 4x larger image is seen the same
    (where the view is not held at its minimum side, which is in pixels)."""
    checked = 0
    for sample in bundled_samples():
        image, mask = sample.image(), sample.mask()
        if not mask.any():
            continue
        box = mask_box(mask)
        small = shipped.inspect(image, boxes=box[None])
        if small.views[0].side <= shipped.view_settings.min_side:
            continue
        big = np.asarray(Image.fromarray(image).resize((image.shape[1] * 4, image.shape[0] * 4),
                                                       Image.BILINEAR))
        big_box = np.array([box[0] * 4, box[1] * 4, box[2] * 4 + 3, box[3] * 4 + 3], np.float32)
        large = shipped.inspect(big, boxes=big_box[None])
        down = np.asarray(Image.fromarray(large.masks[0].astype(np.uint8) * 255).resize(
            (image.shape[1], image.shape[0]), Image.BILINEAR)) > 127
        assert pooled_mask_iou(down[None], small.masks) >= 0.9, sample.name
        checked += 1
    assert checked >= 3


NO_TORCH = """
import sys
from importlib.abc import MetaPathFinder

BLOCKED = ("torch", "torchvision", "segment_anything", "timm")


class NoTorch(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed here")
        return None


sys.meta_path.insert(0, NoTorch())
import numpy as np
from samspt.runtime import Inspector
from samspt.runtime.demo import main as demo
from samspt.runtime.inspect_images import main as inspect_main
from samspt.runtime.calibrate import main as calibrate_main
from samspt.runtime.samples import EXAMPLE_MODEL_DIR, bundled_samples
import pathlib, shutil

out = sys.argv[1]
normal = pathlib.Path(out) / "normal"
normal.mkdir()
for sample in bundled_samples()[:4]:
    shutil.copy(sample.image_path, normal)
assert calibrate_main([str(EXAMPLE_MODEL_DIR), "--normal", str(normal), "--max-false-alarm",
                       "0.5", "--out", out + "/calibrated"]) == 0
with Inspector(out + "/calibrated") as ins:
    assert ins.operating_point is not None
    assert len(ins.inspect(bundled_samples()[0].image()).pred_score) == 1
assert demo(["--out", out + "/demo"]) == 0
image = bundled_samples()[0].image()
with Inspector(EXAMPLE_MODEL_DIR) as ins:
    ins.inspect(image, boxes=[[10, 10, 40, 40]])
    ins.set_image(image)
    ins.predict(points=[[[20, 20]]], point_labels=[[1]])
code = inspect_main([str(bundled_samples()[0].image_path), "--box", "10,10,40,40",
                     "--out", out + "/inspect"])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print("loaded:", loaded)
sys.exit(code or bool(loaded))
"""


@pytest.mark.integration
def test_the_main_job_runs_without_torch(tmp_path):
    result = subprocess.run([sys.executable, "-c", NO_TORCH, str(tmp_path)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "loaded: []" in result.stdout
    records = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert len(records) == 6
    assert (tmp_path / "inspect" / "results.json").is_file()


# The runtime's test modules that need neither torch nor training: run in the base install.
BASE_LANE = ("test_operating_point", "test_parity", "test_result", "test_views", "test_mask_paste",
             "test_inspect_cli")
LANE_HELPERS = ("view_logits",)     # modules those tests import


@pytest.mark.integration
@pytest.mark.skipif(os.environ.get("SAMSPT_SKIP_VENV_TEST") == "1",
                    reason="SAMSPT_SKIP_VENV_TEST=1")
def test_the_base_install_runs_the_demo_in_a_fresh_venv(tmp_path):
    """The README's first command, as a new user runs it: a fresh venv, the base install (numpy,
    onnxruntime, pillow; no torch), samspt-demo on the shipped model."""
    # Install from a copy of the sources: an in-tree build would leave build/ in the checkout.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "runs", "models", "inspections", "*.egg-info", "__pycache__",
        ".pytest_cache", ".hypothesis"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(source)], env=environ,
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stdout + install.stderr
    probe = subprocess.run([str(python), "-c", "import importlib.util as u; "
                            "print(u.find_spec('torch') is None)"], capture_output=True,
                           text=True, env=environ)
    assert probe.stdout.strip() == "True"
    demo = subprocess.run([str(env_dir / "bin" / "samspt-demo"), "--out", str(tmp_path / "out")],
                          cwd=tmp_path, capture_output=True, text=True, env=environ, timeout=600)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "final IoU" in demo.stdout and "crack_exp1_num_249594" in demo.stdout
    assert len(list((tmp_path / "out").glob("*_scan.png"))) == 6
    normal = tmp_path / "normal"
    normal.mkdir()
    for image in sorted((ROOT / "runtime" / "assets" / "samples").glob("*.jpg"))[:4]:
        shutil.copy(image, normal)
    calibrated = subprocess.run([str(env_dir / "bin" / "samspt-calibrate"), str(EXAMPLE_MODEL_DIR),
                                 "--normal", str(normal), "--max-false-alarm", "0.5", "--out",
                                 str(tmp_path / "calibrated")], cwd=tmp_path, capture_output=True,
                                text=True, env=environ, timeout=600)
    assert calibrated.returncode == 0, calibrated.stdout + calibrated.stderr
    assert "defect-free images flagged:" in calibrated.stdout
    # The base lane: the runtime's tests that need no model run in this torch-free install.
    lane = subprocess.run([str(python), "-m", "pip", "install", "-q", "pytest", "hypothesis"],
                          env=environ, capture_output=True, text=True, timeout=600)
    assert lane.returncode == 0, lane.stdout + lane.stderr
    # The test files alone (beside the sources, their samspt/ stub would shadow the install).
    lane_root = tmp_path / "lane"
    for name in ["pyproject.toml", "tests/__init__.py", "tests/conftest.py",
                 "tests/runtime/__init__.py"] + [f"tests/runtime/{t}.py"
                                                 for t in BASE_LANE + LANE_HELPERS]:
        (lane_root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, lane_root / name)
    lane = subprocess.run([str(env_dir / "bin" / "pytest"), "-q", "-p", "no:cacheprovider",
                           "tests/runtime"], cwd=lane_root, capture_output=True, text=True,
                          env=environ, timeout=900)
    assert lane.returncode == 0, lane.stdout[-4000:] + lane.stderr[-2000:]
    assert " passed" in lane.stdout and "skipped" not in lane.stdout.splitlines()[-1]
