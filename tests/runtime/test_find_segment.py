"""The scan of a model with a scan head: the numpy head computes PyTorch's, the anomaly map and
its proposals, and the proposals answered as box prompts make the scan's mask."""

from __future__ import annotations

import json

import numpy as np
import pytest

from samspt.runtime import Inspector
from samspt.runtime.errors import ModelFolderError
from samspt.runtime.find_segment import DEFAULT_GATE
from samspt.runtime.manifest import MANIFEST, read_manifest
from samspt.runtime.preprocess import view_input
from samspt.runtime.samples import bundled_samples
from samspt.runtime.scan_head import SCAN_HEAD_FILE, NumpyScanHead, proposals
from samspt.runtime.views import scan_views

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def head_model(tmp_path_factory):
    from ..conftest import exported_cnn_tiny

    return exported_cnn_tiny(tmp_path_factory.mktemp("models") / "cnn_tiny_head",
                             scan_head=True)


def test_the_numpy_head_computes_what_pytorch_computes(head_model):
    model, folder = head_model
    manifest = read_manifest(folder)
    assert manifest.scan_head["file"] == SCAN_HEAD_FILE and SCAN_HEAD_FILE in manifest.files
    image = bundled_samples()[0].image()
    with Inspector(folder, backend="onnxruntime", warmup=False) as ins:
        assert ins.scan_scores_every_image
        views = scan_views(image.shape[:2], ins.image_size, ins.view_settings)[:3]
        batch = np.stack([view_input(v, image, ins.pixel_mean, ins.pixel_std) for v in views])
        head = NumpyScanHead.load(folder / SCAN_HEAD_FILE, int(manifest.scan_head["channels"]))
        numpy_logits = head.logits(ins.graphs.encode(batch))
    with torch.no_grad():
        reference = model.defect_logits(model.encode(torch.from_numpy(batch))).numpy()
    np.testing.assert_allclose(numpy_logits, reference, atol=1e-4)


def test_proposals_are_the_connected_regions_of_the_map():
    prob = np.zeros((100, 120), np.float32)
    prob[10:20, 10:30] = 0.9          # one region
    prob[60:62, 90:118] = 0.7         # another
    prob[30:40, 60:70] = 0.3          # below the threshold
    boxes = sorted(tuple(b) for b in proposals(prob, 0.5, cell=8))
    assert boxes == [(10, 10, 29, 19), (90, 60, 117, 61)]
    assert [tuple(b) for b in proposals(prob, 0.5, cell=8, pad=2)][0] == (8, 8, 31, 21)
    assert proposals(prob, 0.95, cell=8) == []


def test_a_region_is_found_by_its_peak_and_drawn_to_the_lower_level():
    prob = np.zeros((100, 120), np.float32)
    prob[10:40, 10:50] = 0.6          # a defect's extent ...
    prob[20:24, 20:24] = 0.95         # ... and its peak
    prob[60:80, 70:100] = 0.6         # as high as the extent, but no peak: not found
    assert [tuple(b) for b in proposals(prob, 0.9, cell=8)] == [(20, 20, 23, 23)]
    assert [tuple(b) for b in proposals(prob, 0.9, cell=8, low=0.5)] == [(10, 10, 49, 39)]
    # the lower level never exceeds the threshold
    assert [tuple(b) for b in proposals(prob, 0.9, cell=8, low=0.99)] == [(20, 20, 23, 23)]


def test_the_scan_answers_its_proposals_as_box_prompts(head_model):
    _, folder = head_model
    image = bundled_samples()[0].image()
    with Inspector(folder, backend="onnxruntime") as ins:
        scan = ins.inspect(image)
        assert scan.anomaly_map.shape == image.shape[:2] and scan.anomaly_map.dtype == np.float32
        assert float(scan.scores[0]) == pytest.approx(float(scan.anomaly_map.max()))
        assert scan.pred_label[0] == (scan.scores[0] >= DEFAULT_GATE)
        assert scan.pred_label[0], "the test head must find something on the sample"
        cell = int(np.ceil(ins.view_settings.scan_side / (ins.image_size // 8)))
        boxes = proposals(scan.anomaly_map, DEFAULT_GATE, cell)
        asked = ins.inspect(image, boxes=np.stack(boxes))
    union = asked.masks.any(axis=0)
    if union.any():
        np.testing.assert_array_equal(scan.masks[0], union)
        np.testing.assert_array_equal(scan.draft_masks[0], asked.draft_masks.any(axis=0))
    else:                               # every box answered empty: the map's region
        np.testing.assert_array_equal(scan.masks[0], scan.anomaly_map >= DEFAULT_GATE)
    assert 0.0 <= scan.pred_score[0] <= 1.0 and (scan.pred_score[0] >= 0.5) == scan.pred_label[0]


def test_pytorch_scans_as_the_inspector_does(head_model):
    from samspt.runtime.parity import pooled_mask_iou
    from samspt.training.predict import predict

    model, folder = head_model
    image = bundled_samples()[1].image()
    reference = predict(model, image)
    with Inspector(folder, backend="onnxruntime") as ins:
        scan = ins.inspect(image)
    assert float(reference.scores[0]) == pytest.approx(float(scan.scores[0]), abs=1e-4)
    assert pooled_mask_iou(scan.masks, reference.masks) >= 0.99


def test_above_its_best_score_the_scan_flags_nothing_and_runs_no_decoder(head_model):
    _, folder = head_model
    image = bundled_samples()[0].image()
    with Inspector(folder, backend="onnxruntime") as ins:
        best = float(ins.inspect(image).scores[0])
    with Inspector(folder, backend="onnxruntime", scan_min_score=best + 1e-3) as ins:
        calls = []
        decode = ins.graphs.decode
        ins.graphs.decode = lambda *a: calls.append(1) or decode(*a)
        result = ins.inspect(image)
    assert not result.pred_label[0] and not result.masks.any() and calls == []
    assert result.pred_score[0] < 0.5


def test_a_damaged_or_unlisted_head_is_refused(head_model, tmp_path):
    import shutil

    _, folder = head_model
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / SCAN_HEAD_FILE).write_bytes(b"not an npz")
    with pytest.raises(ModelFolderError, match="scan_head.npz"):
        Inspector(copy, backend="onnxruntime", warmup=False)
    shutil.copy(folder / SCAN_HEAD_FILE, copy / SCAN_HEAD_FILE)
    manifest = json.loads((copy / MANIFEST).read_text())
    del manifest["files"][SCAN_HEAD_FILE]
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError, match="scan head"):
        Inspector(copy, backend="onnxruntime", warmup=False)


NO_TORCH_SCAN = """
import sys
from importlib.abc import MetaPathFinder


class NoTorch(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "segment_anything", "timm"):
            raise ImportError(f"{name} is not installed here")
        return None


sys.meta_path.insert(0, NoTorch())
from samspt.runtime import Inspector
from samspt.runtime.samples import bundled_samples

with Inspector(sys.argv[1], backend="onnxruntime") as ins:
    scan = ins.inspect(bundled_samples()[0].image())
print("map", scan.anomaly_map.shape, "score", float(scan.scores[0]))
"""


@pytest.mark.integration
def test_the_base_install_scans_with_the_head_without_torch(head_model):
    import subprocess
    import sys

    _, folder = head_model
    result = subprocess.run([sys.executable, "-c", NO_TORCH_SCAN, str(folder)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "map (" in result.stdout
