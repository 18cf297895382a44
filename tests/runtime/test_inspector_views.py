"""The Inspector on views: parity with PyTorch per view, the prompt-free scan, view caching,
policies, and version-1 (whole-image) model folders."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from samspt.runtime import Inspector
from samspt.runtime.errors import ConfigError
from samspt.runtime.parity import pooled_mask_iou
from samspt.runtime.prompts import mask_box
from samspt.runtime.samples import bundled_samples
from samspt.runtime.views import box_view, scan_views

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def cnn_model(tmp_path_factory):
    from ..conftest import exported_cnn_tiny

    return exported_cnn_tiny(tmp_path_factory.mktemp("models") / "cnn_tiny")


@pytest.fixture(scope="module")
def inspector(cnn_model):
    with Inspector(cnn_model[1], backend="onnxruntime") as ins:
        yield ins


def _samples():
    return [(s.image(), s.mask()) for s in bundled_samples()]


def test_box_prompts_are_answered_in_their_views_as_pytorch_answers_them(cnn_model, inspector):
    from samspt.training.predict import predict

    model, _ = cnn_model
    config = model.config
    for image, mask in _samples():
        h, w = image.shape
        boxes = np.array([[5, 5, 20, 30], [w // 2, h // 2, w // 2 + 12, h // 2 + 9],
                          [0, 0, w - 1, h - 1]], np.float32)
        if mask.any():
            boxes = np.concatenate([mask_box(mask)[None], boxes])
        result = inspector.inspect(image, boxes=boxes)
        reference = predict(model, image, boxes=boxes)
        assert result.views == reference.views
        assert result.views == [box_view(b, (h, w), config.image_size, config.view_settings)
                                for b in boxes]
        assert pooled_mask_iou(result.masks, reference.masks) >= 0.999
        assert pooled_mask_iou(result.draft_masks, reference.draft_masks) >= 0.999
        # Nothing outside a prompt's view.
        for k, view in enumerate(result.views):
            ix0, iy0, ix1, iy1 = view.inside
            outside = result.masks[k].copy()
            outside[iy0:iy1, ix0:ix1] = False
            assert not outside.any()


def test_no_prompt_scans_the_image_and_merges_one_row(cnn_model, inspector):
    from samspt.training.predict import predict

    model, _ = cnn_model
    image = bundled_samples()[0].image()
    result = inspector.inspect(image)
    assert len(result) == 1 and result.masks.shape == (1,) + image.shape
    assert result.views == scan_views(image.shape, model.config.image_size,
                                      model.config.view_settings)
    assert len(result.views) > 1
    reference = predict(model, image)
    assert pooled_mask_iou(result.masks, reference.masks) >= 0.999
    # Each view is prompted with its own extent: the merged logits never leave the image.
    assert all(np.array_equal(v.extent_box, [*v.inside[:2], v.inside[2] - 1, v.inside[3] - 1])
               for v in result.views)


def test_views_image_is_the_whole_image_protocol(cnn_model):
    from samspt.training.predict import predict

    model, folder = cnn_model
    image, mask = _samples()[1]
    with Inspector(folder, backend="onnxruntime", views="image") as ins:
        result = ins.inspect(image, boxes=mask_box(mask)[None])
    assert result.views[0].is_whole_image
    reference = predict(model, image, boxes=mask_box(mask)[None], views="image")
    assert pooled_mask_iou(result.masks, reference.masks) >= 0.999
    with pytest.raises(ConfigError, match="views must be one of"):
        Inspector(folder, views="zoomed")


def test_set_image_encodes_each_view_once(inspector):
    image = bundled_samples()[2].image()
    calls = []
    counting = Inspector(inspector.model_dir, encode=lambda batch: calls.append(len(batch)) or
                         counting.graphs.encode(batch))
    inspector, reference = counting, inspector
    inspector.set_image(image)
    first = inspector.predict(boxes=[[10, 10, 20, 20], [100, 150, 110, 160]])
    again = inspector.predict(boxes=[[10, 10, 20, 20]])
    assert calls == [2]                    # two views in one encoder call, then cached
    assert np.array_equal(again.masks[0], first.masks[0])
    assert again.timings_ms["encoder"] == 0.0
    np.testing.assert_array_equal(reference.inspect(image, boxes=[[10, 10, 20, 20]]).masks,
                                  again.masks)


def test_a_version_1_folder_loads_as_a_whole_image_model(cnn_model, tmp_path):
    _, folder = cnn_model
    old = tmp_path / "v1"
    shutil.copytree(folder, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["schema_version"] = 1
    del manifest["views"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    image, mask = _samples()[0]
    with Inspector(old, backend="onnxruntime") as ins:
        assert ins.view_settings is None
        result = ins.inspect(image, boxes=mask_box(mask)[None])
        assert result.views[0].is_whole_image
        assert len(ins.inspect(image).views) == 1


def test_the_scan_gate_drops_the_views_the_model_scores_below_it(cnn_model):
    """A scan view's mask counts where its score reaches the gate; the row's score is the best
    score of the views that answered a defect, so gating just above it empties the scan."""
    import dataclasses

    from samspt.training.predict import predict

    model, folder = cnn_model
    image = bundled_samples()[0].image()
    with Inspector(folder, backend="onnxruntime") as ins:      # the manifest's: no gate
        assert ins.view_settings.scan_min_score is None
        open_gate = ins.inspect(image)
    best = float(open_gate.scores[0])
    assert open_gate.pred_label[0], "the test model's scan must answer something"
    with Inspector(folder, backend="onnxruntime", scan_min_score=best) as ins:
        at_best = ins.inspect(image)
    assert at_best.pred_label[0] and at_best.scores[0] == open_gate.scores[0]
    assert not (at_best.masks & ~open_gate.masks).any()          # a subset of the ungated mask
    with Inspector(folder, backend="onnxruntime", scan_min_score=best + 1e-3) as ins:
        above = ins.inspect(image)
    assert not above.masks.any() and not above.pred_label[0] and above.scores[0] == 0.0
    # PyTorch gates the same way (the model's view settings carry the gate; just below the best
    # score, as the two backends' scores differ in their last digits).
    config = model.config
    try:
        model.config = dataclasses.replace(config, scan_min_score=best - 1e-4)
        reference = predict(model, image)
    finally:
        model.config = config
    with Inspector(folder, backend="onnxruntime", scan_min_score=best - 1e-4) as ins:
        near_best = ins.inspect(image)
    assert near_best.pred_label[0]
    assert pooled_mask_iou(near_best.masks, reference.masks) >= 0.999
    with pytest.raises(ConfigError, match="scan_min_score must be a number"):
        Inspector(folder, scan_min_score="high", warmup=False)
    with pytest.raises(ConfigError, match="finite"):
        Inspector(folder, scan_min_score=float("nan"), warmup=False)


def test_the_scan_trade_off_equals_rerunning_at_each_gate(cnn_model):
    """samspt-eval's trade-off, computed from one run, gives what the Inspector answers when
    run again at each stricter gate."""
    from samspt.training.evaluation import RuntimePredictor, evaluate_records, sample_records
    from samspt.training.scan_tradeoff import trade_off

    _, folder = cnn_model
    records = sample_records()
    report = evaluate_records(RuntimePredictor(folder), records)      # no gate
    images = report["images"]
    scores = sorted({i["scan_score"] for i in images if i["scan_flagged"]})
    assert len(scores) >= 2
    gates = [scores[0], scores[len(scores) // 2] + 1e-6]
    defective = [i for i in images if not i["defect_free"]]
    clean = [i for i in images if i["defect_free"]]
    predicted = trade_off(defective, clean, gates=gates)["points"]
    for gate, point in zip(gates, predicted):
        rerun = evaluate_records(RuntimePredictor(folder, scan_min_score=gate), records)["scan"]
        assert rerun["defective_flagged"] == point["defective_flagged"]
        assert rerun["defect_free_flagged"] == point["defect_free_flagged"]


def test_the_prompt_gate_answers_a_box_scored_below_it_empty_and_keeps_its_score(cnn_model):
    """ViewSettings.prompt_min_score: a box the model scores below the gate comes back empty
    (final and draft, pred_label False) with the model's score; at or above it, unchanged."""
    _, folder = cnn_model
    with Inspector(folder, backend="onnxruntime") as ins:        # the manifest's: no gate
        assert ins.view_settings.prompt_min_score is None
        answered = []
        for sample in bundled_samples():
            if not sample.mask().any():
                continue
            image, box = sample.image(), mask_box(sample.mask())[None]
            open_gate = ins.inspect(image, boxes=box)
            if open_gate.masks.any():
                answered.append((image, box, open_gate))
    assert answered, "the test model must answer some sample's box with a mask"
    image, box, open_gate = answered[0]
    score = float(open_gate.scores[0])
    with Inspector(folder, backend="onnxruntime", prompt_min_score=score - 1e-4) as ins:
        below = ins.inspect(image, boxes=box)
    assert np.array_equal(below.masks, open_gate.masks) and below.pred_label[0]
    with Inspector(folder, backend="onnxruntime", prompt_min_score=score + 1e-3) as ins:
        gated = ins.inspect(image, boxes=box)
    assert not gated.masks.any() and not gated.draft_masks.any() and not gated.pred_label[0]
    assert gated.scores[0] == pytest.approx(score, abs=1e-6)
    # The scan is not gated by the prompts' gate.
    with Inspector(folder, backend="onnxruntime", prompt_min_score=score + 1e-3) as ins:
        scan = ins.inspect(image)
    with Inspector(folder, backend="onnxruntime") as ins:
        assert np.array_equal(scan.masks, ins.inspect(image).masks)
    with pytest.raises(ConfigError, match="prompt_min_score must be a number"):
        Inspector(folder, prompt_min_score="high", warmup=False)


def test_the_prompt_gate_answers_a_tiled_box_whole_by_its_best_view(cnn_model, tmp_path):
    """A box larger than views.max_side is answered through several views: the gate compares
    the row's score (the best of its views), so the box keeps every view's mask or none."""
    _, folder = cnn_model
    tiled = tmp_path / "tiled"
    shutil.copytree(folder, tiled)
    manifest = json.loads((tiled / "manifest.json").read_text())
    manifest["views"]["max_side"] = manifest["views"]["min_side"] * 2
    (tiled / "manifest.json").write_text(json.dumps(manifest))
    image = bundled_samples()[0].image()
    box = np.array([[0, 0, image.shape[1] - 1, image.shape[0] - 1]], np.float32)
    with Inspector(tiled, backend="onnxruntime") as ins:
        open_gate = ins.inspect(image, boxes=box)
    assert len(open_gate.views) > 1 and open_gate.masks.any()
    score = float(open_gate.scores[0])
    with Inspector(tiled, backend="onnxruntime", prompt_min_score=score - 1e-4) as ins:
        kept = ins.inspect(image, boxes=box)
    assert np.array_equal(kept.masks, open_gate.masks)
    assert np.array_equal(kept.draft_masks, open_gate.draft_masks)
    with Inspector(tiled, backend="onnxruntime", prompt_min_score=score + 1e-3) as ins:
        gated = ins.inspect(image, boxes=box)
    assert not gated.masks.any() and not gated.draft_masks.any()
    assert gated.scores[0] == pytest.approx(score, abs=1e-6)


def test_a_chosen_prompt_gate_is_what_the_folder_then_answers(cnn_model):
    """The figures the prompt-gate rule reports at a gate equal a rerun of the Inspector with
    that gate (ImageResult.gated is what the folder does)."""
    from samspt.training.evaluation import (RuntimePredictor, collect_results, sample_records,
                                            summarize)
    from samspt.training.prompt_gate import choose_prompt_gate, gate_point

    _, folder = cnn_model
    records = sample_records()
    results, _ = collect_results(RuntimePredictor(folder), records, scan=False)
    assert all("final_score" in r.scores for r in results)
    free_scores = sorted(r.scores["final_score"] for r in results if r.is_defect_free)
    gate = free_scores[-1] + 1e-3          # every defect-free box below it
    point = gate_point(results, gate)
    rerun = summarize(collect_results(RuntimePredictor(folder, prompt_min_score=gate), records,
                                      scan=False)[0])
    assert rerun["defect_free"]["empty_rate"] == point.empty_rate == 1.0
    assert rerun["final"]["miou"] == pytest.approx(point.final_miou, abs=1e-9)
    pick = choose_prompt_gate(results, target_empty=1.0)
    assert pick.empty_rate_no_gate is not None
    if pick.gate is not None:
        assert pick.empty_rate == gate_point(results, pick.gate).empty_rate
