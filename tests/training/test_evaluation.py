"""Baselines, the evaluation protocol (evaluate_records) and the samspt-eval command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samspt.runtime.errors import ConfigError, InputError
from samspt.training.baselines import BoxAsMask, GrabCut, box_mask
from samspt.training.data.records import DEFECT_FREE, Record
from samspt.training.evaluate import main
from samspt.training.evaluation import (DEFECT_FREE_BOX_SIDE, evaluate_image, evaluate_records,
                                        format_table, iter_results, limit_per_class,
                                        sample_records)
from samspt.training.metrics import mask_iou

REPO = Path(__file__).resolve().parents[2]


def disk_image(size=64, radius=12, center=(30, 34), seed=0):
    """A dark disk (defect) on a bright, slightly noisy background: HxWx3 uint8 and HxW bool."""
    yy, xx = np.mgrid[:size, :size]
    mask = (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius ** 2
    rng = np.random.default_rng(seed)
    grey = np.where(mask, 40, 200) + rng.integers(-8, 9, mask.shape)
    return np.repeat(grey.astype(np.uint8)[:, :, None], 3, axis=2), mask


def tight_box(mask):
    ys, xs = np.nonzero(mask)
    return np.array([[xs.min(), ys.min(), xs.max(), ys.max()]], dtype=np.float32)


# ----------------------------------------------------------------------------- baselines
def test_box_as_mask_iou_is_the_area_ratio():
    image, mask = disk_image()
    final, draft = BoxAsMask().predict(image, tight_box(mask))
    assert final.shape == (1, 64, 64) and final.dtype == bool and draft is final
    box_area = 25 * 25                                   # radius 12: 25 pixels a side, inclusive
    assert final.sum() == box_area
    assert mask_iou(final[0], mask) == mask.sum() / box_area


def test_grabcut_finds_a_dark_disk():
    image, mask = disk_image()
    final, draft = GrabCut().predict(image, tight_box(mask))
    assert final.shape == (1, 64, 64) and draft is final
    assert mask_iou(final[0], mask) > 0.9
    again, _ = GrabCut().predict(image, tight_box(mask))
    assert (again == final).all()                        # seeded: the same answer every time


@pytest.mark.parametrize("box", [
    [0, 0, 63, 63],        # the whole image: no background left to model
    [0, 10, 20, 63],       # touching three borders
    [-5, -5, 10, 10],      # partly outside
    [30, 30, 30, 30],      # one pixel
    [10, 30, 50, 30],      # one pixel high
    [70, 70, 80, 80],      # outside the image
])
def test_grabcut_handles_awkward_boxes(box):
    image, _ = disk_image()
    final, _ = GrabCut().predict(image, np.array([box], np.float32))
    assert final.shape == (1, 64, 64)
    if box in ([0, 0, 63, 63], [30, 30, 30, 30], [10, 30, 50, 30]):
        assert (final[0] == box_mask(np.array(box), (64, 64))).all()   # fell back to the box
    if box == [70, 70, 80, 80]:
        assert not final.any()


def test_several_boxes_and_grey_images():
    image, mask = disk_image()
    boxes = np.concatenate([tight_box(mask), [[0, 0, 9, 9]]]).astype(np.float32)
    for baseline in (BoxAsMask(), GrabCut()):
        final, _ = baseline.predict(image[:, :, 0], boxes)
        assert final.shape == (2, 64, 64)
    assert BoxAsMask().predict(image, np.zeros((0, 4), np.float32))[0].shape == (0, 64, 64)


@pytest.mark.parametrize("boxes, words", [
    (np.array([[5, 5, 2, 9]], np.float32), "x1 < x0"),
    (np.array([[5, np.nan, 8, 9]], np.float32), "NaN"),
    (np.zeros((2, 3), np.float32), "Kx4"),
])
def test_bad_boxes_are_input_errors(boxes, words):
    image, _ = disk_image()
    for baseline in (BoxAsMask(), GrabCut()):
        with pytest.raises(InputError, match=words):
            baseline.predict(image, boxes)


def test_baselines_refuse_points():
    image, _ = disk_image()
    with pytest.raises(InputError, match="box prompts only"):
        BoxAsMask().predict(image, points=np.zeros((1, 1, 2), np.float32))


# ----------------------------------------------------------------------------- records on disk
def write_record(folder: Path, name: str, mask: np.ndarray, defect_class: str) -> Record:
    folder.mkdir(parents=True, exist_ok=True)
    grey = np.where(mask, 50, 190).astype(np.uint8)
    Image.fromarray(grey).save(folder / f"{name}.png")
    mask_path = None
    if defect_class != DEFECT_FREE:
        mask_path = folder / f"{name}_mask.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(mask_path)
    return Record(folder / f"{name}.png", mask_path, defect_class, "synthetic")


@pytest.fixture
def records(tmp_path):
    """Four defective images with known box-as-mask IoU, two defect-free ones.

    ``spots``: two 10x10 squares at opposite corners of a 30x30 box -> IoU 200/900;
    ``bar``: a 10x20 rectangle -> IoU 1; ``ell``: an L of 20x20 minus 10x10 -> IoU 300/400;
    ``line``: a 1x15 line -> IoU 1.
    """
    shape = (48, 64)
    spots = np.zeros(shape, bool)
    spots[10:20, 10:20] = spots[30:40, 30:40] = True
    bar = np.zeros(shape, bool)
    bar[5:15, 20:40] = True
    ell = np.zeros(shape, bool)
    ell[20:40, 20:40] = True
    ell[20:30, 30:40] = False
    line = np.zeros(shape, bool)
    line[7, 3:18] = True
    free = np.zeros(shape, bool)
    return [write_record(tmp_path, "spots", spots, "Blob"),
            write_record(tmp_path, "bar", bar, "Blob"),
            write_record(tmp_path, "ell", ell, "Ell"),
            write_record(tmp_path, "line", line, "Ell"),
            write_record(tmp_path, "free1", free, DEFECT_FREE),
            write_record(tmp_path, "free2", free, DEFECT_FREE)]


class EmptyPredictor:
    """Answers every prompt with an empty mask; remembers its prompts."""

    name = "empty"

    def __init__(self):
        self.calls = []

    def predict(self, image, boxes=None, points=None):
        self.calls.append((boxes, points))
        masks = np.zeros((1,) + image.shape[:2], dtype=bool)
        return masks, masks


# ----------------------------------------------------------------------------- protocol
def test_box_as_mask_gives_the_expected_miou(records):
    report = evaluate_records(BoxAsMask(), records)
    blob, ell = (200 / 900 + 1.0) / 2, (300 / 400 + 1.0) / 2
    assert report["per_class"]["Blob"]["final"]["miou"] == pytest.approx(blob)
    assert report["per_class"]["Ell"]["final"]["miou"] == pytest.approx(ell)
    assert report["final"]["miou"] == pytest.approx((blob + ell) / 2)       # 2 images each
    assert report["draft"] == report["final"]
    assert report["per_class"]["Blob"]["n_images"] == 2
    assert report["n_images"] == 6 and report["n_defective"] == 4
    assert report["per_class"]["Blob"]["final"]["biou"] == pytest.approx(
        (mask_iou(*_bands(records[0])) + 1.0) / 2)
    assert DEFECT_FREE not in report["per_class"]


def _bands(record):
    from samspt.training.metrics import mask_boundary

    gt = record.load_mask()
    box = box_mask(tight_box(gt)[0], gt.shape)
    return mask_boundary(box), mask_boundary(gt)


def test_defect_free_images(records):
    report = evaluate_records(BoxAsMask(), records)
    free = report["defect_free"]
    assert free["n_images"] == 2 and free["empty_rate"] == 0.0
    low, high = DEFECT_FREE_BOX_SIDE
    assert (low - 0.02) ** 2 <= free["fp_area"] <= (high + 0.02) ** 2
    empty = evaluate_records(EmptyPredictor(), records)
    assert empty["defect_free"]["empty_rate"] == 1.0 and empty["defect_free"]["fp_area"] == 0.0
    assert empty["final"]["miou"] == 0.0 and empty["final"]["biou"] == 0.0


def test_report_is_json_with_the_documented_keys(records):
    report = json.loads(json.dumps(evaluate_records(BoxAsMask(), records, seed=3)))
    assert {"final", "draft", "defect_free", "per_class", "n_images", "prompt", "seed",
            "images", "class_mean", "skipped", "predictor"} <= set(report)
    assert set(report["final"]) == {"miou", "biou"} and set(report["draft"]) == {"miou", "biou"}
    assert {"empty_rate", "fp_area", "n_images"} <= set(report["defect_free"])
    assert set(report["per_class"]["Ell"]) == {"final", "draft", "n_images"}
    assert report["prompt"] == "box" and report["seed"] == 3
    assert len(report["images"]) == 6
    first = report["images"][0]
    assert first["name"] == "Blob/spots" and first["prompt"] == {"box": [10.0, 10.0, 39.0, 39.0]}
    assert first["final_iou"] == pytest.approx(200 / 900)


def test_prompts_are_seeded_per_image(records):
    def free_boxes(recs, seed):
        return [r["prompt"]["box"] for r in evaluate_records(BoxAsMask(), recs, seed=seed)["images"]
                if r["defect_free"]]

    assert free_boxes(records, 0) == free_boxes(records, 0)
    assert free_boxes(records, 0) != free_boxes(records, 1)
    assert free_boxes(records[::-1], 0) == free_boxes(records, 0)[::-1]    # order-independent
    assert free_boxes(records[-1:], 0) == free_boxes(records, 0)[-1:]


def test_point_protocol_puts_one_point_inside_the_mask(records):
    predictor = EmptyPredictor()
    report = evaluate_records(predictor, records, prompt="point", seed=5)
    assert report["prompt"] == "point"
    for record, (boxes, points) in zip(records, predictor.calls):
        assert boxes is None and points.shape == (1, 1, 2)
        x, y = points[0, 0].astype(int)
        if not record.is_defect_free:
            assert record.load_mask()[y, x]


def test_records_with_empty_masks_in_a_defect_class_are_skipped(tmp_path, records):
    odd = write_record(tmp_path, "nothing", np.zeros((48, 64), bool), "Blob")
    report = evaluate_records(BoxAsMask(), records + [odd])
    assert report["skipped"] == ["Blob/nothing"] and report["n_defective"] == 4
    assert "skipped" in format_table(report)


def test_iter_results_keeps_the_masks(records):
    results = list(iter_results(BoxAsMask(), records[:2]))
    assert results[0].final.shape == (48, 64) and results[0].gt.dtype == bool
    assert results[0].scores["final_iou"] == pytest.approx(200 / 900)


def test_progress_is_called_once_per_record(records):
    calls = []
    evaluate_records(BoxAsMask(), records, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 6) for i in range(1, 7)]


def test_protocol_errors(records):
    with pytest.raises(ConfigError, match="prompt"):
        evaluate_records(BoxAsMask(), records, prompt="scribble")
    with pytest.raises(InputError, match="empty"):
        evaluate_records(BoxAsMask(), [])

    class Wrong:
        name = "wrong"

        def predict(self, image, boxes=None, points=None):
            return np.zeros((1, 3, 3), bool), np.zeros((1, 3, 3), bool)

    with pytest.raises(InputError, match="KxHxW"):
        evaluate_image(Wrong(), records[0])


def test_limit_per_class(records):
    kept = limit_per_class(records, 1)
    assert [r.name for r in kept] == ["Blob/spots", "Ell/ell", f"{DEFECT_FREE}/free1"]
    assert limit_per_class(records, None) == records
    with pytest.raises(ConfigError):
        limit_per_class(records, 0)


def test_sample_records():
    samples = sample_records()
    classes = {r.defect_class for r in samples}
    assert DEFECT_FREE in classes and "Crack" in classes and len(samples) == 6


def test_tiny_spt_model_through_torch_predictor():
    torch = pytest.importorskip("torch")
    from samspt.training.checkpoints import build_model
    from samspt.training.evaluation import TorchPredictor

    torch.manual_seed(0)
    model = build_model("tiny")
    samples = [r for r in sample_records() if r.defect_class in ("Crack", DEFECT_FREE)]
    for prompt in ("box", "point"):
        report = evaluate_records(TorchPredictor(model), samples, prompt=prompt)
        assert report["n_defective"] == 1 and report["defect_free"]["n_images"] == 1
        for which in ("final", "draft"):
            for metric in ("miou", "biou"):
                assert 0.0 <= report[which][metric] <= 1.0
                assert 0.0 <= report["per_class"]["Crack"][which][metric] <= 1.0
        assert 0.0 <= report["defect_free"]["empty_rate"] <= 1.0
        assert 0.0 <= report["defect_free"]["fp_area"] <= 1.0


# ----------------------------------------------------------------------------- command line
def test_cli_json_on_a_folder_dataset(tmp_path, capsys):
    pytest.importorskip("samspt.training.data.readers")
    image, mask = disk_image()
    for sub in ("images/dent", "masks/dent"):
        (tmp_path / sub).mkdir(parents=True)
    Image.fromarray(image).save(tmp_path / "images/dent/a.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "masks/dent/a.png")
    Image.fromarray(image).save(tmp_path / "images/b.png")            # no mask: defect-free
    assert main(["--data", str(tmp_path), "--baseline", "box", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    box_area = 25 * 25
    assert report["per_class"]["dent"]["final"]["miou"] == pytest.approx(mask.sum() / box_area)
    assert report["defect_free"]["n_images"] == 1 and "images" not in report


def test_cli_table_on_the_bundled_samples(capsys):
    assert main(["--baseline", "box", "--limit", "1", "--per-image"]) == 0
    out = capsys.readouterr().out
    assert "all images" in out and "Crack" in out and "defect-free images: 1" in out
    assert "Crack/crack_exp1_num_249594" in out


@pytest.mark.parametrize("argv, words", [
    (["--data", "/nonexistent/dataset", "--baseline", "box"], "does not exist"),
    ([], "--checkpoint"),                                     # no bundled example model yet
    (["--checkpoint", "/nonexistent/w.safetensors"], "does not exist"),
    (["--baseline", "grabcut", "--prompt", "point"], "box prompts only"),
    (["--baseline", "box", "--limit", "0"], "at least 1"),
])
def test_cli_errors_exit_2(argv, words, capsys, monkeypatch, tmp_path):
    import samspt.training.example as example

    monkeypatch.setattr(example, "EXAMPLE_MODEL", tmp_path / "absent.safetensors")
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and words in captured.err and captured.out == ""


def test_cli_scan_gate_needs_a_model_folder(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--baseline", "box", "--scan-min-score", "0.3"])
    assert exc.value.code == 2
    assert "--scan-min-score goes with --model" in capsys.readouterr().err


@pytest.mark.integration
def test_cli_runs_as_a_script():
    out = subprocess.run([sys.executable, str(REPO / "training" / "evaluate.py"), "--baseline",
                          "box", "--json", "--limit", "1"], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    assert json.loads(out)["n_images"] == 6


def test_cli_evaluates_one_side_of_a_split(tmp_path, capsys):
    split_module = pytest.importorskip("samspt.training.data.split")
    for k in range(4):
        image, mask = disk_image(seed=k)
        for sub in ("images/dent", "masks/dent"):
            (tmp_path / "data" / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / f"data/images/dent/{k}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / f"data/masks/dent/{k}.png")
    from samspt.training.data.readers import read_dataset

    train, val = split_module.split_records(read_dataset(tmp_path / "data"), 0.25, seed=0)
    split_module.write_split(tmp_path / "split.json", train, val, tmp_path / "data")
    for subset, expected in (("val", val), ("train", train)):
        assert main(["--data", str(tmp_path / "data"), "--split", str(tmp_path / "split.json"),
                     "--subset", subset, "--baseline", "box", "--json", "--per-image"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert sorted(i["image_path"] for i in report["images"]) == \
            sorted(str(r.image_path) for r in expected)
    # No held-out side in this split: a clear refusal, not an empty report.
    assert main(["--data", str(tmp_path / "data"), "--split", str(tmp_path / "split.json"),
                 "--subset", "test", "--baseline", "box", "--json"]) == 2
    assert "has no test images" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--subset", "val", "--baseline", "box"])
    assert exc.value.code == 2


def test_cli_evaluates_spt_weights(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from samspt.training.checkpoints import build_model, save_spt_weights

    torch.manual_seed(0)
    weights = save_spt_weights(build_model("tiny"), tmp_path / "tiny.safetensors", mode="full")
    assert main(["--checkpoint", str(weights), "--device", "cpu", "--json", "--prompt",
                 "point"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["predictor"] == "tiny.safetensors" and report["prompt"] == "point"
    assert 0.0 <= report["final"]["miou"] <= 1.0 and report["n_defective"] == 5


def test_cli_evaluates_an_exported_model_folder_through_the_runtime(tmp_path, capsys):
    import torch

    from samspt.export.onnx_export import export_model
    from samspt.training.checkpoints import build_model, save_spt_weights

    torch.manual_seed(0)
    model = build_model("tiny")
    export_model(model, tmp_path / "exported", "tiny", precision="fp32", verify=False)
    weights = save_spt_weights(model, tmp_path / "w.safetensors", mode="full")
    assert main(["--model", str(tmp_path / "exported"), "--json", "--limit", "1"]) == 0
    runtime = json.loads(capsys.readouterr().out)
    assert main(["--checkpoint", str(weights), "--json", "--limit", "1"]) == 0
    torch_report = json.loads(capsys.readouterr().out)
    assert runtime["n_images"] == torch_report["n_images"] == 6
    assert abs(runtime["final"]["miou"] - torch_report["final"]["miou"]) < 1e-3


class _ScanningOracle:
    """A predictor whose scan answers each image's ground truth (and flags a defect-free image
    only when told to): the prompt-free figures must then be exact."""

    name = "oracle"

    def __init__(self, masks, flag_free=()):
        self.masks, self.flag_free = masks, set(flag_free)

    def predict(self, image, boxes=None, points=None):
        empty = np.zeros((1,) + image.shape[:2], bool)
        return empty, empty

    def scan(self, image):
        mask = self.masks[image.tobytes()]
        flagged = bool(mask.any()) or image.tobytes() in self.flag_free
        return mask, flagged, 0.9 if mask.any() else 0.5


def test_prompt_free_figures_of_a_scanning_predictor():
    records = sample_records()
    masks, free = {}, []
    for record in records:
        image = record.load_image()
        masks[image.tobytes()] = record.load_mask(image.shape[:2])
        if record.is_defect_free:
            free.append(image.tobytes())
    report = evaluate_records(_ScanningOracle(masks), records)
    assert report["scan"]["defective_flagged"] == 1.0
    assert report["scan"]["defect_free_flagged"] == 0.0
    assert report["scan"]["miou"] == 1.0
    assert report["scan"]["trade_off"]["auroc"] == 1.0
    report = evaluate_records(_ScanningOracle(masks, flag_free=free), records, scan=True)
    assert report["scan"]["defect_free_flagged"] == 1.0
    # Flagged clean images score 0.5, defective ones 0.9: a gate between them parts them.
    points = {p["min_score"]: p for p in report["scan"]["trade_off"]["points"]}
    assert points[0.5]["defect_free_flagged"] == 1.0 and points[0.55]["defect_free_flagged"] == 0
    assert points[0.9]["defective_flagged"] == 1.0 and points[0.95]["defective_flagged"] == 0
    assert "scan trade-off" in format_table(report)
    assert "prompt-free scan: defective images flagged 1.000" in format_table(report)
    assert evaluate_records(_ScanningOracle(masks), records, scan=False)["scan"]["miou"] is None
