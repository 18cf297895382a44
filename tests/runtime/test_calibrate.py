"""samspt-calibrate on a real exported model: the point it writes is what the calibrated folder
then answers, the source is left as it was, and each refusal says what was wrong."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from samspt.runtime import Inspector
from samspt.runtime.calibrate import main as calibrate_main
from samspt.runtime.errors import ModelFolderError
from samspt.runtime.files import sha256_file
from samspt.runtime.manifest import MANIFEST, read_manifest
from samspt.runtime.samples import bundled_samples

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from ..conftest import exported_cnn_tiny

    return exported_cnn_tiny(tmp_path_factory.mktemp("models") / "cnn_tiny")[1]


def _variants():
    """24 images: each bundled sample (halved, for speed), flipped and turned."""
    for sample in bundled_samples():
        image = sample.image()[::2, ::2]
        for k in range(4):
            yield np.ascontiguousarray(np.rot90(image if k < 2 else image[:, ::-1], k))


@pytest.fixture(scope="module")
def image_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("station")
    images = list(_variants())
    for name, chosen in (("normal", images[:16]), ("defective", images[16:])):
        (root / name / "sub").mkdir(parents=True)
        for i, image in enumerate(chosen):   # a subfolder too: folders are read recursively
            where = root / name / ("sub" if i % 2 else "") / f"{name}_{i}.png"
            Image.fromarray(image).save(where)
    return root / "normal", root / "defective"


def _flags(inspector, folder):
    results = [inspector.inspect(np.asarray(Image.open(p).convert("RGB")))
               for p in sorted(folder.rglob("*.png"))]
    return np.array([r.pred_label[0] for r in results]), np.array([r.pred_score[0]
                                                                    for r in results])


def test_the_calibrated_folder_answers_the_rates_it_reports(folder, image_dirs, tmp_path,
                                                           capsys):
    normal, defective = image_dirs
    before = {p.name: sha256_file(p) for p in folder.iterdir()}
    out = tmp_path / "line3"
    assert calibrate_main([str(folder), "--normal", str(normal), "--defective", str(defective),
                           "--max-false-alarm", "0.125", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    manifest = read_manifest(out)
    point = manifest.calibration
    assert manifest.views.scan_min_score == point.min_score
    assert point.normal_images == 16 and point.defective_images == 8
    assert point.normal_flagged <= 2
    assert f"defect-free images flagged: {point.normal_flagged} of 16" in printed
    assert f"defective images flagged: {point.defective_flagged} of 8" in printed
    assert {p.name: sha256_file(p) for p in folder.iterdir()} == before     # source untouched
    with Inspector(out, backend="onnxruntime") as ins:
        normal_flags, normal_scores = _flags(ins, normal)
        defective_flags, defective_scores = _flags(ins, defective)
    assert normal_flags.sum() == point.normal_flagged
    assert defective_flags.sum() == point.defective_flagged
    scores = np.concatenate([normal_scores, defective_scores])
    flags = np.concatenate([normal_flags, defective_flags])
    assert ((scores >= 0.5) == flags).all() and ((scores >= 0) & (scores <= 1)).all()
    # without a gate the model flags more of the defect-free images: the gate did something
    with Inspector(folder, backend="onnxruntime") as ins:
        open_flags, _ = _flags(ins, normal)
    assert open_flags.sum() > point.normal_flagged


def test_a_recall_target_sets_the_highest_gate_reaching_it(folder, image_dirs, tmp_path):
    normal, defective = image_dirs
    out = tmp_path / "recall"
    assert calibrate_main([str(folder), "--normal", str(normal), "--defective", str(defective),
                           "--min-recall", "0.5", "--out", str(out)]) == 0
    point = read_manifest(out).calibration
    assert point.objective == "min_recall" and point.defective_flagged >= 4
    with Inspector(out, backend="onnxruntime") as ins:
        assert _flags(ins, defective)[0].sum() == point.defective_flagged


def test_refusals_say_what_was_wrong_and_write_nothing(folder, image_dirs, tmp_path, capsys):
    normal, defective = image_dirs
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    small = tmp_path / "small"
    small.mkdir()
    for i in range(10):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(small / f"{i}.png")
    twins = tmp_path / "twins"
    twins.mkdir()
    for suffix in (".jpg", ".png"):
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(twins / f"tile{suffix}")
    cases = [
        (["--normal", str(twins)], "tile.jpg and tile.png side by side"),
        (["--normal", str(empty)], "holds no image files"),
        (["--normal", str(tmp_path / "missing")], "is not a folder"),
        (["--normal", str(normal), "--max-false-alarm", "0.02"], "at least 50 defect-free"),
        (["--normal", str(normal), "--min-recall", "0.9"], "needs defective images"),
        (["--normal", str(small), "--max-false-alarm", "0.1"], "smaller than the model's"),
    ]
    for extra, message in cases:
        assert calibrate_main([str(folder), *extra, "--out", str(out)]) == 2, extra
        assert message in capsys.readouterr().err
        assert not out.exists()
    with pytest.raises(SystemExit):
        calibrate_main([str(folder), "--normal", str(normal), "--max-false-alarm", "0.1",
                        "--min-recall", "0.9", "--out", str(out)])


def test_a_calibration_carried_to_another_model_is_refused_by_hash(folder, image_dirs,
                                                                    tmp_path):
    normal, _ = image_dirs
    out = tmp_path / "calibrated"
    assert calibrate_main([str(folder), "--normal", str(normal), "--max-false-alarm", "0.125",
                           "--out", str(out)]) == 0
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    manifest = json.loads((other / MANIFEST).read_text())
    calibrated = json.loads((out / MANIFEST).read_text())
    manifest["calibration"] = dict(calibrated["calibration"])
    manifest["calibration"]["graphs"] = {name: "0" * 64 for name in
                                         calibrated["calibration"]["graphs"]}
    manifest["views"]["scan_min_score"] = calibrated["views"]["scan_min_score"]
    (other / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError, match="measured on other graphs"):
        Inspector(other, backend="onnxruntime", warmup=False)
    manifest["calibration"] = calibrated["calibration"]
    manifest["views"]["scan_min_score"] = 0.123          # the gate edited by hand
    (other / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError, match="was edited"):
        Inspector(other, backend="onnxruntime", warmup=False)
